"""Buggy twins of the VFIO type1 model: each differs from `driver.VfioIommuType1` in one
method, and each is caught by a contract rule (see test_vfio_type1.py)."""

from __future__ import annotations

from pytest_pinfault.mm import FOLL_WRITE

from .driver import IOMMU_WRITE, VfioIommuType1, vfio_dma


class LeakyUnwindType1(VfioIommuType1):
    """A partial map that fails on a later chunk drops the IOMMU entries and the dma but
    forgets to unpin and uncharge the chunks already mapped (rule 2 at the MAP_DMA
    return, rules 4 and 9 at teardown)."""

    def unwind_failed_map(self, dma: vfio_dma) -> None:
        for d in self.domains:
            d.unmap(dma.iova, dma.size)
        self._unlink(dma)
        self.k.kfree(dma.kobj)
        self.dma_avail += 1


class UnaccountedUnwindType1(VfioIommuType1):
    """The unwind unpins every mapped chunk but never returns their locked_vm
    (rule 2 at the MAP_DMA return: locked_vm grew on a negative return; rule 9)."""

    def unwind_failed_map(self, dma: vfio_dma) -> None:
        self.unmap_unpin(dma, do_accounting=False)
        self._unlink(dma)
        self.k.kfree(dma.kobj)
        self.dma_avail += 1


class WrongMMType1(VfioIommuType1):
    """Charges and uncharges ``current->mm`` instead of the mm that owns the mapping
    (the pre-v6.2 behaviour fixed by "vfio/type1: prevent underflow of locked_vm via
    exec()"): unmapping from another mm underflows that mm's locked_vm (rule 11) and
    never returns the owner's (rule 9)."""

    def acct_mm(self, dma: vfio_dma):
        return self.k.current.mm


class NoLongtermType1(VfioIommuType1):
    """Pins without FOLL_LONGTERM (the pre-v5.7 get_user_pages_remote era): pages stay in
    CMA / ZONE_MOVABLE while the device can DMA into them (rule 1 at MAP_DMA return)."""

    def pin_flags(self, prot: int) -> int:
        return FOLL_WRITE if prot & IOMMU_WRITE else 0
