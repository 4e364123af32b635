"""Direct reclaim, a fake swap device, swap-in, and direct compaction.

Kernel (v6.12): mm/page_alloc.c (__alloc_pages_slowpath, __alloc_pages_direct_reclaim,
__alloc_pages_direct_compact, should_reclaim_retry), mm/vmscan.c (try_to_free_pages,
shrink_lruvec, isolate_lru_folios, shrink_folio_list, __remove_mapping), mm/swap_state.c
(add_to_swap, add_to_swap_cache), mm/swapfile.c (folio_alloc_swap, swap_free),
mm/page_io.c (swap_read_folio), mm/memory.c (do_swap_page), mm/shmem.c
(shmem_writepage, shmem_swapin_folio), mm/compaction.c (try_to_compact_pages).

An allocation that may enter direct reclaim (``__GFP_DIRECT_RECLAIM``) and finds no
zone above its watermark reclaims before it gives up: the LRU folios of the zones it
may use are scanned from the oldest, clean page cache (``KIND_FILE``) is dropped, and
anonymous and shmem folios are written to the fake swap device (``MMConfig.swap``) and
freed.  A swapped anonymous page leaves a swap entry in its page table
(``MMStruct.swap_pte``) and comes back on the next fault (GUP faults too); a swapped
shmem page leaves one in its file's page cache (``AddressSpace.swapped``) and comes back
through the fault, ``read``/``write`` or ``memfd_pin_folios``.  An allocation of a higher
order then tries compaction: it looks for an aligned block of that order holding only
free pages and movable LRU folios and migrates the folios out.  Nothing reclaimable and
nothing compactable: the allocation fails as before.

What reclaim leaves alone, as shrink_folio_list does: unevictable and mlocked folios
(``folio_evictable``), folios that may be DMA-pinned (``folio_maybe_dma_pinned``, checked
before ``add_to_swap`` for anon and after unmapping for the page cache), folios locked or
under writeback, anonymous/shmem folios when no swap space is left or the allocation
lacks ``__GFP_IO``, and dirty file folios (no writeback is modelled).

.. note:: One LRU per zone and type (anon/file) in age order, no active/inactive
   aging, referenced bits, kswapd, watermark boosting, memcg, swap cache or swap
   readahead: a folio is either kept (moved to the young end) or reclaimed at once.  A
   folio with references beyond its mappings and page cache (a FOLL_GET reference, a
   driver's ``folio_get``) is kept before unmapping; the kernel unmaps it and fails
   later at ``folio_ref_freeze``, leaving it in the swap cache, where the next fault
   finds the same folio again (with its exclusive marker since v6.1): the same folio,
   the same data, only the page-table entry differs in between.  Large folios are not
   reclaimed (the kernel splits them first).  Compaction is one pass over the zone's LRU
   folios, not the kernel's two scanners.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from . import gfp as _g
from .folio import (KIND_ANON, KIND_FILE, KIND_SHMEM, PAGE_SHIFT, PG_dirty, PG_isolated,
                    PG_locked, PG_lru, PG_mlocked, PG_unevictable, PG_uptodate, PG_writeback,
                    Folio)
from .mm_types import VM_LOCKED

if TYPE_CHECKING:  # pragma: no cover
    from .memfd import MemFile
    from .mm_types import MMStruct, VMA
    from .mmzone import Zone

if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object

__all__ = ["SwapEntry", "SWAP_CLUSTER_MAX", "DEF_PRIORITY", "MAX_RECLAIM_RETRIES",
           "COMPACT_MAX_DEFER_SHIFT"]

SWAP_CLUSTER_MAX = 32           # include/linux/swap.h
DEF_PRIORITY = 12               # mm/vmscan.c: scan lru_size >> priority per round
MAX_RECLAIM_RETRIES = 16        # mm/internal.h (should_reclaim_retry)
COMPACT_MAX_DEFER_SHIFT = 6     # mm/compaction.c

_IO = int(_g.gfp_t.IO)
_NORETRY = int(_g.gfp_t.NORETRY)
_UNEVICTABLE = PG_unevictable | PG_mlocked
_BUSY = PG_locked | PG_writeback


class SwapEntry:
    """One slot of the fake swap device: the page's contents (the folio's sparse
    ``_data`` at swap-out time) and how many page-table entries or page-cache slots
    refer to it (``swap_map[]``)."""

    __slots__ = ("slot", "count", "data")

    def __init__(self, slot: int, data: Any) -> None:
        self.slot = slot
        self.count = 0
        self.data = data

    def __repr__(self) -> str:
        return f"<swp_entry slot={self.slot} count={self.count}>"


class ReclaimMixin(_Base):
    """Reclaim half of :class:`~pytest_pinfault.FakeMM`."""

    def _init_reclaim(self) -> None:
        # per zone index: [anon (swap-backed: anon + shmem), file] LRU folios, oldest first
        self._lru_lists: list[tuple[dict[Folio, None], dict[Folio, None]]] = [({}, {}) for _ in range(4)]
        self.nr_swap_pages_total = self.config.swap >> PAGE_SHIFT
        self._swap_free_slots: list[int] = []
        self._swap_next_slot = 0
        self.nr_swap_used = 0
        self._in_reclaim = False
        # per zone index: [considered, defer_shift, order_failed] (compaction_deferred)
        self._compact_defer = [[0, 0, 1 << 30] for _ in range(4)]

    # ------------------------------------------------------------------ swap device
    @property
    def nr_swap_pages(self) -> int:
        """Free swap slots (``get_nr_swap_pages()``).  Kernel: mm/swapfile.c."""
        return self.nr_swap_pages_total - self.nr_swap_used

    def _folio_alloc_swap(self, folio: Folio) -> SwapEntry | None:
        """folio_alloc_swap: a free slot for *folio*, or None (device full, or the
        ``folio_alloc_swap`` fault site).  Kernel: mm/swapfile.c:folio_alloc_swap (v6.12)."""
        fi = self.faults
        if fi.active and fi.hit("folio_alloc_swap", folio=folio) is not None:
            return None
        if self.nr_swap_used >= self.nr_swap_pages_total:
            return None
        if self._swap_free_slots:
            slot = self._swap_free_slots.pop()
        else:
            slot = self._swap_next_slot
            self._swap_next_slot += 1
        self.nr_swap_used += 1
        return SwapEntry(slot, folio._data)

    def _swap_entry_put(self, entry: SwapEntry) -> None:
        """swap_free: drop one reference to *entry*; the last frees the slot."""
        entry.count -= 1
        if entry.count <= 0:
            entry.data = None
            self.nr_swap_used -= 1
            self._swap_free_slots.append(entry.slot)

    def _swap_read(self, entry: SwapEntry, folio: Any = None) -> int:
        """swap_read_folio: 0, or -EIO when the ``swap_read_folio`` fault site fires
        (the read failed and the folio never became uptodate).
        Kernel: mm/page_io.c:swap_read_folio (v6.12)."""
        fi = self.faults
        if fi.active and fi.hit("swap_read_folio", folio=folio) is not None:
            return -errno.EIO
        return 0

    # ------------------------------------------------------------------ swap-in
    def _do_swap_page(self, mm: "MMStruct", vma: "VMA", vpn: int) -> int:
        """A fault on a swapped anonymous page: read the slot into a new exclusive
        anonymous folio and map it; 0, -ENOMEM (VM_FAULT_OOM) or -EFAULT (VM_FAULT_SIGBUS
        after a read error).  Kernel: mm/memory.c:do_swap_page (v6.12)."""
        entry = mm.swap_pte[vpn]
        if self._swap_read(entry) < 0:
            return -errno.EFAULT
        folio = self._new_anon_folio(vma, 0)
        if folio is None:
            return -errno.ENOMEM
        folio._data = _swapped_data(entry)
        folio.flags |= PG_uptodate
        del mm.swap_pte[vpn]
        self._swap_entry_put(entry)
        self._map_pte(mm, vpn, folio, 0)
        self.folio_put(folio)
        self.folio_add_lru(folio)
        self.stats.pswpin += 1
        return 0

    def _shmem_swapin(self, memfd: "MemFile", index: int) -> Folio | int:
        """Bring page *index* of a shmem file back from swap into its page cache; the
        folio with a reference, or -EIO (read error) / -ENOMEM.
        Kernel: mm/shmem.c:shmem_swapin_folio (v6.12)."""
        mapping = memfd.mapping
        entry = mapping.swapped[index]
        rc = self._swap_read(entry)
        if rc < 0:
            return rc
        from .memfd import _MAPPING_GFP
        folio = self._alloc_folio(_MAPPING_GFP, 0, KIND_SHMEM)
        if folio is None:
            return -errno.ENOMEM
        folio._data = _swapped_data(entry)
        del mapping.swapped[index]
        self._swap_entry_put(entry)
        memfd._add_to_page_cache(folio, index)
        folio.flags |= PG_uptodate
        self.folio_add_lru(folio)
        self.stats.pswpin += 1
        return folio

    # ------------------------------------------------------------------ LRU lists
    def lru_folios(self, zone: str, lru: str = "anon") -> list[Folio]:
        """The folios on one zone's ``"anon"`` (anonymous and shmem) or ``"file"`` LRU,
        oldest first (what reclaim scans first)."""
        if lru not in ("anon", "file"):
            raise ValueError(f"lru_folios: lru must be 'anon' or 'file', got {lru!r}")
        z = self._zone_by_name(zone, "lru_folios")
        return list(self._lru_lists[z.idx][lru == "file"])

    # ------------------------------------------------------------------ the slow path
    def _alloc_slowpath(self, gfp: int, order: int) -> tuple[int, Any]:
        """__alloc_pages_slowpath, reduced: direct reclaim, a drain of the per-cpu lists,
        then for order > 0 direct compaction, retried while reclaim makes progress
        (at most MAX_RECLAIM_RETRIES rounds, one for __GFP_NORETRY); (-1, None) when
        nothing helps."""
        if self._in_reclaim:                 # PF_MEMALLOC: no reclaim from inside reclaim
            return -1, None
        self._in_reclaim = True
        try:
            zones = self._zonelist(gfp)
            retries = 1 if gfp & _NORETRY else MAX_RECLAIM_RETRIES
            for _ in range(retries):
                progress = self._try_to_free_pages(zones, gfp, order)
                for z in zones:
                    if z.pcp_pages:
                        self.drain_all_pages(z)
                pfn, zone = self._get_page_from_freelist(gfp, order)
                if pfn >= 0:
                    return pfn, zone
                if order:
                    pfn, zone = self._try_to_compact_pages(zones, gfp, order)
                    if pfn >= 0:
                        return pfn, zone
                if not progress:
                    break
            return -1, None
        finally:
            self._in_reclaim = False

    def _try_to_free_pages(self, zones: list["Zone"], gfp: int, order: int) -> int:
        """try_to_free_pages: scan the zones' LRUs from DEF_PRIORITY down to 0, each round
        ``lru_size >> priority`` folios (at least SWAP_CLUSTER_MAX), until
        ``max(SWAP_CLUSTER_MAX, 1 << order)`` pages are reclaimed; the anon LRU only
        while swap space is left and *gfp* allows I/O.  Returns pages reclaimed.
        Kernel: mm/vmscan.c:try_to_free_pages, shrink_lruvec, get_scan_count (v6.12)."""
        self.stats.allocstall += 1
        target = max(SWAP_CLUSTER_MAX, 1 << order)
        done = 0
        for prio in range(DEF_PRIORITY, -1, -1):
            for zone in zones:
                lists = self._lru_lists[zone.idx]
                for is_file in (1, 0):
                    lru = lists[is_file]
                    if not lru or (not is_file and (self.nr_swap_pages <= 0 or not gfp & _IO)):
                        continue
                    n = min(len(lru), max(len(lru) >> prio, SWAP_CLUSTER_MAX))
                    done += self._shrink_list(zone, lru, n, bool(is_file), gfp)
                    if done >= target:
                        return done
        return done

    def _shrink_list(self, zone: "Zone", lru: dict[Folio, None], n: int, is_file: bool, gfp: int) -> int:
        """isolate_lru_folios + shrink_folio_list for the *n* oldest folios of *lru*:
        each is reclaimed or moved to the young end.  Returns pages reclaimed."""
        batch = []
        it = iter(lru)
        for _ in range(n):
            batch.append(next(it))
        stats = self.stats
        if is_file:
            stats.pgscan_file += len(batch)
        else:
            stats.pgscan_anon += len(batch)
        stats.pgscan_direct += len(batch)
        freed = 0
        nr = self._lru_nr
        zidx = zone.idx
        keep = self._keep_folio
        for folio in batch:
            if keep(folio, is_file):            # kept: rotated to the young end
                del lru[folio]
                lru[folio] = None
                continue
            # isolate_lru_folios: off the LRU with a reference
            del lru[folio]
            folio.flags = (folio.flags & ~PG_lru) | PG_isolated
            folio._refcount += 1
            nr[zidx] -= folio.nr_pages
            if self._reclaim_folio(folio, is_file):
                freed += 1
                folio.flags &= ~PG_isolated
                self.folio_put(folio)             # the isolation reference: freed now
                continue
            folio.flags = (folio.flags & ~PG_isolated) | PG_lru   # putback, young end
            lru[folio] = None
            nr[zidx] += folio.nr_pages
            self.folio_put(folio)
        if is_file:
            stats.pgsteal_file += freed
        else:
            stats.pgsteal_anon += freed
        stats.pgsteal_direct += freed
        return freed

    def _keep_folio(self, folio: Folio, is_file: bool) -> bool:
        """What shrink_folio_list keeps without changing anything (checked before the
        folio is isolated, which the kernel does first: the outcome is the same):
        large, locked or under-writeback folios, maybe-DMA-pinned ones
        (``folio_maybe_dma_pinned``), unevictable or mlocked ones (``folio_evictable``,
        VM_LOCKED mappings), dirty page cache, and folios with references beyond their
        mappings and page cache (``folio_ref_freeze`` would fail).
        Kernel: mm/vmscan.c:shrink_folio_list (v6.12)."""
        flags = folio.flags
        if folio.order or flags & (_BUSY | _UNEVICTABLE):
            return True
        refs = folio._refcount
        if folio._pincount or refs != self.folio_expected_ref_count(folio):
            return True                        # pinned, or an extra reference
        rmap = folio.rmap
        if rmap:
            if len(rmap) != folio._mapcount:
                return True                    # mappings the model cannot walk (test doubles)
            for mm, key in rmap:
                if not hasattr(mm, "swap_pte"):
                    return True
                vma = mm.find_vma(key[1] << PAGE_SHIFT)
                if vma is not None and vma.flags & VM_LOCKED:
                    return True                # try_to_unmap under VM_LOCKED: culled
        elif folio._mapcount:
            return True
        if is_file:
            return bool(folio._data and flags & PG_dirty)      # no writeback modelled
        return folio.kind == KIND_SHMEM and not hasattr(folio.mapping, "swapped")

    def _reclaim_folio(self, folio: Folio, is_file: bool) -> bool:
        """shrink_folio_list's work for one isolated folio :meth:`_keep_folio` let
        through: True when it was unmapped and taken out of its page cache (file) or
        written to swap (anon, shmem), holding only the isolation reference now.
        Kernel: mm/vmscan.c:shrink_folio_list, mm/swap_state.c:add_to_swap,
        mm/shmem.c:shmem_writepage (v6.12)."""
        if is_file:
            if folio._data and folio.flags & PG_dirty:
                return False                   # dirty page cache: no writeback here
            self._unmap_all(folio)
            self._remove_from_mapping(folio)
            return folio._refcount == 1
        entry = self._folio_alloc_swap(folio)  # add_to_swap / shmem_writepage
        if entry is None:
            return False
        fi = self.faults
        if fi.active and fi.hit("add_to_swap_cache", folio=folio) is not None:
            entry.count = 1
            self._swap_entry_put(entry)        # put_swap_folio: the slot goes back
            return False
        if folio.kind == KIND_SHMEM:
            memfd = folio.mapping.host
            self._unmap_mapping_folio(memfd, folio)
            index = folio.index
            mapping = folio.mapping
            self._remove_from_mapping(folio)
            mapping.swapped[index] = entry
            entry.count = 1
        else:
            for mm, key in list(folio.rmap or ()):     # try_to_unmap: a swap pte each
                _, vpn = key
                self._mmu_notify(mm, vpn << PAGE_SHIFT, (vpn + 1) << PAGE_SHIFT, "unmap")
                mm.pte.pop(vpn, None)
                mm.swap_pte[vpn] = entry
                entry.count += 1
                self._unmap_folio(mm, key, folio)
            if entry.count == 0:               # mapped nowhere: nothing refers to the slot
                entry.count = 1
                self._swap_entry_put(entry)
        self.stats.pswpout += 1
        if folio._refcount != 1 and entry.data:      # kept after all: no shared contents
            entry.data = _copy_data(entry.data)
        return folio._refcount == 1

    def _unmap_all(self, folio: Folio) -> None:
        for mm, key in list(folio.rmap or ()):
            kind, vpn = key
            self._mmu_notify(mm, vpn << PAGE_SHIFT, (vpn + 1) << PAGE_SHIFT, "unmap")
            mm.pte.pop(vpn, None)
            self._unmap_folio(mm, key, folio)

    def _remove_from_mapping(self, folio: Folio) -> None:
        """__remove_mapping: out of the page cache, dropping the cache's references."""
        mapping = folio.mapping
        if mapping is None:
            return
        pages = getattr(mapping, "pages", None)
        if pages is not None and pages.get(folio.index) is folio:
            del pages[folio.index]
            if hasattr(mapping, "nrpages"):
                mapping.nrpages -= folio.nr_pages
        folio.mapping = None
        folio._refcount -= folio.nr_pages

    # ------------------------------------------------------------------ compaction
    def _try_to_compact_pages(self, zones: list["Zone"], gfp: int, order: int) -> tuple[int, Any]:
        """Direct compaction, simply: in each zone find an aligned block of *order* pages
        holding only free pages and movable, unpinned LRU folios, migrate the folios out
        (MR_COMPACTION) and allocate again.  Counts compact_stall, compact_success,
        compact_fail.  Kernel: mm/compaction.c:try_to_compact_pages, compact_zone;
        mm/page_alloc.c:__alloc_pages_direct_compact (v6.12)."""
        n = 1 << order
        zones = [z for z in zones if not self._compaction_deferred(z, order)]
        if not zones:
            return -1, None
        self.stats.compact_stall += 1
        for zone in zones:
            blocks: dict[int, list[Folio]] = {}
            for lru in self._lru_lists[zone.idx]:
                for folio in lru:
                    blocks.setdefault(folio.pfn >> order, []).append(folio)
            # fewest pages to move first
            for blk, folios in sorted(blocks.items(), key=lambda kv: sum(f.nr_pages for f in kv[1])):
                lo = blk << order
                used = sum(f.nr_pages for f in folios)
                if used >= n or any(not self._movable_for_compaction(f) for f in folios):
                    continue
                if sum(fl.count_range(lo, lo + n) for fl in zone.free) + used != n:
                    continue
                if self._compact_block(zone, lo, n, folios):
                    pfn, z = self._get_page_from_freelist(gfp, order)
                    if pfn >= 0:
                        self.stats.compact_success += 1
                        self._compact_defer[zone.idx][:2] = [0, 0]      # compaction_defer_reset
                        return pfn, z
            d = self._compact_defer[zone.idx]                           # defer_compaction
            d[0], d[1], d[2] = 0, min(d[1] + 1, COMPACT_MAX_DEFER_SHIFT), min(d[2], order)
        self.stats.compact_fail += 1
        return -1, None

    def _compaction_deferred(self, zone: "Zone", order: int) -> bool:
        """After a failure, skip the next ``1 << defer_shift`` attempts at that order or
        above (up to 64), so a zone that cannot be compacted is not rescanned by every
        allocation.  Kernel: mm/compaction.c:compaction_deferred, defer_compaction."""
        d = self._compact_defer[zone.idx]
        if order < d[2]:
            return False
        d[0] += 1
        return d[0] < 1 << d[1]

    def _movable_for_compaction(self, folio: Folio) -> bool:
        return (folio.kind in (KIND_ANON, KIND_SHMEM, KIND_FILE) and not folio._pincount
                and not folio.flags & _UNEVICTABLE
                and folio._refcount < 1024 + self.folio_expected_ref_count(folio) + 1)

    def _compact_block(self, zone: "Zone", lo: int, n: int, folios: list[Folio]) -> bool:
        """Migrate the folios of ``[lo, lo+n)`` elsewhere while its pageblocks are
        isolated, so that neither the targets nor the pages freed on the way are handed
        out from the block (the kernel's free scanner takes targets away from the
        migration scanner's block); then the block's pages merge in the buddy lists.
        True when every folio moved."""
        from .gfp import MIGRATE_ISOLATE
        from .migrate import MIGRATE_SYNC_LIGHT, MR_COMPACTION, MigrationTargetControl
        from .mmzone import pageblock_order
        saved = []
        for pb in range(lo >> pageblock_order, ((lo + n - 1) >> pageblock_order) + 1):
            saved.append((pb, self._set_pageblock_migratetype(zone, pb, MIGRATE_ISOLATE)))
        isolated: list[Folio] = []
        for folio in folios:
            if not folio.flags & PG_lru:
                continue
            lru = self._lru_lists[zone.idx][folio.kind == KIND_FILE]
            lru.pop(folio, None)
            folio.flags = (folio.flags & ~PG_lru) | PG_isolated
            folio._refcount += 1
            self._lru_nr[zone.idx] -= folio.nr_pages
            self.node_stat_mod_isolated(folio, folio.nr_pages)
            isolated.append(folio)
        self.stats.compact_isolated += len(isolated)
        mtc = MigrationTargetControl(gfp_mask=int(_g.GFP_HIGHUSER_MOVABLE))
        rc = self.migrate_pages(isolated, self.alloc_migration_target, None, mtc,
                                MIGRATE_SYNC_LIGHT, MR_COMPACTION)
        ok = rc == 0 and not isolated
        if isolated:
            self.putback_movable_pages(isolated)
        for pb, mt in saved:
            self._set_pageblock_migratetype(zone, pb, mt)
        return ok


def _copy_data(data: dict[int, Any]) -> dict[int, Any]:
    """A copy of a folio's sparse contents that shares no mutable page (bytearray)."""
    return {i: bytearray(v) if isinstance(v, bytearray) else v for i, v in data.items()}


def _swapped_data(entry: SwapEntry) -> dict[int, Any] | None:
    """The contents a swap-in gets: the entry's own when this is its last reference,
    otherwise a copy (another page table or a fork child still refers to the slot)."""
    if not entry.data:
        return None
    return entry.data if entry.count <= 1 else _copy_data(entry.data)
