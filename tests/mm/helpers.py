"""Helpers shared by the model's tests: stand-in rmap owners and common assertions."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from pytest_pinfault.mm import GFP_HIGHUSER_MOVABLE, MIGRATE_CMA, MIGRATE_ISOLATE
from pytest_pinfault.mm.folio import KIND_ANON, KIND_SHMEM, PG_isolated


class FakePageTable:
    """Page-table entries: address -> folio; the rmap walk swaps them on migration."""

    def __init__(self) -> None:
        self.ptes: dict[int, object] = {}
        self.calls: list[tuple[int, object, object]] = []

    def replace_folio(self, key, old, new) -> None:
        assert self.ptes[key] is old
        self.calls.append((key, old, new))
        self.ptes[key] = new


class FakeMapping:
    """A page cache: index -> folio."""

    def __init__(self) -> None:
        self.pages: dict[int, object] = {}
        self.calls: list[tuple[int, object, object]] = []

    def replace_folio(self, index, old, new) -> None:
        assert self.pages[index] is old
        self.calls.append((index, old, new))
        self.pages[index] = new


def lru_anon_folio(k, where, pt=None, addr=0x1000):
    """An anonymous folio mapped once (by *pt* at *addr* when given), on the LRU,
    placed by steer(*where*)."""
    with k.steer(where):
        folio = k._alloc_folio(GFP_HIGHUSER_MOVABLE, 0, KIND_ANON)
    folio._mapcount = 1
    if pt is not None:
        pt.ptes[addr] = folio
        folio.rmap = [(pt, addr)]
    k.folio_add_lru(folio)
    k.lru_add_drain()
    return folio


def lru_cache_folio(k, where, mapping, index=0):
    """A page-cache (shmem) folio at *index* of *mapping*, on the LRU, placed by
    steer(*where*)."""
    with k.steer(where):
        folio = k._alloc_folio(GFP_HIGHUSER_MOVABLE, 0, KIND_SHMEM)
    folio.mapping = mapping
    folio.index = index
    mapping.pages[index] = folio
    k.folio_add_lru(folio)
    k.lru_add_drain()
    return folio


def assert_pages_add_up(k) -> None:
    """Every managed page of each zone is in exactly one of buddy, per-cpu lists or an
    allocated folio, and the free counters agree with the free lists."""
    allocated = {name: 0 for name in k.zones}
    for folio in k.iter_folios():
        allocated[folio.zone] += folio.nr_pages
    for name, zone in k.zones.items():
        buddy = sum(fl.nr_free for fl in zone.free)
        assert buddy + zone.pcp_pages + allocated[name] == zone.managed_pages, name
        assert zone.nr_free == buddy - zone.free[MIGRATE_ISOLATE].nr_free
        assert zone.nr_free_cma == zone.free[MIGRATE_CMA].nr_free
    assert k.nr_allocated_pages == sum(allocated.values())


def assert_nothing_isolated(k, pageblocks: bool = True) -> None:
    """No isolated folio and NR_ISOLATED_* at 0; with *pageblocks* also no
    MIGRATE_ISOLATE pageblock or free page, and the LRU cache enabled again."""
    assert k.stats.nr_isolated_anon == 0
    assert k.stats.nr_isolated_file == 0
    assert [f for f in k.iter_folios() if f.flags & PG_isolated] == []
    if pageblocks:
        for zone in k.zones.values():
            assert zone.nr_isolate_pageblock == 0, zone
            assert zone.free[MIGRATE_ISOLATE].nr_free == 0, zone
        assert MIGRATE_ISOLATE not in k._pb_mt.values()
        assert k._lru_disable_count == 0


def machine_settings(max_examples: int, steps: int) -> settings:
    """Deterministic Hypothesis settings for the state machines (CI must not flake)."""
    return settings(max_examples=max_examples, stateful_step_count=steps, derandomize=True,
                    database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
