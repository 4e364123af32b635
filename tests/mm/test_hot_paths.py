"""The written-out hot paths: the pin, unpin, LRU and migration loops read a folio's
watched fields from their slots and tell the attached observer before each write
themselves (mm/observer.py); long-term pins and ``migrate_pages`` pause the host's
automatic cyclic garbage collection while they run (mm/hostgc.py).

These tests pin down what those shortcuts must keep: the observer hears of every
refcount change before it happens, with the value it gets; the flags, LRU batch,
mapcount and mapping writes are announced too; the collector is back on (or still
off, if the caller had it off) when the call returns or raises.
"""

from __future__ import annotations

import gc

import pytest

from pytest_pinfault import FakeMM, MMConfig, Out
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, GFP_HIGHUSER_MOVABLE, MAP_ANONYMOUS,
                                MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MFD_ALLOW_SEALING, MIGRATE_SYNC, MR_LONGTERM_PIN,
                                PAGE_SIZE, PROT_READ, PROT_WRITE, MigrationTargetControl)
from pytest_pinfault.mm.folio import MAPPING_CHANGE, Folio, Page
from pytest_pinfault.mm.gfp import MIGRATE_MOVABLE
from pytest_pinfault.mm.hostgc import PAUSE_MIN
from pytest_pinfault.mm.mmzone import SECTION_SHIFT
from pytest_pinfault.mm.sched import PF_MEMALLOC_PIN
from pytest_pinfault.mm.observer import MMObserver

NR = 70                  # more than two LRU batches (31) and page-cache lookup batches (31),
                         # at least hostgc.PAUSE_MIN


class Strict(MMObserver):
    """Checks, at every event, that nothing about the folio changed unannounced since
    its previous event: the refcount is the value last announced; a field announced
    with None (flags, lru_batch) or MAPPING_CHANGE (mapcount, mapping) may have changed
    only if such an event came in between."""

    def __init__(self) -> None:
        self.events: list[tuple[object, object]] = []
        self.last: dict[int, tuple[object, int, int, int, int, object]] = {}
        self.stale: list[str] = []
        self.gc_on_during: set[bool] = set()

    def folio_ref(self, folio, new) -> None:
        self.gc_on_during.add(gc.isenabled())
        key = id(folio)
        prev = self.last.get(key)
        if prev is not None:
            pnew, rc, flags, lru, mc, mapping = prev
            if folio._rc != (pnew if isinstance(pnew, int) and pnew != MAPPING_CHANGE else rc):
                self.stale.append(f"refcount of {folio!r} changed unannounced")
            if pnew is not None and (folio._flags != flags or folio._lru != lru):
                self.stale.append(f"flags/lru_batch of {folio!r} changed unannounced")
            if pnew != MAPPING_CHANGE and (folio._mc != mc or folio._mapping is not mapping):
                self.stale.append(f"mapcount/mapping of {folio!r} changed unannounced")
        self.events.append((folio, new))
        self.last[key] = (new, folio._rc, folio._flags, folio._lru, folio._mc, folio._mapping)

    def pin_call_end(self, call, token, ret, entries, longterm, caller) -> None:
        self.gc_on_during.add(gc.isenabled())

    def settle(self) -> None:
        """After the call: every folio's last announced refcount is the one it has."""
        for folio, _ in self.events:
            new, rc = self.last[id(folio)][:2]
            want = new if isinstance(new, int) and new != MAPPING_CHANGE else rc
            if folio._rc != want:
                self.stale.append(f"refcount of {folio!r} changed after its last event")


def cma_memfd(k: FakeMM, pages: int = NR):
    f = k.memfd_create("hot", MFD_ALLOW_SEALING)
    assert f.ftruncate(pages * PAGE_SIZE) == 0
    with k.steer("cma"):
        assert f.fallocate(0, 0, pages * PAGE_SIZE) == 0
    return f


@pytest.fixture
def k() -> FakeMM:
    return FakeMM(MMConfig(ram="512MiB", cma="64MiB"))


def test_memfd_pin_folios_out_of_cma_announces_every_change(k):
    """A migrating memfd_pin_folios + unpin_folios: every refcount write is announced
    with the value written, before it happens; the flags, LRU-batch, mapcount and
    mapping writes of isolation, migration, the LRU batch and freeing are announced."""
    f = cma_memfd(k)
    obs = Strict()
    k.attach_observer(obs)
    folios: list = []
    n = k.memfd_pin_folios(f, 0, NR * PAGE_SIZE - 1, folios, NR, Out(0))
    assert n == NR and k.stats.pgmigrate_success == NR
    assert all(k.folio_is_longterm_pinnable(x) for x in folios)
    k.unpin_folios(folios, n)
    obs.settle()
    assert obs.stale == []
    kinds = {type(new) for _, new in obs.events}
    assert kinds == {int, type(None)}                 # refcounts, flags/LRU batch
    assert any(new == MAPPING_CHANGE for _, new in obs.events)   # mapping moved
    # each migrated source was freed: its last events say refcount 0, then mapping gone
    sources = {id(x) for x, new in obs.events if new == 0}
    assert len(sources) == NR


def test_pin_user_pages_out_of_cma_announces_every_change(k):
    """The same for pin_user_pages(FOLL_LONGTERM | FOLL_WRITE) over a populated shared
    mapping: the page tables move to the targets (mapcount announced on both)."""
    f = cma_memfd(k)
    mm = k.current.mm
    addr = mm.mmap(NR * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, file=f)
    obs = Strict()
    k.attach_observer(obs)
    pages: list = []
    n = k.pin_user_pages(addr, NR, FOLL_LONGTERM | FOLL_WRITE, pages)
    assert n == NR and k.stats.pgmigrate_success == NR
    k.unpin_user_pages(pages, n)
    obs.settle()
    assert obs.stale == []
    mapping_changes = [x for x, new in obs.events if new == MAPPING_CHANGE]
    assert len({id(x) for x in mapping_changes}) == 2 * NR     # each source and target


def test_strict_observer_catches_an_unannounced_write(k):
    """The observer above fails when a write skips the announcement."""
    f = cma_memfd(k, 1)
    obs = Strict()
    k.attach_observer(obs)
    folio = f.mapping.lookup(0)
    k.folio_get(folio)
    folio._rc += 1                                   # a write nobody announced
    k.folio_put(folio)
    k.folio_put(folio)
    assert obs.stale


def test_long_term_pin_runs_with_the_collector_paused(k):
    """No automatic collection runs inside a long-term pin that migrates, nor inside the
    observer's judgement of its return, nor inside the unpin (an attached observer
    records every folio it touches); afterwards the collector is on again."""
    f = cma_memfd(k)
    obs = Strict()
    k.attach_observer(obs)
    assert gc.isenabled()
    folios: list = []
    assert k.memfd_pin_folios(f, 0, NR * PAGE_SIZE - 1, folios, NR, Out(0)) == NR
    assert obs.gc_on_during == {False}
    assert gc.isenabled()
    obs.gc_on_during.clear()
    k.unpin_folios(folios, NR)
    assert obs.gc_on_during == {False}
    assert gc.isenabled()


def test_migrate_pages_pauses_and_resumes_the_collector(k):
    """migrate_pages pauses the collector too, and resumes it when a callback raises."""
    f = cma_memfd(k, NR)
    lst: list = []
    for i in range(NR):
        folio = f.mapping.lookup(i)
        assert k.folio_isolate_lru(folio) or (k.lru_add_drain_all() or k.folio_isolate_lru(folio))
        k.node_stat_mod_isolated(folio, 1)
        lst.append(folio)
    seen = []

    def target(src, private):
        seen.append(gc.isenabled())
        if len(seen) == 2:
            raise RuntimeError("driver bug")
        return k.alloc_migration_target(src, private)

    mtc = MigrationTargetControl(gfp_mask=int(GFP_HIGHUSER_MOVABLE), reason=MR_LONGTERM_PIN)
    with pytest.raises(RuntimeError):
        k.migrate_pages(lst, target, None, mtc, MIGRATE_SYNC, MR_LONGTERM_PIN)
    assert seen == [False, False]
    assert gc.isenabled()


def test_fallocate_and_populating_run_with_the_collector_paused(k):
    """fallocate(2), MAP_POPULATE, write(2) to a memfd and writes to fresh anonymous
    memory allocate (and map) a folio per page: no automatic
    collection runs inside them (each would scan the whole heap, so their cost per page
    would grow with what the process already holds); afterwards the collector is on."""
    obs = Strict()
    k.attach_observer(obs)
    f = k.memfd_create("populate", MFD_ALLOW_SEALING)
    assert f.ftruncate(NR * PAGE_SIZE) == 0
    assert f.fallocate(0, 0, NR * PAGE_SIZE) == 0
    assert obs.gc_on_during == {False} and gc.isenabled()
    obs.gc_on_during.clear()
    k.current.mm.mmap(NR * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, file=f)
    assert obs.gc_on_during == {False} and gc.isenabled()
    obs.gc_on_during.clear()
    g = k.memfd_create("written", MFD_ALLOW_SEALING)
    assert g.pwrite(b"w" * (NR * PAGE_SIZE), 0) == NR * PAGE_SIZE        # a folio per page
    assert obs.gc_on_during == {False} and gc.isenabled()
    obs.gc_on_during.clear()
    mm = k.current.mm
    addr = mm.mmap(NR * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    assert mm.write(addr, b"a" * (NR * PAGE_SIZE)) == NR * PAGE_SIZE       # a fault per page
    assert obs.gc_on_during == {False} and gc.isenabled()


def test_a_failing_fallocate_resumes_the_collector():
    """fallocate that runs out of memory part-way frees what it allocated, returns
    -ENOMEM and leaves the collector on."""
    import errno
    k = FakeMM(MMConfig(ram="128MiB"))
    f = k.memfd_create("big", MFD_ALLOW_SEALING)
    assert f.ftruncate(256 << 20) == 0
    assert f.fallocate(0, 0, 256 << 20) == -errno.ENOMEM
    assert gc.isenabled() and f.mapping.lookup(0) is None


def test_short_calls_leave_the_collector_alone(k):
    """A pin of fewer than PAUSE_MIN pages runs with the collector as it is."""
    f = cma_memfd(k, PAUSE_MIN - 1)
    obs = Strict()
    k.attach_observer(obs)
    folios: list = []
    n = PAUSE_MIN - 1
    assert k.memfd_pin_folios(f, 0, n * PAGE_SIZE - 1, folios, n, Out(0)) == n
    assert obs.gc_on_during == {True} and k.stats.pgmigrate_success == n
    k.unpin_folios(folios, n)


def test_a_disabled_collector_stays_disabled(k):
    """A caller that turned the collector off finds it off after the call."""
    f = cma_memfd(k)
    folios: list = []
    gc.disable()
    try:
        assert k.memfd_pin_folios(f, 0, NR * PAGE_SIZE - 1, folios, NR, Out(0)) == NR
        assert not gc.isenabled()
    finally:
        gc.enable()
    k.unpin_folios(folios, NR)


# -- the unwatched shortcuts against the watched paths --------------------------------
# Without an observer, the migration of a small folio, the order-0 allocation and free,
# the long-term collect loop and the small-folio unpins take shortcuts written out for
# speed (gup.py, migrate.py, page_alloc.py, fakemm.py).  With any observer attached the
# same calls go through the functions the shortcuts write out.  Both must leave the
# machine in the same state, down to the order of the free and LRU lists.

class Silent(MMObserver):
    """An observer that records nothing: attached, it only turns the shortcuts off."""

    def folio_ref(self, folio, new) -> None:
        pass


def machine_state(k: FakeMM) -> dict:
    """Everything the shortcuts touch, by pfn: folios, free lists, per-cpu lists, LRU
    lists and batches, counters, the trace."""
    folios = {}
    for sec in k._sections.values():
        for pfn, f in sec.items():
            folios[pfn] = folio_slots(k, f)
    # the order the folios were made in (their _serial), by pfn
    by_serial = [pfn for pfn, f in sorted(((pfn, f) for sec in k._sections.values()
                                           for pfn, f in sec.items()), key=lambda x: x[1]._serial)]
    zones = {}
    for z in k._zone_list:
        zones[z.name] = ([(fl.starts[:], fl.ends[:], fl.nr_free) for fl in z.free],
                         [([lst[:] for lst in p.lists], p.count) for p in z.pcp],
                         z.nr_free, z.nr_free_cma)
    lru = [[[f.pfn for f in d] for d in lists] for lists in k._lru_lists]
    batches = [[f.pfn for f in b] for b in k._lru_add]
    events = [(e.kind, sorted((key, getattr(v, "pfn", v)) for key, v in e.fields.items()))
              for e in k.trace]
    return dict(folios=folios, zones=zones, lru=lru, lru_nr=list(k._lru_nr), batches=batches,
                stats={name: getattr(k.stats, name) for name in type(k.stats).__slots__},
                allocated=k._nr_allocated, events=events, by_serial=by_serial)


#: every slot of a folio; a slot added to Folio is compared without being listed here
FOLIO_SLOTS = [name for name in Folio.__slots__ if name != "__weakref__"]


def folio_slots(k: FakeMM, f) -> tuple:
    """Every slot of *f*, objects of the machine by what tells them apart across two
    machines (the zone by name, the mapping by type, the reverse map by owner type and
    key, the contents by value); _serial is compared as an order (see machine_state)."""
    out = []
    for name in FOLIO_SLOTS:
        v = getattr(f, name)
        if name == "_serial":
            continue
        if name == "_mm":
            v = v is k
        elif name == "_zone":
            v = v.name
        elif name == "_mapping":
            v = type(v).__name__
        elif name == "rmap":
            v = sorted((type(o).__name__, key) for o, key in (v or ()))
        elif name == "_data":
            v = None if v is None else sorted(v.items())
        elif name in ("private", "hstate") and v is not None:
            v = type(v).__name__
        out.append((name, v))
    return tuple(out)


def _pin_memfd(k: FakeMM) -> None:
    f = cma_memfd(k, 3 * NR)
    folios: list = []
    assert k.memfd_pin_folios(f, 0, 3 * NR * PAGE_SIZE - 1, folios, 3 * NR, Out(0)) == 3 * NR
    k.unpin_folios(folios[:NR], NR)


def _pin_into_given_lists(k: FakeMM) -> None:
    """Pins into lists the caller sized: longer than the pin (the entries past it stay)
    and shorter (the list grows, as _set writes a C array)."""
    f = cma_memfd(k, 3 * NR)
    longer: list = [None] * (3 * NR + 3)
    assert k.memfd_pin_folios(f, 0, 3 * NR * PAGE_SIZE - 1, longer, 3 * NR, Out(0)) == 3 * NR
    assert longer[3 * NR:] == [None] * 3 and None not in longer[:3 * NR]
    k.unpin_folios(longer, 3 * NR)
    shorter: list = [None] * 5
    assert k.memfd_pin_folios(f, 0, 3 * NR * PAGE_SIZE - 1, shorter, 3 * NR, Out(0)) == 3 * NR
    assert len(shorter) == 3 * NR and None not in shorter
    k.unpin_folios(shorter, 3 * NR)
    mm = k.current.mm
    addr = mm.mmap(3 * NR * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, file=f)
    pages: list = [None] * 5
    assert k.pin_user_pages(addr, 3 * NR, FOLL_LONGTERM | FOLL_WRITE, pages) == 3 * NR
    assert len(pages) == 3 * NR and None not in pages
    k.unpin_user_pages(pages, 3 * NR)


def _pin_mapping(k: FakeMM) -> None:
    f = cma_memfd(k, 3 * NR)
    mm = k.current.mm
    addr = mm.mmap(3 * NR * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, file=f)
    pages: list = []
    assert k.pin_user_pages(addr, 3 * NR, FOLL_LONGTERM | FOLL_WRITE, pages) == 3 * NR
    k.unpin_user_pages(pages[NR:], 2 * NR)
    mm.munmap(addr, NR * PAGE_SIZE)


def _migrate_anon(k: FakeMM) -> None:
    mm = k.current.mm
    with k.steer("cma"):
        addr = mm.mmap(2 * NR * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE)
    pages: list = []
    assert k.pin_user_pages(addr, 2 * NR, FOLL_LONGTERM | FOLL_WRITE, pages) == 2 * NR
    k.unpin_user_pages(pages, 2 * NR)


class PrivateData:
    """folio->private of a PG_private folio (buffer heads, say)."""


def _migrate_odd_folios(k: FakeMM) -> None:
    """migrate_pages over page-cache folios one of which has PG_private and its
    reference, one an extra reference (it never migrates), one locked (-EAGAIN until
    the passes run out), one under writeback (waited for in MIGRATE_SYNC)."""
    from pytest_pinfault.mm.folio import PG_locked, PG_private, PG_writeback
    f = cma_memfd(k, NR)
    k.lru_add_drain_all()
    folios = [f.mapping.lookup(i) for i in range(NR)]
    folios[1].flags |= PG_private
    folios[1].private = PrivateData()          # what PG_private says the folio carries
    k.folio_get(folios[1])                    # the reference PG_private stands for
    k.folio_get(folios[2])                    # a short-term reference: not migratable
    folios[3].flags |= PG_locked
    folios[4].flags |= PG_writeback
    lst = []
    for x in folios:
        assert k.folio_isolate_lru(x)
        k.node_stat_mod_isolated(x, 1)
        lst.append(x)
    mtc = MigrationTargetControl(reason=MR_LONGTERM_PIN)
    k.current.flags |= PF_MEMALLOC_PIN
    left = k.migrate_pages(lst, k.alloc_migration_target, None, mtc, MIGRATE_SYNC, MR_LONGTERM_PIN)
    k.current.flags &= ~PF_MEMALLOC_PIN
    assert left == 2 and len(lst) == 2        # the extra reference and the lock
    k.putback_movable_pages(lst)


def _pin_private_anon(k: FakeMM) -> None:
    """Private anonymous memory (exclusive anon folios, no mapping) pinned out of CMA."""
    mm = k.current.mm
    addr = mm.mmap(2 * NR * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    with k.steer("cma"):
        mm.write(addr, bytes(2 * NR * PAGE_SIZE))       # a write fault per page
    pages: list = []
    assert k.pin_user_pages(addr, 2 * NR, FOLL_LONGTERM | FOLL_WRITE, pages) == 2 * NR
    k.unpin_user_pages(pages, 2 * NR)


class _DropNothing:
    """mmu_interval_notifier ops that only acknowledge an invalidation."""

    def invalidate(self, sub, rng, cur_seq):
        sub.set_seq(cur_seq)
        return True


def _pin_under_a_notifier(k: FakeMM) -> None:
    """A notifier over the middle third of the mapping: the run stops at the first folio
    it covers (an invalidation to send), the long way migrates it, the run resumes."""
    f = cma_memfd(k, 3 * NR)
    mm = k.current.mm
    addr = mm.mmap(3 * NR * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, file=f)
    sub = k.mmu_interval_notifier_insert(mm, addr + NR * PAGE_SIZE, NR * PAGE_SIZE, _DropNothing())
    assert not isinstance(sub, int)
    pages: list = [None] * (3 * NR + 5)       # pre-sized: the walk overwrites, never appends
    assert k.pin_user_pages(addr, 3 * NR, FOLL_LONGTERM | FOLL_WRITE, pages) == 3 * NR
    assert pages[3 * NR:] == [None] * 5
    k.unpin_user_pages(pages, 3 * NR)
    k.mmu_interval_notifier_remove(sub)


def _pin_with_the_trace_off(k: FakeMM) -> None:
    """With the trace off, on a machine whose targets come from ZONE_NORMAL and whose
    CMA area lies in ZONE_DMA32: more sources freed than DMA32's per-cpu list holds
    (pcp->high: free_pcppages_bulk from inside the run)."""
    k.trace.on = False
    nr = 16 * NR
    f = cma_memfd(k, nr)
    folios: list = []
    assert k.memfd_pin_folios(f, 0, nr * PAGE_SIZE - 1, folios, nr, Out(0)) == nr
    assert {x.zone for x in folios} == {"Normal"} and nr > k.zones["DMA32"].pcp[0].high
    k.unpin_folios(folios, nr)
    _pin_mapping(k)
    k.trace.on = True


def _cma_alloc_over_used_pages(k: FakeMM) -> None:
    """cma_alloc over page-cache folios in use: movable migration targets (the run's
    __GFP_MOVABLE slot), then the same with the allocator steered (the run stands aside)."""
    cma_memfd(k, NR)
    area = k.cma_areas[0]
    page = k.cma_alloc(area, area.count, 0)
    assert page is not None and k.stats.pgmigrate_success == NR
    assert k.cma_release(area, page, area.count)
    cma_memfd(k, NR)
    with k.steer("normal"):
        page = k.cma_alloc(area, area.count, 0)
    assert page is not None and k.stats.pgmigrate_success == 2 * NR
    assert k.cma_release(area, page, area.count)


class _OtherMapping:
    """A page cache that is not an AddressSpace: migration calls its replace_folio."""

    def __init__(self) -> None:
        self.pages: dict = {}
        self.nrpages = 0

    def replace_folio(self, index, old, new) -> None:
        if self.pages.get(index) is old:
            self.pages[index] = new


def _migrate_mixed_list(k: FakeMM) -> None:
    """migrate_pages over shmem folios with, among them, page-cache folios of a plain
    file (KIND_FILE: NR_ISOLATED_FILE), of a mapping of another type, and a large folio:
    the run stops at each of the last two, the long way migrates it, the run resumes."""
    from pytest_pinfault.mm.folio import KIND_FILE
    from pytest_pinfault.mm.memfd import AddressSpace
    f = cma_memfd(k, NR)
    plain, other = AddressSpace(f, 0), _OtherMapping()
    extra = []
    with k.steer("cma"):
        for i, (mapping, order) in enumerate([(plain, 0), (other, 0), (plain, 2), (plain, 0), (other, 0)]):
            x = k._alloc_folio(GFP_HIGHUSER_MOVABLE, order, KIND_FILE)
            x.mapping, x.index = mapping, 8 * i
            x._refcount += x.nr_pages                # the page cache's references
            mapping.pages[8 * i] = x
            mapping.nrpages += x.nr_pages
            k.folio_add_lru(x)
            k.folio_put(x)
            extra.append(x)
    k.lru_add_drain_all()
    folios = [f.mapping.lookup(i) for i in range(NR)]
    mixed = folios[:NR // 3] + extra[:3] + folios[NR // 3:2 * NR // 3] + extra[3:] + folios[2 * NR // 3:]
    lst = []
    for x in mixed:
        assert k.folio_isolate_lru(x)
        k.node_stat_mod_isolated(x, x.nr_pages)
        lst.append(x)
    mtc = MigrationTargetControl(reason=MR_LONGTERM_PIN)
    k.current.flags |= PF_MEMALLOC_PIN
    left = k.migrate_pages(lst, k.alloc_migration_target, None, mtc, MIGRATE_SYNC, MR_LONGTERM_PIN)
    k.current.flags &= ~PF_MEMALLOC_PIN
    assert left == 0 and lst == []
    assert all(other.pages[8 * i].pfn != extra[i].pfn for i in (1, 4))
    assert all(plain.pages[8 * i] is not extra[i] for i in (0, 2, 3))


def _targets_in_a_new_section(k: FakeMM) -> None:
    """The per-cpu list holds pages of a memory section no folio was ever made in (a
    machine's sections are made as their first folio is): the targets start it."""
    from pytest_pinfault.mm.gfp import GFP_HIGHUSER
    f = cma_memfd(k, 3 * NR)
    held = []
    page = k.alloc_pages(GFP_HIGHUSER, 0)     # a pin's target gfp: fills that per-cpu list
    while page is not None and page.pfn >> SECTION_SHIFT == f.mapping.lookup(0).pfn >> SECTION_SHIFT:
        held.append(page)                    # below the CMA area, in its section: taken
        page = k.alloc_pages(GFP_HIGHUSER, 0)
    assert page is not None
    pfn = page.pfn
    k.put_page(page)
    sections = k._sections
    for key in [key for key, sec in sections.items() if not sec]:
        del sections[key]                    # as on a machine that never used them
    assert pfn >> SECTION_SHIFT not in sections
    folios: list = []
    assert k.memfd_pin_folios(f, 0, 3 * NR * PAGE_SIZE - 1, folios, 3 * NR, Out(0)) == 3 * NR
    assert folios[0].pfn >> SECTION_SHIFT == pfn >> SECTION_SHIFT
    k.unpin_folios(folios, 3 * NR)
    for page in held:
        k.put_page(page)


@pytest.mark.parametrize("workload", [_pin_memfd, _pin_into_given_lists, _pin_mapping, _migrate_anon, _migrate_odd_folios,
                                      _pin_private_anon, _pin_under_a_notifier, _pin_with_the_trace_off,
                                      _cma_alloc_over_used_pages, _migrate_mixed_list,
                                      _targets_in_a_new_section])
def test_shortcuts_leave_the_state_the_watched_paths_leave(workload):
    """Long-term pins and migrations out of CMA (the workloads above: memfd, mappings,
    anonymous memory, caller-sized lists, a notifier, odd and mixed lists, cma_alloc,
    a new section, partial unpins and an unmap): the machine without an observer and
    the one with a silent observer end in the same state, down to every folio slot, and
    the shortcuts did run on the first (its pins migrated)."""
    ram = "6GiB" if workload is _pin_with_the_trace_off else "512MiB"
    plain = FakeMM(MMConfig(ram=ram, cma="64MiB"))
    watched = FakeMM(MMConfig(ram=ram, cma="64MiB"))
    watched.attach_observer(Silent())
    assert plain._ref_watch is None and watched._ref_watch is not None
    workload(plain)
    workload(watched)
    assert plain.stats.pgmigrate_success >= NR - 2
    a, b = machine_state(plain), machine_state(watched)
    for key in a:
        assert a[key] == b[key], key


def test_state_comparison_sees_a_difference():
    """The comparison above fails when one machine did one thing more."""
    plain = FakeMM(MMConfig(ram="512MiB", cma="64MiB"))
    other = FakeMM(MMConfig(ram="512MiB", cma="64MiB"))
    _pin_memfd(plain)
    _pin_memfd(other)
    assert machine_state(plain) == machine_state(other)
    other.lru_add_drain()
    assert machine_state(plain) != machine_state(other)


def test_collect_judges_the_pageblocks_around_a_cma_area():
    """The collect loop keeps a pageblock's pinnability while its folios follow each
    other: over the pageblock below a one-pageblock CMA area, the area and the one
    above, the count of unpinnable folios is exactly the count folio_is_longterm_pinnable
    gives, with and without the shortcut.  (A CMA area covering part of a pageblock
    cannot be configured: the kernel requires CMA_MIN_ALIGNMENT_BYTES, tests/mm/
    test_config.py.)"""
    from pytest_pinfault.mm.folio import KIND_ANON, Folio
    for observed in (False, True):
        k = FakeMM(MMConfig(ram="512MiB", cma="a:2MiB@258MiB"))
        if observed:
            k.attach_observer(Silent())
        (lo, hi), = k._cma_ranges
        assert lo % 512 == 0 and hi - lo == 512
        first = lo - 512
        entries = [Folio(k, pfn, 0, k._pfn_zone(pfn), KIND_ANON) for pfn in range(first, first + 1536)]
        want = sum(not k.folio_is_longterm_pinnable(f) for f in entries)
        assert want == hi - lo
        assert k._collect_longterm_unpinnable(entries, len(entries), []) == want


def _long_term_pages(k: FakeMM, where: str | None, nr: int, ask: int) -> tuple[int, list]:
    f = k.memfd_create("pages", MFD_ALLOW_SEALING)
    assert f.ftruncate(nr * PAGE_SIZE) == 0
    if where:
        with k.steer(where):
            assert f.fallocate(0, 0, nr * PAGE_SIZE) == 0
    else:
        assert f.fallocate(0, 0, nr * PAGE_SIZE) == 0
    addr = k.current.mm.mmap(nr * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, file=f)
    pages: list = []
    got = k.pin_user_pages(addr, ask, FOLL_LONGTERM | FOLL_WRITE, pages)
    return got, [(type(p).__name__, p.pfn, p.folio is k.current.mm.lookup(addr + i * PAGE_SIZE)[0])
                 for i, p in enumerate(pages[:max(got, 0)])]


@pytest.mark.parametrize("where,nr,ask", [(None, NR, NR), ("cma", NR, NR), ("cma", NR, NR + 5),
                                          (None, NR, NR + 5)])
def test_long_term_pin_hands_out_a_page_for_every_entry(where, nr, ask):
    """The unobserved walk leaves small folios in pages[] until the pin stands: every
    entry the call returns is a Page of the folio mapped there, as on an observed
    machine, whether the pin migrated or not and when the walk ends early at the
    mapping's end (ask > nr: a partial pin)."""
    plain = FakeMM(MMConfig(ram="512MiB", cma="64MiB"))
    watched = FakeMM(MMConfig(ram="512MiB", cma="64MiB"))
    watched.attach_observer(Silent())
    a = _long_term_pages(plain, where, nr, ask)
    b = _long_term_pages(watched, where, nr, ask)
    assert a[0] == nr and a[1] == b[1]
    assert all(kind == "Page" and mapped for kind, _, mapped in a[1])
    assert (plain.stats.pgmigrate_success > 0) == (where == "cma")


def test_long_term_pin_under_the_pin_anyway_quirk_hands_out_pages():
    """gup_keep_pins_on_isolation_failure: a folio that cannot be isolated keeps its pin
    and the call succeeds without a check or migration; the entries are Pages too."""
    k = FakeMM(MMConfig(ram="512MiB", cma="64MiB", quirks=["gup_keep_pins_on_isolation_failure"]))
    f = cma_memfd(k, NR)
    addr = k.current.mm.mmap(NR * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, file=f)
    k.lru_add_drain_all()
    k.folio_isolate_lru(f.mapping.lookup(0))        # off the LRU: isolation of it fails
    pages: list = []
    assert k.pin_user_pages(addr, 1, FOLL_LONGTERM, pages) == 1
    assert type(pages[0]) is Page and pages[0].folio is f.mapping.lookup(0)


def _pin_placed(k: FakeMM, placements: tuple) -> list:
    """pin_user_pages(FOLL_LONGTERM) over a shared mapping of a memfd whose pages were
    allocated NR at a time under each steer in *placements*."""
    f = k.memfd_create("placed", MFD_ALLOW_SEALING)
    total = NR * len(placements)
    assert f.ftruncate(total * PAGE_SIZE) == 0
    for n, where in enumerate(placements):
        with k.steer("normal" if where == "isolated" else where):
            assert f.fallocate(0, n * NR * PAGE_SIZE, NR * PAGE_SIZE) == 0
        if where == "isolated":          # their pageblocks MIGRATE_ISOLATE (_pb_mt)
            k.lru_add_drain_all()        # (a page in an LRU batch counts as unmovable)
            pfns = [f.mapping.lookup(i).pfn for i in range(n * NR, (n + 1) * NR)]
            assert k.start_isolate_page_range(min(pfns), max(pfns) + 1, MIGRATE_MOVABLE) == 0
    addr = k.current.mm.mmap(total * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, file=f)
    pages: list = []
    assert k.pin_user_pages(addr, total, FOLL_LONGTERM | FOLL_WRITE, pages) == total
    return [(type(p).__name__, p.pfn) for p in pages]


@pytest.mark.parametrize("placements", [("normal",), ("movable",), ("cma",), ("isolated",),
                                        ("normal", "cma", "normal"), ("normal", "movable", "cma")])
def test_the_walk_judges_pinnability_as_the_collect_step_does(placements):
    """An unobserved long-term walk judges each small folio's pinnability itself and
    skips the collect step when every entry passed: with pages in ZONE_MOVABLE, in CMA,
    in ordinary memory or mixed, the plain machine ends where the observed one (which
    always runs the collect step) does, with the same pages handed out.  (An isolated
    pageblock is one whose type the machine records, _pb_mt, rather than its boot type.)"""
    cfg = dict(ram="512MiB", cma="64MiB", movablecore="128MiB")
    plain, watched = FakeMM(MMConfig(**cfg)), FakeMM(MMConfig(**cfg))
    watched.attach_observer(Silent())
    a, b = _pin_placed(plain, placements), _pin_placed(watched, placements)
    assert a == b and all(kind == "Page" for kind, _ in a)
    sa, sb = machine_state(plain), machine_state(watched)
    for key in sa:
        assert sa[key] == sb[key], key
    moved = sum(where != "normal" for where in placements) * NR
    assert plain.stats.pgmigrate_success == moved
