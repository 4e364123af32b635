"""A Hypothesis state machine over the allocator, the LRU, migration and CMA.

Random sequences of allocations (movable/unmovable, orders 0..3 and 9, steered or not),
frees, LRU adds and drains, isolate/putback, migrations, cma_alloc/cma_release and extra
get/put on a small machine; after every step the memory map must add up: every managed
page of a zone is exactly one of free (buddy), per-cpu, or inside one allocated folio.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

from tests.mm.helpers import assert_pages_add_up, machine_settings
from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.mm import (GFP_HIGHUSER_MOVABLE, GFP_KERNEL, MIGRATE_ASYNC,
                                MIGRATE_ISOLATE, MIGRATE_SYNC, MIGRATE_SYNC_LIGHT,
                                MR_LONGTERM_PIN, MR_SYSCALL, PF_MEMALLOC_PIN,
                                MigrationTargetControl, __GFP_COMP)
from pytest_pinfault.mm.folio import KIND_ANON, KIND_SHMEM, PG_isolated, PG_lru
from pytest_pinfault.mm.gfp import MIGRATE_PCPTYPES
from pytest_pinfault.mm.mmzone import HPAGE_PMD_ORDER
from pytest_pinfault.mm.page_alloc import NR_LOWORDER_PCP_LISTS

MACHINE = MMConfig(ram="512MiB", cma="32MiB", movablecore="128MiB")
ORDERS = st.sampled_from([0, 1, 2, 3, 9])
WHERE = st.sampled_from([None, "cma", "movable", "normal"])
PICK = st.integers(min_value=0, max_value=1 << 16)
COMP = int(__GFP_COMP)       # (a __name would be mangled inside the class body)


class Owner:
    """Page tables and a page cache in one: key -> folio, updated by migration."""

    def __init__(self) -> None:
        self.folios: dict[int, object] = {}

    def replace_folio(self, key, old, new) -> None:
        assert self.folios[key] is old, (key, old, new)
        self.folios[key] = new


class MMMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.k = FakeMM(MACHINE)
        self.cma = self.k.cma_areas[0]
        self.owner = Owner()
        self.next_key = 1
        self.kernel: list[tuple[object, int]] = []      # (page, order) from alloc_pages
        self.extra: list[object] = []                   # folios we hold an extra get on
        self.contig: list[tuple[object, int]] = []      # (page, count) from cma_alloc
        self.freed: list[object] = []                   # folio objects seen freed
        self.expected_warnings = 0

    # ------------------------------------------------------------------ helpers
    def _keys(self) -> list[int]:
        return sorted(self.owner.folios)

    def _pick_key(self, i: int) -> int:
        keys = self._keys()
        return keys[i % len(keys)]

    def _lru_keys(self) -> list[int]:
        return [key for key in self._keys() if self.owner.folios[key].flags & PG_lru]

    # ------------------------------------------------------------------ allocation
    @initialize(specs=st.lists(st.tuples(ORDERS, WHERE, st.booleans(), st.booleans()), max_size=6))
    def populate(self, specs):
        """Start with a few folios on the LRU, some of them with an extra reference."""
        for order, where, shmem, extra in specs:
            folio = self._allocate_movable(order, where, shmem, "drained")
            if folio is not None and extra:
                self.k.folio_get(folio)
                self.extra.append(folio)

    @rule(order=ORDERS, where=WHERE, shmem=st.booleans(),
          lru=st.sampled_from(["no", "batch", "drained"]))
    def allocate_movable(self, order, where, shmem, lru):
        self._allocate_movable(order, where, shmem, lru)

    def _allocate_movable(self, order, where, shmem, lru):
        k = self.k
        gfp = int(GFP_HIGHUSER_MOVABLE) | (COMP if order else 0)
        kind = KIND_SHMEM if shmem else KIND_ANON
        if where is None:
            folio = k._alloc_folio(gfp, order, kind)
        else:
            with k.steer(where):
                folio = k._alloc_folio(gfp, order, kind)
        if folio is None:
            return None
        key = self.next_key
        self.next_key += 1
        if shmem:
            folio._refcount = folio.nr_pages        # the page cache's references
            folio.mapping, folio.index = self.owner, key
        else:
            folio._mapcount = 1                     # the mapping holds the reference
            folio.rmap = [(self.owner, key)]
        self.owner.folios[key] = folio
        if where == "movable":
            assert folio.zone == "Movable"
        if lru != "no":
            k.folio_add_lru(folio)
            if lru == "drained":
                k.lru_add_drain()
        return folio

    @rule(order=ORDERS)
    def allocate_unmovable(self, order):
        page = self.k.alloc_pages(GFP_KERNEL, order)
        if page is not None:
            assert page.zone != "Movable" and not page.is_cma
            assert page.folio.order == order and page.folio.refcount == 1
            self.kernel.append((page, order))

    @precondition(lambda self: self.kernel)
    @rule(i=PICK)
    def free_unmovable(self, i):
        page, order = self.kernel.pop(i % len(self.kernel))
        self.k.free_pages_block(page, order)
        assert page.folio.freed
        self.freed.append(page.folio)

    @precondition(lambda self: self.owner.folios)
    @rule(i=PICK)
    def free_movable(self, i):
        """Unmap (anon) or truncate (shmem) a folio: drop its owner's references."""
        key = self._pick_key(i)
        folio = self.owner.folios.pop(key)
        assert not folio.freed
        if folio.kind == KIND_ANON:
            folio._mapcount = 0
            folio.rmap = None
            self.k.folio_put(folio)
        else:
            folio.mapping = None
            folio._refcount -= folio.nr_pages - 1
            self.k.folio_put(folio)
        if folio.freed:
            self.freed.append(folio)

    # ------------------------------------------------------------------ LRU
    @precondition(lambda self: self.owner.folios)
    @rule(i=PICK, drain=st.booleans())
    def add_lru(self, i, drain):
        folio = self.owner.folios[self._pick_key(i)]
        if folio.flags & PG_lru or folio.lru_batch >= 0:
            return
        before = folio.refcount
        self.k.folio_add_lru(folio)
        if drain:
            self.k.lru_add_drain()
        if folio.lru_batch >= 0:
            assert folio.refcount == before + 1 and not folio.flags & PG_lru
        else:
            assert folio.refcount == before and folio.flags & PG_lru

    @rule()
    def drain_all(self):
        self.k.lru_add_drain_all()
        assert all(not batch for batch in self.k._lru_add)

    @precondition(lambda self: self.owner.folios)
    @rule(i=PICK)
    def isolate_putback(self, i):
        keys = self._lru_keys()
        if not keys:
            return
        folio = self.owner.folios[keys[i % len(keys)]]
        before = folio.refcount
        assert self.k.folio_isolate_lru(folio)
        self.k.node_stat_mod_isolated(folio, folio.nr_pages)
        assert folio.refcount == before + 1 and folio.flags & PG_isolated
        lst = [folio]
        self.k.putback_movable_pages(lst)
        assert lst == [] and not folio.flags & PG_isolated
        in_batch = folio.lru_batch >= 0                # small folios wait in the batch
        assert folio.refcount == before + in_batch
        assert bool(folio.flags & PG_lru) != in_batch

    # ------------------------------------------------------------------ migration
    @precondition(lambda self: self.owner.folios)
    @rule(picks=st.lists(PICK, min_size=1, max_size=4),
          mode=st.sampled_from([MIGRATE_ASYNC, MIGRATE_SYNC_LIGHT, MIGRATE_SYNC]),
          pin_scope=st.booleans())
    def migrate(self, picks, mode, pin_scope):
        k = self.k
        keys = self._lru_keys()
        if not keys:
            return
        chosen = sorted({keys[p % len(keys)] for p in picks})
        lst = []
        for key in chosen:
            folio = self.owner.folios[key]
            assert k.folio_isolate_lru(folio)
            k.node_stat_mod_isolated(folio, folio.nr_pages)
            lst.append(folio)
        olds = {key: self.owner.folios[key] for key in chosen}
        saved = k.memalloc_pin_save() if pin_scope else None
        try:
            rc = k.migrate_pages(lst, k.alloc_migration_target, None,
                                 MigrationTargetControl(reason=MR_LONGTERM_PIN if pin_scope else MR_SYSCALL),
                                 mode, MR_LONGTERM_PIN if pin_scope else MR_SYSCALL)
        finally:
            if pin_scope:
                k.memalloc_pin_restore(saved)
        assert not k.current.flags & PF_MEMALLOC_PIN
        migrated = [key for key in chosen if self.owner.folios[key] is not olds[key]]
        assert rc < 0 or rc == len(chosen) - len(migrated)
        assert set(map(id, lst)) == {id(olds[key]) for key in chosen if key not in migrated}
        for key in migrated:
            new, old = self.owner.folios[key], olds[key]
            assert old.freed and not new.freed
            assert new.order == old.order and new.kind == old.kind
            self.freed.append(old)
            if pin_scope:
                assert k.folio_is_longterm_pinnable(new)
        if lst:
            k.putback_movable_pages(lst)

    # ------------------------------------------------------------------ CMA
    @rule(count=st.sampled_from([1, 100, 512, 4096, 8192, 8192, 8192]), align=st.sampled_from([0, 9, 12]))
    def cma_alloc(self, count, align):
        k = self.k
        available = self.cma.available_count
        page = k.cma_alloc(self.cma, count, align)
        if page is None:
            assert self.cma.available_count == available
            return
        assert page.pfn % (1 << align) == 0
        assert self.cma.base_pfn <= page.pfn and page.pfn + count <= self.cma.end_pfn
        assert self.cma.available_count == available - count
        assert page.folio.nr_pages == count
        self.contig.append((page, count))
        for folio in self.owner.folios.values():        # everything movable moved away
            assert not (page.pfn <= folio.pfn < page.pfn + count)

    @precondition(lambda self: self.contig)
    @rule(i=PICK)
    def cma_release(self, i):
        page, count = self.contig.pop(i % len(self.contig))
        assert self.k.cma_release(self.cma, page, count) is True

    # ------------------------------------------------------------------ references
    @precondition(lambda self: self.owner.folios)
    @rule(i=PICK)
    def get_extra(self, i):
        folio = self.owner.folios[self._pick_key(i)]
        before = folio.refcount
        self.k.folio_get(folio)
        assert folio.refcount == before + 1
        self.extra.append(folio)

    @precondition(lambda self: self.extra)
    @rule(i=PICK)
    def put_extra(self, i):
        folio = self.extra.pop(i % len(self.extra))
        self.k.folio_put(folio)
        if folio.freed:
            self.freed.append(folio)

    # ------------------------------------------------------------------ deliberate misuse
    @precondition(lambda self: self.freed)
    @rule(i=PICK)
    def put_freed_folio(self, i):
        """folio_put on a freed folio: a recorded warning, no state change."""
        folio = self.freed[i % len(self.freed)]
        self.k.folio_put(folio)
        self.expected_warnings += 1
        assert self.k.warnings[-1].site == "folio_put"
        assert folio.refcount == 0

    @precondition(lambda self: self.contig)
    @rule(i=PICK)
    def cma_release_wrong_count(self, i):
        page, count = self.contig[i % len(self.contig)]
        assert self.k.cma_release(self.cma, page, count + 1) is False
        if page.pfn + count + 1 <= self.cma.end_pfn:
            self.expected_warnings += 1
            assert self.k.warnings[-1].site == "cma_release"

    # ------------------------------------------------------------------ invariants
    @invariant()
    def pages_add_up_per_zone(self):
        assert_pages_add_up(self.k)

    @invariant()
    def every_page_is_in_exactly_one_place(self):
        """Folios, free extents, per-cpu blocks and reservations never overlap."""
        k = self.k
        spans = [(f.pfn, f.pfn + f.nr_pages, "folio") for f in k.iter_folios()]
        spans += [(s, e, "reserved") for s, e in k._reserved]
        for zone in k.zones.values():
            for fl in zone.free:
                spans += [(s, e, "free") for s, e in fl.extents()]
            for pcp in zone.pcp:
                counted = 0
                for i, lst in enumerate(pcp.lists):
                    order = HPAGE_PMD_ORDER if i >= NR_LOWORDER_PCP_LISTS else i // MIGRATE_PCPTYPES
                    spans += [(pfn, pfn + (1 << order), "pcp") for pfn in lst]
                    counted += len(lst) << order
                assert counted == pcp.count
        spans.sort()
        for (s1, e1, w1), (s2, e2, w2) in zip(spans, spans[1:]):
            assert e1 <= s2, f"{w1} [{s1:#x}, {e1:#x}) overlaps {w2} [{s2:#x}, {e2:#x})"

    @invariant()
    def no_free_pfn_inside_a_folio(self):
        k = self.k
        for folio in k.iter_folios():
            zone = k.zones[folio.zone]
            for pfn in {folio.pfn, folio.pfn + folio.nr_pages // 2, folio.pfn + folio.nr_pages - 1}:
                assert not any(fl.contains(pfn) for fl in zone.free), (folio, pfn)

    @invariant()
    def refcounts_sane(self):
        k = self.k
        for folio in k.iter_folios():
            assert folio.refcount > 0 and folio.pincount >= 0 and folio.mapcount >= 0, folio
        for folio in self.freed:
            assert folio.refcount == 0 and folio.freed
        for key, folio in self.owner.folios.items():
            assert not folio.freed
            batch = 1 if folio.lru_batch >= 0 else 0
            holders = (folio.nr_pages if folio.kind == KIND_SHMEM else 1) + batch
            holders += sum(1 for f in self.extra if f is folio)
            assert folio.refcount == holders, (key, folio)
            assert k.folio_expected_ref_count(folio) == holders - batch - sum(1 for f in self.extra if f is folio)

    @invariant()
    def nothing_left_isolated(self):
        k = self.k
        assert k.stats.nr_isolated_anon == 0 and k.stats.nr_isolated_file == 0
        assert MIGRATE_ISOLATE not in k._pb_mt.values()
        for zone in k.zones.values():
            assert zone.nr_isolate_pageblock == 0
            assert zone.free[MIGRATE_ISOLATE].nr_free == 0
        assert k._lru_disable_count == 0
        assert not any(f.flags & PG_isolated for f in k.iter_folios())

    @invariant()
    def lru_counts_match_flags(self):
        k = self.k
        on_lru = {name: 0 for name in k.zones}
        for folio in k.iter_folios():
            if folio.flags & PG_lru:
                on_lru[folio.zone] += folio.nr_pages
        assert k.nr_lru_pages == on_lru

    @invariant()
    def no_unexpected_warnings(self):
        assert len(self.k.warnings) == self.expected_warnings, [str(w) for w in self.k.warnings]


MMMachine.TestCase.settings = machine_settings(50, 30)
TestMMStateMachine = MMMachine.TestCase
TestMMStateMachine.__doc__ = "Random allocate/free/LRU/migrate/CMA sequences keep the memory map consistent."
