"""The LRU: per-cpu lru_add batches and their references, draining (local and all cpus),
lru_cache_disable, LRU isolation and putback, hugetlb isolation, and the fault sites."""

from __future__ import annotations

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.mm import GFP_HIGHUSER_MOVABLE, GFP_KERNEL
from pytest_pinfault.mm.folio import (KIND_ANON, KIND_SHMEM, PG_hugetlb_migratable, PG_isolated,
                                      PG_lru)
from pytest_pinfault.mm.swap import FOLIO_BATCH_SIZE


def anon(mm: FakeMM, order: int = 0, kind: str = KIND_ANON):
    folio = mm._alloc_folio(GFP_HIGHUSER_MOVABLE, order, kind)
    folio._mapcount = 1 if kind == KIND_ANON else 0
    return folio


def on_lru(mm: FakeMM, folio) -> bool:
    return mm.folio_test_lru(folio)


class _OtherCpu:
    """Run as a task on another cpu (setting fake_mm.current)."""

    def __init__(self, mm: FakeMM):
        self.mm = mm
        self.task = mm.create_task("other")

    def __enter__(self):
        self.saved = self.mm.current
        assert self.task.cpu != self.saved.cpu
        self.mm.current = self.task
        return self.task

    def __exit__(self, *exc):
        self.mm.current = self.saved
        return False


@pytest.fixture
def mm():
    return FakeMM(MMConfig(ram="2GiB", nr_cpus=2))


class TestFolioAddLru:
    def test_goes_to_current_cpu_batch(self, mm):
        """folio_add_lru queues the folio in this cpu's batch with an extra reference."""
        f = anon(mm)
        mm.folio_add_lru(f)
        assert f.refcount == 2
        assert not on_lru(mm, f) and not f.test(PG_lru)
        assert f.lru_batch == mm.current.cpu == 0
        assert mm._lru_add[0] == [f] and mm._lru_add[1] == []
        assert mm.nr_lru_pages["DMA32"] == 0

    def test_drain_moves_to_lru(self, mm):
        """lru_add_drain sets PG_lru and drops the batch reference."""
        f = anon(mm)
        mm.folio_add_lru(f)
        mm.lru_add_drain()
        assert on_lru(mm, f) and f.refcount == 1
        assert f.lru_batch == -1
        assert mm.nr_lru_pages["DMA32"] == 1

    def test_flush_at_batch_size(self, mm):
        """The batch moves to the LRU when it holds FOLIO_BATCH_SIZE (31) folios."""
        assert FOLIO_BATCH_SIZE == 31
        folios = [anon(mm) for _ in range(31)]
        for f in folios[:30]:
            mm.folio_add_lru(f)
        assert not any(on_lru(mm, f) for f in folios)
        assert {f.refcount for f in folios[:30]} == {2}
        mm.folio_add_lru(folios[30])
        assert all(on_lru(mm, f) for f in folios)
        assert {f.refcount for f in folios} == {1}
        assert mm._lru_add[0] == []
        assert mm.nr_lru_pages["DMA32"] == 31

    def test_large_folio_flushes_at_once(self, mm):
        """A large folio flushes the batch immediately (with what was queued before)."""
        small = anon(mm)
        mm.folio_add_lru(small)
        thp = anon(mm, 9)
        mm.folio_add_lru(thp)
        assert on_lru(mm, thp) and on_lru(mm, small)
        assert (thp.refcount, small.refcount) == (1, 1)
        assert mm.nr_lru_pages["DMA32"] == 513

    def test_lru_cache_disable(self, mm):
        """While lru_cache_disable() is in force every add flushes at once; it nests."""
        queued = anon(mm)
        with _OtherCpu(mm):
            mm.folio_add_lru(queued)
        mm.lru_cache_disable()                      # drains every cpu's batch
        assert on_lru(mm, queued)
        mm.lru_cache_disable()
        f = anon(mm)
        mm.folio_add_lru(f)
        assert on_lru(mm, f) and f.refcount == 1
        mm.lru_cache_enable()
        g = anon(mm)
        mm.folio_add_lru(g)
        assert on_lru(mm, g)                        # still disabled once
        mm.lru_cache_enable()
        h = anon(mm)
        mm.folio_add_lru(h)
        assert not on_lru(mm, h) and h.refcount == 2

    def test_unbalanced_enable_warns(self, mm):
        """lru_cache_enable without a disable records a warning."""
        mm.lru_cache_enable()
        assert [w.site for w in mm.warnings] == ["lru_cache_enable"]

    def test_adding_twice_warns(self, mm):
        """Adding a folio already on the LRU records a warning and takes no reference."""
        f = anon(mm)
        mm.folio_add_lru(f)
        mm.lru_add_drain()
        mm.folio_add_lru(f)
        assert f.refcount == 1
        assert [w.site for w in mm.warnings] == ["folio_add_lru"]

    def test_batch_reference_keeps_folio_alive(self, mm):
        """A folio whose owner dropped it lives in the batch until the drain frees it."""
        f = anon(mm)
        mm.folio_add_lru(f)
        mm.folio_put(f)
        assert not f.freed and f.refcount == 1
        mm.lru_add_drain()
        assert f.freed
        assert mm.nr_lru_pages["DMA32"] == 0
        assert mm.warnings == []


class TestLruAddDrain:
    def test_drain_is_current_cpu_only(self, mm):
        """lru_add_drain moves only the running cpu's batch."""
        mine = anon(mm)
        mm.folio_add_lru(mine)
        with _OtherCpu(mm) as task:
            theirs = anon(mm)
            mm.folio_add_lru(theirs)
            assert theirs.lru_batch == task.cpu == 1
            mm.lru_add_drain()
        assert on_lru(mm, theirs) and theirs.refcount == 1
        assert not on_lru(mm, mine) and mine.refcount == 2
        mm.lru_add_drain()
        assert on_lru(mm, mine) and mine.refcount == 1

    def test_drain_all(self, mm):
        """lru_add_drain_all moves every cpu's batch and counts the call."""
        mine = anon(mm)
        mm.folio_add_lru(mine)
        with _OtherCpu(mm):
            theirs = anon(mm)
            mm.folio_add_lru(theirs)
        mm.lru_add_drain_all()
        assert on_lru(mm, mine) and on_lru(mm, theirs)
        assert (mine.refcount, theirs.refcount) == (1, 1)
        assert mm._lru_add == [[], []]
        assert mm.stats.lru_add_drain_all == 1

    def test_drain_cpu(self, mm):
        """lru_add_drain_cpu drains the named cpu."""
        with _OtherCpu(mm):
            theirs = anon(mm)
            mm.folio_add_lru(theirs)
        mm.lru_add_drain_cpu(1)
        assert on_lru(mm, theirs)

    def test_drain_all_fault_site(self, mm):
        """An armed lru_add_drain_all site leaves the other cpus' batch references in
        place, once; the local batch is drained first (v6.17)."""
        local = anon(mm)
        mm.folio_add_lru(local)
        other = mm.create_task("other")
        assert other.cpu != mm.current.cpu
        with mm.run_as(other):
            f = anon(mm)
            mm.folio_add_lru(f)
        mm.faults.arm("lru_add_drain_all")
        mm.lru_add_drain_all()
        assert on_lru(mm, local) and local.refcount == 1
        assert not on_lru(mm, f) and f.refcount == 2
        assert [r.site for r in mm.faults.fired] == ["lru_add_drain_all"]
        assert mm.stats.lru_add_drain_all == 0
        mm.lru_add_drain_all()
        assert on_lru(mm, f) and f.refcount == 1
        assert mm.stats.lru_add_drain_all == 1


class TestFolioIsolateLru:
    def test_not_on_lru(self, mm):
        """A folio that never went to the LRU cannot be isolated."""
        f = anon(mm)
        assert mm.folio_isolate_lru(f) is False
        assert f.refcount == 1

    def test_in_batch(self, mm):
        """A folio still in an lru_add batch cannot be isolated (PG_lru clear)."""
        f = anon(mm)
        mm.folio_add_lru(f)
        assert mm.folio_isolate_lru(f) is False
        assert f.refcount == 2 and not f.test(PG_isolated)

    def test_success_takes_reference(self, mm):
        """Isolation clears PG_lru, marks it isolated and takes a reference."""
        f = anon(mm)
        mm.folio_add_lru(f)
        mm.lru_add_drain()
        assert mm.folio_isolate_lru(f) is True
        assert f.refcount == 2
        assert not on_lru(mm, f) and f.test(PG_isolated)
        assert mm.nr_lru_pages["DMA32"] == 0
        assert mm.folio_isolate_lru(f) is False          # already off the LRU
        assert f.refcount == 2

    def test_fault_site(self, mm):
        """An armed folio_isolate_lru site fails isolation; the folio stays on the LRU."""
        f = anon(mm)
        mm.folio_add_lru(f)
        mm.lru_add_drain()
        mm.faults.arm("folio_isolate_lru")
        assert mm.folio_isolate_lru(f) is False
        assert on_lru(mm, f) and f.refcount == 1
        (rec,) = mm.faults.fired
        assert rec.site == "folio_isolate_lru" and rec.context["folio"] is f
        assert mm.folio_isolate_lru(f) is True

    def test_freed_folio_warns(self, mm):
        """Isolating a folio with refcount 0 is a VM_BUG_ON: warning, False."""
        f = anon(mm)
        mm.folio_put(f)
        assert mm.folio_isolate_lru(f) is False
        assert [w.site for w in mm.warnings] == ["folio_isolate_lru"]


class TestPutbackMovablePages:
    @pytest.mark.parametrize("kind, counter", [(KIND_ANON, "nr_isolated_anon"),
                                               (KIND_SHMEM, "nr_isolated_anon")])  # shmem is swap-backed
    def test_putback(self, mm, kind, counter):
        """putback empties the list, undoes NR_ISOLATED and returns the folio via the batch."""
        folios = [anon(mm, order, kind) for order in (2, 0, 0)]
        lst = []
        for f in folios:
            mm.folio_add_lru(f)
        mm.lru_add_drain()
        for f in folios:
            assert mm.folio_isolate_lru(f)
            mm.node_stat_mod_isolated(f, f.nr_pages)
            lst.append(f)
        assert getattr(mm.stats, counter) == 6
        mm.putback_movable_pages(lst)
        assert lst == []
        assert mm.stats.nr_isolated_anon == mm.stats.nr_isolated_file == 0
        large, _, small = folios
        assert not small.test(PG_isolated)
        # the small folio waits in the batch (its reference replaces the isolation one)
        assert small.lru_batch == mm.current.cpu and not on_lru(mm, small)
        assert small.refcount == 2
        # the large folio (put back first) flushed its batch at once
        assert on_lru(mm, large) and large.refcount == 1
        assert mm.nr_lru_pages["DMA32"] == 4
        mm.lru_add_drain()
        assert all(on_lru(mm, f) and f.refcount == 1 for f in folios)
        assert mm.nr_lru_pages["DMA32"] == 6

    def test_putback_after_owner_dropped(self, mm):
        """A folio whose last user reference went while isolated is freed by the putback."""
        f = anon(mm)
        mm.folio_add_lru(f)
        mm.lru_add_drain()
        assert mm.folio_isolate_lru(f)
        mm.node_stat_mod_isolated(f, 1)
        mm.folio_put(f)
        lst = [f]
        mm.putback_movable_pages(lst)
        mm.lru_add_drain()
        assert f.freed and mm.warnings == []
        assert mm.nr_lru_pages["DMA32"] == 0


@pytest.fixture
def hmm():
    return FakeMM(MMConfig(ram="2GiB", hugetlb={"2MiB": 2}))


def in_use_hugetlb(mm: FakeMM):
    h = mm.hstate("2MiB")
    folio = mm.dequeue_hugetlb_folio(h, GFP_HIGHUSER_MOVABLE)
    folio.flags |= PG_hugetlb_migratable          # as the fault path marks it
    return h, folio


class TestFolioIsolateHugetlb:
    def test_isolate_and_putback(self, hmm):
        """Isolation appends to the list with a reference; putback restores migratability."""
        h, f = in_use_hugetlb(hmm)
        lst = []
        assert hmm.folio_isolate_hugetlb(f, lst) is True
        assert lst == [f] and f.refcount == 2
        assert f.test(PG_isolated) and not f.test(PG_hugetlb_migratable)
        assert hmm.folio_isolate_hugetlb(f, lst) is False     # already isolated
        assert lst == [f]
        hmm.folio_putback_hugetlb(f)
        assert f.refcount == 1
        assert f.test(PG_hugetlb_migratable) and not f.test(PG_isolated)
        assert (h.nr_huge_pages, h.free_huge_pages) == (2, 1)

    def test_putback_movable_pages_routes_hugetlb(self, hmm):
        """putback_movable_pages hands hugetlb folios back to hugetlb, not the LRU."""
        h, f = in_use_hugetlb(hmm)
        lst = []
        assert hmm.folio_isolate_hugetlb(f, lst)
        hmm.putback_movable_pages(lst)
        assert lst == []
        assert f.refcount == 1 and f.test(PG_hugetlb_migratable)
        assert not on_lru(hmm, f) and f.lru_batch == -1
        assert hmm.stats.nr_isolated_file == hmm.stats.nr_isolated_anon == 0

    def test_refuses_free_or_non_hugetlb(self, hmm):
        """Free pool folios and non-hugetlb folios are not isolated."""
        h = hmm.hstate("2MiB")
        lst = []
        free = h.free_list[0]
        assert hmm.folio_isolate_hugetlb(free, lst) is False
        assert hmm.folio_isolate_hugetlb(hmm.folio_alloc(GFP_KERNEL, 9), lst) is False
        assert lst == []

    def test_fault_site(self, hmm):
        """An armed folio_isolate_hugetlb site makes isolation fail."""
        _, f = in_use_hugetlb(hmm)
        lst = []
        hmm.faults.arm("folio_isolate_hugetlb")
        assert hmm.folio_isolate_hugetlb(f, lst) is False
        assert lst == [] and f.refcount == 1 and f.test(PG_hugetlb_migratable)
        assert [r.site for r in hmm.faults.fired] == ["folio_isolate_hugetlb"]
        assert hmm.folio_isolate_hugetlb(f, lst) is True
