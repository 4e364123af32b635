"""A stateful random walk over the address-space operations, invariants after every step.

Steps: mmap (private/shared anonymous, shmem and hugetlbfs files, THP-sized), munmap,
mprotect, mlock, madvise of arbitrary sub-ranges (hugetlb splits off a huge-page
boundary must be refused), user reads and writes, fork, ftruncate/fallocate/hole punch,
short- and long-term pins (slow and fast) and their release, FOLL_GET references and
put_page, and deliberate misuse (one unpin or put too many, unpin of a freed folio),
which must be recorded as kernel warnings without changing anything.

After every step:

* conservation: every managed page is free, per-cpu or in exactly one folio;
* no pfn handed out twice: allocated folios never overlap and none is on a free list;
* page-table leaves lie inside a VMA (a huge leaf wholly inside one), map a live folio
  that records the mapping, and a hugetlb VMA maps only huge leaves of its size;
* pin counters balance: acquired - released == the pins the walk holds, and each folio
  carries exactly its pins;
* long-term pins sit outside CMA and ZONE_MOVABLE;
* the recorded warnings are exactly the deliberate misuse.

CI runs a few short walks; ``PINFAULT_WALK_EXAMPLES`` and ``PINFAULT_WALK_STEPS`` make
long ones (docs/fuzzing.md).
"""

from __future__ import annotations

import errno
import os
from collections import Counter

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.mm.helpers import assert_pages_add_up, machine_settings
from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.mm import (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FOLL_LONGTERM,
                                FOLL_WRITE, GUP_PIN_COUNTING_BIAS, MADV_HUGEPAGE, MAP_ANONYMOUS,
                                MAP_PRIVATE, MAP_SHARED, MFD_HUGETLB, PROT_NONE, PROT_READ,
                                PROT_WRITE, Page)
from pytest_pinfault.mm.folio import KIND_ZERO
from pytest_pinfault.mm.mm_types import pte_entry

EXAMPLES = int(os.environ.get("PINFAULT_WALK_EXAMPLES", "25"))
STEPS = int(os.environ.get("PINFAULT_WALK_STEPS", "30"))
MACHINE = MMConfig(ram="512MiB", cma="32MiB", movablecore="128MiB", hugetlb={"2MiB": 6},
                   thp="always", gup_retry_limit=4)
PAGE = 4096
HUGE = 2 << 20
PICK = st.integers(min_value=0, max_value=1 << 20)
PROTS = st.sampled_from([PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE])


class Walk(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.k = FakeMM(MACHINE)
        self.mm = self.k.current.mm
        self.mms = [self.mm]
        self.files = []
        self.pins: list[tuple[list, int, bool]] = []      # (pages, n, longterm)
        self.gets: list = []                              # pages with a FOLL_GET reference
        self.freed_folios: list = []
        self.expected_warnings = 0

    # ------------------------------------------------------------------ helpers
    def _range(self, i: int, off: int, length: int):
        """A sub-range of one existing VMA (page granular, maybe not huge aligned)."""
        vmas = self.mm.vmas
        v = vmas[i % len(vmas)]
        npages = (v.end - v.start) // PAGE
        first = off % npages
        count = 1 + length % (npages - first)
        return v, v.start + first * PAGE, count * PAGE

    # ------------------------------------------------------------------ mappings
    @rule(kind=st.sampled_from(["anon", "anon", "thp", "shared", "shmem", "huge"]),
          pages=st.integers(1, 600), prot=PROTS)
    def mmap(self, kind, pages, prot):
        k, mm = self.k, self.mm
        if kind == "anon":
            addr = mm.mmap(pages * PAGE, prot, MAP_PRIVATE | MAP_ANONYMOUS)
        elif kind == "thp":
            addr = mm.mmap(HUGE * (1 + pages % 2), prot, MAP_PRIVATE | MAP_ANONYMOUS)
        elif kind == "shared":
            addr = mm.mmap(pages * PAGE, prot, MAP_SHARED | MAP_ANONYMOUS)
        elif kind == "shmem":
            f = k.memfd_create("walk", 0)
            assert f.ftruncate(pages * PAGE) == 0
            self.files.append(f)
            addr = mm.mmap(pages * PAGE, prot, MAP_SHARED, file=f)
        else:
            f = k.memfd_create("walkh", MFD_HUGETLB)
            assert f.ftruncate(HUGE * (1 + pages % 2)) == 0
            self.files.append(f)
            addr = mm.mmap(HUGE * (1 + pages % 2), prot, MAP_SHARED, file=f)
        assert addr > 0 or addr in (-errno.ENOMEM,), addr

    @precondition(lambda self: self.mm.vmas)
    @rule(i=PICK, off=PICK, length=PICK)
    def munmap(self, i, off, length):
        v, start, n = self._range(i, off, length)
        huge = v.is_hugetlb()
        rc = self.mm.munmap(start, n)
        if huge and (start % HUGE or n % HUGE) and not (start == v.start and start + n >= v.end):
            assert rc == -errno.EINVAL
        else:
            assert rc == 0

    @precondition(lambda self: self.mm.vmas)
    @rule(i=PICK, off=PICK, length=PICK, prot=PROTS)
    def mprotect(self, i, off, length, prot):
        v, start, n = self._range(i, off, length)
        rc = self.mm.mprotect(start, n, prot)
        assert rc in (0, -errno.EINVAL, -errno.EACCES)
        if rc == -errno.EINVAL:
            assert v.is_hugetlb()

    @precondition(lambda self: self.mm.vmas)
    @rule(i=PICK, off=PICK, length=PICK, advise=st.booleans())
    def mlock_or_madvise(self, i, off, length, advise):
        v, start, n = self._range(i, off, length)
        if advise:
            rc = self.mm.madvise(start, n, MADV_HUGEPAGE)
            assert rc in (0, -errno.EINVAL)
        else:
            rc = self.mm.mlock(start, n)
            assert rc in (0, -errno.ENOMEM, -errno.EAGAIN)

    @precondition(lambda self: self.mm.vmas)
    @rule(i=PICK, off=PICK, length=st.integers(1, 3 * PAGE), byte=st.integers(0, 255))
    def write_then_read(self, i, off, length, byte):
        v, start, _ = self._range(i, off, 0)
        data = bytes([byte]) * min(length, v.end - start)
        rc = self.mm.write(start, data)
        if rc == len(data):
            assert self.mm.read(start, len(data)) == data
        else:
            assert rc == -errno.EFAULT

    @precondition(lambda self: self.files)
    @rule(i=PICK, off=PICK, length=st.integers(1, 64), punch=st.booleans())
    def file_ops(self, i, off, length, punch):
        f = self.files[i % len(self.files)]
        unit = HUGE if f.is_hugetlb else PAGE
        offset = (off % 8) * unit
        if punch:
            rc = f.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length * unit // 8 or unit)
            assert rc in (0, -errno.EPERM)
        else:
            rc = f.fallocate(0, offset, unit)
            assert rc in (0, -errno.ENOMEM, -errno.ENOSPC)

    @rule()
    def fork(self):
        child = self.k.fork(self.mm)
        assert child is not None
        self.mms.append(child)

    # ------------------------------------------------------------------ pins and gets
    @precondition(lambda self: self.mm.vmas)
    @rule(i=PICK, off=PICK, length=st.integers(0, 600), write=st.booleans(),
          longterm=st.booleans(), fast=st.booleans())
    def pin(self, i, off, length, write, longterm, fast):
        v, start, _ = self._range(i, off, 0)
        n = min(1 + length, (v.end - start) // PAGE)
        flags = (FOLL_WRITE if write else 0) | (FOLL_LONGTERM if longterm else 0)
        pages: list = []
        call = self.k.pin_user_pages_fast if fast else self.k.pin_user_pages
        got = call(start, n, flags, pages)
        assert got <= n
        if got > 0:
            self.pins.append((pages, got, longterm))

    @precondition(lambda self: self.pins)
    @rule(i=PICK)
    def unpin(self, i):
        pages, n, _ = self.pins.pop(i % len(self.pins))
        self.k.unpin_user_pages(pages, n)

    @precondition(lambda self: self.mm.vmas)
    @rule(i=PICK, off=PICK)
    def get(self, i, off):
        v, start, _ = self._range(i, off, 0)
        pages: list = []
        if self.k.get_user_pages(start, 1, 0, pages) == 1:
            self.gets.append(pages[0])

    @precondition(lambda self: self.gets)
    @rule(i=PICK)
    def put(self, i):
        page = self.gets.pop(i % len(self.gets))
        self.k.put_page(page)
        if page.folio.freed:
            self.freed_folios.append(page.folio)

    # ------------------------------------------------------------------ misuse
    @precondition(lambda self: self.pins)
    @rule(i=PICK)
    def unpin_twice(self, i):
        """The second unpin of a batch is a recorded warning and changes nothing."""
        pages, n, _ = self.pins.pop(i % len(self.pins))
        k = self.k
        k.unpin_user_pages(pages, n)
        folio = pages[0].folio
        if folio.kind == KIND_ZERO or any(p.folio is folio for b, m, _ in self.pins for p in b[:m]):
            return          # still pinned by another batch: a second unpin would be legal
        before = k.stats.nr_foll_pin_released
        k.unpin_user_pages(pages[:1], 1)
        self.expected_warnings += 1
        assert len(k.warnings) == self.expected_warnings
        assert k.stats.nr_foll_pin_released == before

    @precondition(lambda self: self.freed_folios)
    @rule(i=PICK, count=st.sampled_from([0, 1, -1]))
    def unpin_freed(self, i, count):
        folio = self.freed_folios[i % len(self.freed_folios)]
        if not folio.freed:
            return                  # a hugetlb folio went back to its pool
        self.k.unpin_user_folio(folio, count)
        self.expected_warnings += 1
        assert len(self.k.warnings) == self.expected_warnings

    # ------------------------------------------------------------------ invariants
    @invariant()
    def conservation(self):
        assert_pages_add_up(self.k)

    @invariant()
    def no_pfn_handed_out_twice(self):
        k = self.k
        spans = sorted((f.pfn, f.pfn + f.nr_pages) for f in k.iter_folios())
        for (a, b), (c, d) in zip(spans, spans[1:]):
            assert b <= c, ((a, b), (c, d))
        for f in k.iter_folios():
            zone = k.zones[f.zone]
            assert sum(fl.count_range(f.pfn, f.pfn + f.nr_pages) for fl in zone.free) == 0, f

    @invariant()
    def leaves_inside_their_vma(self):
        for mm in self.mms:
            for vpn, ent in mm.pte.items():
                folio, idx = pte_entry(ent)
                # a folio's first page is held as the folio itself, never as a pair
                assert type(ent) is not tuple or idx != 0, (hex(vpn), ent)
                vma = mm.find_vma(vpn * PAGE)
                assert vma is not None and not vma.is_hugetlb(), (hex(vpn), vma)
                assert not folio.freed and 0 <= idx < folio.nr_pages
                if folio.kind != KIND_ZERO:
                    assert (mm, ("pte", vpn)) in folio.rmap
            for vpn, folio in mm.huge.items():
                vma = mm.find_vma(vpn * PAGE)
                assert vma is not None, hex(vpn)
                assert vma.start <= vpn * PAGE and (vpn + folio.nr_pages) * PAGE <= vma.end, (vma, folio)
                assert not folio.freed and (mm, ("huge", vpn)) in folio.rmap
                if vma.is_hugetlb():
                    assert folio.nr_pages * PAGE == vma.file.hstate.size

    @invariant()
    def pins_balance(self):
        k = self.k
        held: Counter = Counter()
        folios = {}
        for pages, n, _ in self.pins:
            for p in pages[:n]:
                if p.folio.kind != KIND_ZERO:
                    held[id(p.folio)] += 1
                    folios[id(p.folio)] = p.folio
        assert k.stats.nr_foll_pin_acquired - k.stats.nr_foll_pin_released == sum(held.values())
        for key, folio in folios.items():
            if folio.order:
                assert folio._pincount == held[key], folio
            else:
                assert folio.refcount // GUP_PIN_COUNTING_BIAS == held[key], folio

    @invariant()
    def longterm_pins_outside_cma_and_movable(self):
        for pages, n, longterm in self.pins:
            if longterm:
                for p in pages[:n]:
                    assert self.k.folio_is_longterm_pinnable(p.folio), p

    @invariant()
    def warnings_are_the_deliberate_misuse(self):
        assert len(self.k.warnings) == self.expected_warnings, [str(w) for w in self.k.warnings]


Walk.TestCase.settings = machine_settings(EXAMPLES, STEPS)
TestMMWalk = Walk.TestCase
