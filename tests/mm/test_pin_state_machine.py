"""A Hypothesis state machine over pinning: mappings, writes steered into CMA or
ZONE_MOVABLE, short- and long-term pins (slow and fast), FOLL_GET references,
memfd_pin_folios, munmap, one-shot faults before a pin, and cma_alloc/cma_release.

After every step the pins must add up: the vmstat counters match what the held batches
account for, each folio carries exactly the pins held on it, every long-term hold is
long-term pinnable, PF_MEMALLOC_PIN is clear, and every managed page of every zone is
free, per-cpu or inside exactly one allocated folio.
"""

from __future__ import annotations

import errno
from collections import Counter

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.mm.helpers import assert_pages_add_up, machine_settings
from pytest_pinfault import FakeMM, MMConfig, Out
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, GUP_PIN_COUNTING_BIAS, MAP_ANONYMOUS,
                                MAP_PRIVATE, MAP_SHARED, MIGRATE_ISOLATE, PAGE_SIZE,
                                PF_MEMALLOC_PIN, PROT_READ, PROT_WRITE)
from pytest_pinfault.mm.folio import KIND_ZERO

MACHINE = MMConfig(ram="1GiB", cma="64MiB", movablecore="128MiB", gup_retry_limit=4)
RW = PROT_READ | PROT_WRITE
FILE_PAGES = 16
PICK = st.integers(min_value=0, max_value=1 << 16)
WHERE = st.sampled_from([None, "cma", "movable", "normal"])
SITES = st.sampled_from(["folio_isolate_lru", "alloc_migration_target", "migrate_folio",
                         "try_grab_folio", "alloc_pages", "lru_add_drain_all",
                         "memfd_alloc_folio"])
# what a pin may return under one injected fault besides a (possibly short) count
PIN_ERRNOS = {-errno.ENOMEM, -errno.EFAULT, -errno.EINVAL}


class Batch:
    """What one successful call holds: ``kind`` pin/get/memfd, the entries, long-term?"""

    def __init__(self, kind: str, entries: list, longterm: bool) -> None:
        self.kind = kind
        self.entries = entries
        self.longterm = longterm

    def folios(self):
        for e in self.entries:
            folio = e if self.kind == "memfd" else e.folio
            if folio.kind != KIND_ZERO:
                yield folio


class PinMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.k = FakeMM(MACHINE)
        self.mm = self.k.current.mm
        self.cma = self.k.cma_areas[0]
        self.maps: list[tuple] = []                      # (addr, npages, memfd or None, pgoff)
        self.files: list = []
        self.held: list[Batch] = []
        self.contig: list[tuple[object, int]] = []

    # ------------------------------------------------------------------ helpers
    def _pick(self, seq, i):
        return seq[i % len(seq)]

    def _range(self, i, first, count):
        addr, npages, file, pgoff = self._pick(self.maps, i)
        first %= npages
        count = 1 + count % (npages - first)
        return addr + first * PAGE_SIZE, count, file, pgoff + first

    def _held_ids(self) -> set[int]:
        return {id(folio) for batch in self.held for folio in batch.folios()}

    def _blocked(self, folios) -> bool:
        """Would a long-term pin of *folios* have to migrate one that a held batch keeps
        referenced?  Then migration fails and the pin is -ENOMEM (kernel behaviour)."""
        held = self._held_ids()
        return any(f is not None and id(f) in held and not self.k.folio_is_longterm_pinnable(f)
                   for f in folios)

    def _backing(self, addr, count, file, index):
        """The folios a pin of the range will reach: mapped ones, else the page cache's
        (*index* is the file page at *addr*)."""
        out = []
        for j in range(count):
            ent = self.mm.lookup(addr + j * PAGE_SIZE)
            if ent is not None:
                out.append(ent[0])
            else:
                out.append(file.mapping.lookup(index + j) if file is not None else None)
        return out

    def _record(self, kind, entries, n, longterm):
        assert n >= 1
        self.held.append(Batch(kind, list(entries[:n]), longterm))

    # ------------------------------------------------------------------ mappings
    @rule(npages=st.sampled_from([1, 4, 16, 40, 512]), populate=WHERE)
    def mmap_anon(self, npages, populate):
        """A private anonymous mapping, optionally written at once."""
        addr = self.mm.mmap(npages * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
        assert addr > 0
        self.maps.append((addr, npages, None, 0))
        if populate is not None:
            with self.k.steer(populate):
                assert self.mm.write(addr, b"a" * npages * PAGE_SIZE) == npages * PAGE_SIZE

    @rule(i=PICK, new=st.booleans(), where=WHERE)
    def mmap_memfd(self, i, new, where):
        """A shared mapping of a (new or existing) shmem memfd."""
        if new or not self.files:
            f = self.k.memfd_create("m", 0)
            assert f.ftruncate(FILE_PAGES * PAGE_SIZE) == 0
            if where is not None:
                with self.k.steer(where):
                    assert f.pwrite(b"f" * 4 * PAGE_SIZE, 0) == 4 * PAGE_SIZE
            self.files.append(f)
        else:
            f = self._pick(self.files, i)
        addr = self.mm.mmap(FILE_PAGES * PAGE_SIZE, RW, MAP_SHARED, file=f)
        assert addr > 0
        self.maps.append((addr, FILE_PAGES, f, 0))

    @precondition(lambda self: self.maps)
    @rule(i=PICK, first=PICK, count=PICK, where=WHERE)
    def write(self, i, first, count, where):
        """Write a few pages of a mapping, optionally steered."""
        addr, count, _, _ = self._range(i, first, count)
        data = bytes([count % 255 + 1]) * (count * PAGE_SIZE)
        if where is None:
            assert self.mm.write(addr, data) == len(data)
        else:
            with self.k.steer(where):
                assert self.mm.write(addr, data) == len(data)
        assert self.mm.read(addr, len(data)) == data

    @precondition(lambda self: self.maps)
    @rule(i=PICK)
    def munmap(self, i):
        """Unmap a whole mapping; pins on its folios stay valid."""
        addr, npages, _, _ = self.maps.pop(i % len(self.maps))
        assert self.mm.munmap(addr, npages * PAGE_SIZE) == 0

    @precondition(lambda self: self.maps)
    @rule(i=PICK, first=PICK, count=PICK)
    def munmap_part(self, i, first, count):
        """Unmap part of a mapping (splitting VMAs and THPs); the rest keeps its data."""
        j = i % len(self.maps)
        addr, npages, file, pgoff = self.maps[j]
        first %= npages
        count = 1 + count % (npages - first)
        keep = [(addr, first, file, pgoff),
                (addr + (first + count) * PAGE_SIZE, npages - first - count, file, pgoff + first + count)]
        before = [self.mm.read(a, n * PAGE_SIZE) for a, n, _, _ in keep if n]
        assert self.mm.munmap(addr + first * PAGE_SIZE, count * PAGE_SIZE) == 0
        assert self.mm.read(addr + first * PAGE_SIZE, 1) == -errno.EFAULT
        self.maps[j:j + 1] = [m for m in keep if m[1]]
        assert [self.mm.read(a, n * PAGE_SIZE) for a, n, _, _ in keep if n] == before

    # ------------------------------------------------------------------ GUP
    def _pin(self, addr, count, longterm, fast, write):
        flags = (FOLL_LONGTERM if longterm else 0) | (FOLL_WRITE if write else 0)
        pages = []
        fn = self.k.pin_user_pages_fast if fast else self.k.pin_user_pages
        return fn(addr, count, flags, pages), pages

    @precondition(lambda self: self.maps)
    @rule(i=PICK, first=PICK, count=PICK, longterm=st.booleans(), fast=st.booleans(),
          write=st.booleans())
    def pin(self, i, first, count, longterm, fast, write):
        """pin_user_pages[_fast]: the whole range, coherent with the page tables; a long-term
        pin that must migrate a folio someone else holds fails with -ENOMEM (the fast path
        returns what it pinned before that folio, if anything)."""
        addr, count, file, index = self._range(i, first, count)
        blocked = longterm and self._blocked(self._backing(addr, count, file, index))
        before = self.k.stats.nr_foll_pin_acquired - self.k.stats.nr_foll_pin_released
        n, pages = self._pin(addr, count, longterm, fast, write)
        if blocked:
            if n < 0 or not fast:
                assert n == -errno.ENOMEM
                assert self.k.stats.nr_foll_pin_acquired - self.k.stats.nr_foll_pin_released == before
                return
            assert 0 < n < count
        else:
            assert n == count
        for j in range(n):
            assert pages[j].folio is self.mm.lookup(addr + j * PAGE_SIZE)[0]
        self._record("pin", pages, n, longterm)

    @precondition(lambda self: self.maps)
    @rule(i=PICK, first=PICK, count=PICK, fast=st.booleans())
    def get(self, i, first, count, fast):
        """get_user_pages[_fast]: FOLL_GET references."""
        addr, count, _, _ = self._range(i, first, count)
        pages = []
        fn = self.k.get_user_pages_fast if fast else self.k.get_user_pages
        n = fn(addr, count, FOLL_WRITE, pages)
        assert n == count
        self._record("get", pages, n, False)

    @precondition(lambda self: self.maps)
    @rule(site=SITES, nth=st.integers(1, 3), i=PICK, first=PICK, count=PICK,
          longterm=st.booleans(), fast=st.booleans())
    def pin_under_fault(self, site, nth, i, first, count, longterm, fast):
        """Arm one fault once, pin: a count (maybe short) or an errno with nothing held."""
        addr, count, _, _ = self._range(i, first, count)
        before = self.k.stats.nr_foll_pin_acquired - self.k.stats.nr_foll_pin_released
        self.k.faults.arm(site, nth=nth)
        try:
            n, pages = self._pin(addr, count, longterm, fast, True)
        finally:
            self.k.faults.disarm()
        if n > 0:
            assert n <= count
            self._record("pin", pages, n, longterm)
        else:
            assert n in PIN_ERRNOS, n
            assert self.k.stats.nr_foll_pin_acquired - self.k.stats.nr_foll_pin_released == before

    @precondition(lambda self: self.held)
    @rule(i=PICK, dirty=st.booleans())
    def release(self, i, dirty):
        """Release one held batch with the matching API."""
        batch = self.held.pop(i % len(self.held))
        n = len(batch.entries)
        if batch.kind == "pin":
            self.k.unpin_user_pages_dirty_lock(batch.entries, n, dirty)
        elif batch.kind == "get":
            for page in batch.entries:
                self.k.put_page(page)
        else:
            self.k.unpin_folios(batch.entries, n)

    # ------------------------------------------------------------------ memfd
    @precondition(lambda self: self.files)
    @rule(i=PICK, first=PICK, count=PICK, max_folios=st.integers(1, FILE_PAGES),
          site=st.none() | SITES)
    def memfd_pin(self, i, first, count, max_folios, site):
        """memfd_pin_folios on a shmem file, maybe under a one-shot fault."""
        f = self._pick(self.files, i)
        first %= FILE_PAGES
        count = 1 + count % (FILE_PAGES - first)
        start, end = first * PAGE_SIZE + 7, (first + count) * PAGE_SIZE - 1
        want = min(count, max_folios)
        blocked = self._blocked([f.mapping.lookup(first + j) for j in range(want)])
        folios, off = [], Out()
        before = self.k.stats.nr_foll_pin_acquired - self.k.stats.nr_foll_pin_released
        if site is not None:
            self.k.faults.arm(site)
        try:
            n = self.k.memfd_pin_folios(f, start, end, folios, max_folios, off)
        finally:
            self.k.faults.disarm()
        if blocked and site is None:
            assert n == -errno.ENOMEM
        elif n > 0:
            assert not blocked and n == want and off.value == 7
            assert [x.index for x in folios[:n]] == list(range(first, first + n))
            assert all(f.mapping.lookup(first + j) is folios[j] for j in range(n))
            self._record("memfd", folios, n, True)
        else:
            assert n in {-errno.ENOMEM, -errno.EINVAL, -errno.ENOSPC}, n
            assert site is not None or blocked
        if n <= 0:
            assert self.k.stats.nr_foll_pin_acquired - self.k.stats.nr_foll_pin_released == before

    # ------------------------------------------------------------------ CMA
    @rule(count=st.sampled_from([1, 16, 512, 2048]), align=st.sampled_from([0, 4, 9]))
    def cma_alloc(self, count, align):
        """cma_alloc migrates what is in its way; it never meets a long-term pin."""
        page = self.k.cma_alloc(self.cma, count, align, no_warn=True)
        if page is not None:
            assert page.pfn % (1 << align) == 0
            self.contig.append((page, count))

    @precondition(lambda self: self.contig)
    @rule(i=PICK)
    def cma_release(self, i):
        page, count = self.contig.pop(i % len(self.contig))
        assert self.k.cma_release(self.cma, page, count) is True

    # ------------------------------------------------------------------ invariants
    def _pins_held(self) -> Counter:
        pins: Counter = Counter()
        for batch in self.held:
            if batch.kind != "get":
                for folio in batch.folios():
                    pins[id(folio)] += 1
        return pins

    @invariant()
    def pin_counters_match_held_batches(self):
        k = self.k
        outstanding = k.stats.nr_foll_pin_acquired - k.stats.nr_foll_pin_released
        assert outstanding == sum(self._pins_held().values())

    @invariant()
    def each_folio_carries_exactly_its_pins(self):
        pins = self._pins_held()
        gets: Counter = Counter()
        folios = {}
        for batch in self.held:
            for folio in batch.folios():
                folios[id(folio)] = folio
                if batch.kind == "get":
                    gets[id(folio)] += 1
        for key, folio in folios.items():
            assert not folio.freed, folio
            if folio.order:
                assert folio._pincount == pins[key], folio
                assert folio.refcount >= pins[key] + gets[key]
            else:
                assert folio.refcount // GUP_PIN_COUNTING_BIAS == pins[key], folio
                assert folio.refcount % GUP_PIN_COUNTING_BIAS >= gets[key], folio

    @invariant()
    def long_term_holds_are_pinnable(self):
        for batch in self.held:
            if batch.longterm:
                for folio in batch.folios():
                    assert self.k.folio_is_longterm_pinnable(folio), folio

    @invariant()
    def refcounts_sane(self):
        pinned = set(self._pins_held())
        for folio in self.k.iter_folios():
            assert folio.refcount >= 0 and folio.mapcount >= 0, folio
            if not folio.order:
                assert folio._pincount == 0, folio
                if id(folio) not in pinned:
                    assert folio.refcount < GUP_PIN_COUNTING_BIAS, folio
            elif id(folio) not in pinned:
                assert folio._pincount == 0, folio

    @invariant()
    def scope_and_isolation_clean(self):
        k = self.k
        assert not k.current.flags & PF_MEMALLOC_PIN
        assert k.stats.nr_isolated_anon == 0 and k.stats.nr_isolated_file == 0
        assert MIGRATE_ISOLATE not in k._pb_mt.values()
        assert k.warnings == [], [str(w) for w in k.warnings]

    @invariant()
    def pages_add_up_per_zone(self):
        assert_pages_add_up(self.k)

    def teardown(self):
        """Releasing everything leaves no pin and lets the whole CMA area be allocated."""
        k = self.k
        for batch in self.held:
            if batch.kind == "pin":
                k.unpin_user_pages(batch.entries, len(batch.entries))
            elif batch.kind == "get":
                for page in batch.entries:
                    k.put_page(page)
            else:
                k.unpin_folios(batch.entries, len(batch.entries))
        self.held = []
        assert k.stats.nr_foll_pin_acquired == k.stats.nr_foll_pin_released
        for page, count in self.contig:
            assert k.cma_release(self.cma, page, count)
        assert k.cma_alloc(self.cma, self.cma.count, 0, no_warn=True) is not None
        assert k.warnings == []


PinMachine.TestCase.settings = machine_settings(300, 40)
TestPinStateMachine = PinMachine.TestCase
TestPinStateMachine.__doc__ = "Random pin/unpin/GUP/memfd/CMA sequences keep every pin accounted for."
