"""CMA areas and contiguous allocation.

Kernel: mm/cma.c (cma_alloc, cma_release, cma_activate_area), mm/page_alloc.c
(alloc_contig_range, __alloc_contig_migrate_range, free_contig_range),
mm/compaction.c (isolate_migratepages_range), v6.12.

``cma_alloc`` searches the area's bitmap for a free, aligned range and asks
``alloc_contig_range`` for it.  That isolates the pageblocks, drains the per-cpu lists,
disables the LRU batches and migrates every in-use folio out (five tries on the same
folios before -EBUSY), then takes the now-free pages.  On -EBUSY ``cma_alloc`` moves to the
next aligned slot ("memory range at pfn ... is busy, retrying") and finally returns
``None``.  A short-term pin or a plain reference on a page in the area makes exactly that
happen; a long-term pin can never be there, because GUP migrates out of CMA first.

.. note:: The pages of a successful contiguous allocation are represented by one block
   object (``kind == "contig"``, ``nr_pages == count``), not by ``count`` order-0 pages
   with their own refcounts.
"""

from __future__ import annotations

import errno
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from . import gfp as _g
from .folio import KIND_ANON, KIND_CONTIG, KIND_HUGETLB, PG_lru, Folio, Page
from .gfp import MIGRATE_CMA, MIGRATE_ISOLATE, MIGRATE_MOVABLE
from .migrate import MIGRATE_SYNC, MR_CONTIG_RANGE, MigrationTargetControl

ALLOC_CONTIG_TRIES = 5
COMPACT_CLUSTER_MAX = 32
# __alloc_contig_verify_gfp_mask (v6.12+): reclaim modifiers and a few action modifiers
_CONTIG_GFP_ALLOWED = int(_g.gfp_t.IO | _g.gfp_t.FS | _g.gfp_t.DIRECT_RECLAIM | _g.gfp_t.KSWAPD_RECLAIM
                          | _g.gfp_t.COMP | _g.gfp_t.RETRY_MAYFAIL | _g.gfp_t.NOWARN | _g.gfp_t.ZERO)
# placement hints __alloc_contig_verify_gfp_mask drops before checking (zone bits too)
_CONTIG_GFP_IGNORED = int(_g.gfp_t.DMA | _g.gfp_t.DMA32 | _g.gfp_t.HIGHMEM | _g.gfp_t.MOVABLE
                          | _g.gfp_t.RECLAIMABLE | _g.gfp_t.WRITE | _g.gfp_t.HARDWALL | _g.gfp_t.THISNODE)
_CONTIG_GFP_KEEP = int(_g.gfp_t.IO | _g.gfp_t.FS | _g.gfp_t.DIRECT_RECLAIM | _g.gfp_t.KSWAPD_RECLAIM
                       | _g.gfp_t.RETRY_MAYFAIL | _g.gfp_t.NOWARN)


class CMA:
    """``struct cma``: one area (``name``, ``base_pfn``, ``count``).  The bitmap is kept
    as sorted ``[start, end)`` runs of allocated page offsets (order_per_bit 0)."""

    def __init__(self, name: str, base_pfn: int, count: int) -> None:
        self.name = name
        self.base_pfn = base_pfn
        self.count = count
        self.order_per_bit = 0
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.alloc_pages_success = 0
        self.alloc_pages_fail = 0

    @property
    def available_count(self) -> int:
        """Pages of the area not allocated (``cma->available_count``)."""
        return self.count - sum(e - s for s, e in zip(self._starts, self._ends))

    @property
    def end_pfn(self) -> int:
        """First pfn after the area (``base_pfn + count``)."""
        return self.base_pfn + self.count

    def _find_zero_area(self, start: int, nr: int, mask: int) -> int:
        """bitmap_find_next_zero_area_off: first aligned free run of *nr* bits >= start."""
        off = self.base_pfn & mask
        pos = ((start + off + mask) & ~mask) - off
        starts, ends = self._starts, self._ends
        while pos + nr <= self.count:
            i = bisect_left(ends, pos + 1)
            if i == len(starts) or starts[i] >= pos + nr:
                return pos
            pos = ((ends[i] + off + mask) & ~mask) - off
        return -1

    def _set(self, pos: int, nr: int) -> None:
        i = bisect_left(self._starts, pos)
        self._starts.insert(i, pos)
        self._ends.insert(i, pos + nr)

    def _clear(self, pos: int, nr: int) -> bool:
        i = bisect_left(self._starts, pos)
        if i < len(self._starts) and self._starts[i] == pos and self._ends[i] == pos + nr:
            del self._starts[i], self._ends[i]
            return True
        return False

    def __repr__(self) -> str:
        return f"<cma {self.name!r} base_pfn={self.base_pfn:#x} count={self.count} available={self.available_count}>"


if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object


class CmaMixin(_Base):
    """CMA / contiguous-allocation half of :class:`~pytest_pinfault.FakeMM`."""

    def cma_alloc(self, cma: CMA | str, count: int, align: int, no_warn: bool = False) -> Page | None:
        """Allocate *count* contiguous pages aligned to ``2**align`` from *cma*.

        Returns the first page, or ``None`` (count 0, larger than the area, or no slot
        could be migrated free).  Release with :meth:`cma_release`.
        Kernel: mm/cma.c:cma_alloc (v6.12).
        """
        area = self._cma_lookup(cma)
        for name, v in (("count", count), ("align", align)):
            if not isinstance(v, int):
                raise TypeError(f"cma_alloc: {name} must be an int, got {type(v).__name__}")
        # a negative count or align is the kernel's unsigned wrap: far too large
        if area is None or count <= 0 or count > area.count or not 0 <= align < 64 \
                or (1 << align) > area.count:
            return None
        mask = (1 << align) - 1
        start = 0
        page = None
        while True:
            pos = area._find_zero_area(start, count, mask)
            if pos < 0:
                break
            area._set(pos, count)
            pfn = area.base_pfn + pos
            ret = self.alloc_contig_range(pfn, pfn + count, MIGRATE_CMA,
                                          _g.GFP_KERNEL | (_g.gfp_t.NOWARN if no_warn else 0))
            if ret == 0:
                page = Page(self._contig_blocks[pfn], pfn)
                break
            area._clear(pos, count)
            if ret != -errno.EBUSY:
                break
            self._trace("cma_busy", cma=area.name, pfn=pfn,
                        message=f"memory range at pfn {pfn:#x} is busy, retrying")
            start = pos + mask + 1
            busy = self._contig_busy_pfn
            if busy is not None and pfn <= busy < pfn + count and not self.faults.active:
                # every later slot holding the same busy pfn fails the same way (no
                # fault is armed to change that): go straight past it
                start = max(start, busy - area.base_pfn + 1)
        if page is None:
            area.alloc_pages_fail += count
            self.stats.cma_alloc_fail += 1
            if not no_warn:
                self._trace("cma_alloc_fail", cma=area.name, count=count, message=f"{area.name}: alloc failed, req-size: {count} pages")
        else:
            area.alloc_pages_success += count
            self.stats.cma_alloc_success += 1
        return page

    def cma_release(self, cma: CMA | str, pages: Page | Folio | None, count: int) -> bool:
        """Free pages from :meth:`cma_alloc`; False when they are not from this area.

        Kernel: mm/cma.c:cma_release (v6.12).
        """
        area = self._cma_lookup(cma)
        if area is None or pages is None:
            return False
        pfn = pages.pfn
        if not area.base_pfn <= pfn < area.end_pfn or pfn + count > area.end_pfn:
            return False
        block = self._contig_blocks.get(pfn)
        if block is None or block.nr_pages != count:
            self._warn("cma_release", f"cma_release of {count} pages at pfn {pfn:#x} not allocated as such")
            return False
        self.free_contig_range(pfn, count)
        area._clear(pfn - area.base_pfn, count)
        return True

    def _cma_lookup(self, cma: CMA | str) -> CMA | None:
        if isinstance(cma, CMA):
            return cma
        for area in self.cma_areas:
            if area.name == cma:
                return area
        return None

    def free_contig_range(self, pfn: int, nr_pages: int) -> None:
        """Free a contiguous allocation made by :meth:`alloc_contig_range` (the whole
        block; anything else is a recorded warning and frees nothing).

        As the kernel's ``__free_page()`` loop, the pages go back one by one as order-0
        frees through the current cpu's per-cpu lists, so the last ones freed serve the
        next order-0 movable allocations (CMA pages included) before the buddy lists do.
        Kernel: mm/page_alloc.c:free_contig_range (v6.12 and v6.1), free_unref_page.
        """
        block = self._contig_blocks.pop(pfn, None)
        if block is None or block.nr_pages != nr_pages:
            self._warn("free_contig_range", f"free_contig_range({pfn:#x}, {nr_pages}) of unallocated range")
            return
        self.folio_put(block)

    def alloc_contig_range(self, start: int, end: int, migratetype: int = MIGRATE_MOVABLE,
                           gfp: int = int(_g.GFP_KERNEL)) -> int:
        """Make ``[start, end)`` free and allocate it: 0, -EINVAL (bad gfp), -EBUSY
        (unmovable pages, or pages that would not migrate: "PFNs busy"), -ENOMEM, -EINTR.

        *migratetype* is MIGRATE_MOVABLE or MIGRATE_CMA (the kernel's documented
        values); another is a recorded warning and -EINVAL.
        Kernel: mm/page_alloc.c:alloc_contig_range (v6.12 argument form).
        """
        for name, v in (("start", start), ("end", end), ("migratetype", migratetype)):
            if not isinstance(v, int):
                raise TypeError(f"alloc_contig_range: {name} must be an int, got {type(v).__name__}")
        if migratetype not in (MIGRATE_MOVABLE, MIGRATE_CMA):
            self._warn("alloc_contig_range", f"migratetype {migratetype}: expected MIGRATE_MOVABLE or MIGRATE_CMA")
            return -errno.EINVAL
        gfp = self.current_gfp_context(gfp) & ~_CONTIG_GFP_IGNORED
        if gfp & ~_CONTIG_GFP_ALLOWED:
            return -errno.EINVAL
        zone = self._pfn_zone(start)
        if zone is None or self._pfn_zone(end - 1) is not zone or start >= end:
            return -errno.EINVAL
        # pageblocks are isolated whole, but only [start, end) is checked for unmovable
        # pages and must end up free: neighbours in the same pageblock may stay in use
        self._contig_busy_pfn = None
        ret = self.start_isolate_page_range(start, end, migratetype, 0)
        if ret:
            self._contig_busy_pfn = self._isolate_fail_pfn
            return ret
        try:
            self.drain_all_pages(zone)
            ret = self._alloc_contig_migrate_range(start, end, gfp)
            if ret in (0, -errno.EBUSY) and self.config.kernel_at_least("6.12"):
                # in-use hugetlb folios migrated out went back to the pool inside the
                # range: replace them (v6.14, in 6.12.y); before, they stay and
                # test_pages_isolated below finds the range busy
                rep = self.replace_free_hugepage_folios(start, end)
                if rep:
                    ret = rep
            # a migration -EBUSY is not returned as such: the kernel falls through to
            # test_pages_isolated, which decides (busy pages may have been freed since)
            if ret in (0, -errno.EBUSY) and self.test_pages_isolated(start, end, 0):
                busy = next(iter(self.folios_in_range(start, end)), None)
                if ret == 0 or self._contig_busy_pfn is None:
                    self._contig_busy_pfn = None if busy is None else max(busy.pfn, start)
                self._trace("contig_busy", folio=busy,
                            message=f"alloc_contig_range: [{start:x}, {end:x}) PFNs busy")
                ret = -errno.EBUSY
            elif ret == -errno.EBUSY:
                ret = 0
            if ret == 0:
                self._take_isolated(zone, start, end)
        finally:
            self.undo_isolate_page_range(start, end, migratetype)     # whole pageblocks
        return ret

    def _take_isolated(self, zone: Any, start: int, end: int) -> None:
        zone.free[MIGRATE_ISOLATE].remove_range(start, end)
        block = Folio(self, start, 0, zone, KIND_CONTIG)
        block.nr_pages = end - start
        self._sections_for(start)[start] = block
        self._contig_blocks[start] = block
        self._nr_allocated += block.nr_pages

    def _alloc_contig_migrate_range(self, start: int, end: int, gfp: int) -> int:
        """Kernel: mm/page_alloc.c:__alloc_contig_migrate_range (v6.12): isolate up to
        COMPACT_CLUSTER_MAX pages at a time and migrate them, five tries per batch."""
        mtc = MigrationTargetControl(gfp_mask=(gfp & _CONTIG_GFP_KEEP) | _g._MOVABLE | int(_g.gfp_t.RETRY_MAYFAIL),
                                     reason=MR_CONTIG_RANGE)
        self.lru_cache_disable()
        lst: list[Folio] = []
        ret = 0
        tries = 0
        pfn = start
        try:
            while pfn < end or lst:
                if self.current.fatal_signal_pending:
                    ret = -errno.EINTR
                    break
                if not lst:
                    pfn = self._isolate_migratepages_range(pfn, end, lst)
                    if pfn < 0:
                        ret = pfn
                        break
                    tries = 0
                    if not lst:
                        continue
                else:
                    tries += 1
                    if tries == ALLOC_CONTIG_TRIES:
                        ret = -errno.EBUSY
                        break
                ret = self.migrate_pages(lst, self.alloc_migration_target, None, mtc,
                                         MIGRATE_SYNC, MR_CONTIG_RANGE)
                if ret == -errno.ENOMEM:
                    break
        finally:
            self.lru_cache_enable()
        if ret < 0:
            if ret == -errno.EBUSY and lst:
                self._contig_busy_pfn = max(lst[0].pfn, start)
            if ret == -errno.EBUSY and lst and not gfp & _g._NOWARN:
                self._trace("contig_busy", folio=lst[0], message="page dumped because: migration failure")
            self.putback_movable_pages(lst)
            return ret
        return 0

    def _isolate_migratepages_range(self, start: int, end: int, lst: list[Folio]) -> int:
        """Kernel: mm/compaction.c:isolate_migratepages_range (v6.12): isolate LRU
        folios and in-use hugetlb folios from *start* until COMPACT_CLUSTER_MAX pages are
        on *lst*; return the pfn to continue from, or -ENOMEM (a gigantic hugetlb folio,
        or no replacement for a free pool folio).  Free hugetlb pool folios are replaced
        (isolate_or_dissolve_huge_page, v5.13+).  Anonymous folios with more references
        than mappings ("pinned", the racy pre-check) are skipped."""
        nr = 0
        for folio in list(self.folios_in_range(start, end)):
            if nr >= COMPACT_CLUSTER_MAX:
                return folio.pfn
            if folio.kind == KIND_HUGETLB:
                # isolate_migratepages_block -> isolate_or_dissolve_huge_page: in use,
                # isolated; free, replaced; gigantic, -ENOMEM (abort right away)
                held = len(lst)
                ret = self.isolate_or_dissolve_huge_page(folio, lst)
                if ret == -errno.ENOMEM:
                    return ret
                if len(lst) > held:
                    nr += folio.nr_pages
                continue
            if not folio.flags & PG_lru:
                continue
            if folio.kind == KIND_ANON and folio._refcount > folio._mapcount:
                continue
            if self.folio_isolate_lru(folio):
                self.node_stat_mod_isolated(folio, folio.nr_pages)
                lst.append(folio)
                nr += folio.nr_pages
        return end
