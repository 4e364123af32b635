"""hugetlb pools (hstates).

Kernel: mm/hugetlb.c (struct hstate, alloc_pool_huge_folio, dequeue_hugetlb_folio_node_exact,
alloc_hugetlb_folio_nodemask, alloc_migrate_hugetlb_folio, free_huge_folio,
move_hugetlb_state, dissolve_free_hugetlb_folio), v6.12.

A pool has ``nr_huge_pages`` folios, ``free_huge_pages`` of them on its free list and
``resv_huge_pages`` promised to mappings.  Boot-time pools are allocated like
``hugepages=``: 2 MiB pages from the buddy allocator with ``htlb_alloc_mask``
(GFP_HIGHUSER_MOVABLE, so they may land in ZONE_MOVABLE or CMA), 1 GiB pages as
gigantic contiguous ranges.  Migration of an in-use hugetlb folio takes a free pool folio
that is long-term pinnable when the task is under PF_MEMALLOC_PIN, or allocates a
*temporary* folio outside the pool, exactly as ``alloc_hugetlb_folio_nodemask`` does;
``move_hugetlb_state`` then hands the temporary status to the source, which leaves the
pool when freed, so the pool counters are unchanged by migration.

.. note:: One node; surplus pages and overcommit are not modelled (``nr_overcommit_huge_pages``
   is 0).  Temporary migration folios count in ``nr_huge_pages`` while they exist, not as
   surplus, as in the kernel; gigantic (1 GiB) pools are not movable (hugepage_movable_supported).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import gfp as _g
from .folio import (KIND_HUGETLB, PG_anon_exclusive, PG_hugetlb_migratable, PG_hugetlb_temporary, Folio,
                    Page)
from .mmzone import MAX_PAGE_ORDER
from .sched import PF_MEMALLOC_PIN

if TYPE_CHECKING:  # pragma: no cover
    from .fakemm import FakeMM

_HTLB_ALLOC_MASK = int(_g.GFP_HIGHUSER_MOVABLE)


class HState:
    """``struct hstate``: one huge page size and its pool."""

    def __init__(self, mm: "FakeMM", order: int) -> None:
        self._mm = mm
        self.order = order
        self.nr_huge_pages = 0
        self.free_huge_pages = 0
        self.resv_huge_pages = 0
        self.surplus_huge_pages = 0
        self.free_list: list[Folio] = []

    @property
    def size(self) -> int:
        """Huge page size in bytes (``huge_page_size``)."""
        return 4096 << self.order

    @property
    def name(self) -> str:
        """The pool's sysfs name, ``hugepages-2048kB``."""
        return f"hugepages-{self.size >> 10}kB"

    def huge_page_shift(self) -> int:
        """``PAGE_SHIFT + order`` (include/linux/hugetlb.h:huge_page_shift)."""
        return 12 + self.order

    def huge_page_order(self) -> int:
        """The huge page order (include/linux/hugetlb.h:huge_page_order)."""
        return self.order

    def pages_per_huge_page(self) -> int:
        """Base pages per huge page (include/linux/hugetlb.h:pages_per_huge_page)."""
        return 1 << self.order

    @property
    def available(self) -> int:
        """Free pages not promised to a reservation."""
        return self.free_huge_pages - self.resv_huge_pages

    def __repr__(self) -> str:
        return (f"<hstate {self.name} nr={self.nr_huge_pages} free={self.free_huge_pages} "
                f"resv={self.resv_huge_pages}>")


if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object


class HugetlbMixin(_Base):
    """hugetlb half of :class:`~pytest_pinfault.FakeMM`."""

    def hstate(self, size: int | str | None = None) -> HState:
        """The pool for huge page *size* (bytes or ``"2MiB"``/``"1GiB"``; default size
        when omitted).  Raises ValueError for a size without a pool, where the kernel's
        lookup returns NULL.  Kernel: mm/hugetlb.c:size_to_hstate, default_hstate (v6.12)."""
        from .config import parse_size
        nbytes = self.config.default_hugepagesz if size is None else parse_size(size, "hstate")
        h = self._hstates.get(nbytes)
        if h is None:
            raise ValueError(f"hstate: expected a huge page size of 2MiB or 1GiB, got {size!r}")
        return h

    def _alloc_fresh_hugetlb_folio(self, h: HState, gfp: int) -> Folio | None:
        if h.order <= MAX_PAGE_ORDER:
            folio = self._alloc_folio(gfp | _g._COMP, h.order, KIND_HUGETLB)
        else:
            folio = self._alloc_gigantic(gfp, h.order)
        if folio is not None:
            folio.kind = KIND_HUGETLB
            folio.hstate = h
        return folio

    def alloc_pool_huge_folio(self, h: HState) -> bool:
        """Grow the pool by one folio (``nr_hugepages`` write / boot ``hugepages=``).

        Kernel: mm/hugetlb.c:alloc_pool_huge_folio (v6.12).
        """
        mask = _HTLB_ALLOC_MASK if h.order <= MAX_PAGE_ORDER else _HTLB_ALLOC_MASK & ~_g._MOVABLE
        folio = self._alloc_fresh_hugetlb_folio(h, mask | _g._NOWARN)   # htlb_alloc_mask
        if folio is None:
            return False
        folio._refcount = 0
        h.nr_huge_pages += 1
        h.free_huge_pages += 1
        h.free_list.append(folio)
        return True

    def dequeue_hugetlb_folio(self, h: HState, gfp: int) -> Folio | None:
        """Take a free pool folio, never one in an isolated pageblock; under
        PF_MEMALLOC_PIN only a long-term pinnable one.

        Kernel: mm/hugetlb.c:dequeue_hugetlb_folio_node_exact (v6.12).
        """
        pin = bool(self.current.flags & PF_MEMALLOC_PIN)
        for i, folio in enumerate(h.free_list):
            if pin and not self.folio_is_longterm_pinnable(folio):
                continue
            if self.get_pageblock_migratetype(folio.pfn) == _g.MIGRATE_ISOLATE:
                continue                     # is_migrate_isolate_page: being offlined/allocated
            del h.free_list[i]
            h.free_huge_pages -= 1
            folio._refcount = 1
            return folio
        return None

    def alloc_hugetlb_folio_nodemask(self, h: HState, nid: int, nmask: Any, gfp: int) -> Folio | None:
        """A hugetlb folio for migration: a free, unreserved pool folio, else a fresh
        temporary one from the buddy allocator.  Kernel: mm/hugetlb.c:
        alloc_hugetlb_folio_nodemask (v6.12)."""
        if h.available > 0:
            folio = self.dequeue_hugetlb_folio(h, gfp)
            if folio is not None:
                return folio
        if h.order > MAX_PAGE_ORDER:
            return None             # alloc_migrate_hugetlb_folio refuses gigantic pages
        folio = self._alloc_fresh_hugetlb_folio(h, self.current_gfp_context(_HTLB_ALLOC_MASK | (gfp & _g._NOWARN)))
        if folio is None:
            return None
        folio.flags |= PG_hugetlb_temporary
        h.nr_huge_pages += 1        # __prep_account_new_huge_page; temporary, not surplus
        return folio

    def _move_hugetlb_state(self, src: Folio, dst: Folio) -> None:
        """Kernel: mm/hugetlb.c:move_hugetlb_state: the temporary status moves to *src*."""
        if dst.flags & PG_hugetlb_temporary:
            dst.flags &= ~PG_hugetlb_temporary
            src.flags |= PG_hugetlb_temporary

    def free_huge_folio(self, folio: Folio) -> None:
        """Last reference dropped: back to the pool, or to the buddy allocator when
        temporary.  A folio that is not an in-use hugetlb folio without references is
        a recorded warning.  Kernel: mm/hugetlb.c:free_huge_folio (v6.12)."""
        if self._usable_folio(folio, "free_huge_folio") is None:
            return
        if folio.kind != KIND_HUGETLB or folio.hstate is None or folio._refcount \
                or folio in folio.hstate.free_list:
            self._warn("free_huge_folio", "free_huge_folio of a folio that is not an unreferenced "
                                          "in-use hugetlb folio (VM_BUG_ON_FOLIO)", folio=folio)
            return
        h = folio.hstate
        folio.mapping = None
        folio.flags &= ~(PG_hugetlb_migratable | PG_anon_exclusive)
        folio.zero()
        if folio.flags & PG_hugetlb_temporary:
            h.nr_huge_pages -= 1
            self._free_folio_to_buddy(folio)
            return
        h.free_list.append(folio)
        h.free_huge_pages += 1

    def dissolve_free_hugetlb_folios(self, start_pfn: int, end_pfn: int) -> int:
        """Return free pool folios in ``[start_pfn, end_pfn)`` to the buddy allocator,
        keeping reservations satisfiable; -EBUSY when that is impossible.

        Kernel: mm/hugetlb.c:dissolve_free_hugetlb_folios (v6.12).
        """
        import errno
        for h in self._hstates.values():
            for folio in list(h.free_list):
                if not start_pfn <= folio.pfn < end_pfn:
                    continue
                if h.free_huge_pages - h.resv_huge_pages <= 0:
                    return -errno.EBUSY
                h.free_list.remove(folio)
                h.free_huge_pages -= 1
                h.nr_huge_pages -= 1
                self._free_folio_to_buddy(folio)
        return 0

    def _alloc_and_dissolve_hugetlb_folio(self, old: Folio, lst: list[Folio]) -> int:
        """Kernel: mm/hugetlb.c:alloc_and_dissolve_hugetlb_folio (v6.12; 6.1's
        alloc_and_dissolve_huge_page alike): a free pool folio is replaced by a fresh
        one from the buddy allocator (``htlb_alloc_mask | __GFP_THISNODE``; never from
        an isolated pageblock) and goes back to the buddy allocator itself; a folio
        someone holds is isolated onto *lst* instead.  0, -ENOMEM (no replacement) or
        -EBUSY (held and not isolable)."""
        import errno
        h = old.hstate
        if old.freed or old.kind != KIND_HUGETLB or h is None:
            return 0                            # dissolved from under us
        if old._refcount:
            return 0 if self.folio_isolate_hugetlb(old, lst) else -errno.EBUSY
        new = self._alloc_fresh_hugetlb_folio(h, self.current_gfp_context(_HTLB_ALLOC_MASK) | _g._NOWARN)
        if new is None:
            return -errno.ENOMEM
        new._refcount = 0
        h.free_list.remove(old)
        h.free_list.append(new)                 # remove_hugetlb_folio + enqueue: counts unchanged
        self._trace("hugetlb_replace", folio=old,
                    message=f"free hugetlb folio at pfn {old.pfn:#x} replaced by pfn {new.pfn:#x}")
        self._free_folio_to_buddy(old)
        return 0

    def isolate_or_dissolve_huge_page(self, page: Page | Folio, lst: list[Folio]) -> int:
        """What contiguous allocation does with a hugetlb folio in its range: 0 when it
        is not hugetlb, was isolated onto *lst* (in use) or was replaced (free pool
        folio, see :meth:`_alloc_and_dissolve_hugetlb_folio`); -EBUSY when in use and
        not isolable; -ENOMEM for a gigantic (1 GiB) folio, which makes
        ``alloc_contig_range`` give up at once, or when no replacement can be
        allocated.  A freed folio or one of another machine is a recorded warning and 0.
        Kernel: mm/hugetlb.c:isolate_or_dissolve_huge_page (v5.13+: the same
        in 6.1.192, 6.12.118 and v6.17 -- v6.16 renamed it isolate_or_dissolve_huge_folio)."""
        import errno
        folio = self._usable_folio(page, "isolate_or_dissolve_huge_page", "page")
        if folio is None or folio.kind != KIND_HUGETLB:
            return 0
        if folio.order > MAX_PAGE_ORDER:
            return -errno.ENOMEM
        return self._alloc_and_dissolve_hugetlb_folio(folio, lst)

    def replace_free_hugepage_folios(self, start_pfn: int, end_pfn: int) -> int:
        """Replace every free pool folio in ``[start_pfn, end_pfn)`` by a fresh one
        outside it, freeing the old one to the buddy allocator: what
        ``alloc_contig_range`` does after migration, when the migrated in-use hugetlb
        folios have gone back to the pool inside the range.  0, or the first error
        (-ENOMEM: no replacement; a gigantic folio is -ENOMEM too).
        Kernel: mm/hugetlb.c:replace_free_hugepage_folios ('mm: replace free hugepage
        folios after migration', v6.14; in 6.12.y, read in 6.12.118; absent from
        6.1.192).  Absent (AttributeError) for ``MMConfig.kernel`` "6.1" and "6.6"."""
        import errno
        for h in self._hstates.values():
            for folio in [f for f in h.free_list if start_pfn <= f.pfn < end_pfn]:
                if folio.order > MAX_PAGE_ORDER:
                    ret = -errno.ENOMEM     # alloc_and_dissolve cannot allocate a gigantic one
                else:
                    lst: list[Folio] = []
                    ret = self._alloc_and_dissolve_hugetlb_folio(folio, lst)
                    self.putback_movable_pages(lst)
                if ret:
                    return ret
        return 0

    def folio_test_hugetlb(self, folio: Folio) -> bool:
        """Whether *folio* is a hugetlb folio.  Kernel: include/linux/page-flags.h:folio_test_hugetlb
        (a page type since v6.10; v6.12)."""
        return folio.kind == KIND_HUGETLB
