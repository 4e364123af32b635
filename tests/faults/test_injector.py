"""The injector with the real fake mm: every control and action of the spec grammar,
holds, user sites, the hit budget, listeners and the log."""

from __future__ import annotations

import errno
import json

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.faults.injector import FaultBudgetExceeded, FaultRecord, Injector, UnknownSite
from pytest_pinfault.faults.spec import FaultSpecError, parse_spec
from pytest_pinfault.mm import (GFP_HIGHUSER_MOVABLE, GFP_KERNEL, MIGRATE_SYNC, MR_SYSCALL,
                                NR_MAX_MIGRATE_PAGES_RETRY, MigrationTargetControl, __GFP_COMP)
from pytest_pinfault.mm import __GFP_DMA32 as GFP_DMA32_BIT
from pytest_pinfault.mm.folio import KIND_ANON, KIND_SHMEM, Page


def make_mm(seed: int = 0) -> FakeMM:
    return FakeMM(MMConfig(ram="512MiB", cma="32MiB", movablecore="128MiB", seed=seed))


@pytest.fixture
def k() -> FakeMM:
    return make_mm()


def lru_folio(k, where=None, kind=KIND_ANON, order=0):
    gfp = int(GFP_HIGHUSER_MOVABLE) | (int(__GFP_COMP) if order else 0)
    if where:
        with k.steer(where):
            folio = k._alloc_folio(gfp, order, kind)
    else:
        folio = k._alloc_folio(gfp, order, kind)
    folio._mapcount = 1
    k.folio_add_lru(folio)
    k.lru_add_drain()
    return folio


def isolations(k, folios):
    """Isolate each folio in turn: which ones failed (1-based positions)."""
    failed = []
    for i, folio in enumerate(folios, 1):
        if k.folio_isolate_lru(folio):
            k.node_stat_mod_isolated(folio, folio.nr_pages)
        else:
            failed.append(i)
    return failed


def migrate(k, folio):
    lst = [folio]
    assert k.folio_isolate_lru(folio)
    k.node_stat_mod_isolated(folio, folio.nr_pages)
    n = k.migrate_pages(lst, k.alloc_migration_target, None, MigrationTargetControl(reason=MR_SYSCALL),
                        MIGRATE_SYNC, MR_SYSCALL, None)
    return n, lst


def fired_at(inj: Injector, spec: str, n: int, site: str = "kmalloc", **ctx) -> list[int]:
    """Arm *spec* and hit its site *n* times: the occurrences that failed."""
    inj.arm_spec(spec)
    return [i for i in range(1, n + 1) if inj.hit(site, **ctx) is not None]


# ---------------------------------------------------------------------------- controls
class TestControlsWithTheModel:
    def test_nth_transient_fails_exactly_the_second_isolation(self, k):
        folios = [lru_folio(k) for _ in range(4)]
        k.faults.arm_spec("folio_isolate_lru[nth=2]=1*return")
        assert isolations(k, folios) == [2]
        assert [(r.site, r.occurrence, r.errno) for r in k.faults.fired] == [
            ("folio_isolate_lru", 2, -errno.EBUSY)]

    def test_nth_persistent_fails_from_the_second_on(self, k):
        folios = [lru_folio(k) for _ in range(4)]
        k.faults.arm_spec("folio_isolate_lru[nth=2]=return")
        assert isolations(k, folios) == [2, 3, 4]

    def test_first_k_hits(self, k):
        folios = [lru_folio(k) for _ in range(4)]
        k.faults.arm_spec("folio_isolate_lru=2*return")
        assert isolations(k, folios) == [1, 2]

    def test_chain_skips_then_fails_then_stops(self, k):
        folios = [lru_folio(k) for _ in range(5)]
        k.faults.arm_spec("folio_isolate_lru=1*off->2*return")
        assert isolations(k, folios) == [2, 3]
        assert k.faults.hits["folio_isolate_lru"] == 5

    def test_migrate_chain_counts_retries(self, k):
        """The first attempt fails (-EAGAIN), the retry is let through by 1*off: the
        migration succeeds after two checks."""
        folio = lru_folio(k, "cma")
        k.faults.arm_spec("migrate_folio=1*return->1*off->return")
        n, lst = migrate(k, folio)
        assert (n, lst) == (0, []) and k.faults.hits["migrate_folio"] == 2


class TestControlsTable:
    @pytest.mark.parametrize("spec, want", [
        ("kmalloc=return", [1, 2, 3, 4, 5, 6, 7, 8]),
        ("kmalloc=1*return", [1]),
        ("kmalloc=3*return", [1, 2, 3]),
        ("kmalloc[nth=3]=return", [3, 4, 5, 6, 7, 8]),
        ("kmalloc[nth=3]=1*return", [3]),
        ("kmalloc[every=3]=return", [3, 6]),
        ("kmalloc[nth=2,every=2]=return", [2, 4, 6, 8]),
        ("kmalloc[nth=4,every=3]=return", [6]),
        ("kmalloc[times=2]=return", [1, 2]),
        ("kmalloc[every=2,times=3]=return", [2, 4, 6]),
        ("kmalloc=2*off->1*return->1*off->return", [3, 5, 6, 7, 8]),
        ("kmalloc=1*return->2*off->1*return", [1, 4]),
        ("kmalloc[times=2]=1*off->return", [2, 3]),
        ("kmalloc=off", []),
        ("kmalloc=0%return", []),
        ("kmalloc=100%return", [1, 2, 3, 4, 5, 6, 7, 8]),
    ])
    def test_controls(self, k, spec, want):
        assert fired_at(k.faults, spec, 8) == want

    def test_return_errno_default_and_named(self, k):
        assert k.faults.arm_spec("memfd_alloc_folio=1*return") is not None
        assert k.faults.hit("memfd_alloc_folio") == -errno.ENOMEM
        k.faults.arm_spec("memfd_alloc_folio=1*return(EEXIST)")
        assert k.faults.hit("memfd_alloc_folio") == -errno.EEXIST

    def test_arm_spec_refuses_unknown_site_and_bad_errno(self, k):
        with pytest.raises(FaultSpecError, match="expected a known fault site"):
            k.faults.arm_spec("no_such_site=return")
        with pytest.raises(FaultSpecError, match="folio_isolate_lru may return .-EBUSY., got '-ENOMEM'"):
            k.faults.arm_spec("folio_isolate_lru=return(ENOMEM)")
        assert not k.faults.active and not k.faults.armed

    def test_arm_spec_takes_a_parsed_spec(self, k):
        a = k.faults.arm_spec(parse_spec("kmalloc[nth=2]=1*return"))
        assert [k.faults.hit("kmalloc") for _ in range(3)] == [None, -errno.ENOMEM, None]
        assert a.fired == 1 and a.eligible == 2 and a.exhausted


class TestProbability:
    SPEC = "kmalloc=30%return"

    def run(self, seed):
        k = make_mm(seed)
        return fired_at(k.faults, self.SPEC, 200)

    def test_same_seed_same_firings(self):
        a = self.run(1)
        assert a == self.run(1)
        assert 30 < len(a) < 90           # about 30% of 200

    def test_different_seed_differs(self):
        assert self.run(1) != self.run(2)

    def test_reset_reseeds(self, k):
        first = fired_at(k.faults, self.SPEC, 50)
        k.faults.reset()
        assert fired_at(k.faults, self.SPEC, 50) == first

    def test_probability_with_count_uses_only_passed_hits(self, k):
        got = fired_at(k.faults, "kmalloc=50%2*return", 100)
        assert len(got) == 2


# ---------------------------------------------------------------------------- filters
class TestFilters:
    def test_zone(self, k):
        normal, movable = lru_folio(k, "normal"), lru_folio(k, "movable")
        assert normal.zone != "Movable" and movable.zone == "Movable"
        k.faults.arm_spec("folio_isolate_lru[zone=Movable]=return")
        assert isolations(k, [normal, movable]) == [2]

    def test_migratetype(self, k):
        plain, cma, plain2 = lru_folio(k, "normal"), lru_folio(k, "cma"), lru_folio(k, "movable")
        assert (plain.migratetype_name, cma.migratetype_name) == ("Movable", "CMA")
        k.faults.arm_spec("folio_isolate_lru[migratetype=CMA]=return")
        assert isolations(k, [plain, cma, plain2]) == [2]

    def test_order(self, k):
        small, large = lru_folio(k), lru_folio(k, order=9)
        k.faults.arm_spec("folio_isolate_lru[order=9]=return")
        assert isolations(k, [small, large]) == [2]

    def test_kind(self, k):
        anon, shmem = lru_folio(k), lru_folio(k, kind=KIND_SHMEM)
        k.faults.arm_spec("folio_isolate_lru[kind=shmem]=return")
        assert isolations(k, [anon, shmem]) == [2]

    def test_nth_counts_only_eligible_hits(self, k):
        folios = [lru_folio(k, "cma" if i % 2 else "normal") for i in range(6)]
        k.faults.arm_spec("folio_isolate_lru[migratetype=CMA,nth=2]=1*return")
        assert isolations(k, folios) == [4]

    def test_alloc_pages_zone_and_order_from_gfp(self, k):
        k.faults.arm_spec("alloc_pages[zone=DMA32,order=0]=return")
        assert k.alloc_pages(GFP_KERNEL, 0) is not None
        assert k.alloc_pages(int(GFP_KERNEL) | int(GFP_DMA32_BIT), 1) is not None
        assert k.alloc_pages(int(GFP_KERNEL) | int(GFP_DMA32_BIT), 0) is None

    def test_alloc_pages_migratetype_from_gfp(self, k):
        k.faults.arm_spec("alloc_pages[migratetype=Movable]=return")
        assert k.alloc_pages(GFP_KERNEL, 0) is not None
        assert k.alloc_pages(GFP_HIGHUSER_MOVABLE, 0) is None

    def test_filters_and_summary_accept_a_page_for_the_folio(self, k):
        """Driver code hands its user sites pages (what GUP returns): the filters and the
        logged context use the page's folio."""
        cma, plain = lru_folio(k, "cma"), lru_folio(k, "normal")
        k.faults.declare_site("drv.map", "ENOMEM")
        k.faults.arm_spec(f"drv.map[migratetype=CMA,zone={cma.zone},order=0,kind=anon]=return")
        assert k.fault_point("drv.map", folio=Page(plain, plain.pfn)) is None
        assert k.fault_point("drv.map", folio=Page(cma, cma.pfn)) == -errno.ENOMEM
        (rec,) = k.faults.fired
        assert rec.as_dict()["context"]["folio"] == {"pfn": cma.pfn, "zone": cma.zone, "migratetype": "CMA",
                                                     "order": 0, "kind": "anon"}

    def test_caller_on_the_stack(self, k):
        folios = [lru_folio(k) for _ in range(3)]

        def udmabuf_pin(folio):
            return k.folio_isolate_lru(folio)

        k.faults.arm_spec("folio_isolate_lru[caller=udmabuf_pin]=return")
        assert k.folio_isolate_lru(folios[0])
        assert not udmabuf_pin(folios[1])
        assert k.folio_isolate_lru(folios[2])
        (rec,) = k.faults.fired
        assert rec.caller.endswith(" udmabuf_pin")


# ---------------------------------------------------------------------------- actions
class TestHold:
    @pytest.mark.parametrize("n", [1, 3, NR_MAX_MIGRATE_PAGES_RETRY - 1])
    def test_spec_hold_fails_exactly_n_attempts_then_migrates(self, k, n):
        folio = lru_folio(k, "cma")
        k.faults.arm_spec(f"migrate_folio=hold({n})")
        ref0 = folio.refcount
        n_failed, lst = migrate(k, folio)
        assert (n_failed, lst) == (0, [])
        assert k.faults.hits["migrate_folio"] == n + 1
        assert folio.freed and not k.faults.holds        # the reference was dropped
        assert k.stats.pgmigrate_success == 1 and ref0 == 1

    def test_direct_hold_with_attempts(self, k):
        folio = lru_folio(k, "cma")
        before = folio.refcount
        h = k.faults.hold(folio, attempts=2)
        assert folio.refcount == before + 1 and k.faults.active and k.faults.holds == [h]
        assert migrate(k, folio)[0] == 0
        assert k.faults.hits["migrate_folio"] == 3 and h.released and folio.freed
        assert not k.faults.active

    def test_hold_until_released_fails_the_migration(self, k):
        folio = lru_folio(k, "cma")
        before = folio.refcount
        k.faults.hold(folio)
        n, lst = migrate(k, folio)
        assert (n, lst) == (1, [folio])
        assert k.faults.hits["migrate_folio"] == NR_MAX_MIGRATE_PAGES_RETRY
        assert folio.refcount == before + 2               # hold + isolation
        assert k.faults.release_holds() == 1
        assert folio.refcount == before + 1 and not k.faults.holds
        k.putback_movable_pages(lst)
        k.lru_add_drain()
        assert folio.refcount == before and not k.warnings

    def test_hold_at_another_site_counts_migrate_checks_only(self, k):
        folio = lru_folio(k, "cma")
        k.faults.arm_spec("folio_isolate_lru=hold(2)")
        n, lst = migrate(k, folio)
        assert (n, lst) == (0, []) and k.faults.hits["migrate_folio"] == 3 and not k.faults.holds

    def test_one_hold_per_folio_per_arming(self, k):
        a, b = lru_folio(k, "cma"), lru_folio(k, "cma")
        k.faults.arm_spec("migrate_folio=hold(1)")
        assert migrate(k, a)[0] == 0 and migrate(k, b)[0] == 0
        assert len(k.faults.fired) == 2 and k.faults.hits["migrate_folio"] == 4

    def test_reset_releases_holds(self, k):
        folio = lru_folio(k)
        before = folio.refcount
        k.faults.hold(folio, 5)
        k.faults.reset()
        assert folio.refcount == before and not k.faults.holds and not k.faults.active

    def test_attempts_must_be_positive(self, k):
        with pytest.raises(ValueError, match="attempts"):
            k.faults.hold(lru_folio(k), 0)


class TestCall:
    def test_callback_runs_with_the_context_and_does_not_fail(self, k):
        folios = [lru_folio(k) for _ in range(3)]
        seen = []
        k.faults.arm_spec("folio_isolate_lru[nth=2]=1*call(race)", {"race": seen.append})
        assert isolations(k, folios) == []
        assert seen == [{"folio": folios[1]}]
        (rec,) = k.faults.fired
        assert rec.fired and rec.errno is None and rec.occurrence == 2

    def test_unknown_callback_is_refused(self, k):
        with pytest.raises(FaultSpecError) as ei:
            k.faults.arm_spec("kmalloc=call(munmap)", {"race": print})
        assert (ei.value.column, ei.value.expected, ei.value.got) == (14, "a registered callback (race)", "munmap")

    def test_callback_can_model_a_race_with_the_mm(self, k):
        folio = lru_folio(k, "cma")
        k.faults.arm_spec("migrate_folio=1*call(gup)", {"gup": lambda ctx: k.faults.hold(ctx["folio"], 1)})
        assert migrate(k, folio)[0] == 0
        assert k.faults.hits["migrate_folio"] == 2


# ---------------------------------------------------------------------------- user sites
class TestUserSites:
    def test_declare_and_fault_point(self, k):
        s = k.faults.declare_site("udmabuf.sg_alloc", ["ENOMEM", -errno.EINVAL], meaning="sg table")
        assert s.user and s.errnos == (errno.ENOMEM, errno.EINVAL) and k.faults.sites["udmabuf.sg_alloc"] is s
        assert k.fault_point("udmabuf.sg_alloc", size=4096) is None       # idle
        k.faults.arm_spec("udmabuf.sg_alloc[nth=2]=1*return(EINVAL)")
        assert [k.fault_point("udmabuf.sg_alloc", size=n) for n in (1, 2, 3)] == [None, -errno.EINVAL, None]
        (rec,) = k.faults.fired
        assert rec.context == {"size": 2} and "test_declare_and_fault_point" in rec.caller
        k.faults.arm_spec("udmabuf.sg_alloc=1*return")
        assert k.fault_point("udmabuf.sg_alloc") == -errno.ENOMEM

    def test_unknown_user_site(self, k):
        with pytest.raises(UnknownSite, match="unknown fault site 'udmabuf.nope'"):
            k.fault_point("udmabuf.nope")

    def test_bad_errno_for_user_site(self, k):
        k.faults.declare_site("drv.map", [errno.ENOMEM])
        with pytest.raises(FaultSpecError, match=r"drv.map may return \(-ENOMEM\), got '-EIO'"):
            k.faults.arm_spec("drv.map=return(EIO)")

    def test_redeclaration(self, k):
        a = k.faults.declare_site("drv.map", "ENOMEM")
        assert k.faults.declare_site("drv.map", [12]) is a
        with pytest.raises(ValueError, match="already declared"):
            k.faults.declare_site("drv.map", ["EINVAL"])
        with pytest.raises(ValueError, match="built in"):
            k.faults.declare_site("kmalloc", ["ENOMEM"])
        with pytest.raises(ValueError, match="bad fault site name"):
            k.faults.declare_site("drv map", ["ENOMEM"])
        with pytest.raises(ValueError, match="not an errno"):
            k.faults.declare_site("drv.x", ["ENOPE"])
        with pytest.raises(ValueError, match="at least one"):
            k.faults.declare_site("drv.y", [])

    def test_user_sites_are_per_mm(self, k):
        k.faults.declare_site("drv.map", "ENOMEM")
        assert "drv.map" not in make_mm().faults.sites


# ---------------------------------------------------------------------------- budget
def retry_forever(k):
    while True:
        rc = k.fault_point("drv.submit")
        if rc is None:
            return 0


class TestBudget:
    def test_runaway_retry_loop_is_stopped(self, k):
        k.faults.declare_site("drv.submit", "EAGAIN")
        k.faults.budget = 50
        k.faults.arm_spec("drv.submit=return")
        with pytest.raises(FaultBudgetExceeded) as ei:
            retry_forever(k)
        e = ei.value
        assert isinstance(e, RuntimeError)
        assert e.site == "drv.submit" and e.hits == 51 and e.caller.endswith(" retry_forever")
        assert "'drv.submit'" in str(e) and "retry_forever" in str(e)

    def test_budget_is_per_test_state(self, k):
        k.faults.budget = 5
        k.faults.record()
        for _ in range(5):
            k.faults.hit("kmalloc")
        k.faults.reset()
        k.faults.record()
        for _ in range(5):
            k.faults.hit("kmalloc")
        with pytest.raises(FaultBudgetExceeded, match="'kmalloc'"):
            k.faults.hit("kmalloc")

    def test_default_budget(self, k):
        assert k.faults.budget == 1_000_000


# ---------------------------------------------------------------------------- state
class TestState:
    def test_idle_by_default_and_after_disarm(self, k):
        fi = k.faults
        assert not fi.active
        a = fi.arm_spec("kmalloc=return")
        b = fi.arm_spec("folio_isolate_lru=return")
        assert fi.active
        fi.disarm(a)
        assert fi.active and list(fi.armed) == ["folio_isolate_lru"]
        fi.disarm(b)
        assert not fi.active and not fi.armed
        fi.arm_spec("kmalloc=return")
        fi.disarm()
        assert not fi.active

    def test_reset_clears_state_but_keeps_sites_and_listeners(self, k):
        fi = k.faults
        fi.declare_site("drv.map", "ENOMEM")
        listener = []
        fi.on_fire.append(listener.append)
        fi.arm_spec("kmalloc=return")
        fi.record()
        fi.hit("kmalloc")
        fi.reset()
        assert (fi.armed, fi.hits, fi.log, fi.recording, fi.active, fi.total_hits) == ({}, {}, [], False, False, 0)
        assert "drv.map" in fi.sites and fi.on_fire == [listener.append]

    def test_record_logs_every_hit(self, k):
        folios = [lru_folio(k) for _ in range(2)]
        k.faults.record()
        k.faults.arm_spec("folio_isolate_lru[nth=2]=return")
        isolations(k, folios)
        assert [(r.occurrence, r.fired) for r in k.faults.log] == [(1, False), (2, True)]
        assert k.faults.hits == {"folio_isolate_lru": 2}

    def test_count_hits_counts_without_logging(self, k):
        folios = [lru_folio(k) for _ in range(3)]
        fi = k.faults
        assert not fi.active
        fi.count_hits()
        assert fi.active
        isolations(k, folios)
        assert fi.hits == {"folio_isolate_lru": 3} and fi.log == [] and fi.fired_count == 0
        fi.count_hits(False)
        assert not fi.active
        fi.count_hits()
        fi.reset()
        assert not fi.counting and not fi.active

    def test_fired_count_counts_firings(self, k):
        fired_at(k.faults, "kmalloc[every=2]=return", 5)
        assert k.faults.fired_count == 2

    def test_on_fire_listeners_get_each_firing(self, k):
        got = []
        k.faults.on_fire.append(got.append)
        k.faults.record()
        fired_at(k.faults, "kmalloc[every=2]=return", 5)
        assert [r.occurrence for r in got] == [2, 4]
        assert got == k.faults.fired

    def test_as_dict_is_json_serialisable(self, k):
        folio = lru_folio(k, "cma")
        k.faults.arm_spec("folio_isolate_lru=return")
        k.folio_isolate_lru(folio)
        (rec,) = k.faults.fired
        d = rec.as_dict()
        assert json.loads(json.dumps(d)) == d
        assert d["site"] == "folio_isolate_lru" and d["occurrence"] == 1 and d["fired"] is True
        assert d["errno"] == -errno.EBUSY and d["errno_name"] == "-EBUSY"
        assert d["context"]["folio"] == {"pfn": folio.pfn, "zone": folio.zone, "migratetype": "CMA",
                                         "order": 0, "kind": "anon"}
        assert "test_as_dict_is_json_serialisable" in d["caller"]
        odd = FaultRecord("kmalloc", 3, False, None, {"size": 8, "obj": object(), "l": (1, "a")})
        assert json.loads(json.dumps(odd.as_dict()))["context"]["l"] == [1, "a"]

    def test_legacy_arm_still_works_beside_specs(self, k):
        fi = k.faults
        a = fi.arm("kmalloc", nth=2, times=1)
        fi.arm_spec("kmalloc[nth=4]=1*return")
        assert [fi.hit("kmalloc") for _ in range(5)] == [None, -errno.ENOMEM, None, -errno.ENOMEM, None]
        assert a.fired == 1

    def test_injector_without_mm_seed_and_sites(self):
        fi = Injector()
        assert fi.mm is None and fi.seed == 0 and "kmalloc" in fi.sites

    def test_fakemm_builds_a_seeded_injector(self):
        k = make_mm(seed=7)
        assert k.faults.mm is k and k.faults.seed == 7
