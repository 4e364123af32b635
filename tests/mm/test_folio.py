"""Folios and pages: reference and pin arithmetic, the pinning predicates, get/put/try_get
with freeing and underflow warnings, lazily stored contents, Page identity."""

from __future__ import annotations

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.mm import (GFP_HIGHUSER_MOVABLE, GFP_KERNEL, GUP_PIN_COUNTING_BIAS,
                                MIGRATE_ISOLATE, MIGRATE_MOVABLE, KernelWarning, Page, page_folio)
from pytest_pinfault.mm.folio import (KIND_ANON, KIND_SHMEM, KIND_ZERO, PG_dirty, PG_reserved,
                                      PAGE_SIZE)


def anon(mm: FakeMM, order: int = 0, gfp=GFP_HIGHUSER_MOVABLE):
    folio = mm._alloc_folio(gfp, order, KIND_ANON)
    folio._mapcount = 1
    return folio


@pytest.fixture
def mm():
    return FakeMM(MMConfig(ram="4GiB", movablecore="512MiB", cma="128MiB"))


class TestCounters:
    def test_new_folio(self, mm):
        """A new folio has one reference, no pins, and its size fields."""
        f = anon(mm, 2)
        assert (f.refcount, f.pincount, f.mapcount) == (1, 0, 1)
        assert (f.order, f.nr_pages, f.size) == (2, 4, 4 * PAGE_SIZE)
        assert mm.folio_ref_count(f) == 1
        assert mm.folio_test_large(f) and not mm.folio_test_large(anon(mm))

    def test_small_folio_pincount_from_bias(self, mm):
        """Small folios count pins as GUP_PIN_COUNTING_BIAS references."""
        assert GUP_PIN_COUNTING_BIAS == 1024
        f = anon(mm)
        f._refcount += GUP_PIN_COUNTING_BIAS
        assert (f.refcount, f.pincount) == (1025, 1)
        f._refcount += 2 * GUP_PIN_COUNTING_BIAS
        assert f.pincount == 3
        assert f._pincount == 0                   # the field is unused for small folios

    def test_large_folio_pincount_is_exact(self, mm):
        """Large folios keep an exact _pincount, whatever the refcount."""
        f = anon(mm, 1)
        f._refcount += 3000
        assert f.pincount == 0
        f._pincount, f._refcount = 2, f._refcount + 2
        assert f.pincount == 2


class TestFolioMaybeDmaPinned:
    def test_small_false_positive(self, mm):
        """Small folio: 1024 plain references look like a pin (false positive by design)."""
        f = anon(mm)
        f._refcount = 1023
        assert not mm.folio_maybe_dma_pinned(f)
        f._refcount = 1024
        assert mm.folio_maybe_dma_pinned(f)
        assert f._pincount == 0

    def test_large_exact(self, mm):
        """Large folio: only _pincount decides, even order 1."""
        for order in (1, 9):
            f = anon(mm, order)
            f._refcount = 5000
            assert not mm.folio_maybe_dma_pinned(f)
            f._pincount = 1
            assert mm.folio_maybe_dma_pinned(f)

    def test_unpinned(self, mm):
        """A fresh folio is not pinned."""
        assert not mm.folio_maybe_dma_pinned(anon(mm))


class TestFolioIsLongtermPinnable:
    def test_cma(self, mm):
        """A folio in a CMA pageblock is not long-term pinnable."""
        with mm.steer("cma"):
            f = anon(mm)
        assert f.is_cma
        assert not mm.folio_is_longterm_pinnable(f)

    def test_movable_zone(self, mm):
        """A folio in ZONE_MOVABLE is not long-term pinnable."""
        f = anon(mm)
        assert f.zone == "Movable" and not f.is_cma
        assert not mm.folio_is_longterm_pinnable(f)

    @pytest.mark.parametrize("gfp, zone", [(GFP_KERNEL, "Normal"),
                                           (GFP_HIGHUSER_MOVABLE & ~0x02, "Normal")])
    def test_normal(self, mm, gfp, zone):
        """Normal-zone memory outside CMA is pinnable, movable migratetype or not."""
        f = anon(mm, gfp=gfp)
        assert f.zone == zone
        assert mm.folio_is_longterm_pinnable(f)

    def test_steered_normal_movable_folio(self, mm):
        """A movable-migratetype folio steered out of CMA/Movable is pinnable."""
        with mm.steer("normal"):
            f = anon(mm)
        assert f.migratetype == MIGRATE_MOVABLE and f.zone in ("Normal", "DMA32")
        assert mm.folio_is_longterm_pinnable(f)

    def test_zero_folio(self, mm):
        """The zero folio is pinnable."""
        assert mm.folio_is_longterm_pinnable(mm.zero_folio)

    def test_isolated_pageblock(self, mm):
        """A folio in a MIGRATE_ISOLATE pageblock is not pinnable until the isolation ends."""
        with mm.steer("normal"):
            f = anon(mm)
        mm.folio_add_lru(f)
        mm.lru_add_drain()
        start = f.pfn & ~511
        assert mm.start_isolate_page_range(start, start + 512, MIGRATE_MOVABLE) == 0
        assert mm.get_pageblock_migratetype(f.pfn) == MIGRATE_ISOLATE
        assert not mm.folio_is_longterm_pinnable(f)
        mm.undo_isolate_page_range(start, start + 512, MIGRATE_MOVABLE)
        assert mm.folio_is_longterm_pinnable(f)

    def test_isolate_checked_before_zero_folio(self, mm):
        """The CMA/ISOLATE check comes first: even the zero folio fails in an isolated block."""
        z = mm.zero_folio
        mm._set_pageblock_migratetype(z._zone, z.pfn >> 9, MIGRATE_ISOLATE)
        assert not mm.folio_is_longterm_pinnable(z)


class TestZeroFolio:
    def test_is_zero_folio(self, mm):
        """is_zero_folio is true only for fake_mm.zero_folio."""
        z = mm.zero_folio
        assert mm.is_zero_folio(z)
        assert not mm.is_zero_folio(anon(mm))
        assert (z.kind, z.order, z.zone) == (KIND_ZERO, 0, "DMA32")
        assert z.test(PG_reserved)
        assert mm.pfn_to_folio(z.pfn) is z

    def test_put_is_a_noop(self, mm):
        """Dropping references on the zero folio never frees it nor warns."""
        z = mm.zero_folio
        before = z.refcount
        for _ in range(5):
            mm.folio_put(z)
        assert z.refcount == before and not z.freed
        assert mm.warnings == []

    def test_reads_zeros(self, mm):
        """The zero folio reads as zeros."""
        assert mm.zero_folio.read(0, PAGE_SIZE) == bytes(PAGE_SIZE)


class TestFolioGetPut:
    def test_get_put(self, mm):
        """folio_get/folio_put move the refcount by one."""
        f = anon(mm)
        mm.folio_get(f)
        mm.folio_get(f)
        assert f.refcount == 3
        mm.folio_put(f)
        assert f.refcount == 2 and not f.freed

    def test_put_to_zero_frees(self):
        """The last folio_put frees the folio and gives its memory back to the zone."""
        mm = FakeMM(MMConfig(ram="1GiB"))
        z = mm.zones["DMA32"]
        f = mm._alloc_folio(GFP_KERNEL, 4, KIND_SHMEM)     # order 4: not via pcp lists
        f.write(0, b"data")
        pfn = f.pfn
        assert z.free_pages == z.managed_pages - 16
        mm.folio_put(f)
        assert f.freed and f.refcount == 0
        assert f.flags == 0 and f._data is None and f.mapping is None
        assert mm.pfn_to_folio(pfn) is None
        assert mm.nr_allocated_pages == 0
        assert z.free_pages == z.managed_pages
        assert mm.warnings == []

    def test_try_get(self, mm):
        """folio_try_get succeeds on a live folio and fails on a freed one."""
        f = anon(mm)
        assert mm.folio_try_get(f) is True and f.refcount == 2
        mm.folio_put(f)
        mm.folio_put(f)
        assert f.freed
        assert mm.folio_try_get(f) is False
        assert f.refcount == 0
        assert mm.warnings == []

    def test_underflow_records_warning(self, mm):
        """folio_put on a freed folio records a KernelWarning instead of raising."""
        f = anon(mm)
        mm.folio_put(f)
        mm.folio_put(f)                                  # no exception
        assert f.refcount == 0
        (w,) = mm.warnings
        assert isinstance(w, KernelWarning)
        assert w.site == "folio_put" and w.folio is f
        assert "underflow" in w.message
        assert "test_folio.py" in w.caller

    def test_get_on_freed_warns(self, mm):
        """folio_get on a freed folio records a warning and takes no reference."""
        f = anon(mm)
        mm.folio_put(f)
        mm.folio_get(f)
        assert f.refcount == 0
        assert [w.site for w in mm.warnings] == ["folio_get"]

    def test_freeing_pinned_folio_warns(self, mm):
        """Freeing a large folio with _pincount set records a warning."""
        f = anon(mm, 2)
        f._pincount = 1
        mm.folio_put(f)
        assert [w.site for w in mm.warnings] == ["free_pinned"]


class TestContents:
    def test_unwritten_reads_zeros_and_stores_nothing(self, mm):
        """A new folio reads zeros and has no stored contents."""
        f = anon(mm, 9)
        assert f.read(12345, 100) == bytes(100)
        assert f._data is None

    def test_sparse_storage(self, mm):
        """Only written pages are stored."""
        f = anon(mm, 9)
        f.write(5 * PAGE_SIZE + 10, b"hello")
        assert set(f._data) == {5}
        assert f.read(5 * PAGE_SIZE + 8, 9) == b"\0\0hello\0\0"
        assert f.read(0, 2 * PAGE_SIZE) == bytes(2 * PAGE_SIZE)

    def test_cross_page_write(self, mm):
        """A write spanning a page boundary lands in both pages."""
        f = anon(mm, 1)
        f.write(PAGE_SIZE - 3, b"abcdef")
        assert set(f._data) == {0, 1}
        assert f.read(PAGE_SIZE - 3, 6) == b"abcdef"
        assert f.read(PAGE_SIZE - 4, 8) == b"\0abcdef\0"

    def test_whole_folio_roundtrip(self, mm):
        """Writing and reading all pages gives the data back; overwrites replace bytes."""
        f = anon(mm, 2)
        data = bytes(range(256)) * (4 * PAGE_SIZE // 256)
        f.write(0, data)
        f.write(100, bytearray(b"XY"))
        assert f.read(0, f.size) == data[:100] + b"XY" + data[102:]

    def test_write_marks_dirty(self, mm):
        """write() sets PG_dirty; zero() forgets the contents."""
        f = anon(mm)
        assert not f.test(PG_dirty)
        f.write(0, b"x")
        assert f.test(PG_dirty)
        f.zero()
        assert f.read(0, 1) == b"\0"

    @pytest.mark.parametrize("offset, n", [(-1, 1), (0, PAGE_SIZE + 1), (PAGE_SIZE, 1), (0, -1)])
    def test_read_bounds(self, mm, offset, n):
        """Reads outside the folio raise ValueError."""
        f = anon(mm)
        with pytest.raises(ValueError, match="outside its 4096 bytes"):
            f.read(offset, n)

    @pytest.mark.parametrize("offset, data", [(-1, b"x"), (PAGE_SIZE - 1, b"xy"), (PAGE_SIZE, b"x")])
    def test_write_bounds(self, mm, offset, data):
        """Writes outside the folio raise ValueError and change nothing."""
        f = anon(mm)
        with pytest.raises(ValueError, match="outside its 4096 bytes"):
            f.write(offset, data)
        assert f.read(0, PAGE_SIZE) == bytes(PAGE_SIZE)
        assert not f.test(PG_dirty)

    def test_edges(self, mm):
        """The last byte is writable; empty reads are allowed."""
        f = anon(mm, 9)
        f.write(f.size - 1, b"Z")
        assert f.read(f.size - 1, 1) == b"Z"
        assert f.read(f.size, 0) == b""

    def test_gigantic_folio_is_sparse(self):
        """A 1 GiB hugetlb folio stores only the page written."""
        mm = FakeMM(MMConfig(ram="4GiB", hugetlb={"1GiB": 1}))
        (f,) = mm.hstate("1GiB").free_list
        f.write(f.size - 4, b"tail")
        assert list(f._data) == [(1 << 18) - 1]
        assert f.read(f.size - 4, 4) == b"tail"


class TestPage:
    def test_equality(self, mm):
        """Pages are equal when they are the same pfn of the same folio."""
        f = anon(mm, 2)
        a, b = Page(f, f.pfn + 1), Page(f, f.pfn + 1)
        assert a == b and hash(a) == hash(b)
        assert a != Page(f, f.pfn)
        assert a != f
        assert len({a, b, Page(f, f.pfn)}) == 2

    def test_same_pfn_other_folio(self, mm):
        """A page of a freed folio differs from the page of the folio reusing its pfn."""
        f = anon(mm)
        old = Page(f, f.pfn)
        mm.folio_put(f)
        g = anon(mm)
        assert g.pfn == f.pfn
        assert old != Page(g, g.pfn)

    def test_page_folio(self, mm):
        """page_folio maps a page (or a folio) to its folio."""
        f = anon(mm, 3)
        assert page_folio(Page(f, f.pfn + 7)) is f
        assert page_folio(f) is f
        p = mm.pfn_to_page(f.pfn + 5)
        assert p == Page(f, f.pfn + 5) and p.folio is f

    def test_alloc_pages_page(self, mm):
        """alloc_pages returns the head page of its folio."""
        p = mm.alloc_pages(GFP_KERNEL, 1)
        assert p == Page(p.folio, p.folio.pfn)

    def test_page_mirrors_folio_placement(self, mm):
        """Page.is_cma and Page.zone follow the folio."""
        with mm.steer("cma"):
            f = anon(mm, 1)
        p = Page(f, f.pfn + 1)
        assert (p.is_cma, p.zone) == (True, f.zone) == (True, "DMA32")
