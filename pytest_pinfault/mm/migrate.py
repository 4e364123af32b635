"""Page migration.

Kernel: mm/migrate.c (migrate_pages, migrate_pages_batch, migrate_pages_sync,
migrate_folio_unmap, migrate_folio_move, __folio_migrate_mapping, alloc_migration_target,
unmap_and_move_huge_page), include/linux/mm.h (folio_expected_ref_count), v6.12–v6.16.

``migrate_pages`` tries every isolated folio of *from_list*: it allocates a target with
*get_new_folio* (first, as migrate_folio_unmap does: a target failure ends the call
with -ENOMEM even for a locked or writeback folio), invalidates the mmu interval
notifiers of every mapping (mm/rmap.c:try_to_migrate_one, on every attempt), checks that
nobody but the expected holders (page cache, page tables,
PG_private, the isolation reference) holds the folio, and then moves contents, flags, the
page-cache slot and every page-table entry to the new folio.  An unexpected reference (a
GUP pin or get, an LRU batch reference, a driver's ``get_page``) gives ``-EAGAIN``; the
folio is retried and after the last pass counted as failed and left on *from_list*.
A target allocation failure (``None``) aborts the whole call with ``-ENOMEM``.

Passes (v6.3+ batching): with MIGRATE_SYNC/SYNC_LIGHT a batched MIGRATE_ASYNC phase of
NR_MAX_MIGRATE_ASYNC_RETRY passes, then each remaining folio alone for
NR_MAX_MIGRATE_SYNC_RETRY passes; MIGRATE_ASYNC runs NR_MAX_MIGRATE_PAGES_RETRY passes;
hugetlb folios have their own loop of NR_MAX_MIGRATE_PAGES_RETRY passes.

A large (non-hugetlb) folio whose target cannot be allocated is split into order-0
folios (``try_split_folio``), unless the reason is MR_NUMA_MISPLACED; the pieces are
migrated after the rest of the list in one MIGRATE_ASYNC pass, and the split folio
counts as one failure unless every piece then migrates (v6.12 migrate_pages_batch,
migrate_pages).  A split that fails because the folio has extra references (-EAGAIN)
is retried on the next pass for MR_LONGTERM_PIN; otherwise the -ENOMEM stands.

.. note:: The deferred-split list (partially mapped anonymous THPs split before
   migration) is not modelled.
"""

from __future__ import annotations

import dataclasses
from errno import EAGAIN, EBUSY, EINVAL, ENOMEM
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import gfp as _g
from .folio import (KIND_ANON, KIND_CONTIG, KIND_FILE, KIND_HUGETLB, KIND_SHMEM, MAPPING_CHANGE, PAGE_SHIFT,
                    PG_active, PG_anon_exclusive, PG_dirty, PG_lru, PG_mlocked, PG_unevictable,
                    PG_hugetlb_migratable, PG_isolated, PG_locked, PG_private, PG_swapbacked, PG_uptodate,
                    PG_writeback, Folio, Page, _SERIALS)
from .gfp import (MIGRATE_ISOLATE, MIGRATE_MOVABLE, MIGRATE_PCPTYPES, MIGRATE_RECLAIMABLE,
                  MIGRATE_UNMOVABLE, ZONE_MOVABLE)
from .hostgc import gc_pause, gc_resume
from .memfd import AddressSpace
from .mm_types import MMStruct, pte_entry
from .mmzone import SECTION_SHIFT, pageblock_order
from .page_alloc import GFP_ZONE_TABLE, GFP_ZONEMASK
from .sched import PF_MEMALLOC_PIN
from .swap import FOLIO_BATCH_SIZE

if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object

__all__ = [
    "MIGRATE_ASYNC", "MIGRATE_SYNC_LIGHT", "MIGRATE_SYNC", "MR_COMPACTION",
    "MR_MEMORY_FAILURE", "MR_MEMORY_HOTPLUG", "MR_SYSCALL", "MR_MEMPOLICY_MBIND",
    "MR_NUMA_MISPLACED", "MR_CONTIG_RANGE", "MR_LONGTERM_PIN", "MR_DEMOTION",
    "MigrationTargetControl", "NUMA_NO_NODE", "NR_MAX_MIGRATE_PAGES_RETRY",
    "NR_MAX_MIGRATE_ASYNC_RETRY", "NR_MAX_MIGRATE_SYNC_RETRY", "MIGRATE_REASON_NAMES",
    "XA_NODE_SIZE",
]

# enum migrate_mode
MIGRATE_ASYNC, MIGRATE_SYNC_LIGHT, MIGRATE_SYNC = 0, 1, 2
# enum migrate_reason
(MR_COMPACTION, MR_MEMORY_FAILURE, MR_MEMORY_HOTPLUG, MR_SYSCALL, MR_MEMPOLICY_MBIND,
 MR_NUMA_MISPLACED, MR_CONTIG_RANGE, MR_LONGTERM_PIN, MR_DEMOTION) = range(9)
MIGRATE_REASON_NAMES = ("compaction", "memory_failure", "memory_hotplug", "syscall_or_cpuset",
                        "mempolicy_mbind", "numa_misplaced", "contig_range", "longterm_pin",
                        "demotion")

NR_MAX_MIGRATE_PAGES_RETRY = 10
NR_MAX_MIGRATE_ASYNC_RETRY = 3
NR_MAX_MIGRATE_SYNC_RETRY = NR_MAX_MIGRATE_PAGES_RETRY - NR_MAX_MIGRATE_ASYNC_RETRY
NUMA_NO_NODE = -1

#: sizeof(struct xa_node) on x86-64: what xas_split_alloc allocates for a page-cache split
XA_NODE_SIZE = 576
_SPLIT_KEPT_FLAGS = (PG_dirty | PG_uptodate | PG_swapbacked | PG_anon_exclusive | PG_isolated | PG_lru
                     | PG_mlocked | PG_active | PG_unevictable)

_MIGRATED_FLAGS = PG_dirty | PG_uptodate | PG_anon_exclusive | PG_private | PG_swapbacked
# plain-int gfp bits read on every target allocation
_GFP_TRANSHUGE = int(_g.GFP_TRANSHUGE)
_HIGHMEM = _g._HIGHMEM
_COMP = _g._COMP
_MOVABLE = _g._MOVABLE
_RECLAIMABLE = _g._RECLAIMABLE
_HIGH = _g._HIGH

NewFolio = Callable[[Folio, Any], Optional[Folio]]
FreeFolio = Callable[[Folio, Any], None]


@dataclasses.dataclass
class MigrationTargetControl:
    """``struct migration_target_control``: where ``alloc_migration_target`` allocates.

    Kernel: mm/internal.h (v6.12).  ``nmask`` is accepted and ignored (one node).
    """

    nid: int = NUMA_NO_NODE
    gfp_mask: int = int(_g.GFP_USER | _g.gfp_t.MOVABLE | _g.gfp_t.RETRY_MAYFAIL)
    reason: int = MR_COMPACTION
    nmask: Any = None


class MigrateMixin(_Base):
    """Migration half of :class:`~pytest_pinfault.FakeMM`."""

    def folio_expected_ref_count(self, folio: Folio) -> int:
        """References the folio's owners account for: swap/page cache (one per page),
        PG_private, and one per page-table mapping.  Excludes the caller's own reference.

        Kernel: include/linux/mm.h:folio_expected_ref_count (v6.16).
        """
        if type(folio) is not Folio:
            folio = self._folio_of(folio, "folio_expected_ref_count")
        if folio.kind == KIND_ANON:
            refs = 0
        else:
            refs = (folio.nr_pages if folio._mapping is not None else 0) + (1 if folio._flags & PG_private else 0)
        return refs + folio._mc

    def alloc_migration_target(self, src: Folio, private: MigrationTargetControl | None) -> Folio | None:
        """Allocate a folio to migrate *src* into: same order, from ``mtc.gfp_mask`` plus
        ``__GFP_HIGHMEM`` when *src* is in ZONE_MOVABLE, GFP_TRANSHUGE for large folios,
        the hugetlb pool for hugetlb folios.  The task's gfp context applies, so under
        PF_MEMALLOC_PIN the target is neither in ZONE_MOVABLE nor CMA.  Hits the
        ``alloc_migration_target`` fault site (firing = OOM, returns None).

        Kernel: mm/migrate.c:alloc_migration_target (v6.12).
        """
        if type(src) is not Folio and not isinstance(src, Page):
            raise TypeError(f"alloc_migration_target: src must be a Page or Folio, got {type(src).__name__}")
        if private is None:
            mtc = MigrationTargetControl()
        elif type(private) is MigrationTargetControl or isinstance(private, MigrationTargetControl):
            mtc = private
        else:
            raise TypeError(f"alloc_migration_target: private must be a MigrationTargetControl or None, "
                            f"got {type(private).__name__}")
        fi = self.faults
        if fi.active and fi.hit("alloc_migration_target", folio=src) is not None:
            self._trace("alloc_fail", folio=src, reason="fault alloc_migration_target")
            return None
        gfp = mtc.gfp_mask
        if type(gfp) is not int:
            gfp = int(gfp)
        kind = src.kind
        if kind == KIND_HUGETLB:
            return self.alloc_hugetlb_folio_nodemask(src.hstate, mtc.nid, mtc.nmask, gfp)
        order = src.order
        if order:
            gfp |= _GFP_TRANSHUGE
        if src._zone.idx == ZONE_MOVABLE:
            gfp |= _HIGHMEM
        return self._alloc_folio(gfp | _COMP, order, kind)

    def migrate_pages(self, from_list: list[Folio], get_new_folio: NewFolio,
                      put_new_folio: FreeFolio | None, private: Any, mode: int, reason: int,
                      ret_succeeded: Any = None) -> int:
        """Migrate the isolated folios of *from_list*.

        Returns the number of folios not migrated (they stay on *from_list*, the caller
        must :meth:`putback_movable_pages` them) or a negative errno (``-ENOMEM`` when a
        target could not be allocated; the unprocessed folios stay on *from_list*).
        Migrated folios leave the list; their replacements go to the LRU batch.
        *ret_succeeded*, if given, is an :class:`~pytest_pinfault.Out` box receiving the
        number of folios migrated.  Counters: ``pgmigrate_success``/``pgmigrate_fail``
        (base pages).

        Kernel: mm/migrate.c:migrate_pages (v6.12).
        """
        paused = gc_pause(len(from_list))    # mm/hostgc.py: a walk over many folios
        try:
            return self._migrate_pages(from_list, get_new_folio, put_new_folio, private, mode, reason,
                                       ret_succeeded)
        finally:
            gc_resume(paused)

    def _migrate_pages(self, from_list: list[Folio], get_new_folio: NewFolio,
                       put_new_folio: FreeFolio | None, private: Any, mode: int, reason: int,
                       ret_succeeded: Any) -> int:
        huge = [f for f in from_list if f.kind == KIND_HUGETLB]
        pending = [f for f in from_list if f.kind != KIND_HUGETLB] if huge else list(from_list)
        failed: list[Folio] = []
        counts = [0, 0]          # succeeded, failed (folios)
        self.stats.migrate_pages_calls += 1
        split: list[Folio] = []
        saved_split = self._migrate_split
        self._migrate_split = split if reason != MR_NUMA_MISPLACED else None
        try:
            rc = self._migrate_pages_lists(pending, huge, failed, split, counts, get_new_folio,
                                           put_new_folio, private, mode, reason)
        finally:
            self._migrate_split = saved_split
        from_list[:] = failed + pending
        if not from_list:
            rc = 0               # every piece of every split folio migrated
        if ret_succeeded is not None:
            ret_succeeded.value = counts[0]
        if self.trace.on:
            self._trace("migrate_pages", reason=MIGRATE_REASON_NAMES[reason], succeeded=counts[0],
                        failed=counts[1], rc=rc)
        return rc if rc < 0 or not from_list else counts[1]

    _migrate_split: list[Folio] | None = None

    def _migrate_pages_lists(self, pending: list[Folio], huge: list[Folio], failed: list[Folio],
                             split: list[Folio], counts: list[int], get_new_folio: NewFolio,
                             put_new_folio: FreeFolio | None, private: Any, mode: int,
                             reason: int) -> int:
        # migrate_hugetlbs: hugetlb folios first, in their own loop of passes
        rc = self._migrate_batch(huge, failed, get_new_folio, put_new_folio, private, mode, reason,
                                 NR_MAX_MIGRATE_PAGES_RETRY, counts)
        if rc == 0:
            if mode == MIGRATE_ASYNC:
                rc = self._migrate_batch(pending, failed, get_new_folio, put_new_folio, private,
                                         mode, reason, NR_MAX_MIGRATE_PAGES_RETRY, counts)
            else:
                rc = self._migrate_batch(pending, failed, get_new_folio, put_new_folio, private,
                                         MIGRATE_ASYNC, reason, NR_MAX_MIGRATE_ASYNC_RETRY, counts, last=False)
                # migrate_pages_sync: each remaining folio alone, in the requested mode;
                # the last pass leaves nothing in *one* (migrated, or moved to *failed*)
                done = 0
                while rc == 0 and done < len(pending):
                    one = [pending[done]]
                    done += 1
                    rc = self._migrate_batch(one, failed, get_new_folio, put_new_folio, private,
                                             mode, reason, NR_MAX_MIGRATE_SYNC_RETRY, counts)
                del pending[:done]
        else:
            failed.extend(pending)
            pending[:] = []
        if split:
            self._migrate_split = None
            if rc < 0:
                failed.extend(split)
            else:
                # the pieces: one MIGRATE_ASYNC pass, failures not counted again (the
                # split folio already counted as one); an -ENOMEM here is not returned
                left: list[Folio] = []
                sub = [0, 0]
                self._migrate_batch(split, left, get_new_folio, put_new_folio, private,
                                    MIGRATE_ASYNC, reason, 1, sub)
                counts[0] += sub[0]
                failed.extend(left)
                failed.extend(split)
        return rc

    # -- internals ---------------------------------------------------------------------
    def _migrate_batch(self, pending: list[Folio], failed: list[Folio], get_new: NewFolio,
                       put_new: FreeFolio | None, private: Any, mode: int, reason: int,
                       passes: int, counts: list[int], last: bool = True) -> int:
        """Up to *passes* passes over *pending*; leaves unmigrated folios in *pending*
        (moved to *failed* after the last pass when *last*).  In the batched
        MIGRATE_ASYNC phase of a synchronous migration (not *last*) a permanent failure
        (-EBUSY: writeback) is neither counted nor final: migrate_pages_sync retries it
        in the requested mode, which waits for writeback."""
        deferred: list[Folio] = []
        migrate_one = self._migrate_one
        # the usual caller: this machine's own target allocator, no observer attached
        small = self._migrate_small if (
            self._ref_watch is None and put_new is None
            and getattr(get_new, "__func__", None) is MigrateMixin.alloc_migration_target
            and getattr(get_new, "__self__", None) is self
            and (private is None or type(private) is MigrationTargetControl)) else None
        gfp = 0
        if small is not None:
            gfp = (private or MigrationTargetControl()).gfp_mask
            gfp = gfp if type(gfp) is int else int(gfp)
        for _ in range(passes):
            if not pending:
                break
            retry: list[Folio] = []
            i = 0
            n = len(pending)
            while i < n:
                if small is not None:
                    # the folios that need nothing unusual go in one run; the run stops
                    # at the first that does and migrates it the per-folio way
                    done, rc = self._migrate_small_run(pending, i, gfp, private, mode, reason)
                    counts[0] += done
                    i += done
                    if i == n:
                        break
                    folio = pending[i]
                else:
                    folio = pending[i]
                    rc = migrate_one(folio, get_new, put_new, private, mode, reason)
                i += 1
                if rc == 0:
                    counts[0] += 1
                elif rc == -EAGAIN:
                    retry.append(folio)
                elif rc == -ENOMEM and folio.order and self._migrate_split is not None \
                        and (src_rc := self._try_split_folio(folio, self._migrate_split, reason)) != -ENOMEM:
                    if src_rc == 0:
                        counts[1] += 1         # a split folio counts as one failure
                    else:
                        retry.append(folio)    # MR_LONGTERM_PIN: split again next pass
                elif rc == -ENOMEM:
                    counts[1] += 1
                    self.stats.pgmigrate_fail += folio.nr_pages
                    failed.append(folio)
                    failed.extend(pending[i:])
                    failed.extend(retry)
                    failed.extend(deferred)
                    pending[:] = []
                    return -ENOMEM
                elif not last:
                    deferred.append(folio)
                else:
                    counts[1] += 1
                    self.stats.pgmigrate_fail += folio.nr_pages
                    failed.append(folio)
            pending[:] = retry
        pending.extend(deferred)
        if last and pending:
            for folio in pending:
                counts[1] += 1
                self.stats.pgmigrate_fail += folio.nr_pages
                if self.trace.on:
                    self._trace("migrate_fail", folio=folio, rc=-EAGAIN,
                                reason=MIGRATE_REASON_NAMES[reason])
            failed.extend(pending)
            pending[:] = []
        return 0

    def _try_split_folio(self, folio: Folio, split: list[Folio], reason: int) -> int:
        """The -ENOMEM branch of migrate_pages_batch for a large folio: 0 (split, the
        pieces moved to *split*), -EAGAIN when the split failed for lack of the lock or
        references and the reason is MR_LONGTERM_PIN (retry), else -ENOMEM (the
        allocation failure stands).  Kernel: mm/migrate.c:try_split_folio,
        migrate_pages_batch (v6.12)."""
        if folio.kind == KIND_HUGETLB:
            return -ENOMEM
        if folio.flags & PG_locked:
            rc = -EAGAIN                   # folio_trylock fails (MIGRATE_ASYNC) / would wait
        else:
            rc = self.split_folio_to_list(folio, split)
        if rc == 0:
            split.append(folio)            # list_move_tail of the (now small) head
            self.stats.thp_migration_split += 1
            return 0
        if rc == -EAGAIN and reason == MR_LONGTERM_PIN:
            return -EAGAIN
        return -ENOMEM

    def split_folio_to_list(self, folio: Folio, lst: list[Folio] | None) -> int:
        """Split a large anonymous or shmem folio into order-0 folios: 0, -EINVAL (not
        large, or not an anonymous/shmem folio: a recorded warning), -EBUSY (a shmem
        folio no longer in the page cache, or under writeback), -EAGAIN (references
        beyond its mappings, the page cache's and the caller's one: can_split_folio),
        -ENOMEM (the page-cache split's xa_node allocation fails: the ``kmalloc`` site).
        The folio is unmapped first (the mmu notifiers hear of it); an anonymous folio's
        mappings come back as PTEs of the pieces, a shmem folio's fault back in later.
        *folio* stays the first piece; the others, each with the state and references
        the first one has (isolated ones with an isolation reference), are appended to
        *lst* (the last one first) when given, else they stay on the LRU beside the
        first (an isolated folio without *lst* is a recorded warning and -EINVAL).
        Shmem pieces at or beyond ``max(i_size, fallocend)`` leave the page cache.
        Kernel: mm/huge_memory.c:split_huge_page_to_list_to_order, can_split_folio,
        __split_huge_page (v6.12, new_order 0)."""
        if lst is not None and not isinstance(lst, list):
            raise TypeError(f"split_folio_to_list: lst must be a list or None, got {type(lst).__name__}")
        usable = self._usable_folio(folio, "split_folio_to_list")
        if usable is None:
            return -EINVAL
        folio = usable
        if not folio.order:
            return -EINVAL                 # new_order >= folio_order(folio)
        if folio.kind not in (KIND_ANON, KIND_SHMEM):
            self._warn("split_folio_to_list", f"split of a {folio.kind} folio (VM_BUG_ON_FOLIO)", folio=folio)
            return -EINVAL
        if folio.flags & PG_isolated and lst is None:
            self._warn("split_folio_to_list", "VM_WARN_ON(!folio_test_lru(folio)): an isolated folio "
                                              "split without a list for its pieces", folio=folio)
            return -EINVAL
        shmem = folio.kind == KIND_SHMEM
        mapping = folio.mapping
        if shmem and mapping is None:
            return -EBUSY
        if folio.flags & PG_writeback:
            return -EBUSY
        if shmem:
            fi = self.faults
            if fi.active and fi.hit("kmalloc", size=XA_NODE_SIZE, gfp=int(_g.GFP_KERNEL)) is not None:
                return -ENOMEM             # xas_split_alloc
        extra = folio.nr_pages if shmem else 0
        if folio._mapcount != folio._refcount - extra - 1:
            return -EAGAIN                 # can_split_folio(folio, 1, ...)
        if any(not hasattr(owner, "huge") for owner, _ in folio.rmap or ()):
            return -EAGAIN                 # mapped by something that is no address space
        rmap, folio.rmap = folio.rmap or [], None
        if rmap:
            # unmap_folio: try_to_migrate (anon) / try_to_unmap (file) tell the notifiers
            for mm, (kind, vpn) in rmap:
                end = vpn + (1 if kind == "pte" else folio.nr_pages)
                if getattr(mm, "notifiers", None):
                    self._mmu_notify(mm, vpn << PAGE_SHIFT, end << PAGE_SHIFT, "unmap")
        remap: list[tuple[Any, int, int]] = []     # (mm, vpn, page index) to map again
        for mm, (kind, vpn) in rmap:
            if kind == "pte":
                ent = mm.pte.pop(vpn, None)
                if ent is not None:
                    remap.append((mm, vpn, pte_entry(ent)[1]))
            else:
                mm.huge.pop(vpn, None)
                remap.extend((mm, vpn + i, i) for i in range(folio.nr_pages))
        folio._mapcount = 0
        folio._refcount -= len(rmap)
        nr, pfn, data = folio.nr_pages, folio.pfn, folio._data
        flags = folio.flags & _SPLIT_KEPT_FLAGS
        # folio_ref_freeze(1 + extra_pins): each piece gets the caller's (isolation)
        # reference and, for shmem, its page-cache reference
        each = 1 + (1 if shmem else 0)
        folio._refcount = each
        folio.order, folio.nr_pages = 0, 1
        folio._data = {0: data[0]} if data and 0 in data else None
        pieces = [folio]
        sec_for = self._sections_for
        zone = folio._zone
        # the other pieces: their page-cache reference, and the list's when *lst* is given
        # (lru_add_split_folio's folio_get; without a list __split_huge_page drops it)
        tail_refs = each - (0 if lst is not None else 1)
        for i in range(1, nr):
            new = Folio(self, pfn + i, 0, zone, folio.kind)
            new._refcount = tail_refs
            new.flags = flags
            if data and i in data:
                new._data = {0: data[i]}
            if shmem:
                new.mapping, new.index = mapping, folio.index + i
                mapping.pages[folio.index + i] = new
            sec_for(pfn + i)[pfn + i] = new
            pieces.append(new)
        if shmem:
            # tails beyond EOF (and beyond what fallocate allocated) leave the page cache
            host = mapping.host
            end = max((host.i_size + (1 << PAGE_SHIFT) - 1) >> PAGE_SHIFT, getattr(host, "fallocend", 0))
            for piece in pieces[1:]:
                if piece.index >= end:
                    del mapping.pages[piece.index]
                    mapping.nrpages -= 1
                    piece.mapping = None
                    piece._refcount -= 1
                    if not piece._refcount:
                        self._free_folio(piece)
        else:
            for mm, vpn, idx in remap:     # remap_page: anonymous pages only
                self._map_pte(mm, vpn, pieces[idx], 0)
            for piece in pieces[1:]:
                if not piece._refcount:    # an unmapped tail nobody holds: freed
                    self._free_folio(piece)
        if flags & PG_lru:                 # lru_add_split_folio: the tails join the LRU lists
            lru = self._lru_lists[zone.idx][folio.kind == KIND_FILE]
            for piece in pieces[1:]:
                if not piece.freed:
                    lru[piece] = None
        if nr == 1 << 9:
            self.stats.thp_split_page += 1
        if lst is not None:
            lst.extend(reversed(pieces[1:]))   # lru_add_page_tail, last tail first
        # (else: the pieces carry PG_lru like the first one; the LRU's page count is unchanged)
        if self.trace.on:
            self._trace("split", folio=folio, pieces=nr)
        return 0

    def _migrate_one(self, src: Folio, get_new: NewFolio, put_new: FreeFolio | None,
                     private: Any, mode: int, reason: int) -> int:
        """One attempt (migrate_folio_unmap + migrate_folio_move): 0, -EAGAIN, -ENOMEM,
        or another permanent errno."""
        if src._rc == 1 and not src._mc and src._mapping is None:
            # freed under us: only the isolation reference is left (counts as migrated)
            if src.kind != KIND_HUGETLB:
                self._migrate_done(src)
            src.flags &= ~PG_isolated
            self.folio_put(src)
            return 0
        # migrate_folio_unmap: the target first; its failure ends the whole call
        dst = get_new(src, private)
        if dst is None:
            return -ENOMEM
        flags = src._flags
        if flags & PG_locked or (flags & PG_writeback and mode != MIGRATE_SYNC):
            self._free_target(dst, put_new, private)
            return -EAGAIN if flags & PG_locked else -EBUSY
        if src.rmap:
            # try_to_migrate -> try_to_migrate_one: every mapping's notifiers hear of
            # the unmap before the reference count is judged, on every attempt
            self._migrate_invalidate(src)
        expected = self.folio_expected_ref_count(src) + 1
        fi = self.faults
        extra = fi.active and fi.hit("migrate_folio", folio=src, reason=reason) is not None
        if extra or src._rc != expected:
            self._free_target(dst, put_new, private)
            if self.trace.on:
                self._trace("migrate_retry", folio=src, refcount=src._rc, expected=expected,
                            injected=extra)
            return -EAGAIN
        self._move_to_new_folio(src, dst, expected - 1)
        return 0

    def _migrate_small(self, src: Folio, gfp: int, private: Any, mode: int, reason: int) -> int:
        """:meth:`_migrate_one` with :meth:`alloc_migration_target` as the allocator
        (its control's gfp mask *gfp*, already checked) on a machine without an
        observer: an order-0 folio that is not hugetlb, with no fault armed, is
        migrated here, the target allocator's and the move's shortcuts taken;
        anything else goes to :meth:`_migrate_one` (tests/mm/test_hot_paths.py checks
        that both ways leave the same state)."""
        if type(src) is not Folio or src.order or src.kind == KIND_HUGETLB or self.faults.active \
                or (src._rc == 1 and not src._mc and src._mapping is None):
            return self._migrate_one(src, self.alloc_migration_target, None, private, mode, reason)
        # alloc_migration_target(src, mtc): GFP_TRANSHUGE only for large folios
        if src._zone.idx == ZONE_MOVABLE:
            gfp |= _HIGHMEM
        dst = self._alloc_folio(gfp | _COMP, 0, src.kind)
        if dst is None:
            return -ENOMEM
        flags = src._flags
        if flags & PG_locked or (flags & PG_writeback and mode != MIGRATE_SYNC):
            self.folio_put(dst)
            return -EAGAIN if flags & PG_locked else -EBUSY
        rmap = src.rmap
        if rmap:
            for mm, _ in rmap:         # _migrate_invalidate's first test, written out
                if type(mm) is not MMStruct or mm.notifiers:
                    self._migrate_invalidate(src)
                    break
        # folio_expected_ref_count(src) + 1 (the isolation reference), written out
        if src.kind == KIND_ANON:
            expected = src._mc + 1
        else:
            expected = src._mc + 1 + (src.nr_pages if src._mapping is not None else 0) \
                + (1 if src._flags & PG_private else 0)
        fi = self.faults               # (armed by a notifier just now, if at all)
        extra = fi.active and fi.hit("migrate_folio", folio=src, reason=reason) is not None
        if extra or src._rc != expected:
            self.folio_put(dst)
            if self.trace.on:
                self._trace("migrate_retry", folio=src, refcount=src._rc, expected=expected,
                            injected=extra)
            return -EAGAIN
        if self._ref_watch is not None:          # a notifier attached an observer
            self._move_to_new_folio(src, dst, expected - 1)
        else:
            self._move_to_new_small(src, dst, expected - 1)
        return 0

    def _migrate_small_run(self, pending: list[Folio], start: int, gfp: int, private: Any,
                           mode: int, reason: int) -> tuple[int, int]:
        """:meth:`_migrate_small` over ``pending[start:]`` in one loop (the kernel's
        migrate_pages_batch walks its list the same way): every folio that needs
        nothing unusual is migrated here, its target taken from the per-cpu list, the
        move, the target's LRU batch and the source's free written out.  The run stops
        at the first folio that needs more (a notifier to invalidate, a lock, writeback,
        an unexpected reference, an empty per-cpu list, a fault armed...), which is
        migrated by :meth:`_migrate_small`.  Returns (folios migrated in the run, the
        stopping folio's rc), the rc 0 when the run reached the end of the list.
        tests/mm/test_hot_paths.py checks that both ways leave the same state."""
        n = len(pending)
        i = start
        if self.faults.active or self._ref_watch is not None or self._pcp_disabled \
                or self.trace.verbose:
            return 0, (self._migrate_small(pending[i], gfp, private, mode, reason) if i < n else 0)
        task = self.current
        cpu = task.cpu
        # alloc_migration_target's gfp, then current_gfp_context(): both zones' variants
        base = gfp | _COMP
        if task.flags & PF_MEMALLOC_PIN:
            base &= ~_MOVABLE
        pcps: list[tuple[Any, int, bool, Any, list[int]] | None] = []
        for g in (base, base | _HIGHMEM):         # a source in ZONE_MOVABLE: + __GFP_HIGHMEM
            if g & _MOVABLE:
                mt, alloc_cma = MIGRATE_MOVABLE, True
                if self._steer is not None:
                    pcps.append(None)
                    continue
            else:
                mt, alloc_cma = (MIGRATE_RECLAIMABLE if g & _RECLAIMABLE else MIGRATE_UNMOVABLE), False
            z = self._zonelists[GFP_ZONE_TABLE[g & GFP_ZONEMASK]][0]
            mark = z.wmark_min
            if g & _HIGH:
                mark -= mark // 2
            pcp = z.pcp[cpu]
            pcps.append((z, mark, alloc_cma, pcp, pcp.lists[mt]))
        sections = self._sections
        new_folio = Folio.__new__
        next_serial = _SERIALS.__next__          # folio.py's creation order
        stats = self.stats
        trace = self.trace
        tbuf = trace._buf if trace.on else None
        lru_add = self._lru_add
        batch = lru_add[cpu]                     # this cpu's lru_add batch (a new list after a move)
        lru_disabled = self._lru_disable_count    # nothing in the run changes it
        pb_mt = self._pb_mt
        sync = mode == MIGRATE_SYNC
        iso_anon = iso_file = 0              # NR_ISOLATED_* given back, flushed at the end
        try:
            while i < n:
                src = pending[i]
                if type(src) is not Folio or src.order or src._mm is not self:
                    break
                kind = src.kind
                rc = src._rc
                flags = src._flags
                mapping = src._mapping
                mc = src._mc
                if kind == KIND_HUGETLB or kind == KIND_CONTIG or (rc == 1 and not mc and mapping is None) \
                        or flags & (PG_locked | PG_lru) or (flags & PG_writeback and not sync) or src._pincount:
                    break
                if mapping is not None and type(mapping) is not AddressSpace:
                    break                                   # another mapping's replace_folio
                rmap = src.rmap
                if rmap:
                    # page-table mappings only (an order-0 folio is never PMD-mapped),
                    # no notifier to invalidate
                    for mm, key in rmap:
                        if type(mm) is not MMStruct or mm.notifiers or key[0] != "pte":
                            break
                    else:
                        mm = None
                    if mm is not None:
                        break
                # folio_expected_ref_count(src) + 1 (the isolation reference)
                if kind == KIND_ANON:
                    expected = mc + 1
                else:
                    expected = mc + 1 + (1 if mapping is not None else 0) + (1 if flags & PG_private else 0)
                if rc != expected:
                    break
                # the target: _alloc_folio's per-cpu list, when the first zone has one ready
                szone = src._zone
                slot = pcps[szone.idx == ZONE_MOVABLE]
                if slot is None:
                    break
                z, mark, alloc_cma, pcp, lst = slot
                if not lst or (z.nr_free if alloc_cma else z.nr_free - z.nr_free_cma) <= mark:
                    break
                pcp.count -= 1
                pfn = lst.pop()
                # Folio(self, pfn, 0, z, kind) with _move_to_new_small(src, dst,
                # expected - 1) and the LRU batch's fields, each slot written once
                # (tests/mm/test_hot_paths.py compares every slot with the long way's)
                dst = new_folio(Folio)
                dst._mm = self
                dst._serial = next_serial()
                dst.pfn = pfn
                dst.order = 0
                dst.nr_pages = 1
                dst._rc = expected
                dst._pincount = 0
                dst._mc = mc
                dst._flags = flags & _MIGRATED_FLAGS
                dst.kind = kind
                dst._mapping = mapping
                dst.index = index = src.index
                dst._zone = z
                dst._data = src._data
                dst.private = src.private
                dst._lru = cpu
                dst.rmap = rmap
                dst.hstate = None
                dst.freed = False
                sec = sections.get(pfn >> SECTION_SHIFT)
                if sec is None:
                    sec = sections[pfn >> SECTION_SHIFT] = {}
                sec[pfn] = dst
                src._mc = 0
                src.rmap = None
                if mapping is not None:                     # AddressSpace.replace_folio
                    mpages = mapping.pages
                    if mpages.get(index) is src:
                        mpages[index] = dst
                if rmap:
                    for owner, key in rmap:             # MMStructs and PTEs (checked above)
                        pte = owner.pte
                        vpn = key[1]
                        ent = pte[vpn]
                        pte[vpn] = (dst, ent[1]) if type(ent) is tuple else dst
                if tbuf is not None:
                    trace._seq += 1
                    tbuf.append((trace._seq, "migrate", src, dst))
                if kind == KIND_ANON or kind == KIND_SHMEM:
                    iso_anon += 1
                else:
                    iso_file += 1
                # folio_add_lru(dst) and folio_put(dst): the batch holds the one reference
                # beyond the mappings' (expected - 1 moved + the allocation's, minus the put);
                # dst._rc and dst._lru were set with the other fields
                batch.append(dst)
                if len(batch) >= FOLIO_BATCH_SIZE or lru_disabled:
                    self._folio_batch_move_lru(cpu)
                    batch = lru_add[cpu]
                # folio_put(src), the last reference: _free_folio's order-0 way, written out
                src._data = None
                src._mapping = None
                src._rc = 0
                src._flags = 0
                spfn = src.pfn
                sec = sections.get(spfn >> SECTION_SHIFT)
                if sec is not None and sec.get(spfn) is src:
                    del sec[spfn]
                src.freed = True
                mt = pb_mt.get(spfn >> pageblock_order, MIGRATE_MOVABLE)
                if mt >= MIGRATE_PCPTYPES:
                    if mt == MIGRATE_ISOLATE:
                        self._buddy_put(szone, spfn, 1)
                        i += 1
                        continue
                    mt = MIGRATE_MOVABLE
                spcp = szone.pcp[cpu]
                spcp.lists[mt].append(spfn)
                spcp.count += 1
                if spcp.count >= spcp.high:
                    self._free_pcppages_bulk(szone, spcp, spcp.batch)
                i += 1
        finally:
            done = i - start
            stats.pgmigrate_success += done
            stats.nr_isolated_anon -= iso_anon
            stats.nr_isolated_file -= iso_file
        if i < n:
            return done, self._migrate_small(pending[i], gfp, private, mode, reason)
        return done, 0

    def _migrate_invalidate(self, src: Folio) -> None:
        """Invalidate the notifiers over every page-table mapping of *src*, one range per
        run of contiguous entries in one mm (try_to_migrate_one's range: the folio's
        extent within the VMA).  Runs are collected first: a callback may change them.
        Owners without notifiers (an mm with none registered, a test's page table) are
        skipped."""
        for mm, _ in src.rmap:
            if getattr(mm, "notifiers", None):
                break
        else:
            return                  # the usual case: no mapping's mm has notifiers
        entries = [(mm, key) for mm, key in src.rmap if getattr(mm, "notifiers", None)]
        runs: list[list[Any]] = []
        for mm, (kind, vpn) in sorted(entries, key=lambda e: (id(e[0]), e[1][1])):
            end = vpn + (1 if kind == "pte" else src.nr_pages)
            if runs and runs[-1][0] is mm and runs[-1][2] == vpn:
                runs[-1][2] = end
            else:
                runs.append([mm, vpn, end])
        for mm, start, end in runs:
            self._mmu_notify(mm, start << PAGE_SHIFT, end << PAGE_SHIFT, "migrate")

    def _free_target(self, dst: Folio, put_new: FreeFolio | None, private: Any) -> None:
        if put_new is not None:
            put_new(dst, private)
        else:
            self.folio_put(dst)

    def _move_to_new_folio(self, src: Folio, dst: Folio, refs: int) -> None:
        """Transfer contents, state and every reference holder from *src* to *dst*
        (folio_migrate_mapping, folio_migrate_flags, remove_migration_ptes), then
        migrate_folio_done for *src*, the target to the LRU and both references
        dropped.  Kernel: mm/migrate.c:migrate_folio_move (v6.12)."""
        if self._ref_watch is None and src.kind != KIND_HUGETLB and type(dst) is Folio \
                and dst._mm is self and not dst.freed and dst._rc > 0 and not dst._flags & PG_lru:
            self._move_to_new_small(src, dst, refs)
            return
        kind = dst.kind = src.kind
        dst._data, src._data = src._data, None
        # the watched fields (flags, mapping, _mapcount, _refcount) are written through
        # their slots after telling the observer, in the order the properties would
        watch = self._ref_watch
        if watch is not None:
            watch(dst, None)
        dst._flags |= src._flags & _MIGRATED_FLAGS
        mapping = src._mapping
        if watch is not None:
            watch(dst, MAPPING_CHANGE)
        dst._mapping, dst.index, dst.private = mapping, src.index, src.private
        mc = src._mc
        if watch is not None:
            watch(dst, MAPPING_CHANGE)
            dst._mc = mc
            watch(src, MAPPING_CHANGE)
            src._mc = 0
            watch(dst, dst._rc + refs)
            dst._rc += refs
            watch(src, src._rc - refs)
            src._rc -= refs
        else:
            dst._mc = mc
            src._mc = 0
            dst._rc += refs
            src._rc -= refs
        rmap, src.rmap = src.rmap, None
        dst.rmap = rmap
        if mapping is not None:
            mapping.replace_folio(src.index, src, dst)
            if watch is not None:
                watch(src, MAPPING_CHANGE)
            src._mapping = None
        if rmap:
            for owner, key in list(rmap):
                owner.replace_folio(key, src, dst)
        self.stats.pgmigrate_success += src.nr_pages
        if self.trace.on:
            self.trace.emit("migrate", {"folio": src, "to": dst})     # _trace, written out
        if kind == KIND_HUGETLB:
            self._move_hugetlb_state(src, dst)
            dst.flags |= PG_hugetlb_migratable
            src.flags &= ~PG_isolated
            self.folio_put(dst)          # the allocation reference
            self.folio_put(src)          # the isolation reference
            return
        self._migrate_done(src)
        self.folio_add_lru(dst)
        self.folio_put(dst)
        self.folio_put(src)

    def _move_to_new_small(self, src: Folio, dst: Folio, refs: int) -> None:
        """:meth:`_move_to_new_folio` on a machine without an observer, for a folio that
        is not hugetlb and a target of this machine: the same writes in the same
        order, without the observer's calls (tests/mm/test_hot_paths.py compares the
        two)."""
        kind = dst.kind = src.kind
        dst._data = src._data
        src._data = None
        dst._flags |= src._flags & _MIGRATED_FLAGS
        mapping = src._mapping
        index = src.index
        dst._mapping = mapping
        dst.index = index
        dst.private = src.private
        dst._mc = src._mc
        src._mc = 0
        dst._rc += refs
        src._rc -= refs
        rmap = src.rmap
        src.rmap = None
        dst.rmap = rmap
        if mapping is not None:
            if type(mapping) is AddressSpace:
                pages = mapping.pages      # AddressSpace.replace_folio, written out
                if pages.get(index) is src:
                    pages[index] = dst
            else:
                mapping.replace_folio(index, src, dst)
            src._mapping = None
        if rmap:
            for owner, key in list(rmap):
                if type(owner) is MMStruct and key[0] == "pte":
                    pte = owner.pte        # MMStruct.replace_folio of a PTE, written out
                    vpn = key[1]
                    ent = pte[vpn]
                    pte[vpn] = (dst, ent[1]) if type(ent) is tuple else dst
                else:
                    owner.replace_folio(key, src, dst)
        stats = self.stats
        nr = src.nr_pages
        stats.pgmigrate_success += nr
        trace = self.trace
        if trace.on:                   # _trace("migrate", ...), written out
            trace._seq += 1
            trace._buf.append((trace._seq, "migrate", src, dst))     # trace.MIGRATE_FIELDS
        # migrate_folio_done(src)
        src._flags &= ~PG_isolated
        if kind == KIND_ANON or kind == KIND_SHMEM:
            stats.nr_isolated_anon -= nr
        else:
            stats.nr_isolated_file -= nr
        # folio_add_lru(dst); folio_put(dst)
        dst._rc += 1
        cpu = self.current.cpu
        batch = self._lru_add[cpu]
        batch.append(dst)
        dst._lru = cpu
        if len(batch) >= FOLIO_BATCH_SIZE or dst.order or self._lru_disable_count:
            self._folio_batch_move_lru(cpu)
        r = dst._rc
        if r > 1 and r > dst._mc + (dst.nr_pages if dst._mapping is not None else 0):
            dst._rc = r - 1
        else:
            self.folio_put(dst)
        # folio_put(src): the isolation reference, the last one
        if src._rc == 1 and not src.rmap and not src._pincount and src._mapping is None:
            src._rc = 0
            self._free_folio(src)
        else:
            self.folio_put(src)

    def _migrate_done(self, src: Folio) -> None:
        """migrate_folio_done: the source leaves isolation (NR_ISOLATED_*)."""
        watch = self._ref_watch
        if watch is not None:          # src.flags &= ~PG_isolated, written out
            watch(src, None)
        src._flags &= ~PG_isolated
        self.node_stat_mod_isolated(src, -src.nr_pages)
