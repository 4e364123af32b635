"""The buggy twin: a userptr driver that ignores invalidation.

Its ``invalidate`` callback does the bookkeeping the core MM insists on
(``mmu_interval_set_seq``, return True) but does not evict the device mapping, so after
migration (``cma_alloc``, ``offline_pages``, a long-term pin elsewhere), munmap or COW the
device keeps reading and writing the *old* pfns: freed memory, another owner's CMA
allocation, an offline block.  It holds no pin or reference, so none of the pin contract
rules fires (rule 6, coherence, judges long-term holds only); the example's test catches it
with :func:`.driver.device_mapping_mismatches` / :func:`assert_device_coherent`.
"""

from __future__ import annotations

from typing import Any

from pytest_pinfault import pin_entry_point

from .driver import Userptr, assert_device_coherent, userptr_create

__all__ = ["BuggyUserptr", "buggy_userptr_create", "assert_device_coherent"]


class BuggyUserptr(Userptr):
    """Counts the invalidation and carries on with its device page table."""

    def evict(self, event: str) -> None:        # BUG: the device mapping stays bound
        self.nr_invalidations += 1


@pin_entry_point(name="BUGGY_USERPTR_CREATE")
def buggy_userptr_create(fake_mm: Any, mm: Any, addr: int, length: int) -> Any:
    return userptr_create(fake_mm, mm, addr, length, cls=BuggyUserptr)
