"""The LRU, its per-cpu add batches, and isolation from it.

Kernel: mm/swap.c (folio_add_lru, folio_batch_move_lru, lru_add_drain,
lru_add_drain_all, lru_cache_disable), mm/vmscan.c (folio_isolate_lru), mm/migrate.c
(putback_movable_pages), v6.12.

A new folio does not reach the LRU at once: ``folio_add_lru`` takes a reference and puts
it into the current cpu's ``lru_add`` batch (PG_lru still clear).  The batch is moved to
the LRU when it is full (FOLIO_BATCH_SIZE, 31), at once for a large folio or while the
LRU cache is disabled, and by ``lru_add_drain``/``lru_add_drain_all``.  Until then the
batch's reference is an extra reference that makes migration fail with -EAGAIN, and the
folio cannot be isolated: the mechanics behind the 2024 "VM fails to start" reports.

.. note:: One LRU per zone (no memcg, no active/inactive aging); the model keeps the
   folio's PG_lru flag and per-zone counts, not list order.  The mlock batch is not
   modelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .folio import (KIND_ANON, KIND_FILE, KIND_HUGETLB, KIND_SHMEM, KIND_ZERO, PG_hugetlb_migratable, PG_isolated, PG_lru,
                    Folio)

FOLIO_BATCH_SIZE = 31


if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object


class SwapMixin(_Base):
    """LRU half of :class:`~pytest_pinfault.FakeMM`."""

    def folio_add_lru(self, folio: Folio) -> None:
        """Queue *folio* for the LRU in the current cpu's batch, taking a reference.

        Kernel: mm/swap.c:folio_add_lru (v6.12).
        """
        if type(folio) is not Folio or folio._mm is not self or folio.freed:
            usable = self._usable_folio(folio, "folio_add_lru")
            if usable is None:
                return
            folio = usable
        r = folio._rc
        if r <= 0 or folio._flags & PG_lru:
            self._warn("folio_add_lru", "folio_add_lru on a freed folio or one already on the LRU",
                       folio=folio)
            return
        cpu = self.current.cpu
        # folio._refcount += 1; folio.lru_batch = cpu, written out (observer first)
        watch = self._ref_watch
        if watch is not None:
            watch(folio, r + 1)
        folio._rc = r + 1
        batch = self._lru_add[cpu]
        batch.append(folio)
        if watch is not None:
            watch(folio, None)
        folio._lru = cpu
        if len(batch) >= FOLIO_BATCH_SIZE or folio.order or self._lru_disable_count:
            self._folio_batch_move_lru(cpu)

    def _folio_batch_move_lru(self, cpu: int) -> None:
        """Move one cpu's lru_add batch to the LRU, dropping the batch's references."""
        batch = self._lru_add[cpu]
        if not batch:
            return
        self._lru_add[cpu] = []
        lru_nr, folio_put, lists = self._lru_nr, self.folio_put, self._lru_lists
        watch = self._ref_watch
        if watch is None:
            for folio in batch:
                folio._lru = -1
                if not folio.freed:
                    folio._flags |= PG_lru
                    idx = folio._zone.idx
                    nr = folio.nr_pages
                    lru_nr[idx] += nr
                    lists[idx][folio.kind == KIND_FILE][folio] = None     # the young end
                    # folio_put(folio) of a folio that keeps references, written out
                    r = folio._rc
                    if r > 1 and r > folio._mc + (nr if folio._mapping is not None else 0) \
                            and folio._mm is self and folio.kind != KIND_ZERO:
                        folio._rc = r - 1
                        continue
                folio_put(folio)
            return
        for folio in batch:
            watch(folio, None)             # folio.lru_batch = -1; folio.flags |= PG_lru, written out
            folio._lru = -1
            if not folio.freed:
                watch(folio, None)
                folio._flags |= PG_lru
                idx = folio._zone.idx
                lru_nr[idx] += folio.nr_pages
                lists[idx][folio.kind == KIND_FILE][folio] = None     # the young end
            folio_put(folio)

    def lru_add_drain(self) -> None:
        """Move the current cpu's batch to the LRU.  Kernel: mm/swap.c:lru_add_drain."""
        self._folio_batch_move_lru(self.current.cpu)

    def lru_add_drain_cpu(self, cpu: int) -> None:
        """Move one cpu's batch to the LRU; a cpu number outside ``0..nr_cpus-1`` is a
        recorded warning (per_cpu() of a cpu that does not exist).
        Kernel: mm/swap.c:lru_add_drain_cpu."""
        if not isinstance(cpu, int):
            raise TypeError(f"lru_add_drain_cpu: cpu must be an int, got {type(cpu).__name__}")
        if not 0 <= cpu < len(self._lru_add):
            self._warn("lru_add_drain_cpu", f"cpu {cpu} out of range (nr_cpu_ids {len(self._lru_add)})")
            return
        self._folio_batch_move_lru(cpu)

    def lru_add_drain_all(self) -> None:
        """Drain every cpu's LRU batch (hits the ``lru_add_drain_all`` fault site).

        As since v6.17 the local batch is drained first.  When the site fires the other
        cpus' batches are left alone: their references stay in place, as when a racing
        CPU refills its batch.  Kernel: mm/swap.c:lru_add_drain_all (v6.17).
        """
        self.lru_add_drain()
        fi = self.faults
        if fi.active and fi.hit("lru_add_drain_all") is not None:
            self._trace("lru_add_drain_all", skipped=True)
            return
        self.stats.lru_add_drain_all += 1
        for cpu in range(len(self._lru_add)):
            self._folio_batch_move_lru(cpu)

    def lru_cache_disable(self) -> None:
        """Disable the per-cpu LRU batches (nesting) and drain them all.

        Kernel: mm/swap.c:lru_cache_disable (v6.12).
        """
        self._lru_disable_count += 1
        for cpu in range(len(self._lru_add)):
            self._folio_batch_move_lru(cpu)

    def lru_cache_enable(self) -> None:
        """Kernel: include/linux/swap.h:lru_cache_enable."""
        if self._lru_disable_count <= 0:
            self._warn("lru_cache_enable", "lru_cache_enable without lru_cache_disable")
            return
        self._lru_disable_count -= 1

    def folio_test_lru(self, folio: Folio) -> bool:
        """PG_lru: the folio is on an LRU list.  Kernel: include/linux/page-flags.h."""
        return bool(folio.flags & PG_lru)

    def folio_isolate_lru(self, folio: Folio) -> bool:
        """Take *folio* off the LRU for migration; True on success (bool since v6.4).

        Succeeds only if PG_lru was set; clears it and takes a reference, which the
        caller drops through :meth:`putback_movable_pages` or migration.  The caller
        accounts NR_ISOLATED_ANON/FILE (:meth:`node_stat_mod_isolated`).  Hits the
        ``folio_isolate_lru`` fault site (failure = the folio is temporarily off the LRU).
        Kernel: mm/vmscan.c:folio_isolate_lru (v6.4+).
        """
        if type(folio) is not Folio or folio._mm is not self or folio.freed:
            usable = self._usable_folio(folio, "folio_isolate_lru")
            if usable is None:
                return False
            folio = usable
        if folio._rc <= 0:
            self._warn("folio_isolate_lru", "VM_BUG_ON_FOLIO(!folio_ref_count(folio))", folio=folio)
            return False
        fi = self.faults
        if fi.active and fi.hit("folio_isolate_lru", folio=folio) is not None:
            self._trace("isolate_fail", folio=folio, reason="fault")
            return False
        flags = folio._flags
        if not flags & PG_lru:
            return False
        # folio.flags = ...; folio._refcount += 1, written out (observer first)
        watch = self._ref_watch
        if watch is not None:
            watch(folio, None)
        folio._flags = (flags & ~PG_lru) | PG_isolated
        if watch is not None:
            watch(folio, folio._rc + 1)
        folio._rc += 1
        idx = folio._zone.idx
        self._lru_nr[idx] -= folio.nr_pages
        self._lru_lists[idx][folio.kind == KIND_FILE].pop(folio, None)
        if self.trace.verbose:
            self._trace("isolate", folio=folio)
        return True

    def node_stat_mod_isolated(self, folio: Folio, delta: int) -> None:
        """NR_ISOLATED_ANON or NR_ISOLATED_FILE += *delta* pages (node_stat_mod_folio):
        swap-backed folios (anonymous and shmem) count as anon, as folio_is_file_lru says.
        Kernel: include/linux/vmstat.h:node_stat_mod_folio with NR_ISOLATED_ANON +
        folio_is_file_lru, as mm/vmscan.c and mm/migrate.c call it (v6.12)."""
        if type(folio) is not Folio:
            folio = self._folio_of(folio, "node_stat_mod_isolated")
        if type(delta) is not int and not isinstance(delta, int):
            raise TypeError(f"node_stat_mod_isolated: delta must be an int, got {type(delta).__name__}")
        if folio.kind == KIND_ANON or folio.kind == KIND_SHMEM:
            self.stats.nr_isolated_anon += delta
        else:
            self.stats.nr_isolated_file += delta

    def folio_putback_lru(self, folio: Folio) -> None:
        """Return an isolated folio to the LRU (through the batch) and drop the
        isolation reference; a folio that is not isolated is a recorded warning (the
        kernel's list corruption) and is left alone.
        Kernel: mm/vmscan.c:folio_putback_lru (v6.12)."""
        if not self._isolated_arg(folio, "folio_putback_lru"):
            return
        folio.flags &= ~PG_isolated
        self.folio_add_lru(folio)
        self.folio_put(folio)

    def putback_movable_pages(self, folios: list[Folio]) -> None:
        """Put every folio of an isolation list back and empty the list.

        hugetlb folios go back to their hstate's active list; the others to the LRU,
        undoing NR_ISOLATED.  Kernel: mm/migrate.c:putback_movable_pages (v6.12).
        """
        if not isinstance(folios, list):
            raise TypeError(f"putback_movable_pages: folios must be a list, got {type(folios).__name__}")
        items, folios[:] = list(folios), []
        for i, folio in enumerate(items):
            if not self._isolated_arg(folio, "putback_movable_pages", f"folios[{i}]"):
                continue
            if folio.kind == KIND_HUGETLB:
                self.folio_putback_hugetlb(folio)
                continue
            self.node_stat_mod_isolated(folio, -folio.nr_pages)
            if self.trace.verbose:
                self._trace("putback", folio=folio)
            self.folio_putback_lru(folio)

    def folio_isolate_hugetlb(self, folio: Folio, lst: list[Folio]) -> bool:
        """Isolate an in-use hugetlb folio onto *lst* for migration; True on success.

        Fails when the folio is not hugetlb, not migratable (free or already isolated)
        or its refcount is 0.  Hits the ``folio_isolate_hugetlb`` fault site.
        Kernel: mm/hugetlb.c:folio_isolate_hugetlb (v6.14; isolate_hugetlb before).
        """
        if self._usable_folio(folio, "folio_isolate_hugetlb") is None:
            return False
        if not isinstance(lst, list):
            raise TypeError(f"folio_isolate_hugetlb: lst must be a list, got {type(lst).__name__}")
        fi = self.faults
        if fi.active and fi.hit("folio_isolate_hugetlb", folio=folio) is not None:
            self._trace("isolate_fail", folio=folio, reason="fault")
            return False
        if (folio.kind != KIND_HUGETLB or not folio.flags & PG_hugetlb_migratable
                or folio._refcount <= 0 or folio.freed):
            return False
        folio.flags = (folio.flags & ~PG_hugetlb_migratable) | PG_isolated
        folio._refcount += 1
        lst.append(folio)
        if self.trace.verbose:
            self._trace("isolate", folio=folio)
        return True

    def folio_putback_hugetlb(self, folio: Folio) -> None:
        """Kernel: mm/hugetlb.c:folio_putback_hugetlb (v6.14)."""
        if not self._isolated_arg(folio, "folio_putback_hugetlb"):
            return
        folio.flags = (folio.flags & ~PG_isolated) | PG_hugetlb_migratable
        if self.trace.verbose:
            self._trace("putback", folio=folio)
        self.folio_put(folio)

    def _isolated_arg(self, folio: Any, site: str, param: str = "folio") -> bool:
        """*folio* is a live folio of this machine on an isolation list; otherwise the
        misuse is recorded and False returned."""
        if self._usable_folio(folio, site, param) is None:
            return False
        folio = folio.folio
        if not folio.flags & PG_isolated:
            self._warn(site, f"{site} of a folio that is not isolated", folio=folio)
            return False
        return True

    def _lru_del_on_free(self, folio: Folio) -> None:
        if folio.flags & PG_lru:
            folio.flags &= ~PG_lru
            idx = folio._zone.idx
            self._lru_nr[idx] -= folio.nr_pages
            self._lru_lists[idx][folio.kind == KIND_FILE].pop(folio, None)

    @property
    def nr_lru_pages(self) -> dict[str, int]:
        """Pages on the LRU per zone name."""
        return {z.name: self._lru_nr[z.idx] for z in self._zone_list}
