"""GUP and PUP: argument validation, return conventions, reference and pin arithmetic,
release, long-term pinning with migration out of CMA/ZONE_MOVABLE, its error paths, and
memfd_pin_folios.

Kernel: mm/gup.c, include/linux/mm.h, mm/memfd.c (docs/kernel-contract §1-§4), the
gup_longterm selftest (tools/testing/selftests/mm/gup_longterm.c).
"""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import FakeMM, MMConfig, Out
from pytest_pinfault.mm import (FOLL_ANON, FOLL_FORCE, FOLL_GET, FOLL_LONGTERM, FOLL_NOFAULT,
                                FOLL_PCI_P2PDMA, FOLL_PIN, FOLL_REMOTE, FOLL_TOUCH, FOLL_WRITE,
                                GUP_PIN_COUNTING_BIAS, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE,
                                MAP_SHARED, MFD_ALLOW_SEALING, MFD_HUGETLB, PAGE_SIZE,
                                PF_MEMALLOC_PIN, PROT_NONE, PROT_READ, PROT_WRITE, VM_IO, KernelHang,
                                KernelOutcome, Livelock, Page, page_folio)
from pytest_pinfault.faults.injector import FaultBudgetExceeded
from pytest_pinfault.mm.folio import PG_anon_exclusive, PG_dirty

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
MiB = 1 << 20
HPAGE = 2 * MiB
BASE = 0x40000000            # 2 MiB aligned, far below the mmap base


# ---------------------------------------------------------------------------- helpers
def machine(**kw) -> FakeMM:
    cfg = dict(ram="1GiB", cma="64MiB", movablecore="128MiB")
    cfg.update(kw)
    return FakeMM(MMConfig(**cfg))


@pytest.fixture
def k() -> FakeMM:
    return machine(thp="never")


def anon(k, pages, where=None, addr=BASE, fill=True):
    """A private anonymous mapping at *addr*, each page written (placed by *where*)."""
    mm = k.current.mm
    assert mm.mmap(pages * PAGE_SIZE, RW, ANON | MAP_FIXED, addr=addr) == addr
    if fill:
        if where:
            with k.steer(where):
                for i in range(pages):
                    assert mm.write(addr + i * PAGE_SIZE, bytes([i % 251 + 1]) * 8) == 8
        else:
            for i in range(pages):
                assert mm.write(addr + i * PAGE_SIZE, bytes([i % 251 + 1]) * 8) == 8
    return addr


def mapped_thp():
    """A machine with THP always on and one written, PMD-mapped anonymous THP at BASE."""
    k = machine(thp="always")
    mm = k.current.mm
    mm.mmap(HPAGE, RW, ANON | MAP_FIXED, addr=BASE)
    mm.write(BASE, b"t")
    return k, mm.lookup(BASE)[0]


def data_intact(mm, addr, pages):
    return all(mm.read(addr + i * PAGE_SIZE, 8) == bytes([i % 251 + 1]) * 8 for i in range(pages))


def pinned_folios(k):
    """Folios that may be DMA-pinned (large: exact; small: refcount >= 1024)."""
    return [f for f in k.iter_folios()
            if f._pincount or (not f.order and f._refcount >= GUP_PIN_COUNTING_BIAS)]


def assert_nothing_held(k):
    """The rule-2 state after a failed pin: no pin, no isolation, scope restored."""
    assert k.stats.nr_foll_pin_acquired == k.stats.nr_foll_pin_released
    assert pinned_folios(k) == []
    assert k.stats.nr_isolated_anon == 0 and k.stats.nr_isolated_file == 0
    assert not k.current.flags & PF_MEMALLOC_PIN


def coherent(mm, addr, pages, n):
    """pages[i] is what the page table maps at addr + i pages."""
    return all(pages[i].folio is mm.lookup(addr + i * PAGE_SIZE)[0] for i in range(n))


# every entry point, called the way its kernel signature wants, on current->mm
ENTRY_POINTS = {
    "get_user_pages": lambda k, a, n, fl, p, locked=None: k.get_user_pages(a, n, fl, p),
    "get_user_pages_remote": lambda k, a, n, fl, p, locked=None:
        k.get_user_pages_remote(k.current.mm, a, n, fl, p, locked),
    "get_user_pages_unlocked": lambda k, a, n, fl, p, locked=None: k.get_user_pages_unlocked(a, n, p, fl),
    "get_user_pages_fast": lambda k, a, n, fl, p, locked=None: k.get_user_pages_fast(a, n, fl, p),
    "pin_user_pages": lambda k, a, n, fl, p, locked=None: k.pin_user_pages(a, n, fl, p),
    "pin_user_pages_remote": lambda k, a, n, fl, p, locked=None:
        k.pin_user_pages_remote(k.current.mm, a, n, fl, p, locked),
    "pin_user_pages_unlocked": lambda k, a, n, fl, p, locked=None: k.pin_user_pages_unlocked(a, n, p, fl),
    "pin_user_pages_fast": lambda k, a, n, fl, p, locked=None: k.pin_user_pages_fast(a, n, fl, p),
}
GET_APIS = [n for n in ENTRY_POINTS if n.startswith("get")]
PIN_APIS = [n for n in ENTRY_POINTS if n.startswith("pin")]
# what invalid arguments return (§1.2): 0 for these three, -EINVAL for the rest
INVALID_RET = {n: (0 if n in ("pin_user_pages", "pin_user_pages_remote", "pin_user_pages_unlocked")
                   else -errno.EINVAL) for n in ENTRY_POINTS}


def release(k, api, pages, n):
    if api.startswith("pin"):
        k.unpin_user_pages(pages, n)
    else:
        for p in pages[:n]:
            k.put_page(p)


# ---------------------------------------------------------------------------- validation
class TestIsValidGupArgs:
    INVALID = {
        "internal-FOLL_PIN": (FOLL_PIN, True),
        "FOLL_GET|FOLL_PIN": (FOLL_GET | FOLL_PIN, True),
        "internal-FOLL_TOUCH": (FOLL_TOUCH, True),
        "internal-FOLL_REMOTE": (FOLL_REMOTE, True),
        "FOLL_LONGTERM|FOLL_PCI_P2PDMA": (FOLL_LONGTERM | FOLL_PCI_P2PDMA, True),
    }

    @pytest.mark.parametrize("case", list(INVALID))
    @pytest.mark.parametrize("api", list(ENTRY_POINTS))
    def test_invalid_for_every_entry_point(self, k, api, case):
        """Internal flags and LONGTERM|P2PDMA are refused with the entry point's value and a WARN."""
        addr = anon(k, 2)
        flags, _ = self.INVALID[case]
        pages = []
        assert ENTRY_POINTS[api](k, addr, 2, flags, pages) == INVALID_RET[api]
        assert [w.site for w in k.warnings] == ["is_valid_gup_args"]
        assert pages == []
        assert k.stats.nr_foll_pin_acquired == 0
        assert [f.refcount for f in pinned_folios(k)] == []

    @pytest.mark.parametrize("api", PIN_APIS)
    def test_foll_get_with_pin(self, k, api):
        """FOLL_GET passed to a pin_* entry point is FOLL_GET|FOLL_PIN: refused."""
        addr = anon(k, 1)
        folio = k.current.mm.lookup(addr)[0]
        before = folio.refcount
        assert ENTRY_POINTS[api](k, addr, 1, FOLL_GET, []) == INVALID_RET[api]
        assert len(k.warnings) == 1 and "FOLL_GET and FOLL_PIN" in k.warnings[0].message
        assert folio.refcount == before

    @pytest.mark.parametrize("api", GET_APIS)
    def test_longterm_without_pin(self, k, api):
        """FOLL_LONGTERM with a get_user_pages* entry point is refused (-EINVAL)."""
        addr = anon(k, 1)
        assert ENTRY_POINTS[api](k, addr, 1, FOLL_LONGTERM, []) == -errno.EINVAL
        assert len(k.warnings) == 1 and "FOLL_LONGTERM without FOLL_PIN" in k.warnings[0].message

    @pytest.mark.parametrize("api", PIN_APIS + ["get_user_pages_fast"])
    def test_pages_null(self, k, api):
        """FOLL_PIN (or the fast GET's forced FOLL_GET) with pages == NULL is refused."""
        addr = anon(k, 1)
        assert ENTRY_POINTS[api](k, addr, 1, 0, None) == INVALID_RET[api]
        assert len(k.warnings) == 1 and "pages == NULL" in k.warnings[0].message

    @pytest.mark.parametrize("api", ["get_user_pages", "get_user_pages_remote", "get_user_pages_unlocked"])
    def test_get_without_pages_takes_nothing(self, k, api):
        """get_user_pages* without pages is valid: it faults in and holds no reference."""
        addr = anon(k, 2, fill=False)
        mm = k.current.mm
        assert ENTRY_POINTS[api](k, addr, 2, FOLL_WRITE, None) == 2
        folio = mm.lookup(addr)[0]
        assert folio.refcount == 2 and k.warnings == []       # mapping + LRU batch

    @pytest.mark.parametrize("api", ["get_user_pages_remote", "pin_user_pages_remote"])
    def test_locked_must_be_one(self, k, api):
        """A `locked` out-parameter must hold 1 on entry."""
        addr = anon(k, 1)
        assert ENTRY_POINTS[api](k, addr, 1, 0, [], Out(0)) == INVALID_RET[api]
        assert "*locked must be 1" in k.warnings[0].message
        pages = []
        assert ENTRY_POINTS[api](k, addr, 1, 0, pages, Out(1)) == 1
        release(k, api, pages, 1)

    @pytest.mark.parametrize("api", list(ENTRY_POINTS))
    def test_valid_call_no_warning(self, k, api):
        """Plain valid calls succeed without any warning."""
        addr = anon(k, 2)
        pages = []
        flags = FOLL_WRITE | (FOLL_LONGTERM if api.startswith("pin") else 0)
        assert ENTRY_POINTS[api](k, addr, 2, flags, pages) == 2
        assert k.warnings == []
        release(k, api, pages, 2)
        assert_nothing_held(k)


# ---------------------------------------------------------------------------- returns
class TestReturnValues:
    @pytest.mark.parametrize("api", list(ENTRY_POINTS))
    def test_nr_pages_zero(self, k, api):
        """nr_pages == 0 returns 0 and does nothing."""
        addr = anon(k, 1)
        pages = []
        assert ENTRY_POINTS[api](k, addr, 0, 0, pages) == 0
        assert pages == [] and k.warnings == []

    @pytest.mark.parametrize("api", list(ENTRY_POINTS))
    def test_no_vma(self, k, api):
        """No VMA at start: -EFAULT."""
        assert ENTRY_POINTS[api](k, BASE, 1, 0, []) == -errno.EFAULT
        assert_nothing_held(k)

    @pytest.mark.parametrize("api", list(ENTRY_POINTS))
    def test_write_to_read_only(self, k, api):
        """FOLL_WRITE on a read-only mapping: -EFAULT."""
        mm = k.current.mm
        mm.mmap(PAGE_SIZE, PROT_READ, ANON | MAP_FIXED, addr=BASE)
        assert ENTRY_POINTS[api](k, BASE, 1, FOLL_WRITE, []) == -errno.EFAULT
        assert_nothing_held(k)

    @pytest.mark.parametrize("api", list(ENTRY_POINTS))
    def test_range_beyond_vma_is_short(self, k, api):
        """A range running past the VMA into a hole returns the pages before the hole."""
        addr = anon(k, 2)
        pages = []
        assert ENTRY_POINTS[api](k, addr, 4, 0, pages) == 2
        assert len(pages) == 2 and coherent(k.current.mm, addr, pages, 2)
        release(k, api, pages, 2)
        assert_nothing_held(k)

    def test_later_failure_error_is_lost(self, k):
        """A fault failing after some pages were grabbed gives a short count, not -ENOMEM."""
        addr = anon(k, 4, fill=False)
        k.current.mm.write(addr, b"x")
        k.faults.arm("alloc_pages", nth=2, times=-1)
        pages = []
        assert k.pin_user_pages(addr, 4, FOLL_WRITE, pages) == 2
        assert k.stats.nr_foll_pin_acquired == 2
        k.unpin_user_pages(pages, 2)
        assert_nothing_held(k)

    def test_first_page_failure_is_errno(self, k):
        """A fault failing on the first page returns its errno."""
        addr = anon(k, 4, fill=False)
        k.faults.arm("alloc_pages", times=-1)
        assert k.pin_user_pages(addr, 4, FOLL_WRITE, []) == -errno.ENOMEM
        assert_nothing_held(k)

    def test_prot_none(self, k):
        """A PROT_NONE mapping: -EFAULT; FOLL_FORCE may read it."""
        mm = k.current.mm
        mm.mmap(PAGE_SIZE, PROT_NONE, ANON | MAP_FIXED, addr=BASE)
        assert k.pin_user_pages(BASE, 1, 0, []) == -errno.EFAULT
        pages = []
        assert k.get_user_pages(BASE, 1, FOLL_FORCE, pages) == 1
        assert pages[0].folio is k.zero_folio

    def test_foll_force_write_breaks_cow(self, k):
        """FOLL_FORCE|FOLL_WRITE into a read-only private mapping COWs and pins the copy."""
        mm = k.current.mm
        mm.mmap(PAGE_SIZE, PROT_READ, ANON | MAP_FIXED, addr=BASE)
        pages = []
        assert k.pin_user_pages(BASE, 1, FOLL_WRITE | FOLL_FORCE, pages) == 1
        assert pages[0].folio.kind == "anon" and pages[0].folio is mm.lookup(BASE)[0]
        pages[0].folio.write(0, b"ptrace")
        assert mm.read(BASE, 6) == b"ptrace"
        assert mm.write(BASE, b"x") == -errno.EFAULT            # the VMA stays read-only
        k.unpin_user_pages(pages, 1)

    def test_foll_force_write_shared_read_only(self, k):
        """FOLL_FORCE cannot write into a read-only shared mapping: -EFAULT."""
        f = k.memfd_create("f", 0)
        f.ftruncate(PAGE_SIZE)
        addr = k.current.mm.mmap(PAGE_SIZE, PROT_READ, MAP_SHARED, file=f)
        assert k.pin_user_pages(addr, 1, FOLL_WRITE | FOLL_FORCE, []) == -errno.EFAULT

    def test_foll_anon_on_file(self, k):
        """FOLL_ANON on a file mapping: -EFAULT."""
        f = k.memfd_create("f", 0)
        f.ftruncate(PAGE_SIZE)
        addr = k.current.mm.mmap(PAGE_SIZE, RW, MAP_SHARED, file=f)
        assert k.pin_user_pages(addr, 1, FOLL_ANON, []) == -errno.EFAULT

    def test_vm_io(self, k):
        """A VM_IO mapping: -EFAULT."""
        addr = anon(k, 1)
        k.current.mm.find_vma(addr).flags |= VM_IO
        assert k.pin_user_pages(addr, 1, 0, []) == -errno.EFAULT

    def test_foll_nofault(self, k):
        """FOLL_NOFAULT: a missing page is -EFAULT, present pages are pinned."""
        addr = anon(k, 2, fill=False)
        assert k.pin_user_pages(addr, 2, FOLL_NOFAULT, []) == -errno.EFAULT
        k.current.mm.write(addr, b"x")
        pages = []
        assert k.pin_user_pages(addr, 2, FOLL_NOFAULT | FOLL_WRITE, pages) == 1
        k.unpin_user_pages(pages, 1)

    def test_fatal_signal_pending(self, k):
        """A pending fatal signal gives -EINTR.  Kernel: mm/gup.c:__get_user_pages
        (fatal_signal_pending before each page), v6.12.117."""
        addr = anon(k, 2)
        k.current.fatal_signal_pending = True
        assert k.current.signal_pending
        assert k.pin_user_pages(addr, 2, 0, []) == -errno.EINTR
        assert_nothing_held(k)

    def test_non_fatal_signal_does_not_stop_gup(self, k):
        """A pending non-fatal signal does not stop GUP: only fatal signals do (and plain
        ones only under FOLL_INTERRUPTIBLE, on the VM_FAULT_RETRY path the model lacks).
        Kernel: mm/gup.c:__get_user_pages, gup_signal_pending, v6.12.117."""
        addr = anon(k, 2)
        k.current.signal_pending = True
        assert not k.current.fatal_signal_pending
        pages = []
        assert k.pin_user_pages(addr, 2, FOLL_LONGTERM, pages) == 2
        k.unpin_user_pages(pages, 2)
        k.current.signal_pending = False
        assert_nothing_held(k)

    def test_unaligned_start(self, k):
        """An unaligned start address pins the page containing it."""
        addr = anon(k, 1)
        pages = []
        assert k.pin_user_pages(addr + 123, 1, 0, pages) == 1
        assert pages[0].folio is k.current.mm.lookup(addr)[0]
        k.unpin_user_pages(pages, 1)

    def test_fault_in_untouched(self, k):
        """GUP faults untouched pages in (a write fault gives a private anon page)."""
        addr = anon(k, 3, fill=False)
        pages = []
        assert k.pin_user_pages(addr, 3, FOLL_WRITE, pages) == 3
        assert coherent(k.current.mm, addr, pages, 3)
        assert all(p.folio.kind == "anon" and p.folio.flags & PG_dirty for p in pages)
        k.unpin_user_pages(pages, 3)

    def test_remote_mm(self, k):
        """pin_user_pages_remote works on another task's mm, not current's."""
        other = k.create_task("guest")
        with k.run_as(other):
            addr = anon(k, 2)
        pages = []
        assert k.pin_user_pages_remote(other.mm, addr, 2, FOLL_WRITE, pages, None) == 2
        assert coherent(other.mm, addr, pages, 2)
        assert other.mm.has_pinned and not k.current.mm.has_pinned
        assert k.pin_user_pages(addr, 2, 0, []) == -errno.EFAULT          # not in current
        k.unpin_user_pages(pages, 2)


# ---------------------------------------------------------------------------- out params
class TestOutParameters:
    @pytest.mark.parametrize("api", ["pin_user_pages", "pin_user_pages_fast", "get_user_pages"])
    def test_presized_list_overwritten(self, k, api):
        """A pre-sized list gets entries 0..ret-1 overwritten, the rest untouched."""
        addr = anon(k, 3)
        pages = ["sentinel"] * 5
        assert ENTRY_POINTS[api](k, addr, 3, 0, pages) == 3
        assert len(pages) == 5 and pages[3:] == ["sentinel", "sentinel"]
        assert all(isinstance(p, Page) for p in pages[:3])
        release(k, api, pages, 3)

    @pytest.mark.parametrize("api", ["pin_user_pages", "pin_user_pages_fast", "get_user_pages"])
    def test_short_list_grown(self, k, api):
        """A shorter list is overwritten and grown to ret entries."""
        addr = anon(k, 3)
        pages = ["old"]
        assert ENTRY_POINTS[api](k, addr, 3, 0, pages) == 3
        assert len(pages) == 3 and all(isinstance(p, Page) for p in pages)
        release(k, api, pages, 3)

    def test_fast_path_partial_then_slow_keeps_order(self, k):
        """pin_user_pages_fast mixing present and missing pages keeps pages[] in order."""
        addr = anon(k, 4, fill=False)
        mm = k.current.mm
        mm.write(addr, b"a")
        mm.write(addr + 2 * PAGE_SIZE, b"c")
        pages = [None] * 6
        assert k.pin_user_pages_fast(addr, 4, FOLL_WRITE, pages) == 4
        assert coherent(mm, addr, pages, 4) and pages[4:] == [None, None]
        k.unpin_user_pages(pages, 4)

    def test_page_objects(self, k):
        """pages[] entries carry pfn, folio, zone and is_cma; page_folio maps back."""
        addr = anon(k, 1, where="cma")
        pages = []
        assert k.get_user_pages(addr, 1, 0, pages) == 1
        page = pages[0]
        assert page_folio(page) is page.folio and page.pfn == page.folio.pfn
        assert page.is_cma and page.zone == page.folio.zone
        k.put_page(page)


# ---------------------------------------------------------------------------- arithmetic
class TestPinArithmetic:
    def test_small_folio_pin_bias(self, k):
        """A FOLL_PIN on a small folio adds GUP_PIN_COUNTING_BIAS (1024) to its refcount."""
        addr = anon(k, 1)
        k.lru_add_drain()
        folio = k.current.mm.lookup(addr)[0]
        assert folio.refcount == 1
        pages = []
        assert k.pin_user_pages(addr, 1, 0, pages) == 1
        assert (folio.refcount, folio._pincount, folio.pincount) == (1025, 0, 1)
        assert k.folio_maybe_dma_pinned(folio)
        assert k.pin_user_pages(addr, 1, 0, pages) == 1
        assert folio.refcount == 2049
        k.unpin_user_pages(pages, 1)
        k.unpin_user_page(pages[0])
        assert folio.refcount == 1 and not k.folio_maybe_dma_pinned(folio)
        assert k.stats.nr_foll_pin_acquired == k.stats.nr_foll_pin_released == 2

    def test_foll_get_adds_one(self, k):
        """FOLL_GET adds exactly one reference per page; put_page drops it."""
        addr = anon(k, 2)
        k.lru_add_drain()
        pages = []
        assert k.get_user_pages(addr, 2, 0, pages) == 2
        assert [p.folio.refcount for p in pages] == [2, 2]
        assert not k.folio_maybe_dma_pinned(pages[0].folio)
        for p in pages:
            k.put_page(p)
        assert [p.folio.refcount for p in pages] == [1, 1]
        assert k.stats.nr_foll_pin_acquired == 0

    def test_get_user_pages_fast_adds_one(self, k):
        """get_user_pages_fast takes FOLL_GET references too."""
        addr = anon(k, 1)
        k.lru_add_drain()
        pages = []
        assert k.get_user_pages_fast(addr, 1, 0, pages) == 1
        assert pages[0].folio.refcount == 2
        k.put_page(pages[0])

    def test_put_page_on_pinned_page_leaves_bias(self, k):
        """put_page on a pinned small folio is a bug: 1023 references stay behind."""
        addr = anon(k, 1)
        k.lru_add_drain()
        pages = []
        k.pin_user_pages(addr, 1, 0, pages)
        k.put_page(pages[0])
        assert pages[0].folio.refcount == 1024

    def test_thp_whole_pmd(self):
        """Pinning a whole PMD-mapped THP adds 512 to both refcount and _pincount."""
        k, folio = mapped_thp()
        assert folio.order == 9 and folio.refcount == 1
        pages = []
        assert k.pin_user_pages(BASE, 512, FOLL_WRITE, pages) == 512
        assert (folio.refcount, folio._pincount, folio.pincount) == (513, 512, 512)
        assert [p.pfn - folio.pfn for p in pages] == list(range(512))
        assert k.stats.nr_foll_pin_acquired == 512
        k.unpin_user_pages(pages, 512)
        assert (folio.refcount, folio._pincount) == (1, 0)
        assert k.stats.nr_foll_pin_released == 512

    def test_thp_partial(self):
        """Pinning n pages of a THP adds n to refcount and _pincount (one per page)."""
        k, folio = mapped_thp()
        pages = []
        assert k.pin_user_pages(BASE + 10 * PAGE_SIZE, 3, 0, pages) == 3
        assert (folio.refcount, folio._pincount) == (4, 3)
        assert [p.pfn - folio.pfn for p in pages] == [10, 11, 12]
        assert k.folio_maybe_dma_pinned(folio)
        k.unpin_user_pages(pages, 3)
        assert (folio.refcount, folio._pincount) == (1, 0) and not k.folio_maybe_dma_pinned(folio)

    def test_thp_foll_get(self):
        """FOLL_GET on n pages of a THP adds n references and no _pincount."""
        k, folio = mapped_thp()
        pages = []
        assert k.get_user_pages(BASE, 4, 0, pages) == 4
        assert (folio.refcount, folio._pincount) == (5, 0)
        for p in pages:
            k.put_page(p)
        assert folio.refcount == 1

    def test_hugetlb_folio(self):
        """A hugetlb folio: +1 reference and +1 _pincount per pinned page."""
        k = FakeMM(MMConfig(ram="1GiB", hugetlb={"2MiB": 2}))
        f = k.memfd_create("h", MFD_HUGETLB)
        f.ftruncate(HPAGE)
        mm = k.current.mm
        addr = mm.mmap(HPAGE, RW, MAP_SHARED, file=f)
        mm.write(addr, b"h")
        folio = mm.lookup(addr)[0]
        assert (folio.refcount, folio.mapcount) == (513, 1)      # page cache 512 + PMD
        pages = []
        assert k.pin_user_pages(addr + 5 * PAGE_SIZE, 2, FOLL_LONGTERM, pages) == 2
        assert (folio.refcount, folio._pincount) == (515, 2)
        assert [p.pfn - folio.pfn for p in pages] == [5, 6]
        k.unpin_user_pages(pages, 2)
        assert k.pin_user_pages(addr, 512, FOLL_LONGTERM | FOLL_WRITE, pages) == 512
        assert (folio.refcount, folio._pincount) == (1025, 512)
        k.unpin_user_pages(pages, 512)
        assert (folio.refcount, folio._pincount) == (513, 0)

    @pytest.mark.parametrize("flags", [0])
    @pytest.mark.parametrize("api", ["pin_user_pages", "pin_user_pages_fast"])
    def test_zero_page_not_pinned(self, k, api, flags):
        """A read-only short-term pin of the zero page returns it without pinning
        (refcount unchanged); a long-term one unshares it (TestLongtermReadOnlyUnshare)."""
        addr = anon(k, 4, fill=False)
        mm = k.current.mm
        mm.read(addr, 4 * PAGE_SIZE)
        zero = k.zero_folio
        before = zero.refcount
        pages = []
        assert ENTRY_POINTS[api](k, addr, 4, flags, pages) == 4
        assert all(p.folio is zero for p in pages)
        assert zero.refcount == before and zero._pincount == 0
        assert k.stats.nr_foll_pin_acquired == 0
        k.unpin_user_pages(pages, 4)
        assert zero.refcount == before and k.stats.nr_foll_pin_released == 0 and k.warnings == []

    def test_zero_page_foll_get_balanced(self, k):
        """get/put on the zero page leaves its refcount as it was."""
        addr = anon(k, 2, fill=False)
        k.current.mm.read(addr, 2 * PAGE_SIZE)
        before = k.zero_folio.refcount
        pages = []
        assert k.get_user_pages_fast(addr, 2, 0, pages) == 2
        for p in pages:
            k.put_page(p)
        assert k.zero_folio.refcount == before and k.warnings == []

    def test_write_pin_of_zero_page_allocates(self, k):
        """A FOLL_WRITE pin replaces the zero page with a real page first."""
        addr = anon(k, 1, fill=False)
        mm = k.current.mm
        mm.read(addr, 1)
        pages = []
        assert k.pin_user_pages(addr, 1, FOLL_WRITE, pages) == 1
        assert pages[0].folio is not k.zero_folio and pages[0].folio is mm.lookup(addr)[0]
        k.unpin_user_pages(pages, 1)

    @pytest.mark.parametrize("api", ["pin_user_pages", "pin_user_pages_fast"])
    def test_read_only_pin_unshares_after_fork(self, k, api):
        """A R/O pin of a COW-shared anon page gives this mm its own copy (no -EMLINK leak)."""
        addr = anon(k, 1)
        mm = k.current.mm
        shared = mm.lookup(addr)[0]
        child = k.fork(mm)
        pages = []
        assert ENTRY_POINTS[api](k, addr, 1, 0, pages) == 1
        assert pages[0].folio is not shared and pages[0].folio is mm.lookup(addr)[0]
        mm.write(addr, b"parent")
        assert pages[0].folio.read(0, 6) == b"parent"        # the device sees it
        assert child.read(addr, 1) == b"\x01"
        k.unpin_user_pages(pages, 1)

    def test_stats_balance(self, k):
        """nr_foll_pin_acquired/released count pins (pages), not calls."""
        addr = anon(k, 5)
        pages = []
        k.pin_user_pages(addr, 5, 0, pages)
        assert (k.stats.nr_foll_pin_acquired, k.stats.nr_foll_pin_released) == (5, 0)
        k.unpin_user_pages(pages, 2)
        assert k.stats.nr_foll_pin_released == 2
        k.unpin_user_pages(pages[2:], 3)
        assert k.stats.nr_foll_pin_released == 5

    def test_has_pinned_flag(self, k):
        """The first FOLL_PIN sets MMF_HAS_PINNED; FOLL_GET does not."""
        addr = anon(k, 1)
        mm = k.current.mm
        pages = []
        k.get_user_pages(addr, 1, 0, pages)
        assert not mm.has_pinned
        k.put_page(pages[0])
        k.pin_user_pages(addr, 1, 0, pages)
        assert mm.has_pinned
        k.unpin_user_pages(pages, 1)
        assert mm.has_pinned                                  # never cleared


# ---------------------------------------------------------------------------- release
class TestUnpin:
    def test_groups_per_folio(self, monkeypatch):
        """unpin_user_pages releases consecutive pages of one large folio in one call."""
        k = machine(thp="always")
        mm = k.current.mm
        mm.mmap(HPAGE + 2 * PAGE_SIZE, RW, ANON | MAP_FIXED, addr=BASE)
        mm.write(BASE, b"t")
        mm.write(BASE + HPAGE, b"s" * 2 * PAGE_SIZE)
        pages = []
        assert k.pin_user_pages(BASE + HPAGE - 3 * PAGE_SIZE, 5, 0, pages) == 5
        calls = []
        real = k.gup_put_folio
        monkeypatch.setattr(k, "gup_put_folio", lambda f, n, fl: (calls.append((f.order, n)), real(f, n, fl)))
        k.unpin_user_pages(pages, 5)
        # the large folio's three pages in one release; the small folios' pins are
        # released on their own (inline, for the common case: see gup.py)
        assert [c for c in calls if c[0] == 9] == [(9, 3)]
        assert all(c == (0, 1) for c in calls if c[0] == 0)
        assert_nothing_held(k)

    def test_skips_none(self, k):
        """None entries are skipped (v6.13)."""
        addr = anon(k, 3)
        pages = []
        k.pin_user_pages(addr, 3, 0, pages)
        keep = pages[1]
        pages[1] = None
        k.unpin_user_pages(pages, 3)
        assert k.stats.nr_foll_pin_released == 2 and k.warnings == []
        assert pinned_folios(k) == [keep.folio]
        k.unpin_user_page(keep)
        assert_nothing_held(k)

    @pytest.mark.parametrize("npages", [-errno.ENOMEM, -errno.EFAULT])
    def test_errno_npages_warns(self, k, npages):
        """An errno-valued npages is a WARN and releases nothing."""
        addr = anon(k, 1)
        pages = []
        k.pin_user_pages(addr, 1, 0, pages)
        k.unpin_user_pages(pages, npages)
        assert [w.site for w in k.warnings] == ["unpin_user_pages"]
        assert k.stats.nr_foll_pin_released == 0 and len(pinned_folios(k)) == 1
        k.unpin_user_pages(pages, 1)

    @pytest.mark.parametrize("make_dirty", [True, False])
    def test_dirty_lock(self, k, make_dirty):
        """unpin_user_pages_dirty_lock marks the folios dirty only when asked."""
        f = k.memfd_create("f", 0)
        f.ftruncate(2 * PAGE_SIZE)
        f.fallocate(0, 0, 2 * PAGE_SIZE)
        addr = k.current.mm.mmap(2 * PAGE_SIZE, RW, MAP_SHARED, file=f)
        pages = []
        assert k.pin_user_pages(addr, 2, 0, pages) == 2
        assert not any(p.folio.flags & PG_dirty for p in pages)
        k.unpin_user_pages_dirty_lock(pages, 2, make_dirty)
        assert all(bool(p.folio.flags & PG_dirty) is make_dirty for p in pages)
        assert_nothing_held(k)

    def test_write_pin_dirties(self, k):
        """A FOLL_WRITE pin marks the folio dirty at pin time."""
        f = k.memfd_create("f", 0)
        f.ftruncate(PAGE_SIZE)
        f.fallocate(0, 0, PAGE_SIZE)
        addr = k.current.mm.mmap(PAGE_SIZE, RW, MAP_SHARED, file=f)
        pages = []
        k.pin_user_pages(addr, 1, FOLL_WRITE, pages)
        assert pages[0].folio.flags & PG_dirty
        k.unpin_user_pages(pages, 1)

    def test_unpin_user_folio(self):
        """unpin_user_folio releases n pins of one folio."""
        k = machine(thp="always")
        mm = k.current.mm
        mm.mmap(HPAGE, RW, ANON | MAP_FIXED, addr=BASE)
        mm.write(BASE, b"t")
        pages = []
        k.pin_user_pages(BASE, 8, 0, pages)
        folio = pages[0].folio
        k.unpin_user_folio(folio, 5)
        assert (folio._pincount, folio.refcount) == (3, 4)
        k.unpin_user_folio(folio, 3)
        assert_nothing_held(k)

    def test_unpin_unpinned_small_warns(self, k):
        """Unpinning a small folio that is not pinned warns and leaves it alone."""
        addr = anon(k, 1)
        folio = k.current.mm.lookup(addr)[0]
        before = folio.refcount
        k.unpin_user_page(Page(folio, folio.pfn))
        assert [w.site for w in k.warnings] == ["unpin"] and k.warnings[0].folio is folio
        assert folio.refcount == before and not folio.freed

    def test_unpin_unpinned_large_warns(self):
        """Unpinning more pins than a large folio has warns and changes nothing."""
        k, folio = mapped_thp()
        k.unpin_user_folio(folio, 1)
        assert [w.site for w in k.warnings] == ["unpin"]
        assert (folio.refcount, folio._pincount) == (1, 0)

    def test_double_unpin_warns(self, k):
        """The second unpin of the same page is caught."""
        addr = anon(k, 1)
        k.lru_add_drain()
        pages = []
        k.pin_user_pages(addr, 1, 0, pages)
        k.unpin_user_pages(pages, 1)
        k.unpin_user_pages(pages, 1)
        assert len(k.warnings) == 1 and pages[0].folio.refcount == 1

    def test_folio_add_pins(self, k):
        """folio_add_pins adds pins to a pinned folio; on an unpinned one it warns."""
        f = k.memfd_create("f", 0)
        f.ftruncate(PAGE_SIZE)
        folios = []
        assert k.memfd_pin_folios(f, 0, PAGE_SIZE - 1, folios, 1, Out()) == 1
        folio = folios[0]
        before = folio.refcount
        assert k.folio_add_pins(folio, 3) == 0
        assert folio.refcount == before + 3 * GUP_PIN_COUNTING_BIAS and k.warnings == []
        k.unpin_user_folio(folio, 4)
        assert_nothing_held(k)
        assert k.folio_add_pins(folio, 1) == 0
        assert [w.site for w in k.warnings] == ["folio_add_pins"]
        k.unpin_folio(folio)


# ---------------------------------------------------------------------------- gup_longterm selftest
def _selftest_backing(k, backing):
    """ftruncate + fallocate + mmap + memset, as do_test() in gup_longterm.c."""
    mm = k.current.mm
    if backing == "anon-private":
        size = 16 * PAGE_SIZE
        addr = mm.mmap(size, RW, ANON)
    else:
        huge = backing == "memfd-hugetlb-shared"
        f = k.memfd_create("test", MFD_HUGETLB if huge else 0)
        size = HPAGE if huge else 16 * PAGE_SIZE
        assert f.ftruncate(size) == 0 and f.fallocate(0, 0, size) == 0
        shared = backing.endswith("shared")
        addr = mm.mmap(size, RW, MAP_SHARED if shared else MAP_PRIVATE, file=f)
    assert addr > 0
    assert mm.write(addr, bytes(size)) == size
    return mm, addr, size


class TestGupLongtermSelftest:
    BACKINGS = ["anon-private", "memfd-shmem-shared", "memfd-shmem-private", "memfd-hugetlb-shared"]
    APIS = ["pin_user_pages", "pin_user_pages_fast", "pin_user_pages_remote"]

    @pytest.mark.parametrize("api", APIS)
    @pytest.mark.parametrize("rw", [True, False], ids=["RW", "RO"])
    @pytest.mark.parametrize("backing", BACKINGS)
    def test_longterm_pin(self, backing, rw, api):
        """should_work: every long-term pin of anon/shmem/hugetlb memory succeeds, coherently."""
        k = FakeMM(MMConfig(ram="1GiB", hugetlb={"2MiB": 2}))
        mm, addr, size = _selftest_backing(k, backing)
        if not rw:
            assert mm.mprotect(addr, size, PROT_READ) == 0
        n = size // PAGE_SIZE
        flags = FOLL_LONGTERM | (FOLL_WRITE if rw else 0)
        pages = []
        if api == "pin_user_pages_remote":
            with k.run_as(k.create_task("gup_test")):
                ret = k.pin_user_pages_remote(mm, addr, n, flags, pages, None)
        else:
            ret = ENTRY_POINTS[api](k, addr, n, flags, pages)
        assert ret == n
        assert coherent(mm, addr, pages, n)
        expect = {"anon-private": "anon", "memfd-shmem-shared": "shmem",
                  "memfd-shmem-private": "anon",                 # the memset COWed them
                  "memfd-hugetlb-shared": "hugetlb"}[backing]
        assert {p.folio.kind for p in pages} == {expect}
        assert all(k.folio_is_longterm_pinnable(p.folio) for p in pages)
        assert all(k.folio_maybe_dma_pinned(p.folio) for p in pages)
        k.unpin_user_pages(pages, ret)
        assert_nothing_held(k)
        assert k.warnings == []

    @pytest.mark.parametrize("api", APIS)
    def test_ro_pin_of_private_file_pins_an_unshared_copy(self, api):
        """A R/O long-term pin of a private file mapping succeeds and pins anonymous copies
        (gup_must_unshare, 84209e87c696), not the page-cache pages."""
        k = FakeMM(MMConfig(ram="1GiB"))
        f = k.memfd_create("test", 0)
        f.ftruncate(4 * PAGE_SIZE)
        f.pwrite(b"file", 0)
        mm = k.current.mm
        addr = mm.mmap(4 * PAGE_SIZE, PROT_READ, MAP_PRIVATE, file=f)
        mm.read(addr, 4 * PAGE_SIZE)
        pages = []
        if api == "pin_user_pages_remote":
            ret = k.pin_user_pages_remote(mm, addr, 4, FOLL_LONGTERM, pages, None)
        else:
            ret = ENTRY_POINTS[api](k, addr, 4, FOLL_LONGTERM, pages)
        assert ret == 4
        cache = [f.mapping.lookup(i) for i in range(4)]
        assert all(p.folio.kind == "anon" and p.folio not in cache for p in pages)
        assert [p.folio for p in pages] == [mm.lookup(addr + i * PAGE_SIZE)[0] for i in range(4)]
        assert pages[0].folio.read(0, 4) == b"file"
        assert not any(k.folio_maybe_dma_pinned(c) for c in cache)
        k.unpin_user_pages(pages, 4)


# ---------------------------------------------------------------------------- long-term migration
class TestLongtermMigration:
    @pytest.mark.parametrize("api", ["pin_user_pages", "pin_user_pages_fast", "pin_user_pages_remote",
                                     "pin_user_pages_unlocked"])
    @pytest.mark.parametrize("where", ["cma", "movable"])
    def test_anon_moved_out(self, where, api):
        """FOLL_LONGTERM migrates anon pages out of CMA/ZONE_MOVABLE, data intact, PTEs updated."""
        k = machine()
        addr = anon(k, 40, where=where)
        mm = k.current.mm
        before = [mm.lookup(addr + i * PAGE_SIZE)[0] for i in range(40)]
        assert not any(k.folio_is_longterm_pinnable(f) for f in before)
        pages = []
        assert ENTRY_POINTS[api](k, addr, 40, FOLL_LONGTERM | FOLL_WRITE, pages) == 40
        assert all(pages[i].folio is not before[i] for i in range(40))
        assert all(k.folio_is_longterm_pinnable(p.folio) for p in pages)
        assert not any(p.is_cma or p.zone == "Movable" for p in pages)
        assert coherent(mm, addr, pages, 40) and data_intact(mm, addr, 40)
        assert all(f.freed for f in before)
        assert k.stats.pgmigrate_success == 40
        assert not k.current.flags & PF_MEMALLOC_PIN
        k.unpin_user_pages(pages, 40)
        assert_nothing_held(k)

    @pytest.mark.parametrize("where", ["cma", "movable"])
    def test_shmem_moved_out(self, where):
        """A shared shmem page is migrated in the page cache and every mapping."""
        k = machine()
        f = k.memfd_create("f", 0)
        f.ftruncate(8 * PAGE_SIZE)
        with k.steer(where):
            f.pwrite(bytes(range(8)) * PAGE_SIZE, 0)
        mm = k.current.mm
        addr = mm.mmap(8 * PAGE_SIZE, RW, MAP_SHARED, file=f)
        other = k.create_task("reader")
        oaddr = other.mm.mmap(8 * PAGE_SIZE, PROT_READ, MAP_SHARED, file=f)
        other.mm.read(oaddr, 8 * PAGE_SIZE)
        pages = []
        assert k.pin_user_pages(addr, 8, FOLL_LONGTERM | FOLL_WRITE, pages) == 8
        for i, p in enumerate(pages):
            assert p.folio is f.mapping.lookup(i) is other.mm.lookup(oaddr + i * PAGE_SIZE)[0]
            assert k.folio_is_longterm_pinnable(p.folio)
        assert f.pread(8 * PAGE_SIZE, 0) == bytes(range(8)) * PAGE_SIZE
        k.unpin_user_pages(pages, 8)

    @pytest.mark.parametrize("where", ["cma", "movable"])
    def test_hugetlb_moved_out(self, where):
        """A hugetlb folio outside pinnable memory is replaced by a pinnable one."""
        k = machine()
        h = k.hstate()
        with k.steer(where):                   # echo 2 > nr_hugepages, landing there
            assert k.alloc_pool_huge_folio(h) and k.alloc_pool_huge_folio(h)
        f = k.memfd_create("h", MFD_HUGETLB)
        f.ftruncate(HPAGE)
        mm = k.current.mm
        addr = mm.mmap(HPAGE, RW, MAP_SHARED, file=f)
        mm.write(addr, b"huge")
        old = mm.lookup(addr)[0]
        assert not k.folio_is_longterm_pinnable(old)
        pages = []
        assert k.pin_user_pages(addr, 512, FOLL_LONGTERM | FOLL_WRITE, pages) == 512
        new = pages[0].folio
        assert new is not old and new.order == 9 and k.folio_is_longterm_pinnable(new)
        assert mm.lookup(addr)[0] is new is f.mapping.lookup(0)
        assert mm.read(addr, 4) == b"huge"
        assert (new._pincount, new.refcount) == (512, 512 + 1 + 512)
        k.unpin_user_pages(pages, 512)
        assert_nothing_held(k)
        mm.munmap(addr, HPAGE)
        f.close()
        assert (h.nr_huge_pages, h.free_huge_pages, h.resv_huge_pages) == (2, 2, 0)

    @pytest.mark.parametrize("where", ["cma", "movable"])
    @pytest.mark.parametrize("api, flags", [
        ("get_user_pages", 0), ("get_user_pages_fast", FOLL_WRITE),
        ("pin_user_pages", FOLL_WRITE), ("pin_user_pages_fast", 0),
    ])
    def test_short_term_left_in_place(self, where, api, flags):
        """FOLL_GET and pins without FOLL_LONGTERM do not migrate anything."""
        k = machine()
        addr = anon(k, 8, where=where)
        mm = k.current.mm
        before = [mm.lookup(addr + i * PAGE_SIZE)[0] for i in range(8)]
        pages = []
        assert ENTRY_POINTS[api](k, addr, 8, flags, pages) == 8
        assert [p.folio for p in pages] == before
        assert k.stats.pgmigrate_success == 0
        release(k, api, pages, 8)

    def test_faults_allocate_pinnable_memory(self):
        """Pages faulted in by a long-term pin are pinnable even under steer("cma")."""
        k = machine()
        addr = anon(k, 8, fill=False)
        fast_addr = anon(k, 8, fill=False, addr=BASE + MiB)
        pages, fast = [], []
        with k.steer("cma"):
            assert k.pin_user_pages(addr, 8, FOLL_LONGTERM | FOLL_WRITE, pages) == 8
            assert k.pin_user_pages_fast(fast_addr, 8, FOLL_LONGTERM | FOLL_WRITE, fast) == 8
        assert all(k.folio_is_longterm_pinnable(p.folio) for p in pages + fast)
        assert k.stats.pgmigrate_success == 0 and k.stats.gup_longterm_retries == 0
        k.unpin_user_pages(pages, 8)
        k.unpin_user_pages(fast, 8)
        assert_nothing_held(k)

    def test_mixed_range(self):
        """Only the unpinnable folios of a range move; the pinnable ones stay."""
        k = machine()
        addr = anon(k, 6, fill=False)
        mm = k.current.mm
        for i in range(6):
            with k.steer("cma" if i % 2 else "normal"):
                mm.write(addr + i * PAGE_SIZE, bytes([i + 1]) * 8)
        before = [mm.lookup(addr + i * PAGE_SIZE)[0] for i in range(6)]
        pages = []
        assert k.pin_user_pages(addr, 6, FOLL_LONGTERM, pages) == 6
        assert [pages[i].folio is before[i] for i in range(6)] == [True, False] * 3
        assert k.stats.pgmigrate_success == 3
        k.unpin_user_pages(pages, 6)

    def test_retry_repins_everything(self):
        """A migration round drops every pin and re-pins the whole range."""
        k = machine()
        addr = anon(k, 4, where="cma")
        pages = []
        assert k.pin_user_pages(addr, 4, FOLL_LONGTERM, pages) == 4
        assert k.stats.gup_longterm_retries == 1
        assert k.stats.nr_foll_pin_acquired == 8 and k.stats.nr_foll_pin_released == 4
        k.unpin_user_pages(pages, 4)

    def test_memalloc_pin_nesting(self):
        """A caller already under PF_MEMALLOC_PIN keeps it after the pin returns."""
        k = machine()
        addr = anon(k, 2, where="cma")
        saved = k.memalloc_pin_save()
        pages = []
        assert k.pin_user_pages(addr, 2, FOLL_LONGTERM, pages) == 2
        assert k.current.flags & PF_MEMALLOC_PIN
        k.memalloc_pin_restore(saved)
        assert not k.current.flags & PF_MEMALLOC_PIN
        k.unpin_user_pages(pages, 2)


# ---------------------------------------------------------------------------- error paths
class TestLongtermErrorPaths:
    """Every error path leaves nothing pinned, nothing isolated and the scope restored."""

    def test_isolation_fails_once_retries(self):
        """A transient folio_isolate_lru failure is retried (-EAGAIN) and then succeeds."""
        k = machine(gup_retry_limit=5)
        addr = anon(k, 8, where="cma")
        k.faults.arm("folio_isolate_lru", times=1)
        pages = []
        assert k.pin_user_pages(addr, 8, FOLL_LONGTERM, pages) == 8
        assert k.stats.gup_longterm_retries == 2
        assert all(k.folio_is_longterm_pinnable(p.folio) for p in pages)
        assert k.livelocks == []
        k.unpin_user_pages(pages, 8)
        assert_nothing_held(k)

    @pytest.mark.parametrize("limit", [1, 3, 8])
    def test_isolation_always_fails_is_the_kernels_outcome(self, limit):
        """Persistent injected isolation failure: the kernel would re-pin for ever; the
        task is killed out of the loop after gup_retry_limit rounds and the next round's
        __get_user_pages returns -EINTR (mm/gup.c v6.12); no livelock is recorded."""
        k = machine(gup_retry_limit=limit)
        addr = anon(k, 4, where="cma")
        k.faults.arm("folio_isolate_lru", times=-1)
        assert k.pin_user_pages(addr, 4, FOLL_LONGTERM, []) == -errno.EINTR
        assert k.livelocks == [] and k.stats.livelocks == 0
        (out,) = k.kernel_outcomes
        assert isinstance(out, KernelOutcome)
        assert (out.loop, out.rounds, out.site, out.kind, out.returned) == \
            ("__gup_longterm_locked", limit, "folio_isolate_lru", "killed", -errno.EINTR)
        assert out.folio is not None and out.folio.is_cma
        assert "test_gup.py" in out.caller
        assert k.current.signal_pending and k.killed_tasks == [k.current]
        assert k.stats.gup_longterm_retries == limit
        assert k.stats.nr_foll_pin_acquired == 4 * limit
        assert_nothing_held(k)

    def test_machine_state_loop_is_a_livelock(self, monkeypatch):
        """A loop nothing injected keeps going (machine state): a Livelock and -ENOMEM."""
        k = machine(gup_retry_limit=3)
        addr = anon(k, 2, where="cma")

        def again(self, nr, pages):
            self.unpin_user_pages(pages, nr)
            return -errno.EAGAIN
        monkeypatch.setattr(FakeMM, "check_and_migrate_movable_pages", again)
        assert k.pin_user_pages(addr, 2, FOLL_LONGTERM, []) == -errno.ENOMEM
        (ll,) = k.livelocks
        assert isinstance(ll, Livelock) and (ll.loop, ll.iterations) == ("__gup_longterm_locked", 3)
        assert k.kernel_outcomes == [] and not k.current.signal_pending
        assert_nothing_held(k)

    def test_killed_task_retrying_is_a_livelock(self):
        """A caller that keeps calling GUP once its task was killed never finishes: after
        gup_retry_limit -EINTR returns a livelock is recorded and the loop is ended."""
        k = machine(gup_retry_limit=3)
        addr = anon(k, 2, where="cma")
        k.faults.arm("folio_isolate_lru", times=-1)
        with pytest.raises(FaultBudgetExceeded, match="GUP calls returned -EINTR to a task with a signal pending"):
            while k.pin_user_pages(addr, 2, FOLL_LONGTERM, []) < 0:
                pass
        (ll,) = k.livelocks
        assert "signal pending" in ll.loop and ll.iterations == 4
        assert ll.folio is None and "kept failing" not in str(ll)
        assert_nothing_held(k)

    @pytest.mark.parametrize("api", ["pin_user_pages", "pin_user_pages_fast", "pin_user_pages_remote",
                                     "pin_user_pages_unlocked"])
    @pytest.mark.parametrize("site, arm, expect", [
        ("folio_isolate_lru", dict(times=-1), -errno.EINTR),
        ("alloc_migration_target", dict(times=1), -errno.ENOMEM),
        ("alloc_migration_target", dict(times=-1), -errno.ENOMEM),
        ("migrate_folio", dict(times=-1), -errno.ENOMEM),
        ("try_grab_folio", dict(times=1), -errno.ENOMEM),
        ("try_grab_folio", dict(errno=-errno.EREMOTEIO, times=1), -errno.EREMOTEIO),
    ], ids=["isolate-always", "target-once", "target-always", "migrate-always", "grab-first",
            "grab-eremoteio"])
    def test_error_leaves_nothing(self, api, site, arm, expect):
        """Fault sites in the long-term path give the kernel's errno and hold nothing."""
        k = machine(gup_retry_limit=4)
        addr = anon(k, 8, where="cma")
        mm = k.current.mm
        before = [mm.lookup(addr + i * PAGE_SIZE)[0] for i in range(8)]
        k.faults.arm(site, **arm)
        assert ENTRY_POINTS[api](k, addr, 8, FOLL_LONGTERM | FOLL_WRITE, []) == expect
        assert k.faults.fired
        assert_nothing_held(k)
        assert data_intact(mm, addr, 8)
        if site in ("try_grab_folio", "alloc_migration_target", "folio_isolate_lru"):
            assert all(mm.lookup(addr + i * PAGE_SIZE)[0] is before[i] for i in range(8))
        k.faults.disarm()
        k.current.signal_pending = False      # a task killed out of the kernel loop: start afresh
        pages = []
        assert ENTRY_POINTS[api](k, addr, 8, FOLL_LONGTERM | FOLL_WRITE, pages) == 8
        k.unpin_user_pages(pages, 8)
        assert_nothing_held(k)

    def test_migrate_folio_times_20_single_page(self):
        """migrate_pages tries a folio 10 times (3 async + 7 sync): 20 failures fail two pins."""
        k = machine()
        addr = anon(k, 1, where="cma")
        arming = k.faults.arm("migrate_folio", times=20)
        assert k.pin_user_pages(addr, 1, FOLL_LONGTERM, []) == -errno.ENOMEM
        assert arming.fired == 10 and k.stats.pgmigrate_fail == 1
        assert_nothing_held(k)
        assert k.pin_user_pages(addr, 1, FOLL_LONGTERM, []) == -errno.ENOMEM
        assert arming.fired == 20 and k.stats.pgmigrate_fail == 2
        assert_nothing_held(k)
        pages = []
        assert k.pin_user_pages(addr, 1, FOLL_LONGTERM, pages) == 1
        assert k.stats.pgmigrate_success == 1 and k.folio_is_longterm_pinnable(pages[0].folio)
        k.unpin_user_pages(pages, 1)

    def test_migrate_folio_transient_is_absorbed(self):
        """A few transient migration failures are retried inside migrate_pages."""
        k = machine()
        addr = anon(k, 4, where="cma")
        k.faults.arm("migrate_folio", times=5)
        pages = []
        assert k.pin_user_pages(addr, 4, FOLL_LONGTERM, pages) == 4
        assert k.stats.pgmigrate_fail == 0 and k.stats.pgmigrate_success == 4
        k.unpin_user_pages(pages, 4)

    def test_try_grab_short_count(self, k):
        """try_grab_folio failing on the third page of a plain pin: short count 2."""
        addr = anon(k, 4)
        k.faults.arm("try_grab_folio", nth=3)
        pages = []
        assert k.pin_user_pages(addr, 4, 0, pages) == 2
        assert k.stats.nr_foll_pin_acquired == 2
        k.unpin_user_pages(pages, 2)
        assert_nothing_held(k)

    def test_try_grab_later_in_longterm_retries(self):
        """A later grab failure in a long-term pin: the prefix is migrated, the retry completes."""
        k = machine()
        addr = anon(k, 8, where="cma")
        k.faults.arm("try_grab_folio", nth=3)
        pages = []
        assert k.pin_user_pages(addr, 8, FOLL_LONGTERM, pages) == 8
        assert all(k.folio_is_longterm_pinnable(p.folio) for p in pages)
        k.unpin_user_pages(pages, 8)
        assert_nothing_held(k)

    @pytest.mark.parametrize("api", ["pin_user_pages", "pin_user_pages_fast"])
    def test_alloc_pages_during_fault(self, api):
        """Page allocation failing in the fault of a long-term pin: -ENOMEM, nothing held."""
        k = machine()
        addr = anon(k, 4, fill=False)
        k.faults.arm("alloc_pages", times=-1)
        assert ENTRY_POINTS[api](k, addr, 4, FOLL_LONGTERM | FOLL_WRITE, []) == -errno.ENOMEM
        assert_nothing_held(k)

    def test_alloc_pages_during_migration_target(self):
        """Page allocation failing for the migration target: -ENOMEM, data intact."""
        k = machine()
        addr = anon(k, 4, where="cma")
        k.faults.arm("alloc_pages", times=-1)
        assert k.pin_user_pages(addr, 4, FOLL_LONGTERM, []) == -errno.ENOMEM
        assert_nothing_held(k)
        assert data_intact(k.current.mm, addr, 4)

    def test_extra_reference_blocks_migration(self):
        """A folio held by an extra folio_get in CMA makes FOLL_LONGTERM fail with -ENOMEM."""
        k = machine()
        addr = anon(k, 4, where="cma")
        k.lru_add_drain_all()
        mm = k.current.mm
        held = mm.lookup(addr + PAGE_SIZE)[0]
        k.folio_get(held)
        assert k.pin_user_pages(addr, 4, FOLL_LONGTERM, []) == -errno.ENOMEM
        assert k.stats.pgmigrate_fail == 1
        assert mm.lookup(addr + PAGE_SIZE)[0] is held and held.is_cma
        assert_nothing_held(k)
        k.folio_put(held)
        pages = []
        assert k.pin_user_pages(addr, 4, FOLL_LONGTERM, pages) == 4
        k.unpin_user_pages(pages, 4)

    def test_drain_fault_does_not_matter_locally(self):
        """A failing lru_add_drain_all is harmless when the local drain empties the batch."""
        k = machine()
        addr = anon(k, 4, where="cma")
        k.faults.arm("lru_add_drain_all", times=-1)
        pages = []
        assert k.pin_user_pages(addr, 4, FOLL_LONGTERM, pages) == 4
        k.unpin_user_pages(pages, 4)

    def test_remote_batch_needs_drain_all(self):
        """Folios in another cpu's LRU batch need lru_add_drain_all; if it fails: -ENOMEM."""
        k = machine(gup_retry_limit=3)
        other = k.create_task("faulter", mm=k.current.mm)
        with k.run_as(other):
            addr = anon(k, 2, where="cma")
        k.faults.arm("lru_add_drain_all", times=-1)
        assert k.pin_user_pages(addr, 2, FOLL_LONGTERM, []) == -errno.EINTR   # the kernel's outcome
        assert [o.site for o in k.kernel_outcomes] == ["lru_add_drain_all"] and k.livelocks == []
        assert_nothing_held(k)
        k.faults.disarm()
        k.current.signal_pending = False
        pages = []
        assert k.pin_user_pages(addr, 2, FOLL_LONGTERM, pages) == 2
        k.unpin_user_pages(pages, 2)

    @pytest.mark.parametrize("api", list(ENTRY_POINTS))
    def test_memalloc_pin_restored(self, api):
        """PF_MEMALLOC_PIN is clear after every entry point, successful or not."""
        k = machine(gup_retry_limit=2)
        addr = anon(k, 2, where="cma")
        flags = FOLL_LONGTERM if api.startswith("pin") else 0
        pages = []
        ret = ENTRY_POINTS[api](k, addr, 2, flags, pages)
        assert ret == 2 and not k.current.flags & PF_MEMALLOC_PIN
        release(k, api, pages, 2)
        k.faults.arm("folio_isolate_lru", times=-1)
        k.faults.arm("alloc_pages", times=-1)
        ENTRY_POINTS[api](k, addr + 4 * PAGE_SIZE, 2, flags, [])
        ENTRY_POINTS[api](k, addr, 2, flags, [])
        assert not k.current.flags & PF_MEMALLOC_PIN


class TestPinAnywayQuirk:
    def test_default_refuses(self):
        """Current kernels never return success with CMA pages long-term pinned."""
        k = machine(gup_retry_limit=3)
        addr = anon(k, 4, where="cma")
        k.faults.arm("folio_isolate_lru", times=-1)
        assert k.pin_user_pages(addr, 4, FOLL_LONGTERM, []) == -errno.EINTR    # loops until killed
        assert_nothing_held(k)

    def test_pre_5_13_keeps_pins_on_isolation_failure(self):
        """gup_keep_pins_on_isolation_failure: success with the pages still in CMA."""
        k = machine(quirks=("gup_keep_pins_on_isolation_failure",))
        addr = anon(k, 4, where="cma")
        mm = k.current.mm
        before = [mm.lookup(addr + i * PAGE_SIZE)[0] for i in range(4)]
        k.faults.arm("folio_isolate_lru", times=-1)
        pages = []
        assert k.pin_user_pages(addr, 4, FOLL_LONGTERM, pages) == 4
        assert [p.folio for p in pages] == before
        assert all(p.is_cma and not k.folio_is_longterm_pinnable(p.folio) for p in pages)
        assert k.livelocks == [] and not k.current.flags & PF_MEMALLOC_PIN
        k.unpin_user_pages(pages, 4)
        assert_nothing_held(k)

    def test_pre_5_13_pins_anyway_on_migration_failure(self):
        """With the quirk a failed migration re-pins the CMA pages instead of failing."""
        k = machine(quirks=("gup_keep_pins_on_isolation_failure",))
        addr = anon(k, 2, where="cma")
        k.faults.arm("alloc_migration_target", times=-1)
        pages = []
        assert k.pin_user_pages(addr, 2, FOLL_LONGTERM, pages) == 2
        assert all(p.is_cma for p in pages)
        k.unpin_user_pages(pages, 2)

    def test_pin_anyway_does_not_outlive_the_call(self):
        """"Pin anyway" is one call's state (the kernel's local migrate_allow): when the
        re-pin after a failed migration itself fails, the next call migrates again."""
        k = machine(quirks=("gup_keep_pins_on_isolation_failure",))
        addr = anon(k, 2, where="cma")
        k.faults.arm("alloc_migration_target", times=1)
        k.faults.arm("try_grab_folio", nth=3, times=1)       # the re-pin's first grab
        assert k.pin_user_pages(addr, 2, FOLL_LONGTERM, []) == -errno.ENOMEM
        assert_nothing_held(k)
        pages = []
        assert k.pin_user_pages(addr, 2, FOLL_LONGTERM, pages) == 2
        assert all(k.folio_is_longterm_pinnable(p.folio) for p in pages)
        k.unpin_user_pages(pages, 2)
        assert_nothing_held(k)

    def test_quirk_still_migrates_when_possible(self):
        """Without failures the quirk changes nothing: pages are migrated."""
        k = machine(quirks=("gup_keep_pins_on_isolation_failure",))
        addr = anon(k, 4, where="cma")
        pages = []
        assert k.pin_user_pages(addr, 4, FOLL_LONGTERM, pages) == 4
        assert all(k.folio_is_longterm_pinnable(p.folio) for p in pages)
        k.unpin_user_pages(pages, 4)


# ---------------------------------------------------------------------------- memfd_pin_folios
def shmem(k, size=16 * PAGE_SIZE, where=None, fill=b""):
    f = k.memfd_create("m", MFD_ALLOW_SEALING)
    assert f.ftruncate(size) == 0
    if fill:
        if where:
            with k.steer(where):
                assert f.pwrite(fill, 0) == len(fill)
        else:
            assert f.pwrite(fill, 0) == len(fill)
    return f


class TestMemfdPinFoliosValidation:
    @pytest.mark.parametrize("start, end, max_folios", [
        (-1, 10, 4), (10, 5, 4), (0, 10, 0), (0, 16 * PAGE_SIZE, 4), (0, 1 << 40, 4)],
        ids=["start<0", "start>end", "max_folios-0", "end==i_size", "end>i_size"])
    def test_einval(self, k, start, end, max_folios):
        """Bad ranges, max_folios 0 and end >= i_size give -EINVAL before anything happens."""
        f = shmem(k)
        off = Out("untouched")
        folios = []
        assert k.memfd_pin_folios(f, start, end, folios, max_folios, off) == -errno.EINVAL
        assert folios == [] and off.value == "untouched" and len(f.mapping) == 0

    def test_null_memfd(self, k):
        """memfd == NULL: -EINVAL."""
        assert k.memfd_pin_folios(None, 0, 10, [], 4, Out()) == -errno.EINVAL

    @pytest.mark.parametrize("obj", [object(), "a file", 3])
    def test_not_a_memfd(self, k, obj):
        """An object that is neither shmem nor hugetlbfs: -EINVAL."""
        assert k.memfd_pin_folios(obj, 0, 10, [], 4, Out()) == -errno.EINVAL

    def test_order_range_before_file(self, k):
        """The range is checked before the file (both give -EINVAL, nothing raised)."""
        assert k.memfd_pin_folios(object(), 10, 5, [], 4, Out()) == -errno.EINVAL
        assert k.memfd_pin_folios(None, -1, 5, [], 0, Out()) == -errno.EINVAL
        assert k.warnings == []


class TestMemfdPinFolios:
    def test_inclusive_end_and_offset(self, k):
        """[start, end] is inclusive; offset is start's offset in the first folio."""
        f = shmem(k, fill=b"d" * 16 * PAGE_SIZE, where="normal")
        folios, off = [], Out()
        n = k.memfd_pin_folios(f, PAGE_SIZE + 100, 3 * PAGE_SIZE, folios, 16, off)
        assert n == 3 and off.value == 100
        assert [x.index for x in folios] == [1, 2, 3]
        k.unpin_folios(folios, n)

    def test_end_on_last_byte_of_page(self, k):
        """end = the last byte of a page does not reach into the next page."""
        f = shmem(k, fill=b"d" * 16 * PAGE_SIZE, where="normal")
        folios = []
        assert k.memfd_pin_folios(f, 0, 2 * PAGE_SIZE - 1, folios, 16, Out()) == 2
        k.unpin_folios(folios, 2)

    def test_max_folios_truncates(self, k):
        """At most max_folios folios are pinned even if the range is longer."""
        f = shmem(k, fill=b"d" * 16 * PAGE_SIZE, where="normal")
        folios = []
        assert k.memfd_pin_folios(f, 0, 16 * PAGE_SIZE - 1, folios, 5, Out()) == 5
        assert [x.index for x in folios] == [0, 1, 2, 3, 4]
        assert k.stats.nr_foll_pin_acquired == 5
        k.unpin_folios(folios, 5)
        assert_nothing_held(k)

    def test_one_pin_per_small_folio(self, k):
        """Each small folio gets exactly one pin: +1024."""
        f = shmem(k, fill=b"d" * 4 * PAGE_SIZE, where="normal")
        before = [f.mapping.lookup(i).refcount for i in range(4)]
        folios = []
        assert k.memfd_pin_folios(f, 0, 4 * PAGE_SIZE - 1, folios, 4, Out()) == 4
        assert [x.refcount for x in folios] == [b + GUP_PIN_COUNTING_BIAS for b in before]
        k.unpin_folios(folios, 4)
        assert [x.refcount for x in folios] == before

    def test_holes_are_filled(self, k):
        """Holes are allocated through memfd_alloc_folio, pinnable, and read as zeros."""
        f = shmem(k)
        f.pwrite(b"x", 2 * PAGE_SIZE)
        folios = []
        with k.steer("cma"):
            n = k.memfd_pin_folios(f, 0, 4 * PAGE_SIZE - 1, folios, 8, Out())
        assert n == 4 and len(f.mapping) == 4
        assert [x.index for x in folios] == [0, 1, 2, 3]
        assert all(f.mapping.lookup(i) is folios[i] for i in range(4))
        assert all(k.folio_is_longterm_pinnable(x) for x in folios)
        assert f.pread(PAGE_SIZE, 0) == bytes(PAGE_SIZE) and f.pread(1, 2 * PAGE_SIZE) == b"x"
        k.unpin_folios(folios, n)
        assert_nothing_held(k)

    def test_folios_array_like_c(self, k):
        """folios[] is written like a C array: a pre-sized list keeps its tail."""
        f = shmem(k, fill=b"d" * 2 * PAGE_SIZE, where="normal")
        folios = ["x"] * 4
        assert k.memfd_pin_folios(f, 0, 2 * PAGE_SIZE - 1, folios, 4, Out()) == 2
        assert folios[2:] == ["x", "x"]
        k.unpin_folios(folios, 2)

    @pytest.mark.parametrize("where", ["cma", "movable"])
    def test_migrated_out(self, k, where):
        """Folios in CMA/ZONE_MOVABLE are migrated, the page cache and mappings follow."""
        f = shmem(k, fill=bytes(range(256)) * 64, where=where)        # 4 pages
        mm = k.current.mm
        addr = mm.mmap(4 * PAGE_SIZE, RW, MAP_SHARED, file=f)
        mm.read(addr, 4 * PAGE_SIZE)
        old = [f.mapping.lookup(i) for i in range(4)]
        assert not any(k.folio_is_longterm_pinnable(x) for x in old)
        folios, off = [], Out()
        assert k.memfd_pin_folios(f, 0, 4 * PAGE_SIZE - 1, folios, 4, off) == 4
        assert off.value == 0
        assert all(x is not o for x, o in zip(folios, old))
        assert all(k.folio_is_longterm_pinnable(x) for x in folios)
        assert all(f.mapping.lookup(i) is folios[i] is mm.lookup(addr + i * PAGE_SIZE)[0]
                   for i in range(4))
        assert f.pread(4 * PAGE_SIZE, 0) == bytes(range(256)) * 64
        assert k.stats.pgmigrate_success == 4 and not k.current.flags & PF_MEMALLOC_PIN
        k.unpin_folios(folios, 4)
        assert_nothing_held(k)

    def test_unpin_folio(self, k):
        """unpin_folio releases one folio's pin."""
        f = shmem(k, fill=b"p", where="normal")
        folios = []
        assert k.memfd_pin_folios(f, 0, 0, folios, 1, Out()) == 1
        k.unpin_folio(folios[0])
        assert_nothing_held(k)

    def test_unpin_folios_groups_and_skips(self, k, monkeypatch):
        """unpin_folios groups repeated entries, skips None and warns on an errno count."""
        f = shmem(k, fill=b"p" * 2 * PAGE_SIZE, where="normal")
        folios = []
        assert k.memfd_pin_folios(f, 0, 2 * PAGE_SIZE - 1, folios, 2, Out()) == 2
        k.folio_add_pins(folios[0], 1)
        calls = []
        real = k.gup_put_folio
        monkeypatch.setattr(k, "gup_put_folio", lambda x, n, fl: (calls.append(n), real(x, n, fl)))
        k.unpin_folios(folios, -errno.EINVAL)
        assert [w.site for w in k.warnings] == ["unpin_folios"] and calls == []
        k.unpin_folios([folios[0], folios[0], None, folios[1]], 4)
        # the repeated entry released as one group of two; the single one on its own
        # (inline for a small folio: see gup.py)
        assert calls[:1] == [2] and calls[1:] in ([], [1])
        assert_nothing_held(k)


class TestMemfdPinFoliosErrors:
    @pytest.mark.parametrize("site, arm, expect", [
        ("memfd_alloc_folio", {}, -errno.ENOMEM),
        ("memfd_alloc_folio", dict(errno=-errno.ENOSPC), -errno.ENOSPC),
        ("memfd_alloc_folio", dict(nth=3), -errno.ENOMEM),
        ("try_grab_folio", {}, -errno.EINVAL),
        ("try_grab_folio", dict(nth=5), -errno.EINVAL),
        ("alloc_migration_target", {}, -errno.ENOMEM),
        ("migrate_folio", dict(times=-1), -errno.ENOMEM),
        ("alloc_pages", dict(times=-1), -errno.ENOMEM),
    ], ids=["alloc-enomem", "alloc-enospc", "alloc-third", "grab-first", "grab-fifth",
            "target", "migrate-always", "alloc-pages"])
    def test_nothing_pinned_on_error(self, site, arm, expect):
        """Every failure of memfd_pin_folios returns its errno with nothing pinned."""
        k = machine(gup_retry_limit=4)
        f = shmem(k, fill=b"q" * 8 * PAGE_SIZE, where="cma")        # 8 in CMA, 8 holes
        k.faults.arm(site, **arm)
        folios = []
        assert k.memfd_pin_folios(f, 0, 16 * PAGE_SIZE - 1, folios, 16, Out()) == expect
        assert_nothing_held(k)
        assert f.pread(8, 0) == b"q" * 8
        k.faults.disarm()
        folios = []
        assert k.memfd_pin_folios(f, 0, 16 * PAGE_SIZE - 1, folios, 16, Out()) == 16
        k.unpin_folios(folios, 16)
        assert_nothing_held(k)

    @pytest.mark.parametrize("times", [1, -1])
    def test_eexist_race_is_retried(self, k, times):
        """-EEXIST from memfd_alloc_folio (a lost race) is retried: the winner's folio is pinned."""
        f = shmem(k)
        k.faults.arm("memfd_alloc_folio", -errno.EEXIST, times=times)
        folios = []
        assert k.memfd_pin_folios(f, 0, 4 * PAGE_SIZE - 1, folios, 4, Out()) == 4
        assert all(f.mapping.lookup(i) is folios[i] for i in range(4))
        assert all(k.folio_is_longterm_pinnable(x) for x in folios)
        k.unpin_folios(folios, 4)
        assert_nothing_held(k)

    def test_eexist_winner_in_cma_is_migrated(self, k):
        """The racing task is not under PF_MEMALLOC_PIN: its CMA folio gets migrated."""
        f = shmem(k)
        k.faults.arm("memfd_alloc_folio", -errno.EEXIST, times=-1)
        folios = []
        with k.steer("cma"):
            assert k.memfd_pin_folios(f, 0, PAGE_SIZE - 1, folios, 1, Out()) == 1
        assert k.stats.pgmigrate_success == 1 and k.folio_is_longterm_pinnable(folios[0])
        k.unpin_folios(folios, 1)

    def test_persistent_isolation_failure_never_returns(self):
        """Persistent injected isolation failure: memfd_pin_folios' loop never checks for
        a fatal signal, so the call never returns (KernelHang); nothing is left pinned."""
        k = machine(gup_retry_limit=3)
        f = shmem(k, fill=b"q" * PAGE_SIZE, where="cma")
        k.faults.arm("folio_isolate_lru", times=-1)
        with pytest.raises(KernelHang) as e:
            k.memfd_pin_folios(f, 0, PAGE_SIZE - 1, [], 1, Out())
        (out,) = k.kernel_outcomes
        assert e.value.outcome is out
        assert (out.loop, out.rounds, out.kind, out.returned) == ("memfd_pin_folios", 3, "hang", None)
        assert "never checks for a fatal signal" in str(out)
        assert k.livelocks == [] and not k.current.signal_pending
        assert_nothing_held(k)


class TestMemfdPinFoliosHugetlb:
    def test_one_pin_per_huge_folio(self):
        """A hugetlb folio gets one pin (+1 ref, +1 _pincount); offset is within the huge page."""
        k = FakeMM(MMConfig(ram="1GiB", hugetlb={"2MiB": 4}))
        f = k.memfd_create("h", MFD_HUGETLB)
        f.ftruncate(4 * HPAGE)
        folios, off = [], Out()
        n = k.memfd_pin_folios(f, HPAGE + 12345, 3 * HPAGE - 1, folios, 8, off)
        assert n == 2 and off.value == 12345
        assert [x.index for x in folios] == [512, 1024]
        assert all((x.order, x._pincount, x.refcount) == (9, 1, 513) for x in folios)
        assert k.stats.nr_foll_pin_acquired == 2
        k.unpin_folios(folios, n)
        assert all((x._pincount, x.refcount) == (0, 512) for x in folios)

    def test_pool_counters_restored(self):
        """free/resv pool counters return to their start after unpin + truncate (Sept 2024 leaks)."""
        k = FakeMM(MMConfig(ram="1GiB", hugetlb={"2MiB": 4}))
        h = k.hstate()
        f = k.memfd_create("h", MFD_HUGETLB)
        f.ftruncate(4 * HPAGE)
        mm = k.current.mm
        addr = mm.mmap(2 * HPAGE, RW, MAP_SHARED, file=f)
        mm.write(addr, b"x")
        assert (h.free_huge_pages, h.resv_huge_pages) == (3, 1)
        folios = []
        assert k.memfd_pin_folios(f, 0, 4 * HPAGE - 1, folios, 4, Out()) == 4
        assert (h.free_huge_pages, h.resv_huge_pages) == (0, 0)
        k.unpin_folios(folios, 4)
        assert mm.munmap(addr, 2 * HPAGE) == 0
        assert f.ftruncate(0) == 0
        assert (h.nr_huge_pages, h.free_huge_pages, h.resv_huge_pages) == (4, 4, 0)
        assert_nothing_held(k)

    def test_pool_empty(self):
        """No free huge page for the second hole: -ENOMEM, nothing pinned, no leak."""
        k = FakeMM(MMConfig(ram="1GiB", hugetlb={"2MiB": 1}))
        f = k.memfd_create("h", MFD_HUGETLB)
        f.ftruncate(2 * HPAGE)
        assert k.memfd_pin_folios(f, 0, 2 * HPAGE - 1, [], 2, Out()) == -errno.ENOMEM
        h = k.hstate()
        assert (h.free_huge_pages, h.resv_huge_pages) == (0, 0)     # the first is cached
        assert sorted(f.mapping.pages) == [0]
        assert_nothing_held(k)
        f.close()
        assert (h.nr_huge_pages, h.free_huge_pages, h.resv_huge_pages) == (1, 1, 0)

    def test_pool_in_zone_movable_cannot_serve(self):
        """A pool sitting in ZONE_MOVABLE cannot serve memfd_pin_folios under PF_MEMALLOC_PIN."""
        k = FakeMM(MMConfig(ram="1GiB", movablecore="512MiB", hugetlb={"2MiB": 4}))
        h = k.hstate()
        assert all(x.zone == "Movable" for x in h.free_list)
        f = k.memfd_create("h", MFD_HUGETLB)
        f.ftruncate(2 * HPAGE)
        assert k.memfd_pin_folios(f, 0, 2 * HPAGE - 1, [], 2, Out()) == -errno.ENOMEM
        assert (h.nr_huge_pages, h.free_huge_pages, h.resv_huge_pages) == (4, 4, 0)
        assert len(f.mapping) == 0
        assert_nothing_held(k)

    def test_fault_site_keeps_counters(self):
        """A memfd_alloc_folio failure leaves the pool as it was."""
        k = FakeMM(MMConfig(ram="1GiB", hugetlb={"2MiB": 4}))
        f = k.memfd_create("h", MFD_HUGETLB)
        f.ftruncate(2 * HPAGE)
        k.faults.arm("memfd_alloc_folio", nth=2)
        assert k.memfd_pin_folios(f, 0, 2 * HPAGE - 1, [], 2, Out()) == -errno.ENOMEM
        assert_nothing_held(k)
        f.close()
        h = k.hstate()
        assert (h.free_huge_pages, h.resv_huge_pages) == (4, 0)


class TestLongtermReadOnlyUnshare:
    """A read-only FOLL_LONGTERM pin in a private (COW) mapping must not pin a page that a
    later write fault would replace: page-cache and zero pages are unshared into an
    exclusive anonymous copy first, as anonymous pages that are not exclusive already are.
    Kernel: mm/internal.h:gup_must_unshare (84209e87c696, v6.12.117), mm/gup.c:
    follow_page_pte (-EMLINK) and faultin_page (FAULT_FLAG_UNSHARE), mm/memory.c:do_wp_page."""

    @pytest.mark.parametrize("api", ["pin_user_pages", "pin_user_pages_fast"])
    @pytest.mark.parametrize("touched", [True, False], ids=["zero_page_mapped", "untouched"])
    def test_anon_zero_page_is_unshared(self, k, api, touched):
        """Untouched private anon memory (or the zero page a read mapped there) pinned
        read-only for the long term: exclusive anonymous pages, really pinned, mapped."""
        addr = anon(k, 4, fill=False)
        mm = k.current.mm
        if touched:
            mm.read(addr, 4 * PAGE_SIZE)
            assert mm.lookup(addr)[0] is k.zero_folio
        zero_refs = k.zero_folio.refcount
        pages = []
        assert ENTRY_POINTS[api](k, addr, 4, FOLL_LONGTERM, pages) == 4
        folios = [p.folio for p in pages]
        assert all(f is not k.zero_folio and f.kind == "anon" for f in folios)
        assert all(f.flags & PG_anon_exclusive for f in folios)
        assert [mm.lookup(addr + i * PAGE_SIZE)[0] for i in range(4)] == folios
        assert all(k.folio_maybe_dma_pinned(f) for f in folios)
        assert k.stats.nr_foll_pin_acquired == 4
        assert k.zero_folio.refcount == zero_refs
        assert mm.read(addr, 4 * PAGE_SIZE) == bytes(4 * PAGE_SIZE)
        k.unpin_user_pages(pages, 4)
        assert_nothing_held(k)

    @pytest.mark.parametrize("api", ["pin_user_pages", "pin_user_pages_fast"])
    @pytest.mark.parametrize("touched", [True, False], ids=["mapped", "unmapped"])
    def test_private_file_page_is_unshared(self, k, api, touched):
        """A MAP_PRIVATE memfd page pinned read-only for the long term: an anonymous copy
        with the file's contents is pinned and mapped; the page cache is left unpinned, so
        a later write by the process cannot leave the device on a stale page."""
        f = k.memfd_create("priv", MFD_ALLOW_SEALING)
        f.ftruncate(PAGE_SIZE)
        f.pwrite(b"file", 0)
        cached = f.mapping.lookup(0)
        mm = k.current.mm
        addr = mm.mmap(PAGE_SIZE, PROT_READ, MAP_PRIVATE, file=f)
        if touched:
            mm.read(addr, 4)
            assert mm.lookup(addr)[0] is cached
        pages = []
        assert ENTRY_POINTS[api](k, addr, 1, FOLL_LONGTERM, pages) == 1
        copy = pages[0].folio
        assert copy is not cached and copy.kind == "anon" and copy.flags & PG_anon_exclusive
        assert mm.lookup(addr)[0] is copy and copy.read(0, 4) == b"file"
        assert not k.folio_maybe_dma_pinned(cached) and f.mapping.lookup(0) is cached
        k.unpin_user_pages(pages, 1)
        assert_nothing_held(k)

    @pytest.mark.parametrize("flags,shared", [(0, False), (FOLL_LONGTERM, True)],
                             ids=["short_term_private", "longterm_shared"])
    def test_no_unshare_outside_longterm_cow(self, k, flags, shared):
        """A short-term read-only pin of a private file page, or a long-term one of a
        shared mapping, pins the page-cache page itself (gup_must_unshare is false)."""
        f = k.memfd_create("keep", MFD_ALLOW_SEALING)
        f.ftruncate(PAGE_SIZE)
        f.pwrite(b"keep", 0)
        cached = f.mapping.lookup(0)
        mm = k.current.mm
        addr = mm.mmap(PAGE_SIZE, PROT_READ, MAP_SHARED if shared else MAP_PRIVATE, file=f)
        pages = []
        assert k.pin_user_pages(addr, 1, flags, pages) == 1
        cached = f.mapping.lookup(0)          # a long-term pin may have migrated it
        assert pages[0].folio is cached is mm.lookup(addr)[0] and cached.kind == "shmem"
        assert k.folio_maybe_dma_pinned(cached)
        k.unpin_user_pages(pages, 1)
        assert_nothing_held(k)


class TestLongtermDrainVersions:
    """When collect_longterm_unpinnable_folios drains the LRU caches.  v6.17 compares a
    small folio's count with folio_expected_ref_count() + 1, which a pinned folio (+1024)
    never matches, so it drains whenever it collects one; 6.12.y counts the pin
    (``pin_refs``: GUP_PIN_COUNTING_BIAS) and drains only on an unexpected reference.
    Kernel: mm/gup.c:collect_longterm_unpinnable_folios, v6.17 and 6.12.118."""

    @pytest.mark.parametrize("quirks,drains", [((), 1), (("gup_drain_on_unexpected_ref_only",), 0)],
                             ids=["v6.17", "6.12.y"])
    def test_drain_without_unexpected_reference(self, quirks, drains):
        """Drained CMA folios, nothing unexpected: v6.17 drains all CPUs anyway, 6.12.y not;
        both migrate and pin."""
        k = machine(thp="never", quirks=quirks)
        addr = anon(k, 4, where="cma")
        k.lru_add_drain_all()
        before = k.stats.lru_add_drain_all
        pages = []
        assert k.pin_user_pages(addr, 4, FOLL_LONGTERM, pages) == 4
        assert k.stats.lru_add_drain_all - before == drains
        assert not any(p.folio.is_cma for p in pages)
        k.unpin_user_pages(pages, 4)
        assert_nothing_held(k)

    @pytest.mark.parametrize("quirks", [(), ("gup_drain_on_unexpected_ref_only",)], ids=["v6.17", "6.12.y"])
    def test_remote_batch_reference_is_drained_in_both(self, quirks):
        """A folio held by another CPU's LRU batch is an unexpected reference: both
        versions drain every CPU once and the pin succeeds."""
        k = machine(thp="never", quirks=quirks)
        other = k.create_task("faulter", mm=k.current.mm)
        with k.run_as(other):
            addr = anon(k, 2, where="cma")
        before = k.stats.lru_add_drain_all
        pages = []
        assert k.pin_user_pages(addr, 2, FOLL_LONGTERM, pages) == 2
        assert k.stats.lru_add_drain_all - before == 1
        k.unpin_user_pages(pages, 2)
        assert_nothing_held(k)
