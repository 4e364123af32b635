"""Buggy twins of the umem model: each differs from `driver.UmemCore` in one step, and each
is caught by the contract checker with no assert written for its bug (test_ib_umem.py)."""

from __future__ import annotations

from typing import Any

from .driver import IbUmem, UmemCore


class PinnedVmLeakOnError(UmemCore):
    """The error unwind after pinning forgets ``atomic64_sub(..., &mm->pinned_vm)``: a failed
    ib_umem_get leaves pinned_vm charged (rule 2 at its return; rule 9 at teardown)."""

    def uncharge_on_error(self, umem: IbUmem, mm: Any) -> None:
        pass


class NoMmdropOnRelease(UmemCore):
    """ib_umem_release never drops the mm it grabbed in ib_umem_get: the mm_struct is
    leaked (counter ``mm.mm_count``: rule 4 at teardown)."""

    def release(self, umem: IbUmem | None) -> None:
        if umem is None:
            return
        self.release_pages(umem.ibdev, umem, True)
        self.uncharge(umem, umem.owning_mm)
        self.k.kfree(umem.kobj)


class NoDmaUnmapOnRelease(UmemCore):
    """Release passes dirty=0 (the error-path form) and so never unmaps the device's view
    of the pages it unpins (counter ``dma.mappings``: rule 4; the unpinned pages are
    still DMA-mapped)."""

    def release(self, umem: IbUmem | None) -> None:
        if umem is None:
            return
        self.release_pages(umem.ibdev, umem, False)
        self.uncharge(umem, umem.owning_mm)
        self.k.mmdrop(umem.owning_mm)
        self.k.kfree(umem.kobj)


class BatchLeakOnSgFailure(UmemCore):
    """When appending a batch to the sg table fails, the batch just pinned is not unpinned
    (it is not in the table yet, so the unwind does not see it): rule 2 at the return."""

    def unpin_batch(self, batch: list, pinned: int) -> None:
        pass
