"""Page migration: folio_expected_ref_count, migrate_pages, alloc_migration_target.

Kernel: mm/migrate.c, include/linux/mm.h:folio_expected_ref_count (see
docs/kernel-contract §8).  Folios are built by hand the way the address-space model
builds them: an anonymous folio mapped once (``_mapcount = 1``, the mapping holding the
allocation reference) or a page-cache folio whose cache holds one reference per page.
"""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import MMConfig, Out
from pytest_pinfault.mm import (GFP_HIGHUSER_MOVABLE, GUP_PIN_COUNTING_BIAS, MIGRATE_ASYNC,
                                MIGRATE_SYNC, MIGRATE_SYNC_LIGHT, MR_LONGTERM_PIN, MR_SYSCALL,
                                NR_MAX_MIGRATE_PAGES_RETRY, PF_MEMALLOC_PIN,
                                MigrationTargetControl, __GFP_COMP)
from tests.mm.helpers import FakeMapping, FakePageTable, assert_nothing_isolated
from pytest_pinfault.mm.folio import (KIND_ANON, KIND_HUGETLB, KIND_SHMEM, PG_dirty,
                                      PG_hugetlb_migratable, PG_hugetlb_temporary, PG_isolated,
                                      PG_locked, PG_lru, PG_private, PG_uptodate, PG_writeback)
from pytest_pinfault.mm.migrate import NR_MAX_MIGRATE_ASYNC_RETRY, NR_MAX_MIGRATE_SYNC_RETRY

ALL_MODES = [MIGRATE_ASYNC, MIGRATE_SYNC_LIGHT, MIGRATE_SYNC]


@pytest.fixture
def mm_config() -> MMConfig:
    return MMConfig(ram="512MiB", cma="32MiB", movablecore="128MiB")


# ---------------------------------------------------------------------------- helpers
def _alloc(k, kind, order=0, where=None):
    gfp = int(GFP_HIGHUSER_MOVABLE) | (int(__GFP_COMP) if order else 0)
    if where is None:
        folio = k._alloc_folio(gfp, order, kind)
    else:
        with k.steer(where):
            folio = k._alloc_folio(gfp, order, kind)
    assert folio is not None
    return folio


def anon_folio(k, order=0, where=None, pt=None, addr=0x1000, lru=True):
    """An anonymous folio mapped once (by *pt* at *addr* when given), on the LRU."""
    folio = _alloc(k, KIND_ANON, order, where)
    folio._mapcount = 1
    if pt is not None:
        pt.ptes[addr] = folio
        folio.rmap = [(pt, addr)]
    if lru:
        k.folio_add_lru(folio)
        k.lru_add_drain()
    return folio


def cache_folio(k, mapping, index, order=0, where=None):
    """A clean, uptodate, unmapped page-cache folio at *index* of *mapping*, on the LRU."""
    folio = _alloc(k, KIND_SHMEM, order, where)
    folio._refcount = folio.nr_pages          # one reference per page from the cache
    folio.mapping = mapping
    folio.index = index
    folio.flags |= PG_uptodate
    mapping.pages[index] = folio
    k.folio_add_lru(folio)
    k.lru_add_drain()
    return folio


def isolate(k, *folios):
    lst = []
    for folio in folios:
        assert k.folio_isolate_lru(folio)
        k.node_stat_mod_isolated(folio, folio.nr_pages)
        lst.append(folio)
    return lst


def migrate(k, lst, mode=MIGRATE_SYNC, out=None, reason=MR_SYSCALL):
    return k.migrate_pages(lst, k.alloc_migration_target, None,
                           MigrationTargetControl(reason=reason), mode, reason, out)


# ---------------------------------------------------------------------------- tests
class TestFolioExpectedRefCount:
    def test_anon_counts_only_mappings(self, fake_mm):
        """An anonymous folio's expected references are its mappings, nothing else."""
        folio = anon_folio(fake_mm, lru=False)
        folio._mapcount = 3
        folio.flags |= PG_private
        assert fake_mm.folio_expected_ref_count(folio) == 3

    @pytest.mark.pin_contract(disable=['pin-balance'],
                              reason="model test: keeps an extra reference on purpose (the failure under test)")
    def test_unmapped_anon_expects_nothing(self, fake_mm):
        """An unmapped anonymous folio expects no references at all."""
        folio = anon_folio(fake_mm, lru=False)
        folio._mapcount = 0
        assert fake_mm.folio_expected_ref_count(folio) == 0

    def test_small_page_cache_folio(self, fake_mm):
        """A small page-cache folio expects 1 (cache) + PG_private + its mappings."""
        mapping = FakeMapping()
        folio = cache_folio(fake_mm, mapping, 0)
        assert fake_mm.folio_expected_ref_count(folio) == 1
        folio.flags |= PG_private
        assert fake_mm.folio_expected_ref_count(folio) == 2
        folio._mapcount = 2
        assert fake_mm.folio_expected_ref_count(folio) == 4

    def test_large_page_cache_folio_counts_every_page(self, fake_mm):
        """A large page-cache folio expects nr_pages (cache) + PG_private + mappings."""
        folio = cache_folio(fake_mm, FakeMapping(), 4, order=2)
        folio.flags |= PG_private
        folio._mapcount = 3
        assert fake_mm.folio_expected_ref_count(folio) == 4 + 1 + 3

    def test_file_folio_without_mapping(self, fake_mm):
        """A file folio removed from its cache expects only PG_private and mappings."""
        folio = _alloc(fake_mm, KIND_SHMEM)
        folio._mapcount = 1
        folio.flags |= PG_private
        assert fake_mm.folio_expected_ref_count(folio) == 2

    @pytest.mark.pin_contract(disable=['pin-balance'],
                              reason="model test: keeps an extra reference on purpose (the failure under test)")
    def test_extra_references_are_not_expected(self, fake_mm):
        """GUP gets, pins, isolation and batch references do not change the expectation."""
        folio = anon_folio(fake_mm, lru=False)
        fake_mm.folio_get(folio)
        folio._refcount += GUP_PIN_COUNTING_BIAS
        fake_mm.folio_add_lru(folio)
        assert fake_mm.folio_expected_ref_count(folio) == 1


class TestMigratePagesMoves:
    def test_contents_move_to_the_new_folio(self, fake_mm):
        """Bytes written before migration are read back from the new folio."""
        pt = FakePageTable()
        old = anon_folio(fake_mm, order=2, where="cma", pt=pt)
        old.write(0, b"head")
        old.write(4096 - 2, b"span")                 # crosses a page boundary
        old.write(3 * 4096 + 100, b"tail")
        lst = isolate(fake_mm, old)
        assert migrate(fake_mm, lst) == 0
        new = pt.ptes[0x1000]
        assert new is not old and new.order == 2 and new.kind == KIND_ANON
        assert new.read(0, 4) == b"head"
        assert new.read(4096 - 2, 4) == b"span"
        assert new.read(3 * 4096 + 100, 4) == b"tail"
        assert new.read(8192, 8) == bytes(8)

    def test_flags_dirty_and_uptodate_carried(self, fake_mm):
        """PG_dirty and PG_uptodate move to the new folio; lru/isolated do not."""
        pt = FakePageTable()
        old = anon_folio(fake_mm, where="cma", pt=pt)
        old.flags |= PG_uptodate | PG_dirty
        assert migrate(fake_mm, isolate(fake_mm, old)) == 0
        new = pt.ptes[0x1000]
        assert new.flags & (PG_uptodate | PG_dirty) == PG_uptodate | PG_dirty
        assert not new.flags & (PG_lru | PG_isolated)

    def test_clean_folio_stays_clean(self, fake_mm):
        """A clean uptodate folio is migrated clean."""
        mapping = FakeMapping()
        old = cache_folio(fake_mm, mapping, 3, where="cma")
        assert migrate(fake_mm, isolate(fake_mm, old)) == 0
        new = mapping.pages[3]
        assert new.flags & PG_uptodate
        assert not new.flags & PG_dirty

    def test_mapping_index_and_replace_folio(self, fake_mm):
        """The page-cache slot is handed over with mapping.replace_folio(index, old, new)."""
        mapping = FakeMapping()
        old = cache_folio(fake_mm, mapping, 7, where="cma")
        old.write(10, b"cache")
        assert migrate(fake_mm, isolate(fake_mm, old)) == 0
        assert len(mapping.calls) == 1
        index, was, new = mapping.calls[0]
        assert index == 7 and was is old and new is not old
        assert new.mapping is mapping and new.index == 7 and new.kind == KIND_SHMEM
        assert old.mapping is None
        assert new.read(10, 5) == b"cache"
        assert new.refcount == 1 + 1                 # the cache's page + the LRU batch

    def test_every_rmap_owner_is_updated(self, fake_mm):
        """Each (owner, key) of folio.rmap gets owner.replace_folio(key, old, new)."""
        pt1, pt2 = FakePageTable(), FakePageTable()
        old = anon_folio(fake_mm, where="cma", lru=False)
        old._mapcount = 2
        old._refcount = 2
        pt1.ptes[0x1000] = old
        pt2.ptes[0x7000] = old
        old.rmap = [(pt1, 0x1000), (pt2, 0x7000)]
        fake_mm.folio_add_lru(old)
        fake_mm.lru_add_drain()
        assert migrate(fake_mm, isolate(fake_mm, old)) == 0
        new = pt1.ptes[0x1000]
        assert pt1.calls == [(0x1000, old, new)]
        assert pt2.calls == [(0x7000, old, new)]
        assert new.rmap == [(pt1, 0x1000), (pt2, 0x7000)]
        assert new.mapcount == 2 and old.mapcount == 0
        assert new.refcount == 2 + 1                 # two mappings + the LRU batch

    def test_old_freed_new_in_lru_batch(self, fake_mm):
        """The source is freed; the target waits in the current cpu's LRU add batch."""
        pt = FakePageTable()
        old = anon_folio(fake_mm, where="cma", pt=pt)
        allocated = fake_mm.nr_allocated_pages
        assert migrate(fake_mm, isolate(fake_mm, old)) == 0
        new = pt.ptes[0x1000]
        assert old.freed and old.refcount == 0
        assert fake_mm.pfn_to_folio(old.pfn) is None
        assert fake_mm.nr_allocated_pages == allocated
        cpu = fake_mm.current.cpu
        assert new.lru_batch == cpu
        assert fake_mm._lru_add[cpu] == [new]
        assert not fake_mm.folio_test_lru(new)
        assert new.refcount == 2
        fake_mm.lru_add_drain()
        assert fake_mm.folio_test_lru(new) and new.refcount == 1
        assert fake_mm.stats.pgmigrate_success == 1
        assert fake_mm.stats.pgmigrate_fail == 0
        assert_nothing_isolated(fake_mm)

    @pytest.mark.pin_contract(disable=['pin-balance', 'contiguity'],
                              reason="model test: keeps an extra reference on purpose (the failure under test)")
    def test_return_counts_folios_not_migrated(self, fake_mm):
        """migrate_pages returns the folios not migrated; they alone stay on the list."""
        pt = FakePageTable()
        a = anon_folio(fake_mm, where="cma", pt=pt, addr=0x1000)
        b = anon_folio(fake_mm, where="cma", pt=pt, addr=0x2000)
        c = anon_folio(fake_mm, where="cma", pt=pt, addr=0x3000)
        fake_mm.folio_get(b)
        lst = isolate(fake_mm, a, b, c)
        out = Out()
        assert migrate(fake_mm, lst, out=out) == 1
        assert lst == [b]
        assert out.value == 2
        assert a.freed and c.freed and not b.freed
        assert pt.ptes[0x2000] is b
        assert fake_mm.stats.pgmigrate_success == 2
        assert fake_mm.stats.pgmigrate_fail == 1
        fake_mm.putback_movable_pages(lst)
        assert lst == []
        assert_nothing_isolated(fake_mm)

    def test_empty_list(self, fake_mm):
        """An empty list migrates nothing and returns 0."""
        out = Out(-1)
        assert migrate(fake_mm, [], out=out) == 0
        assert out.value == 0
        assert fake_mm.stats.migrate_pages_calls == 1


class TestMigratePagesExtraReference:
    @pytest.mark.pin_contract(disable=['pin-balance', 'isolation-hygiene', 'contiguity'],
                              reason="model test: keeps an extra reference on purpose (the failure under test); leaves the isolated folios on its list to inspect them")
    @pytest.mark.parametrize("mode", ALL_MODES)
    def test_fails_after_max_retries(self, fake_mm, mode):
        """An extra reference fails NR_MAX_MIGRATE_PAGES_RETRY attempts, then gives up."""
        pt = FakePageTable()
        folio = anon_folio(fake_mm, order=2, where="cma", pt=pt)
        fake_mm.folio_get(folio)
        allocated = fake_mm.nr_allocated_pages
        lst = isolate(fake_mm, folio)
        fake_mm.faults.record()
        out = Out()
        assert migrate(fake_mm, lst, mode=mode, out=out) == 1
        assert fake_mm.faults.hits["migrate_folio"] == NR_MAX_MIGRATE_PAGES_RETRY
        assert fake_mm.faults.hits["alloc_migration_target"] == NR_MAX_MIGRATE_PAGES_RETRY
        assert lst == [folio]
        assert out.value == 0
        assert folio.flags & PG_isolated and not folio.freed
        assert folio.refcount == 1 + 1 + 1           # mapping + get + isolation
        assert fake_mm.stats.pgmigrate_fail == folio.nr_pages == 4
        assert fake_mm.stats.pgmigrate_success == 0
        assert fake_mm.nr_allocated_pages == allocated   # every target given back
        assert pt.ptes[0x1000] is folio

    @pytest.mark.pin_contract(disable=['pin-balance', 'contiguity'],
                              reason="model test: keeps an extra reference on purpose (the failure under test)")
    def test_putback_after_failure(self, fake_mm):
        """putback_movable_pages returns the failed folio to the LRU and drops isolation."""
        folio = anon_folio(fake_mm, where="cma")
        fake_mm.folio_get(folio)
        lst = isolate(fake_mm, folio)
        assert fake_mm.stats.nr_isolated_anon == 1
        assert migrate(fake_mm, lst) == 1
        fake_mm.putback_movable_pages(lst)
        fake_mm.lru_add_drain()
        assert lst == []
        assert fake_mm.folio_test_lru(folio)
        assert folio.refcount == 2
        assert_nothing_isolated(fake_mm)

    @pytest.mark.pin_contract(disable=['isolation-hygiene'],
                              reason="model test: leaves the isolated folios on its list to inspect them")
    def test_pin_bias_fails_too(self, fake_mm):
        """A FOLL_PIN-sized reference (GUP_PIN_COUNTING_BIAS) blocks migration the same way."""
        folio = anon_folio(fake_mm, where="movable")
        folio._refcount += GUP_PIN_COUNTING_BIAS
        lst = isolate(fake_mm, folio)
        fake_mm.faults.record()
        assert migrate(fake_mm, lst) == 1
        assert fake_mm.faults.hits["migrate_folio"] == NR_MAX_MIGRATE_PAGES_RETRY
        assert lst == [folio]
        assert folio.refcount == 1 + GUP_PIN_COUNTING_BIAS + 1

    @pytest.mark.pin_contract(disable=['pin-balance', 'isolation-hygiene', 'contiguity'],
                              reason="model test: keeps an extra reference on purpose (the failure under test); leaves the isolated folios on its list to inspect them")
    def test_trace_names_the_failing_folio(self, fake_mm):
        """Each failed attempt is traced as migrate_retry; the give-up as migrate_fail."""
        folio = anon_folio(fake_mm, where="cma")
        fake_mm.folio_get(folio)
        assert migrate(fake_mm, isolate(fake_mm, folio)) == 1
        retries = fake_mm.trace.filter(kind="migrate_retry", folio=folio)
        assert len(retries) == NR_MAX_MIGRATE_PAGES_RETRY
        assert {(e.fields["refcount"], e.fields["expected"]) for e in retries} == {(3, 2)}
        fails = fake_mm.trace.filter(kind="migrate_fail")
        assert len(fails) == 1 and fails[0].fields["folio"] is folio
        assert fails[0].fields["rc"] == -errno.EAGAIN

    @pytest.mark.parametrize("times", [1, 3, 4, NR_MAX_MIGRATE_PAGES_RETRY - 1])
    def test_transient_fault_then_success(self, fake_mm, times):
        """migrate_folio armed times=k fails the first k attempts; attempt k+1 migrates."""
        pt = FakePageTable()
        folio = anon_folio(fake_mm, where="cma", pt=pt)
        folio.write(0, b"survives")
        arming = fake_mm.faults.arm("migrate_folio", times=times)
        lst = isolate(fake_mm, folio)
        assert migrate(fake_mm, lst) == 0
        assert arming.fired == times
        assert fake_mm.faults.hits["migrate_folio"] == times + 1
        assert fake_mm.faults.hits["alloc_migration_target"] == times + 1
        assert lst == []
        assert folio.freed
        assert pt.ptes[0x1000].read(0, 8) == b"survives"
        assert fake_mm.stats.pgmigrate_success == 1
        assert fake_mm.stats.pgmigrate_fail == 0

    def test_fault_every_attempt_fails(self, fake_mm):
        """migrate_folio armed for all NR_MAX_MIGRATE_PAGES_RETRY attempts fails the folio."""
        folio = anon_folio(fake_mm, where="cma")
        arming = fake_mm.faults.arm("migrate_folio", times=NR_MAX_MIGRATE_PAGES_RETRY)
        lst = isolate(fake_mm, folio)
        assert migrate(fake_mm, lst) == 1
        assert arming.fired == NR_MAX_MIGRATE_PAGES_RETRY
        assert lst == [folio]
        assert fake_mm.stats.pgmigrate_fail == 1
        fake_mm.putback_movable_pages(lst)
        assert_nothing_isolated(fake_mm)


class TestMigratePagesTargetAllocationFailure:
    def test_first_target_fails(self, fake_mm):
        """No target at all: -ENOMEM and every folio stays, in order, on from_list."""
        pt = FakePageTable()
        folios = [anon_folio(fake_mm, where="cma", pt=pt, addr=a) for a in (0x1000, 0x2000, 0x3000)]
        for i, f in enumerate(folios):
            f.write(0, b"%d" % i)
        fake_mm.faults.arm("alloc_migration_target")
        lst = isolate(fake_mm, *folios)
        out = Out()
        assert migrate(fake_mm, lst, out=out) == -errno.ENOMEM
        assert lst == folios
        assert out.value == 0
        assert fake_mm.stats.pgmigrate_success == 0
        assert all(f.flags & PG_isolated and not f.freed for f in folios)
        assert [f.read(0, 1) for f in folios] == [b"0", b"1", b"2"]
        fake_mm.putback_movable_pages(lst)
        assert_nothing_isolated(fake_mm)

    def test_later_target_fails(self, fake_mm):
        """A failure at the second target keeps the folios not yet migrated on the list."""
        pt = FakePageTable()
        a, b, c = (anon_folio(fake_mm, where="cma", pt=pt, addr=x) for x in (0x1000, 0x2000, 0x3000))
        fake_mm.faults.arm("alloc_migration_target", nth=2)
        lst = isolate(fake_mm, a, b, c)
        out = Out()
        assert migrate(fake_mm, lst, out=out) == -errno.ENOMEM
        assert lst == [b, c]
        assert out.value == 1
        assert a.freed and pt.ptes[0x1000] is not a
        assert fake_mm.stats.pgmigrate_success == 1
        fake_mm.putback_movable_pages(lst)
        assert_nothing_isolated(fake_mm)

    @pytest.mark.pin_contract(disable=['isolation-hygiene', 'contiguity'],
                              reason="model test: keeps an extra reference on purpose (the failure under test); leaves the isolated folios on its list to inspect them")
    def test_get_new_folio_returning_none(self, fake_mm):
        """A caller's get_new_folio that returns None makes migrate_pages return -ENOMEM."""
        folio = anon_folio(fake_mm, where="cma")
        lst = isolate(fake_mm, folio)
        calls = []

        def no_target(src, private):
            calls.append((src, private))
            return None

        rc = fake_mm.migrate_pages(lst, no_target, None, "cookie", MIGRATE_SYNC, MR_SYSCALL)
        assert rc == -errno.ENOMEM
        assert calls == [(folio, "cookie")]
        assert lst == [folio]


class TestMigrationTargetPlacement:
    @pytest.mark.parametrize("where,zone,is_cma", [("cma", "DMA32", True), ("movable", "Movable", False)])
    def test_targets_pinnable_under_memalloc_pin(self, fake_mm, where, zone, is_cma):
        """Under memalloc_pin_save() the target of a CMA/Movable folio is long-term pinnable."""
        pt = FakePageTable()
        old = anon_folio(fake_mm, where=where, pt=pt)
        assert (old.zone, old.is_cma) == (zone, is_cma)
        assert not fake_mm.folio_is_longterm_pinnable(old)
        lst = isolate(fake_mm, old)
        saved = fake_mm.memalloc_pin_save()
        try:
            assert migrate(fake_mm, lst, reason=MR_LONGTERM_PIN) == 0
        finally:
            fake_mm.memalloc_pin_restore(saved)
        assert fake_mm.current.flags & PF_MEMALLOC_PIN == 0
        new = pt.ptes[0x1000]
        assert new.zone != "Movable" and not new.is_cma
        assert fake_mm.folio_is_longterm_pinnable(new)

    def test_movable_target_without_pin_scope(self, fake_mm):
        """Without PF_MEMALLOC_PIN a ZONE_MOVABLE folio's target stays in ZONE_MOVABLE."""
        pt = FakePageTable()
        old = anon_folio(fake_mm, where="movable", pt=pt)
        assert migrate(fake_mm, isolate(fake_mm, old)) == 0
        new = pt.ptes[0x1000]
        assert new.zone == "Movable"
        assert not fake_mm.folio_is_longterm_pinnable(new)

    def test_alloc_migration_target_same_order_and_kind(self, fake_mm):
        """alloc_migration_target returns a fresh folio of the source's order and kind."""
        src = anon_folio(fake_mm, order=2, where="cma")
        saved = fake_mm.memalloc_pin_save()
        dst = fake_mm.alloc_migration_target(src, MigrationTargetControl())
        fake_mm.memalloc_pin_restore(saved)
        assert dst is not None and dst is not src
        assert (dst.order, dst.kind, dst.refcount) == (2, KIND_ANON, 1)
        assert fake_mm.folio_is_longterm_pinnable(dst)
        fake_mm.folio_put(dst)
        assert dst.freed

    @pytest.mark.pin_contract(disable=['pin-balance'],
                              reason="model test: keeps an extra reference on purpose (the failure under test)")
    def test_alloc_migration_target_fault_site(self, fake_mm):
        """The alloc_migration_target fault site makes it return None (OOM)."""
        src = anon_folio(fake_mm)
        fake_mm.faults.arm("alloc_migration_target")
        assert fake_mm.alloc_migration_target(src, None) is None
        assert fake_mm.alloc_migration_target(src, None) is not None


class TestMigrateModes:
    @pytest.mark.pin_contract(disable=['pin-balance', 'isolation-hygiene', 'contiguity'],
                              reason="model test: keeps an extra reference on purpose (the failure under test); leaves the isolated folios on its list to inspect them")
    @pytest.mark.parametrize("mode", ALL_MODES)
    def test_attempts_per_folio_are_the_same_in_every_mode(self, fake_mm, mode):
        """ASYNC makes 10 passes; SYNC 3 batched async + 7 single: 10 attempts per folio."""
        a = anon_folio(fake_mm, where="cma")
        b = anon_folio(fake_mm, where="cma")
        fake_mm.folio_get(a)
        fake_mm.folio_get(b)
        lst = isolate(fake_mm, a, b)
        fake_mm.faults.record()
        assert migrate(fake_mm, lst, mode=mode) == 2
        assert fake_mm.faults.hits["migrate_folio"] == 2 * NR_MAX_MIGRATE_PAGES_RETRY
        assert NR_MAX_MIGRATE_ASYNC_RETRY + NR_MAX_MIGRATE_SYNC_RETRY == NR_MAX_MIGRATE_PAGES_RETRY
        assert sorted(lst, key=id) == sorted([a, b], key=id)
        assert fake_mm.stats.pgmigrate_fail == 2

    @pytest.mark.pin_contract(disable=['isolation-hygiene', 'contiguity'],
                              reason="model test: keeps an extra reference on purpose (the failure under test); leaves the isolated folios on its list to inspect them")
    @pytest.mark.parametrize("mode", [MIGRATE_ASYNC, MIGRATE_SYNC_LIGHT])
    def test_writeback_fails_at_once_unless_sync(self, fake_mm, mode):
        """A folio under writeback is a permanent -EBUSY failure in ASYNC and SYNC_LIGHT."""
        folio = anon_folio(fake_mm, where="cma")
        folio.flags |= PG_writeback
        lst = isolate(fake_mm, folio)
        fake_mm.faults.record()
        assert migrate(fake_mm, lst, mode=mode) == 1
        assert fake_mm.faults.hits.get("migrate_folio", 0) == 0
        assert lst == [folio]
        assert fake_mm.stats.pgmigrate_fail == 1

    def test_writeback_waited_for_in_sync(self, fake_mm):
        """MIGRATE_SYNC retries a writeback folio synchronously (waiting) and migrates it."""
        pt = FakePageTable()
        folio = anon_folio(fake_mm, where="cma", pt=pt)
        folio.flags |= PG_writeback
        folio.write(0, b"wb")
        lst = isolate(fake_mm, folio)
        out = Out()
        assert migrate(fake_mm, lst, mode=MIGRATE_SYNC, out=out) == 0
        assert lst == [] and out.value == 1
        assert folio.freed and pt.ptes[0x1000].read(0, 2) == b"wb"
        assert fake_mm.stats.pgmigrate_fail == 0

    @pytest.mark.pin_contract(disable=['pin-balance', 'isolation-hygiene', 'contiguity'],
                              reason="model test: keeps an extra reference on purpose (the failure under test); leaves the isolated folios on its list to inspect them")
    def test_writeback_with_extra_ref_gets_only_sync_passes(self, fake_mm):
        """A writeback folio skips the async batch: exactly NR_MAX_MIGRATE_SYNC_RETRY attempts."""
        folio = anon_folio(fake_mm, where="cma")
        folio.flags |= PG_writeback
        fake_mm.folio_get(folio)
        lst = isolate(fake_mm, folio)
        fake_mm.faults.record()
        assert migrate(fake_mm, lst, mode=MIGRATE_SYNC) == 1
        assert fake_mm.faults.hits["migrate_folio"] == NR_MAX_MIGRATE_SYNC_RETRY
        assert fake_mm.stats.pgmigrate_fail == 1          # counted once, not per phase

    @pytest.mark.pin_contract(disable=['isolation-hygiene', 'contiguity'],
                              reason="model test: keeps an extra reference on purpose (the failure under test); leaves the isolated folios on its list to inspect them")
    @pytest.mark.parametrize("mode", ALL_MODES)
    def test_locked_folio_is_retried_then_fails(self, fake_mm, mode):
        """A locked folio gives -EAGAIN until the retries run out (the lock never drops)."""
        folio = anon_folio(fake_mm, where="cma")
        folio.flags |= PG_locked
        lst = isolate(fake_mm, folio)
        assert migrate(fake_mm, lst, mode=mode) == 1
        assert lst == [folio]
        assert fake_mm.stats.pgmigrate_fail == 1


class TestRetSucceeded:
    def test_counts_migrated_folios(self, fake_mm):
        """ret_succeeded receives the number of folios migrated."""
        folios = [anon_folio(fake_mm, where="cma") for _ in range(3)]
        out = Out(None)
        assert migrate(fake_mm, isolate(fake_mm, *folios), out=out) == 0
        assert out.value == 3

    @pytest.mark.pin_contract(disable=['pin-balance', 'isolation-hygiene', 'contiguity'],
                              reason="model test: keeps an extra reference on purpose (the failure under test); leaves the isolated folios on its list to inspect them")
    def test_overwritten_on_total_failure(self, fake_mm):
        """ret_succeeded is written (0) even when nothing migrates."""
        folio = anon_folio(fake_mm, where="cma")
        fake_mm.folio_get(folio)
        out = Out(99)
        assert migrate(fake_mm, isolate(fake_mm, folio), out=out) == 1
        assert out.value == 0

    def test_optional(self, fake_mm):
        """ret_succeeded may be omitted (NULL)."""
        folio = anon_folio(fake_mm, where="cma")
        lst = isolate(fake_mm, folio)
        rc = fake_mm.migrate_pages(lst, fake_mm.alloc_migration_target, None,
                                   MigrationTargetControl(), MIGRATE_SYNC, MR_SYSCALL)
        assert rc == 0 and folio.freed


@pytest.mark.mm_config(cma=0, movablecore=0, hugetlb={"2MiB": 2})
class TestHugetlbMigration:
    @staticmethod
    def _in_use(k, mapping, index):
        """A pool folio in a hugetlbfs page cache (one reference per base page)."""
        h = k.hstate("2MiB")
        folio = k.dequeue_hugetlb_folio(h, GFP_HIGHUSER_MOVABLE)
        assert folio is not None
        folio._refcount = folio.nr_pages
        folio.mapping = mapping
        folio.index = index
        folio.flags |= PG_hugetlb_migratable
        mapping.pages[index] = folio
        return folio

    def test_migrates_through_the_pool(self, fake_mm):
        """A free pool folio is the target; the source returns to the pool."""
        h = fake_mm.hstate("2MiB")
        mapping = FakeMapping()
        old = self._in_use(fake_mm, mapping, 0)
        spare = h.free_list[0]
        old.write(4096 * 300 + 5, b"huge")
        assert (h.nr_huge_pages, h.free_huge_pages) == (2, 1)
        lst = []
        assert fake_mm.folio_isolate_hugetlb(old, lst) and lst == [old]
        out = Out()
        assert migrate(fake_mm, lst, out=out) == 0
        assert lst == [] and out.value == 1
        new = mapping.pages[0]
        assert new is spare
        assert mapping.calls == [(0, old, new)]
        assert new.read(4096 * 300 + 5, 4) == b"huge"
        assert new.refcount == 512 and new.flags & PG_hugetlb_migratable
        assert not new.flags & PG_isolated
        assert (h.nr_huge_pages, h.free_huge_pages, h.surplus_huge_pages) == (2, 1, 0)
        assert h.free_list == [old] and old.refcount == 0 and not old.freed
        assert fake_mm.stats.pgmigrate_success == 512

    def test_temporary_target_when_pool_exhausted(self, fake_mm):
        """With no free pool folio a temporary one is used; the pool size is unchanged."""
        h = fake_mm.hstate("2MiB")
        mapping = FakeMapping()
        old = self._in_use(fake_mm, mapping, 0)
        other = self._in_use(fake_mm, mapping, 1)
        allocated = fake_mm.nr_allocated_pages
        assert (h.nr_huge_pages, h.free_huge_pages) == (2, 0)
        lst = []
        assert fake_mm.folio_isolate_hugetlb(old, lst)
        assert migrate(fake_mm, lst) == 0
        new = mapping.pages[0]
        assert new is not old and new is not other and new.kind == KIND_HUGETLB
        assert new.hstate is h and not new.flags & PG_hugetlb_temporary
        assert old.freed                                # the source left the pool
        assert (h.nr_huge_pages, h.free_huge_pages, h.surplus_huge_pages) == (2, 0, 0)
        assert fake_mm.nr_allocated_pages == allocated

    @pytest.mark.pin_contract(disable=['pin-balance'],
                              reason="model test: keeps an extra reference on purpose (the failure under test)")
    def test_extra_reference_keeps_pool_intact(self, fake_mm):
        """An extra reference fails hugetlb migration; targets go back to the pool."""
        h = fake_mm.hstate("2MiB")
        mapping = FakeMapping()
        old = self._in_use(fake_mm, mapping, 0)
        fake_mm.folio_get(old)
        lst = []
        assert fake_mm.folio_isolate_hugetlb(old, lst)
        fake_mm.faults.record()
        assert migrate(fake_mm, lst) == 1
        assert fake_mm.faults.hits["migrate_folio"] == NR_MAX_MIGRATE_PAGES_RETRY
        assert lst == [old] and mapping.calls == []
        assert fake_mm.stats.pgmigrate_fail == 512
        assert (h.nr_huge_pages, h.free_huge_pages) == (2, 1)
        fake_mm.putback_movable_pages(lst)
        assert old.flags & PG_hugetlb_migratable and not old.flags & PG_isolated
        assert old.refcount == 512 + 1


class TestTargetAllocatedFirst:
    """migrate_folio_unmap allocates the target before it tries the source's lock or
    looks at writeback, so a target failure ends the whole call with -ENOMEM even for a
    folio that would have failed anyway.  Kernel: mm/migrate.c:migrate_folio_unmap and
    migrate_pages_batch (``case -ENOMEM``), v6.12.117."""

    @pytest.mark.pin_contract(disable=['isolation-hygiene', 'contiguity'],
                              reason="model test: leaves the isolated folios on its list to inspect them")
    @pytest.mark.parametrize("flag,mode", [(PG_locked, MIGRATE_SYNC), (PG_locked, MIGRATE_ASYNC),
                                           (PG_writeback, MIGRATE_SYNC_LIGHT), (PG_writeback, MIGRATE_ASYNC)],
                             ids=["locked-sync", "locked-async", "writeback-sync_light", "writeback-async"])
    def test_target_failure_wins_over_lock_and_writeback(self, fake_mm, flag, mode):
        """A locked or writeback folio whose target cannot be allocated: -ENOMEM, not a
        counted -EAGAIN/-EBUSY failure; the later folio is never tried."""
        blocked = anon_folio(fake_mm, where="cma")
        blocked.flags |= flag
        other = anon_folio(fake_mm, where="cma")
        fake_mm.faults.arm("alloc_migration_target")
        lst = isolate(fake_mm, blocked, other)
        out = Out()
        assert migrate(fake_mm, lst, mode=mode, out=out) == -errno.ENOMEM
        assert lst == [blocked, other] and out.value == 0
        assert fake_mm.stats.pgmigrate_success == 0
        fake_mm.putback_movable_pages(lst)
        assert_nothing_isolated(fake_mm)

    @pytest.mark.pin_contract(disable=['isolation-hygiene', 'contiguity'],
                              reason="model test: leaves the isolated folio on its list to inspect it")
    def test_locked_folio_allocates_and_frees_a_target_per_attempt(self, fake_mm):
        """Each attempt on a locked folio allocates a target and hands it back through
        put_new_folio (migrate_folio_undo_dst)."""
        folio = anon_folio(fake_mm, where="cma")
        folio.flags |= PG_locked
        lst = isolate(fake_mm, folio)
        got, put = [], []

        def get_new(src, private):
            dst = fake_mm.alloc_migration_target(src, private)
            got.append(dst)
            return dst

        def put_new(dst, private):
            put.append(dst)
            fake_mm.folio_put(dst)

        rc = fake_mm.migrate_pages(lst, get_new, put_new, MigrationTargetControl(reason=MR_SYSCALL),
                                   MIGRATE_SYNC, MR_SYSCALL)
        assert rc == 1 and lst == [folio]
        assert len(got) == NR_MAX_MIGRATE_PAGES_RETRY and put == got
        assert all(d.freed for d in got)
