"""The page allocator: zonelists, watermarks, migratetype fallback, CMA, per-cpu lists.

Kernel: mm/page_alloc.c (v6.12): __alloc_pages, get_page_from_freelist, rmqueue,
rmqueue_pcplist, rmqueue_bulk, __rmqueue (with enum rmqueue_mode), __rmqueue_claim,
__rmqueue_steal, __rmqueue_fallback, steal_suitable_fallback,
free_unref_page, free_pcppages_bulk, __free_one_page, drain_all_pages; include/linux/
sched/mm.h: memalloc_pin_save/restore, current_gfp_context.

The kernel's rules the model keeps:

* ``current_gfp_context()``: under PF_MEMALLOC_PIN ``__GFP_MOVABLE`` is cleared, so the
  allocation is not MIGRATE_MOVABLE, may not use ZONE_MOVABLE and, lacking ALLOC_CMA, no
  CMA pageblock either.
* The zonelist runs from ``gfp_zone(gfp)`` down to ZONE_DMA; a zone is used only if its
  free pages (not counting free CMA pages unless ALLOC_CMA) stay above the min watermark.
* ``__rmqueue``: movable requests use CMA first when more than half of the zone's free
  pages are CMA; otherwise their own free list, then CMA, then the fallback types.
  The fallback follows ``MMConfig.kernel``: 6.1 and 6.6 use the largest fallback buddy
  (``__rmqueue_fallback``, ``steal_suitable_fallback``), 6.12 and 6.17 try to claim
  from the largest down and otherwise steal the smallest (``__rmqueue_claim``,
  ``__rmqueue_steal``); a pageblock is claimed when at least half of it is free, and
  whether a claim is tried depends on the order of the buddy found
  (``can_steal_fallback``).  In 6.12 and 6.17 a per-cpu refill (``rmqueue_bulk``)
  carries an ``rmqueue_mode`` between its ``__rmqueue`` calls, so a claim that failed is
  not tried again in the same refill.
* Orders 0..3 and the THP order go through per-cpu lists with the zone's batch/high;
  CMA pages freed there land on the *movable* list.  There are two THP lists (movable and
  not) unless the ``pcp_thp_shared_list`` quirk restores the single shared one.

.. note:: No kswapd.  An allocation that finds no free block in its zonelist and may
   reclaim (``__GFP_DIRECT_RECLAIM``) reclaims and compacts first (mm/vmscan.py);
   otherwise, or when that frees nothing usable, it returns ``None`` (OOM).  ``lowmem_reserve`` and ``ALLOC_HIGHATOMIC`` are
   not modelled.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Iterator

from . import gfp as _g
from .folio import KIND_BALLOON, KIND_KERNEL, PG_lru, Folio, Page
from .gfp import (MIGRATE_CMA, MIGRATE_HIGHATOMIC, MIGRATE_ISOLATE, MIGRATE_MOVABLE,
                  MIGRATE_PCPTYPES, MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE, ZONE_NORMAL)
from .mmzone import (HPAGE_PMD_ORDER, MAX_PAGE_ORDER, PAGE_ALLOC_COSTLY_ORDER, SECTION_SHIFT,
                     pageblock_nr_pages, pageblock_order)
from .sched import PF_MEMALLOC_PIN

if TYPE_CHECKING:  # pragma: no cover
    from .mmzone import Zone

# fallbacks[] of mm/page_alloc.c (v6.12)
FALLBACKS = {
    MIGRATE_UNMOVABLE: (MIGRATE_RECLAIMABLE, MIGRATE_MOVABLE),
    MIGRATE_MOVABLE: (MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE),
    MIGRATE_RECLAIMABLE: (MIGRATE_UNMOVABLE, MIGRATE_MOVABLE),
}

NR_LOWORDER_PCP_LISTS = MIGRATE_PCPTYPES * (PAGE_ALLOC_COSTLY_ORDER + 1)
NR_PCP_LISTS = NR_LOWORDER_PCP_LISTS + 2

# GFP_ZONE_TABLE (include/linux/gfp.h): gfp_zone() of every combination of the zone
# modifier bits, so the allocation path indexes a tuple instead of calling gfp_zone().
GFP_ZONEMASK = _g._DMA | _g._HIGHMEM | _g._DMA32 | _g._MOVABLE
GFP_ZONE_TABLE = tuple(_g.gfp_zone(bits) for bits in range(GFP_ZONEMASK + 1))

# plain-int gfp bits read on every allocation
_MOVABLE = _g._MOVABLE
_RECLAIMABLE = _g._RECLAIMABLE
_NOFAIL = _g._NOFAIL
_DIRECT_RECLAIM = int(_g.gfp_t.DIRECT_RECLAIM)
_HIGH = _g._HIGH

_STEER = ("cma", "movable", "normal")

# enum rmqueue_mode (mm/page_alloc.c, 6.12.118 and v6.15+): where __rmqueue starts its
# search in the next call of the same rmqueue_bulk
RMQUEUE_NORMAL, RMQUEUE_CMA, RMQUEUE_CLAIM, RMQUEUE_STEAL = range(4)


def account_freepages(zone: "Zone", nr: int, mt: int) -> None:
    """NR_FREE_PAGES/NR_FREE_CMA_PAGES += nr; isolated pages are not counted as free.

    Kernel: mm/page_alloc.c:account_freepages (v6.12).
    """
    if mt == MIGRATE_ISOLATE:
        return
    zone.nr_free += nr
    if mt == MIGRATE_CMA:
        zone.nr_free_cma += nr


if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object


class PageAllocMixin(_Base):
    """Allocator half of :class:`~pytest_pinfault.FakeMM` (see module docstring)."""

    # ------------------------------------------------------------------ gfp context
    def memalloc_pin_save(self) -> int:
        """Set PF_MEMALLOC_PIN on the current task; return the previous state.

        Kernel: include/linux/sched/mm.h:memalloc_pin_save (v5.13+).
        """
        task = self.current
        old = task.flags & PF_MEMALLOC_PIN
        task.flags |= PF_MEMALLOC_PIN
        return old

    def memalloc_pin_restore(self, flags: int) -> None:
        """Restore PF_MEMALLOC_PIN to what :meth:`memalloc_pin_save` returned.

        Kernel: include/linux/sched/mm.h:memalloc_pin_restore (v5.13+).
        """
        task = self.current
        task.flags = (task.flags & ~PF_MEMALLOC_PIN) | (flags & PF_MEMALLOC_PIN)

    def current_gfp_context(self, gfp: int) -> int:
        """Apply the task's scoped constraints: PF_MEMALLOC_PIN clears __GFP_MOVABLE.

        Kernel: include/linux/sched/mm.h:current_gfp_context (v6.12).
        """
        gfp = int(gfp)
        if self.current.flags & PF_MEMALLOC_PIN:
            gfp &= ~_g._MOVABLE
        return gfp

    # ------------------------------------------------------------------ steering
    @contextlib.contextmanager
    def steer(self, where: str) -> Iterator[None]:
        """Bias *movable* allocations toward ``"cma"``, ``"movable"`` (ZONE_MOVABLE) or
        ``"normal"`` (neither ZONE_MOVABLE nor CMA) inside the ``with`` block.

        Steering changes where memory comes from, never the contract: allocations under
        PF_MEMALLOC_PIN or without __GFP_MOVABLE are not affected, and when the preferred
        placement is full the allocator falls back to its normal choice.
        """
        if where not in _STEER:
            raise ValueError(f"steer: expected one of {_STEER}, got {where!r}")
        old = self._steer
        self._steer: str | None = where
        try:
            yield
        finally:
            self._steer = old

    # ------------------------------------------------------------------ public API
    def alloc_pages(self, gfp: int, order: int) -> Page | None:
        """Allocate ``2**order`` contiguous pages; return the first page or ``None``.

        The block is a kernel allocation (not on the LRU, refcount 1), released with
        :meth:`__free_pages` / :meth:`put_page`.  Hits the ``alloc_pages`` fault site.
        An order above MAX_PAGE_ORDER (or negative: the kernel's unsigned wrap) is
        ``None`` with the WARN_ON_ONCE_GFP recorded unless __GFP_NOWARN.
        Kernel: mm/page_alloc.c:alloc_pages, __alloc_pages (v6.12; ``alloc_pages_noprof``).
        """
        if not (type(order) is int and 0 <= order <= MAX_PAGE_ORDER and isinstance(gfp, int)) \
                and not self._order_ok("alloc_pages", gfp, order):
            return None
        folio = self._alloc_folio(gfp, order, KIND_KERNEL)
        return None if folio is None else Page(folio, folio.pfn)

    def folio_alloc(self, gfp: int, order: int) -> Folio | None:
        """Allocate a folio of *order* (``__GFP_COMP`` implied); ``None`` on failure.

        Kernel: mm/page_alloc.c:folio_alloc / __folio_alloc (v6.12).
        """
        if not (type(order) is int and 0 <= order <= MAX_PAGE_ORDER and isinstance(gfp, int)) \
                and not self._order_ok("folio_alloc", gfp, order):
            return None
        return self._alloc_folio(int(gfp) | _g._COMP, order, KIND_KERNEL)

    def _order_ok(self, site: str, gfp: Any, order: Any) -> bool:
        """__alloc_pages' bound: ``WARN_ON_ONCE_GFP(order > MAX_PAGE_ORDER, gfp)``."""
        if not isinstance(gfp, int):
            raise TypeError(f"{site}: gfp must be an int (gfp_t), got {type(gfp).__name__}")
        if not isinstance(order, int):
            raise TypeError(f"{site}: order must be an int, got {type(order).__name__}")
        if 0 <= order <= MAX_PAGE_ORDER:
            return True
        if not int(gfp) & _g._NOWARN:
            self._warn(site, f"WARN_ON_ONCE_GFP(order > MAX_PAGE_ORDER): order {order}")
        return False

    def free_pages_block(self, page: Page | Folio, order: int) -> None:
        """Drop the allocation reference of a block from :meth:`alloc_pages`.

        Kernel: mm/page_alloc.c:__free_pages (v6.12).
        """
        folio = page.folio
        if folio.order != order:
            self._warn("free_pages_order_mismatch",
                       f"__free_pages order {order} on a folio of order {folio.order}", folio=folio)
        self.folio_put(folio)

    # ------------------------------------------------------------------ core
    def _alloc_folio(self, gfp: int, order: int, kind: str) -> Folio | None:
        """The allocation core: the task's gfp context (current_gfp_context), the
        ``alloc_pages`` fault site, the freelists, and a new :class:`Folio` (refcount 1)
        indexed by its pfn; ``None`` when the allocation fails.

        Without an observer, an order-0 allocation that is not steered takes its page
        here, written out: get_page_from_freelist's zone walk with the watermark check,
        and rmqueue's per-cpu list (refilled by :meth:`_rmqueue` when empty);
        tests/mm/test_hot_paths.py checks that both ways leave the same state."""
        if type(gfp) is not int:
            gfp = int(gfp)
        task = self.current
        if task.flags & PF_MEMALLOC_PIN:
            gfp &= ~_MOVABLE
        fi = self.faults
        if fi.active and not gfp & _NOFAIL and fi.hit("alloc_pages", gfp=gfp, order=order) is not None:
            self._trace("alloc_fail", gfp=gfp, order=order, reason="fault")
            return None
        if order or self._pcp_disabled or (gfp & _MOVABLE and self._steer is not None) \
                or self._ref_watch is not None:
            pfn, zone = self._get_page_from_freelist(gfp, order)
        else:
            pfn, zone = -1, None
            if gfp & _MOVABLE:                          # gfp_migratetype()
                mt = MIGRATE_MOVABLE
                alloc_cma = True
            else:
                mt = MIGRATE_RECLAIMABLE if gfp & _RECLAIMABLE else MIGRATE_UNMOVABLE
                alloc_cma = False
            high = gfp & _HIGH
            cpu = task.cpu
            for z in self._zonelists[GFP_ZONE_TABLE[gfp & GFP_ZONEMASK]]:
                # _watermark_ok at order 0
                mark = z.wmark_min
                if high:
                    mark -= mark // 2
                if (z.nr_free if alloc_cma else z.nr_free - z.nr_free_cma) <= mark:
                    continue
                pcp = z.pcp[cpu]
                lst = pcp.lists[mt]
                if lst:
                    pcp.count -= 1
                    pfn = lst.pop()
                else:
                    pfn = self._rmqueue(z, 0, mt, alloc_cma)
                    if pfn < 0:
                        continue
                zone = z
                break
        if pfn < 0 and gfp & _DIRECT_RECLAIM:
            pfn, zone = self._alloc_slowpath(gfp, order)     # reclaim, compaction (mm/vmscan.py)
        if pfn < 0:
            self.stats.oom += 1
            if self.trace.on:
                self._trace("alloc_fail", gfp=gfp, order=order, reason="oom")
            return None
        folio = Folio(self, pfn, order, zone, kind)
        sections = self._sections
        sec = sections.get(pfn >> SECTION_SHIFT)
        if sec is None:
            sec = sections[pfn >> SECTION_SHIFT] = {}
        sec[pfn] = folio
        self._nr_allocated += 1 << order
        if self.trace.verbose:
            self._trace("alloc", folio=folio, gfp=gfp, order=order)
        return folio

    def _zonelist(self, gfp: int) -> list["Zone"]:
        return self._zonelists[GFP_ZONE_TABLE[gfp & GFP_ZONEMASK]]

    def _get_page_from_freelist(self, gfp: int, order: int) -> tuple[int, Any]:
        if gfp & _MOVABLE:                              # gfp_migratetype()
            mt = MIGRATE_MOVABLE
            steer = self._steer
            if steer is not None:
                pfn, zone = self._steered(gfp, order, steer)
                if pfn >= 0:
                    return pfn, zone
        else:
            mt = MIGRATE_RECLAIMABLE if gfp & _RECLAIMABLE else MIGRATE_UNMOVABLE
        alloc_cma = mt == MIGRATE_MOVABLE
        watermark_ok, rmqueue = self._watermark_ok, self._rmqueue
        for zone in self._zonelists[GFP_ZONE_TABLE[gfp & GFP_ZONEMASK]]:
            if not watermark_ok(zone, order, alloc_cma, gfp):
                continue
            pfn = rmqueue(zone, order, mt, alloc_cma)
            if pfn >= 0:
                return pfn, zone
        return -1, None

    def _steered(self, gfp: int, order: int, steer: str) -> tuple[int, Any]:
        if steer == "movable":
            zone = self.zones.get("Movable")
            if zone is not None and self._watermark_ok(zone, order, True, gfp):
                pfn = self._rmqueue_direct(zone, order, MIGRATE_MOVABLE, True, False)
                if pfn >= 0:
                    return pfn, zone
            return -1, None
        for zone in self._zonelists[ZONE_NORMAL]:
            if steer == "cma":
                pfn = self._buddy_take(zone, MIGRATE_CMA, order)
            else:
                if not self._watermark_ok(zone, order, False, gfp):
                    continue
                pfn = self._rmqueue_direct(zone, order, MIGRATE_MOVABLE, False, False)
            if pfn >= 0:
                return pfn, zone
        return -1, None

    @staticmethod
    def _watermark_ok(zone: "Zone", order: int, alloc_cma: bool, gfp: int) -> bool:
        free = zone.nr_free - (1 << order) + 1
        if not alloc_cma:
            free -= zone.nr_free_cma
        mark = zone.wmark_min
        if gfp & _g._HIGH:
            mark -= mark // 2
        return free > mark

    def _pindex(self, order: int, mt: int) -> int:
        """order_to_pindex: the per-cpu list for blocks of *order* and pcp type *mt*."""
        if order == HPAGE_PMD_ORDER:
            if self._pcp_thp_shared:
                return NR_LOWORDER_PCP_LISTS
            return NR_LOWORDER_PCP_LISTS + (0 if mt == MIGRATE_MOVABLE else 1)
        return MIGRATE_PCPTYPES * order + mt

    def _rmqueue(self, zone: "Zone", order: int, mt: int, alloc_cma: bool) -> int:
        """rmqueue: orders up to PAGE_ALLOC_COSTLY_ORDER and the THP order come from the
        current cpu's per-cpu list, refilled with ``batch`` blocks when empty
        (rmqueue_pcplist / rmqueue_bulk); other orders from the buddy lists.

        A per-cpu list is a Python list whose *end* is the kernel's list head: a free
        appends there and an allocation pops the most recently freed block; a refill
        lands at the other end (list_add_tail), the first block taken nearest the head.
        """
        if order > PAGE_ALLOC_COSTLY_ORDER and order != HPAGE_PMD_ORDER or self._pcp_disabled:
            return self._rmqueue_direct(zone, order, mt, alloc_cma, True)
        pcp = zone.pcp[self.current.cpu]
        lst = pcp.lists[MIGRATE_PCPTYPES * order + mt if order <= PAGE_ALLOC_COSTLY_ORDER
                        else self._pindex(order, mt)]
        if not lst:
            taken = self._rmqueue_bulk(zone, order, max(pcp.batch >> order, 1), mt, alloc_cma)
            if not taken:
                return -1
            taken.reverse()
            lst[:0] = taken
            pcp.count += len(taken) << order
        pcp.count -= 1 << order
        return lst.pop()

    def _rmqueue_bulk(self, zone: "Zone", order: int, count: int, mt: int, alloc_cma: bool) -> list[int]:
        """rmqueue_bulk: up to *count* blocks for a per-cpu list, one ``__rmqueue``
        (:meth:`_rmqueue_direct`) each, in the order taken.

        ``__rmqueue`` takes from the *mt* free list while it has a block, unless ALLOC_CMA
        and CMA holds more than half of the free pages; so the first blocks, as many
        as that rule leaves to the *mt* list, come off it in one go.

        With the claim/steal fallback (``kernel`` 6.12 and 6.17) the refill carries an
        ``rmqueue_mode`` from one ``__rmqueue`` to the next (:meth:`_rmqueue_modal`):
        once the fallback had to steal, the rest of the refill steals without trying a
        claim again.  Kernel: mm/page_alloc.c:rmqueue_bulk (6.12.118, v6.15+).
        """
        taken: list[int] = []
        fl = zone.free[mt]
        n = 1 << order
        if mt < MIGRATE_PCPTYPES and fl.nr_free >= n:
            first = count
            if alloc_cma:       # CMA first once nr_free_cma > (nr_free - j * n) // 2
                first = min(count, (zone.nr_free - 2 * zone.nr_free_cma) // n + 1)
            if first > 0:
                taken = fl.take_many(order, first)
                zone.nr_free -= len(taken) << order
        if self._rmqueue_has_mode:
            mode = [RMQUEUE_NORMAL]         # the first blocks came in RMQUEUE_NORMAL
            rmqueue_modal = self._rmqueue_modal
            while len(taken) < count:
                pfn = rmqueue_modal(zone, order, mt, alloc_cma, mode)
                if pfn < 0:
                    break
                taken.append(pfn)
            return taken
        rmqueue_direct = self._rmqueue_direct
        while len(taken) < count:
            pfn = rmqueue_direct(zone, order, mt, alloc_cma, True)
            if pfn < 0:
                break
            taken.append(pfn)
        return taken

    def _rmqueue_modal(self, zone: "Zone", order: int, mt: int, alloc_cma: bool,
                       mode: list[int]) -> int:
        """``__rmqueue`` with an ``rmqueue_mode`` (``mode[0]``, updated in place), for
        the versions that have it (``kernel`` 6.12 and 6.17).

        After the CMA balance rule, the search starts at the step the mode names and
        falls through the later ones: RMQUEUE_NORMAL the *mt* list, RMQUEUE_CMA the CMA
        list (movable requests; success sets RMQUEUE_CMA), RMQUEUE_CLAIM a pageblock claim
        (success sets RMQUEUE_NORMAL: the *mt* list has pages again), RMQUEUE_STEAL a
        single block stolen from a fallback type (success sets RMQUEUE_STEAL).  Within one
        refill the free lists change only through these calls, so a step that failed is
        not tried again; a claim that would now succeed on a buddy the first search did
        not reach waits for the next refill, as in the kernel.  ``ALLOC_NOFRAGMENT`` is
        not modelled, so the steal step is always allowed.
        Kernel: mm/page_alloc.c:__rmqueue, enum rmqueue_mode (6.12.118; v6.15
        "mm: page_alloc: speed up fallbacks in rmqueue_bulk()", in 6.12.y).
        """
        if alloc_cma and zone.nr_free_cma > zone.nr_free // 2:
            pfn = self._buddy_take(zone, MIGRATE_CMA, order)
            if pfn >= 0:
                return pfn
        m = mode[0]
        if m == RMQUEUE_NORMAL:
            pfn = self._buddy_take(zone, mt, order)
            if pfn >= 0:
                return pfn
        if m <= RMQUEUE_CMA and alloc_cma:
            pfn = self._buddy_take(zone, MIGRATE_CMA, order)
            if pfn >= 0:
                mode[0] = RMQUEUE_CMA
                return pfn
        blocks = None
        if m <= RMQUEUE_CLAIM:
            blocks = self._fallback_blocks(zone, order, mt)
            if not blocks:
                return -1
            pfn = self._rmqueue_claim(zone, order, mt, blocks)
            if pfn >= 0:
                mode[0] = RMQUEUE_NORMAL
                return pfn
        pfn = self._rmqueue_steal(zone, order, mt, blocks)
        if pfn >= 0:
            mode[0] = RMQUEUE_STEAL
        return pfn

    def _rmqueue_direct(self, zone: "Zone", order: int, mt: int, alloc_cma: bool,
                        fallback: bool) -> int:
        """``__rmqueue``: the buddy lists of one zone."""
        if alloc_cma and zone.nr_free_cma > zone.nr_free // 2:
            pfn = self._buddy_take(zone, MIGRATE_CMA, order)
            if pfn >= 0:
                return pfn
        pfn = self._buddy_take(zone, mt, order)
        if pfn >= 0:
            return pfn
        if alloc_cma:
            pfn = self._buddy_take(zone, MIGRATE_CMA, order)
            if pfn >= 0:
                return pfn
        if not fallback:
            return -1
        # the version's fallback, chosen once in FakeMM.__init__ (_rmqueue_fallback_*)
        return self._rmqueue_fallback(zone, order, mt)

    # ------------------------------------------------------------------ fallback
    # The kernel keeps one free list per order and migratetype; the model keeps free
    # extents.  A free extent is the buddy blocks it decomposes into (_buddy_blocks), so
    # "the first block of order o on the fallback list" is the highest-addressed block
    # of exactly order o (the model's LIFO convention, as FreeList.take).

    def _fallback_blocks(self, zone: "Zone", order: int, mt: int,
                         smallest_only: bool = False) -> list[tuple[int, int, int]]:
        """find_suitable_fallback() for every order at once: for each order from
        MAX_PAGE_ORDER down to *order*, the first type of ``fallbacks[mt]`` with a free
        block of exactly that order, as ``(order, fallback type, pfn)``, largest first.

        With *smallest_only*, only the last entry is sure to be right (the smallest
        order and its block): a list's search stops at the first extent that holds a
        block of exactly *order*, and a later type is not searched once one did."""
        found: dict[int, tuple[int, int]] = {}
        stop = order if smallest_only else None
        for fmt in FALLBACKS[mt]:
            fl = zone.free[fmt]
            if fl.nr_free < (1 << order):
                continue
            for o, pfn in _highest_block_per_order(fl, order, 0, 1 << 62, FALLBACK_WINDOW,
                                                   stop).items():
                if o not in found:
                    found[o] = (fmt, pfn)
            if stop is not None and stop in found:
                break
        return [(o, *found[o]) for o in sorted(found, reverse=True)]

    def _take_in(self, zone: "Zone", mt: int, order: int, lo: int, hi: int) -> int:
        """Take a block of *order* from the *mt* list inside ``[lo, hi)``: the smallest
        free buddy block there that holds one (``__rmqueue_smallest`` / ``expand``)."""
        fl = zone.free[mt]
        blocks = _highest_block_per_order(fl, order, lo, hi)
        if not blocks:
            return -1
        o = min(blocks)
        pfn = fl.take(order, blocks[o], blocks[o] + (1 << o))
        if pfn >= 0:
            zone.nr_free -= 1 << order
        return pfn

    def _claim_range(self, zone: "Zone", pfn: int, cur: int, mt: int) -> None:
        """change_pageblock_range(): a free block of pageblock order or more becomes *mt*."""
        for pb in range(pfn >> pageblock_order, (pfn + (1 << cur)) >> pageblock_order):
            self._set_pageblock_migratetype(zone, pb, mt)
        self.stats.pageblock_claimed += 1

    def _try_claim_block(self, zone: "Zone", pfn: int, cur: int, mt: int, fmt: int) -> bool:
        """The pageblock of a fallback block of order *cur* (< pageblock_order) becomes
        *mt* when ``free_pages + alike_pages >= pageblock_nr_pages / 2``: alike are the
        in-use pages of LRU folios for a movable request, and for another request falling
        back to a MOVABLE pageblock every page neither free nor on the LRU (kernel
        allocations, pages on per-cpu lists); none otherwise.  A pageblock that is not
        wholly inside the zone is never claimed.
        Kernel: mm/page_alloc.c:try_to_steal_block, prep_move_freepages_block (6.12.118);
        steal_suitable_fallback, move_freepages_block (6.1.192)."""
        pb_start = pfn & ~(pageblock_nr_pages - 1)
        pb_end = pb_start + pageblock_nr_pages
        if not (zone.zone_start_pfn <= pb_start and pb_end <= zone.zone_end_pfn):
            return False
        half = pageblock_nr_pages // 2
        free = zone.free[fmt].count_range(pb_start, pb_end)
        if free < half:
            # counting stops once the outcome is known: a movable request needs
            # half - free LRU pages; another one claims a MOVABLE block while at most
            # half of it is on the LRU (free + (all - free - lru) = all - lru)
            if mt == MIGRATE_MOVABLE:
                alike = self._lru_pages_in(pb_start, pb_end, half - free)
            elif fmt == MIGRATE_MOVABLE:
                alike = pageblock_nr_pages - free - self._lru_pages_in(pb_start, pb_end, half + 1)
            else:
                alike = 0
            if free + alike < half:
                return False
        self._set_pageblock_migratetype(zone, pfn >> pageblock_order, mt)
        self.stats.pageblock_claimed += 1
        return True

    def _lru_pages_in(self, lo: int, hi: int, enough: int) -> int:
        """Pages of ``[lo, hi)`` (inside one memory section) that belong to folios on the
        LRU (``PageLRU``: a large folio's tail pages count too), counted until *enough*
        are found (the result is then at least *enough*).  The kernel walks the
        pageblock's struct pages the same way (prep_move_freepages_block); the loop
        reads the folio slots directly, as it runs once per page of a claim attempt."""
        nr = 0
        get = self._sections_for(lo).get
        head = self.pfn_to_folio(lo)
        p = lo
        if head is not None and head.pfn < lo:          # a folio reaching in from below
            end = head.pfn + head.nr_pages
            if head._flags & PG_lru:
                nr += (end if end < hi else hi) - lo
            p = end
        while p < hi and nr < enough:
            f = get(p)
            if f is None:
                p += 1
                continue
            end = p + f.nr_pages
            if f._flags & PG_lru:
                nr += (end if end < hi else hi) - p
            p = end
        return nr

    def _rmqueue_fallback_claim_steal(self, zone: "Zone", order: int, mt: int) -> int:
        """6.12.y (read in 6.12.118) and v6.15+: ``__rmqueue_claim``
        (:meth:`_rmqueue_claim`), then ``__rmqueue_steal`` (:meth:`_rmqueue_steal`), as
        ``__rmqueue`` runs them in RMQUEUE_NORMAL mode (a single allocation; a per-cpu
        refill carries its mode, :meth:`_rmqueue_modal`).
        Kernel: mm/page_alloc.c:__rmqueue, __rmqueue_claim, __rmqueue_steal (6.12.118).
        """
        blocks = self._fallback_blocks(zone, order, mt)
        if not blocks:
            return -1
        pfn = self._rmqueue_claim(zone, order, mt, blocks)
        if pfn >= 0:
            return pfn
        return self._rmqueue_steal(zone, order, mt, blocks)

    def _rmqueue_claim(self, zone: "Zone", order: int, mt: int,
                       blocks: list[tuple[int, int, int]]) -> int:
        """``__rmqueue_claim`` over *blocks* (:meth:`_fallback_blocks`); -1 when no
        pageblock converts.

        From the largest fallback block down, while the block's order allows a claim
        (``can_steal_fallback``: order >= pageblock_order / 2, or a non-movable request),
        try to convert the block's pageblock(s) to *mt* (``try_to_steal_block``; v6.15
        calls it ``try_to_claim_block``); a block of pageblock order or more always
        converts, a smaller one when half its pageblock is free or alike; on success the
        request is served from the *mt* list.  A failed attempt moves on to the next
        smaller order.
        Kernel: mm/page_alloc.c:__rmqueue_claim, try_to_steal_block (6.12.118),
        "mm: page_alloc: don't steal single pages from biggest buddy" (v6.15).
        """
        non_movable = mt != MIGRATE_MOVABLE
        for cur, fmt, pfn in blocks:
            if not (cur >= pageblock_order // 2 or non_movable):
                break
            if cur >= pageblock_order:
                self._claim_range(zone, pfn, cur, mt)
                return self._take_in(zone, mt, order, pfn, pfn + (1 << cur))
            if self._try_claim_block(zone, pfn, cur, mt, fmt):
                pb_start = pfn & ~(pageblock_nr_pages - 1)
                return self._take_in(zone, mt, order, pb_start, pb_start + pageblock_nr_pages)
        return -1

    def _rmqueue_steal(self, zone: "Zone", order: int, mt: int,
                       blocks: list[tuple[int, int, int]] | None = None) -> int:
        """``__rmqueue_steal``: the smallest fallback block of at least *order* is split
        and the rest stays on its own list; no pageblock changes type.  -1 when no
        fallback type has a block.

        *blocks* is what :meth:`_fallback_blocks` found, when the caller searched
        already; otherwise the search stops at the first extent holding a block of
        exactly *order* (no smaller one can exist), which finds the block the full
        search finds.  Kernel: mm/page_alloc.c:__rmqueue_steal (6.12.118, v6.15+).
        """
        if blocks is None:
            blocks = self._fallback_blocks(zone, order, mt, smallest_only=True)
            if not blocks:
                return -1
        cur, fmt, pfn = blocks[-1]
        # the block itself is the smallest buddy holding the request (_take_in, written out)
        pfn = zone.free[fmt].take(order, pfn, pfn + (1 << cur))
        if pfn >= 0:
            zone.nr_free -= 1 << order
        return pfn

    def _rmqueue_fallback_largest(self, zone: "Zone", order: int, mt: int) -> int:
        """6.1.y and 6.6.y (read in 6.1.192 and a 6.6.89-based tree):
        ``__rmqueue_fallback`` + ``steal_suitable_fallback``.

        The largest fallback block is used, unless the request is movable and that
        block's order allows no claim (below pageblock_order / 2), in which case the
        smallest one is.  A block of pageblock order or more converts its pageblocks; a
        smaller one whose order allows a claim converts its pageblock when half of it is
        free.  Unclaimed, the request is served from that *biggest* buddy's pageblock,
        fragmenting it ("single page from the biggest buddy", which v6.15 stopped).
        The kernel also moves the unclaimed pageblock's free pages to the *mt* list
        without changing the block's type; the model leaves them on their own list.
        Kernel: mm/page_alloc.c:__rmqueue_fallback, steal_suitable_fallback,
        can_steal_fallback (6.1.192; 6.6.y the same).
        """
        blocks = self._fallback_blocks(zone, order, mt)
        if not blocks:
            return -1
        cur, fmt, pfn = blocks[0]
        can_steal = cur >= pageblock_order // 2 or mt != MIGRATE_MOVABLE
        if not can_steal and cur > order:                   # movable: find_smallest
            cur, fmt, pfn = blocks[-1]
            can_steal = cur >= pageblock_order // 2
        if cur >= pageblock_order:
            self._claim_range(zone, pfn, cur, mt)
            return self._take_in(zone, mt, order, pfn, pfn + (1 << cur))
        pb_start = pfn & ~(pageblock_nr_pages - 1)
        if can_steal and self._try_claim_block(zone, pfn, cur, mt, fmt):
            return self._take_in(zone, mt, order, pb_start, pb_start + pageblock_nr_pages)
        if can_steal:       # whole_block: the kernel serves it from the block's free pages
            return self._take_in(zone, fmt, order, pb_start, pb_start + pageblock_nr_pages)
        return self._take_in(zone, fmt, order, pfn, pfn + (1 << cur))

    # ------------------------------------------------------------------ buddy lists
    def _buddy_take(self, zone: "Zone", mt: int, order: int) -> int:
        fl = zone.free[mt]
        if fl.nr_free < (1 << order):
            return -1
        pfn = fl.take(order)
        if pfn >= 0 and mt != MIGRATE_ISOLATE:
            zone.nr_free -= 1 << order
            if mt == MIGRATE_CMA:
                zone.nr_free_cma -= 1 << order
        return pfn

    def _buddy_put(self, zone: "Zone", pfn: int, n: int) -> None:
        """Return ``[pfn, pfn+n)`` to the free list of each pageblock's migratetype."""
        if n <= pageblock_nr_pages:
            self._buddy_put_mt(zone, pfn, n, self.get_pageblock_migratetype(pfn))
            return
        for a, b, mt in self._mt_runs(pfn, pfn + n):
            self._buddy_put_mt(zone, a, b - a, mt)

    def _mt_runs(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """Split ``[lo, hi)`` into runs of one pageblock migratetype.  Cost follows the
        CMA areas and changed pageblocks, not the range's size."""
        cuts = {lo, hi}
        for s, e in self._cma_ranges:
            for c in (s, e):
                if lo < c < hi:
                    cuts.add(c)
        pb_lo, pb_hi = lo >> pageblock_order, (hi - 1) >> pageblock_order
        for pb in self._pb_mt:
            if pb_lo <= pb <= pb_hi:
                for c in (pb << pageblock_order, (pb + 1) << pageblock_order):
                    if lo < c < hi:
                        cuts.add(c)
        points = sorted(cuts)
        runs: list[tuple[int, int, int]] = []
        for a, b in zip(points, points[1:]):
            mt = self.get_pageblock_migratetype(a)
            if runs and runs[-1][2] == mt and runs[-1][1] == a:
                runs[-1] = (runs[-1][0], b, mt)
            else:
                runs.append((a, b, mt))
        return runs

    @staticmethod
    def _buddy_put_mt(zone: "Zone", pfn: int, n: int, mt: int) -> None:
        zone.free[mt].put(pfn, n)
        account_freepages(zone, n, mt)

    def _free_block(self, zone: "Zone", pfn: int, order: int) -> None:
        """free_unref_page / __free_pages_ok: per-cpu list or buddy.

        Blocks of a pcp order go to the current cpu's list of their pageblock's type;
        CMA and HIGHATOMIC pageblocks use the movable list, isolated ones bypass the
        per-cpu lists.  Reaching ``high`` frees ``batch`` pages (free_pcppages_bulk).
        """
        if order > PAGE_ALLOC_COSTLY_ORDER and order != HPAGE_PMD_ORDER or self._pcp_disabled:
            self._buddy_put(zone, pfn, 1 << order)
            return
        # get_pageblock_migratetype(), folded: a pageblock absent from _pb_mt has its
        # boot-time type, MOVABLE or CMA, and both use the movable list
        mt = self._pb_mt.get(pfn >> pageblock_order, MIGRATE_MOVABLE)
        if mt >= MIGRATE_PCPTYPES:
            if mt == MIGRATE_ISOLATE:
                self._buddy_put(zone, pfn, 1 << order)
                return
            mt = MIGRATE_MOVABLE
        pcp = zone.pcp[self.current.cpu]
        pcp.lists[MIGRATE_PCPTYPES * order + mt if order <= PAGE_ALLOC_COSTLY_ORDER
                  else self._pindex(order, mt)].append(pfn)
        pcp.count += 1 << order
        if pcp.count >= pcp.high:
            self._free_pcppages_bulk(zone, pcp, pcp.batch)

    def _free_pages_one_by_one(self, zone: "Zone", pfn: int, n: int) -> None:
        """``__free_page`` of each page of ``[pfn, pfn+n)`` in turn, as
        ``free_contig_range`` does: order-0 frees through ``free_unref_page``, so the
        pages go to the current cpu's per-cpu list of their pageblock's type (CMA on the
        movable list) and only what ``high`` pushes out reaches the buddy lists; the last
        ones freed sit on the list's head for the next order-0 allocation.

        Done a run at a time: the list takes pages up to ``high`` at once, then
        ``free_pcppages_bulk`` runs, exactly where the page-by-page loop would run it.
        Kernel: mm/page_alloc.c:free_contig_range, free_unref_page,
        free_unref_page_commit (v6.12; v6.1 frees the same way through __free_page).
        """
        if self._pcp_disabled:
            self._buddy_put(zone, pfn, n)
            return
        pcp = zone.pcp[self.current.cpu]
        for a, b, mt in self._mt_runs(pfn, pfn + n):
            if mt == MIGRATE_ISOLATE:
                self._buddy_put(zone, a, b - a)
                continue
            lst = pcp.lists[mt if mt < MIGRATE_PCPTYPES else MIGRATE_MOVABLE]
            while a < b:
                take = min(b - a, max(pcp.high - pcp.count, 1))
                lst.extend(range(a, a + take))
                pcp.count += take
                a += take
                if pcp.count >= pcp.high:
                    self._free_pcppages_bulk(zone, pcp, pcp.batch)

    def _free_pcppages_bulk(self, zone: "Zone", pcp: Any, count: int) -> None:
        """Move about *count* pages from the per-cpu lists back to the buddy lists:
        round robin over the non-empty lists, one block from each per round, in list
        order, until *count* pages went; each list gives its oldest blocks (the front
        of the Python list, the kernel's list tail)."""
        lists = pcp.lists
        left = [len(lst) for lst in lists]
        take = [0] * len(lists)
        while count > 0 and pcp.count:
            active = [i for i, n in enumerate(left) if n]
            if not active:
                break
            sizes = [1 << _pcp_list_order(i) for i in active]
            per_round = sum(sizes)
            # whole rounds that leave count > 0, at most until the shortest list is empty
            rounds = min(min(left[i] for i in active), (count - 1) // per_round)
            if rounds:
                for i in active:
                    take[i] += rounds
                    left[i] -= rounds
                pcp.count -= rounds * per_round
                count -= rounds * per_round
                continue
            for i, nr in zip(active, sizes):         # the last, partial round
                take[i] += 1
                left[i] -= 1
                pcp.count -= nr
                count -= nr
                if count <= 0:
                    break
        for i, n in enumerate(take):
            if n:
                lst = lists[i]
                blocks = lst[:n]
                del lst[:n]
                self._buddy_put_blocks(zone, blocks, 1 << _pcp_list_order(i))

    def _buddy_put_blocks(self, zone: "Zone", pfns: list[int], nr: int) -> None:
        """__free_one_page for blocks of *nr* pages headed by *pfns* (sorted in place):
        adjacent blocks inside one pageblock go back as one run."""
        pfns.sort()
        it = iter(pfns)
        start = prev = next(it)
        for pfn in it:
            if pfn == prev + nr and pfn & (pageblock_nr_pages - 1):
                prev = pfn
                continue
            self._buddy_put(zone, start, prev + nr - start)
            start = prev = pfn
        self._buddy_put(zone, start, prev + nr - start)

    def drain_all_pages(self, zone: "Zone | None" = None) -> None:
        """Return every per-cpu free page of *zone* (or all zones) to the buddy lists.

        Kernel: mm/page_alloc.c:drain_all_pages (v6.12).
        """
        for z in ([zone] if zone is not None else self._zone_list):
            for pcp in z.pcp:
                if pcp.count:
                    self._free_pcppages_bulk(z, pcp, pcp.count)

    # ------------------------------------------------------------------ pageblocks
    def get_pageblock_migratetype(self, pfn: int) -> int:
        """Migratetype of the pageblock holding *pfn* (MIGRATE_* constant).

        Kernel: include/linux/mmzone.h:get_pageblock_migratetype (v6.12).
        """
        if type(pfn) is not int and not isinstance(pfn, int):
            raise TypeError(f"get_pageblock_migratetype: pfn must be an int, got {type(pfn).__name__}")
        mt = self._pb_mt.get(pfn >> pageblock_order)
        return self._base_migratetype(pfn) if mt is None else mt

    def _base_migratetype(self, pfn: int) -> int:
        """The boot-time migratetype: CMA inside a CMA area, MOVABLE elsewhere."""
        return MIGRATE_CMA if self._pfn_in_cma(pfn) else MIGRATE_MOVABLE

    def _pfn_in_cma(self, pfn: int) -> bool:
        for s, e in self._cma_ranges:
            if s <= pfn < e:
                return True
        return False

    def _set_pageblock_migratetype(self, zone: "Zone", pb: int, mt: int) -> int:
        """Change a pageblock's migratetype and move its free pages (move_freepages_block)."""
        start = pb << pageblock_order
        old = self.get_pageblock_migratetype(start)
        if old == mt:
            return old
        runs = zone.free[old].remove_range(start, start + pageblock_nr_pages)
        account_freepages(zone, -sum(b - a for a, b in runs), old)
        if mt == self._base_migratetype(start):
            self._pb_mt.pop(pb, None)
        else:
            self._pb_mt[pb] = mt
        for a, b in runs:
            self._buddy_put_mt(zone, a, b - a, mt)
        if mt == MIGRATE_ISOLATE:
            zone.nr_isolate_pageblock += 1
        elif old == MIGRATE_ISOLATE:
            zone.nr_isolate_pageblock -= 1
        return old

    # ------------------------------------------------------------------ pressure
    def fill_zone(self, zone: str, leave: int = 0) -> "Balloon":
        """Take free memory of *zone* until only *leave* pages stay free (pressure knob).

        Returns a :class:`Balloon` holding the taken memory as unmovable kernel folios
        (never migrated); ``release()`` gives it back.  The per-cpu lists are drained
        first, so ``zone.free_pages == leave`` afterwards (when that much was free).
        """
        z = self._zone_by_name(zone, "fill_zone")
        self.drain_all_pages(z)
        balloon = Balloon(self)
        for mt in _FILL_ORDER:
            for s, e in list(z.free[mt].extents()):
                n = min(e - s, z.nr_free - leave)
                if n <= 0:
                    return balloon
                balloon._add(self._take_exact(z, mt, e - n, n))
        return balloon

    def fragment_zone(self, zone: str, max_free_order: int = 0) -> "Balloon":
        """Take every other ``2**max_free_order``-page block of *zone*'s free memory.

        Afterwards about half the free pages remain, but no free block is larger than
        *max_free_order*: an allocation of a higher order (a THP or hugetlb migration
        target, say) fails naturally.  Returns a :class:`Balloon` like :meth:`fill_zone`.
        """
        z = self._zone_by_name(zone, "fragment_zone")
        if not 0 <= max_free_order < MAX_PAGE_ORDER:
            raise ValueError(f"fragment_zone: expected 0 <= max_free_order < {MAX_PAGE_ORDER}, got {max_free_order!r}")
        self.drain_all_pages(z)
        keep = 1 << max_free_order
        balloon = Balloon(self)
        for mt in _FILL_ORDER:
            for s, e in list(z.free[mt].extents()):
                p = ((s + keep - 1) & ~(keep - 1)) + keep   # keep the first aligned block
                while p < e:
                    n = min(keep, e - p)
                    balloon._add(self._take_exact(z, mt, p, n))
                    p += 2 * keep
        return balloon

    def _zone_by_name(self, zone: str, what: str) -> "Zone":
        z = self.zones.get(zone)
        if z is None:
            raise ValueError(f"{what}: expected a zone name from {sorted(self.zones)}, got {zone!r}")
        return z

    def _take_exact(self, zone: "Zone", mt: int, pfn: int, n: int) -> list[Folio]:
        """Remove ``[pfn, pfn+n)`` from a free list and wrap it in balloon folios."""
        out = []
        runs = zone.free[mt].remove_range(pfn, pfn + n)
        for a, b in runs:
            account_freepages(zone, a - b, mt)
            p = a
            while p < b:
                order = MAX_PAGE_ORDER
                while order and ((p & ((1 << order) - 1)) or p + (1 << order) > b):
                    order -= 1
                f = Folio(self, p, order, zone, KIND_BALLOON)
                self._sections_for(p)[p] = f
                self._nr_allocated += f.nr_pages
                out.append(f)
                p += 1 << order
        return out


#: How many free extents of a fallback list, from the highest address down, the fallback
#: search examines for the largest and smallest buddies (more when none of them holds
#: the request).  The kernel sees every free block through its per-order lists; the
#: model's lists are address-sorted extents, and this bound keeps a fallback on a zone
#: fragmented into thousands of extents as cheap as on a whole one.
FALLBACK_WINDOW = 64


def _highest_block_per_order(fl: Any, min_order: int, lo: int, hi: int,
                             window: int | None = None, stop: int | None = None) -> dict[int, int]:
    """The buddy blocks the free extents of *fl* inside ``[lo, hi)`` decompose into:
    for each order >= *min_order* present, the pfn of the highest block of exactly that
    order.  Each extent is cut into maximal naturally aligned blocks of at most
    MAX_PAGE_ORDER, as __free_one_page merges buddies; a run of MAX_PAGE_ORDER blocks
    costs one step.  Extents are visited from *hi* down (bisect, so the cost follows the
    extents visited, not the list); with *window*, the visit stops after that many once
    a block was found, or as soon as a MAX_PAGE_ORDER block was; with *stop*, also as
    soon as a block of order *stop* was (after the extent that holds it)."""
    out: dict[int, int] = {}
    top = MAX_PAGE_ORDER
    starts, ends = fl.starts, fl.ends
    i = bisect_left(starts, hi) - 1
    seen = 0
    while i >= 0:
        s, e = starts[i], ends[i]
        if e <= lo:
            break
        i -= 1
        s, e = max(s, lo), min(e, hi)
        p = s
        while p < e:
            o = top
            while o and ((p & ((1 << o) - 1)) or p + (1 << o) > e):
                o -= 1
            if o == top:                    # the run of MAX_PAGE_ORDER blocks
                last = p + (((e - p) >> top) - 1 << top)
                if o >= min_order and out.get(o, -1) < last:
                    out[o] = last
                p = last + (1 << top)
                continue
            if o >= min_order and out.get(o, -1) < p:
                out[o] = p
            p += 1 << o
        seen += 1
        if window is not None and out and (seen >= window or top in out):
            break
        if stop is not None and stop in out:
            break
    return out


def _pcp_list_order(pindex: int) -> int:
    """pindex_to_order: the block order of a per-cpu list."""
    return HPAGE_PMD_ORDER if pindex >= NR_LOWORDER_PCP_LISTS else pindex // MIGRATE_PCPTYPES


# ``__free_pages`` would be name-mangled inside the class body.
setattr(PageAllocMixin, "__free_pages", PageAllocMixin.free_pages_block)

_FILL_ORDER = (MIGRATE_UNMOVABLE, MIGRATE_RECLAIMABLE, MIGRATE_MOVABLE, MIGRATE_HIGHATOMIC, MIGRATE_CMA)


class Balloon:
    """Memory taken by :meth:`PageAllocMixin.fill_zone`; ``release()`` frees it."""

    def __init__(self, mm: Any) -> None:
        self._mm = mm
        self.folios: list[Folio] = []

    def _add(self, folios: list[Folio]) -> None:
        self.folios.extend(folios)

    @property
    def nr_pages(self) -> int:
        return sum(f.nr_pages for f in self.folios)

    def release(self) -> None:
        folios, self.folios = self.folios, []
        for f in folios:
            self._mm.folio_put(f)

    def __enter__(self) -> "Balloon":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
