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

.. note:: Large folios are never split on failure (the kernel splits THPs on -ENOMEM or
   when THP migration is unsupported); a failed large folio counts as one failure.
"""

from __future__ import annotations

import dataclasses
from errno import EAGAIN, EBUSY, ENOMEM
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import gfp as _g
from .folio import (KIND_ANON, KIND_HUGETLB, PAGE_SHIFT, PG_anon_exclusive, PG_dirty,
                    PG_hugetlb_migratable, PG_isolated, PG_locked, PG_private, PG_uptodate,
                    PG_writeback, Folio)
from .gfp import ZONE_MOVABLE

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

_MIGRATED_FLAGS = PG_dirty | PG_uptodate | PG_anon_exclusive | PG_private

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
        if folio.kind == KIND_ANON:
            refs = 0
        else:
            refs = (folio.nr_pages if folio.mapping is not None else 0) + (1 if folio.flags & PG_private else 0)
        return refs + folio._mapcount

    def alloc_migration_target(self, src: Folio, private: MigrationTargetControl | None) -> Folio | None:
        """Allocate a folio to migrate *src* into: same order, from ``mtc.gfp_mask`` plus
        ``__GFP_HIGHMEM`` when *src* is in ZONE_MOVABLE, GFP_TRANSHUGE for large folios,
        the hugetlb pool for hugetlb folios.  The task's gfp context applies, so under
        PF_MEMALLOC_PIN the target is neither in ZONE_MOVABLE nor CMA.  Hits the
        ``alloc_migration_target`` fault site (firing = OOM, returns None).

        Kernel: mm/migrate.c:alloc_migration_target (v6.12).
        """
        mtc = private if private is not None else MigrationTargetControl()
        fi = self.faults
        if fi.active and fi.hit("alloc_migration_target", folio=src) is not None:
            self._trace("alloc_fail", folio=src, reason="fault alloc_migration_target")
            return None
        gfp = int(mtc.gfp_mask)
        if src.kind == KIND_HUGETLB:
            return self.alloc_hugetlb_folio_nodemask(src.hstate, mtc.nid, mtc.nmask, gfp)
        if src.order:
            gfp |= int(_g.GFP_TRANSHUGE)
        if src._zone.idx == ZONE_MOVABLE:
            gfp |= _g._HIGHMEM
        return self._alloc_folio(gfp | _g._COMP, src.order, src.kind)

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
        pending = [f for f in from_list if f.kind != KIND_HUGETLB]
        huge = [f for f in from_list if f.kind == KIND_HUGETLB]
        failed: list[Folio] = []
        counts = [0, 0]          # succeeded, failed (folios)
        self.stats.migrate_pages_calls += 1
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
            pending = []
        from_list[:] = failed + pending
        if ret_succeeded is not None:
            ret_succeeded.value = counts[0]
        if self.trace.on:
            self._trace("migrate_pages", reason=MIGRATE_REASON_NAMES[reason], succeeded=counts[0],
                        failed=counts[1], rc=rc)
        return rc if rc < 0 else counts[1]

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
        for _ in range(passes):
            if not pending:
                break
            retry: list[Folio] = []
            for i, folio in enumerate(pending):
                rc = migrate_one(folio, get_new, put_new, private, mode, reason)
                if rc == 0:
                    counts[0] += 1
                elif rc == -EAGAIN:
                    retry.append(folio)
                elif rc == -ENOMEM:
                    counts[1] += 1
                    self.stats.pgmigrate_fail += folio.nr_pages
                    failed.append(folio)
                    failed.extend(pending[i + 1:])
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

    def _migrate_one(self, src: Folio, get_new: NewFolio, put_new: FreeFolio | None,
                     private: Any, mode: int, reason: int) -> int:
        """One attempt (migrate_folio_unmap + migrate_folio_move): 0, -EAGAIN, -ENOMEM,
        or another permanent errno."""
        if src._refcount == 1 and not src._mapcount and src.mapping is None:
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
        flags = src.flags
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
        if extra or src._refcount != expected:
            self._free_target(dst, put_new, private)
            if self.trace.on:
                self._trace("migrate_retry", folio=src, refcount=src._refcount, expected=expected,
                            injected=extra)
            return -EAGAIN
        self._move_to_new_folio(src, dst, expected - 1)
        return 0

    def _migrate_invalidate(self, src: Folio) -> None:
        """Invalidate the notifiers over every page-table mapping of *src*, one range per
        run of contiguous entries in one mm (try_to_migrate_one's range: the folio's
        extent within the VMA).  Runs are collected first: a callback may change them.
        Owners without notifiers (an mm with none registered, a test's page table) are
        skipped."""
        entries = [(mm, key) for mm, key in src.rmap if getattr(mm, "notifiers", None)]
        if not entries:
            return
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
        """Transfer contents, state and every reference holder from *src* to *dst*."""
        kind = dst.kind = src.kind
        dst._data, src._data = src._data, None
        dst.flags |= src.flags & _MIGRATED_FLAGS
        mapping = src.mapping
        dst.mapping, dst.index, dst.private = mapping, src.index, src.private
        dst._mapcount, src._mapcount = src._mapcount, 0
        dst._refcount += refs
        src._refcount -= refs
        rmap, src.rmap = src.rmap, None
        dst.rmap = rmap
        if mapping is not None:
            mapping.replace_folio(src.index, src, dst)
            src.mapping = None
        if rmap:
            for owner, key in list(rmap):
                owner.replace_folio(key, src, dst)
        self.stats.pgmigrate_success += src.nr_pages
        if self.trace.on:
            self._trace("migrate", folio=src, to=dst)
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

    def _migrate_done(self, src: Folio) -> None:
        """migrate_folio_done: the source leaves isolation (NR_ISOLATED_*)."""
        src.flags &= ~PG_isolated
        self.node_stat_mod_isolated(src, -src.nr_pages)
