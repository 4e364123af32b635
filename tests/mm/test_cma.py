"""CMA areas and contiguous allocation: cma_alloc, cma_release, alloc_contig_range.

Kernel: mm/cma.c, mm/page_alloc.c:alloc_contig_range (docs/kernel-contract §7.1, §7.2).
The machine: 512 MiB, a 32 MiB CMA area at the top of DMA32 (pfn 0x16000..0x18000) and
128 MiB of ZONE_MOVABLE above it.
"""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import MMConfig
from pytest_pinfault.mm import (GFP_ATOMIC, GFP_HIGHUSER_MOVABLE, GFP_KERNEL, GFP_USER,
                                GUP_PIN_COUNTING_BIAS, MIGRATE_CMA, MIGRATE_MOVABLE, __GFP_MOVABLE, __GFP_NOFAIL,
                                __GFP_NORETRY,
                                pageblock_nr_pages)
from tests.mm.helpers import (FakeMapping, FakePageTable, assert_nothing_isolated, lru_anon_folio,
                              lru_cache_folio)
from pytest_pinfault.mm.folio import KIND_ANON, KIND_CONTIG, PG_lru

CMA_BASE = 0x16000
BAD_CONTIG_GFPS = [GFP_KERNEL | __GFP_NOFAIL, GFP_KERNEL | __GFP_NORETRY, GFP_ATOMIC]
CMA_COUNT = 8192
USER_MOVABLE = GFP_USER | __GFP_MOVABLE     # DMA32 here (no Normal zone), movable, ALLOC_CMA


@pytest.fixture
def mm_config() -> MMConfig:
    return MMConfig(ram="512MiB", cma="32MiB", movablecore="128MiB")


@pytest.fixture
def cma(fake_mm):
    area = fake_mm.cma_areas[0]
    assert (area.name, area.base_pfn, area.count) == ("reserved", CMA_BASE, CMA_COUNT)
    return area


# ---------------------------------------------------------------------------- helpers
def pin_short_term(k, folio, how):
    if how == "get":
        k.folio_get(folio)
    else:
        folio._refcount += GUP_PIN_COUNTING_BIAS


def unpin_short_term(k, folio, how):
    if how == "get":
        k.folio_put(folio)
    else:
        folio._refcount -= GUP_PIN_COUNTING_BIAS


def folio_at_cma_bottom(k, pt):
    """An anon folio at pfn CMA_BASE + 0x1ff: inside the area's first 4096-page slot."""
    with k.steer("cma"):
        blocks = [k.alloc_pages(GFP_HIGHUSER_MOVABLE, 9) for _ in range(CMA_COUNT // 512 - 1)]
    assert blocks[-1].pfn == CMA_BASE + 512
    folio = lru_anon_folio(k, "cma", pt)
    for b in blocks:
        k.free_pages_block(b, 9)
    assert folio.pfn == CMA_BASE + 511
    return folio


# ---------------------------------------------------------------------------- cma
class TestCmaAlloc:
    def test_whole_area_of_free_memory(self, fake_mm, cma):
        """The whole free area is allocated at its base and released again."""
        dma32 = fake_mm.zones["DMA32"]
        free, free_cma = dma32.free_pages, dma32.free_cma_pages
        assert free_cma == CMA_COUNT
        page = fake_mm.cma_alloc(cma, CMA_COUNT, 0)
        assert page is not None and page.pfn == CMA_BASE
        assert page.folio.kind == KIND_CONTIG and page.folio.nr_pages == CMA_COUNT
        assert cma.available_count == 0
        assert (dma32.free_pages, dma32.free_cma_pages) == (free - CMA_COUNT, 0)
        assert fake_mm.pfn_to_folio(CMA_BASE + CMA_COUNT - 1) is page.folio
        assert (fake_mm.stats.cma_alloc_success, cma.alloc_pages_success) == (1, CMA_COUNT)
        assert fake_mm.cma_release(cma, page, CMA_COUNT) is True
        assert cma.available_count == CMA_COUNT
        on_pcp = dma32.pcp_pages                 # free_contig_range frees through the pcp lists
        assert 0 < on_pcp <= dma32.pcp[0].high
        assert (dma32.free_pages + on_pcp, dma32.free_cma_pages + on_pcp) == (free, free_cma)
        fake_mm.drain_all_pages()
        assert (dma32.free_pages, dma32.free_cma_pages) == (free, free_cma)
        assert fake_mm.pfn_to_folio(CMA_BASE) is None
        assert_nothing_isolated(fake_mm)
        assert fake_mm.warnings == []

    def test_released_pages_go_back_through_the_pcp_lists(self, fake_mm, cma):
        """free_contig_range frees page by page with __free_page (free_unref_page), so the
        last pages released sit on the movable per-cpu list and the next order-0 movable
        allocation gets them at once, CMA or not (mm/page_alloc.c:free_contig_range,
        free_unref_page, v6.12 and v6.1)."""
        dma32 = fake_mm.zones["DMA32"]
        pcp = dma32.pcp[fake_mm.current.cpu]
        page = fake_mm.cma_alloc(cma, 1024, 0)
        before = pcp.count
        assert fake_mm.cma_release(cma, page, 1024) is True
        assert pcp.count > before                           # not straight to the buddy lists
        got = [fake_mm.alloc_pages(USER_MOVABLE, 0) for _ in range(3)]
        assert [p.pfn for p in got] == [CMA_BASE + 1023, CMA_BASE + 1022, CMA_BASE + 1021]
        assert sum(p.folio.kind == KIND_CONTIG for p in got) == 0
        for p in got:
            fake_mm.free_pages_block(p, 0)
        assert fake_mm.cma_alloc(cma, CMA_COUNT, 0) is not None   # drained back for CMA

    def test_release_into_an_isolated_pageblock_bypasses_the_pcp_lists(self, fake_mm, cma):
        """free_unref_page puts pages of a MIGRATE_ISOLATE pageblock straight back to the
        buddy list (free_one_page), never on a per-cpu list."""
        dma32 = fake_mm.zones["DMA32"]
        page = fake_mm.cma_alloc(cma, 512, 0)
        fake_mm.drain_all_pages()
        assert fake_mm.start_isolate_page_range(CMA_BASE, CMA_BASE + 512, MIGRATE_CMA) == 0
        assert fake_mm.cma_release(cma, page, 512) is True
        assert dma32.pcp_pages == 0
        fake_mm.undo_isolate_page_range(CMA_BASE, CMA_BASE + 512, MIGRATE_CMA)
        assert dma32.free_cma_pages == CMA_COUNT

    def test_alignment(self, fake_mm, cma):
        """Each allocation starts at the first free slot aligned to 2**align pages."""
        a = fake_mm.cma_alloc(cma, 1, 0)
        b = fake_mm.cma_alloc(cma, 1, 4)
        c = fake_mm.cma_alloc(cma, 100, 9)
        d = fake_mm.cma_alloc(cma, 3, 0)
        assert [p.pfn for p in (a, b, c, d)] == [CMA_BASE, CMA_BASE + 16, CMA_BASE + 512, CMA_BASE + 1]
        assert cma.available_count == CMA_COUNT - 105
        for p, n in ((a, 1), (b, 1), (c, 100), (d, 3)):
            assert fake_mm.cma_release(cma, p, n) is True
        assert cma.available_count == CMA_COUNT

    def test_by_name(self, fake_mm, cma):
        """An area can be named by its name; an unknown name gives None."""
        page = fake_mm.cma_alloc("reserved", 8, 3)
        assert page.pfn == CMA_BASE
        assert fake_mm.cma_alloc("nope", 8, 3) is None
        assert fake_mm.cma_release("reserved", page, 8) is True

    @pytest.mark.parametrize("count", [0, -1, CMA_COUNT + 1])
    def test_bad_count_returns_none(self, fake_mm, cma, count):
        """count 0 or larger than the area gives None without counting a failure."""
        assert fake_mm.cma_alloc(cma, count, 0) is None
        assert fake_mm.stats.cma_alloc_fail == 0
        assert cma.available_count == CMA_COUNT

    def test_area_exhausted(self, fake_mm, cma):
        """When no free slot is left cma_alloc returns None and counts the failure."""
        page = fake_mm.cma_alloc(cma, CMA_COUNT - 4, 0)
        assert fake_mm.cma_alloc(cma, 8, 0) is None
        assert fake_mm.stats.cma_alloc_fail == 1 and cma.alloc_pages_fail == 8
        assert len(fake_mm.trace.filter(kind="cma_alloc_fail")) == 1
        assert fake_mm.cma_alloc(cma, 4, 0).pfn == CMA_BASE + CMA_COUNT - 4
        assert fake_mm.cma_release(cma, page, CMA_COUNT - 4)

    def test_release_of_foreign_pages(self, fake_mm, cma):
        """Pages outside the area are refused with False (no warning)."""
        page = fake_mm.alloc_pages(GFP_KERNEL, 0)
        assert not CMA_BASE <= page.pfn < CMA_BASE + CMA_COUNT
        assert fake_mm.cma_release(cma, page, 1) is False
        assert fake_mm.cma_release(cma, None, 1) is False
        assert page.folio.refcount == 1 and not page.folio.freed
        assert fake_mm.warnings == []

    def test_release_crossing_the_area_end(self, fake_mm, cma):
        """A range running past the end of the area is refused."""
        page = fake_mm.cma_alloc(cma, 8, 0)
        assert fake_mm.cma_release(cma, page, CMA_COUNT + 1) is False
        assert cma.available_count == CMA_COUNT - 8

    @pytest.mark.pin_contract(disable=['kernel-warnings'], reason="model test: triggers the WARN on purpose")
    def test_release_of_unallocated_range_warns(self, fake_mm, cma):
        """Releasing pages of the area that cma_alloc did not hand out is a caller bug."""
        page = fake_mm.cma_alloc(cma, 8, 0)
        assert fake_mm.cma_release(cma, page, 4) is False
        assert [w.site for w in fake_mm.warnings] == ["cma_release"]
        assert fake_mm.cma_release(cma, page, 8) is True
        assert fake_mm.cma_release(cma, page, 8) is False
        assert [w.site for w in fake_mm.warnings] == ["cma_release", "cma_release"]
        assert cma.available_count == CMA_COUNT

    def test_available_count(self, fake_mm, cma):
        """available_count follows allocations and releases."""
        pages = [fake_mm.cma_alloc(cma, 1024, 10) for _ in range(3)]
        assert cma.available_count == CMA_COUNT - 3 * 1024
        assert fake_mm.cma_release(cma, pages[1], 1024)
        assert cma.available_count == CMA_COUNT - 2 * 1024
        assert fake_mm.cma_alloc(cma, 1024, 10).pfn == pages[1].pfn


class TestCmaAllocMigration:
    def test_movable_lru_folios_are_migrated_out(self, fake_mm, cma):
        """Anonymous LRU folios in the area move out with their contents."""
        pt = FakePageTable()
        olds = [lru_anon_folio(fake_mm, "cma", pt, addr=0x1000 * (i + 1)) for i in range(3)]
        for i, f in enumerate(olds):
            assert f.is_cma
            f.write(100, b"data-%d" % i)
        page = fake_mm.cma_alloc(cma, CMA_COUNT, 0)
        assert page is not None and page.pfn == CMA_BASE
        for i, f in enumerate(olds):
            new = pt.ptes[0x1000 * (i + 1)]
            assert f.freed and new is not f
            assert not new.is_cma
            assert new.read(100, 6) == b"data-%d" % i
        assert fake_mm.stats.pgmigrate_success == 3
        assert fake_mm.stats.pgmigrate_fail == 0
        assert_nothing_isolated(fake_mm)

    def test_page_cache_folio_is_migrated_out(self, fake_mm, cma):
        """A page-cache folio in the area moves out and its cache slot follows."""
        mapping = FakeMapping()
        old = lru_cache_folio(fake_mm, "cma", mapping, 5)
        old.write(0, b"cached")
        assert fake_mm.cma_alloc(cma, CMA_COUNT, 0) is not None
        new = mapping.pages[5]
        assert new is not old and not new.is_cma and new.read(0, 6) == b"cached"
        assert_nothing_isolated(fake_mm)

    def test_folio_in_lru_batch_is_drained_and_migrated(self, fake_mm, cma):
        """A folio still in a per-cpu LRU batch is drained (lru_cache_disable) and moved."""
        pt = FakePageTable()
        with fake_mm.steer("cma"):
            folio = fake_mm._alloc_folio(GFP_HIGHUSER_MOVABLE, 0, KIND_ANON)
        folio._mapcount = 1
        pt.ptes[0x1000] = folio
        folio.rmap = [(pt, 0x1000)]
        fake_mm.folio_add_lru(folio)                 # not drained
        assert not folio.flags & PG_lru
        assert fake_mm.cma_alloc(cma, CMA_COUNT, 0) is not None
        assert folio.freed and not pt.ptes[0x1000].is_cma


class TestCmaAllocBusy:
    @pytest.mark.pin_contract(disable=['pin-balance', 'contiguity', 'longterm-placement'],
                              reason="model test: keeps an extra reference on purpose (the failure under test)")
    @pytest.mark.parametrize("how", ["get", "pin"])
    def test_short_term_reference_blocks_whole_area(self, fake_mm, cma, how):
        """A referenced folio in the area makes a whole-area cma_alloc return None."""
        pt = FakePageTable()
        held = lru_anon_folio(fake_mm, "cma", pt, 0x1000)
        other = lru_anon_folio(fake_mm, "cma", pt, 0x2000)
        pin_short_term(fake_mm, held, how)
        refcount = held.refcount
        assert fake_mm.cma_alloc(cma, CMA_COUNT, 0) is None
        assert fake_mm.stats.cma_alloc_fail == 1
        assert fake_mm.stats.cma_alloc_success == 0
        assert cma.alloc_pages_fail == CMA_COUNT
        assert cma.available_count == CMA_COUNT
        busy = fake_mm.trace.filter(kind="cma_busy")
        assert len(busy) == 1
        assert busy[0].fields["pfn"] == CMA_BASE
        assert busy[0].fields["message"] == f"memory range at pfn {CMA_BASE:#x} is busy, retrying"
        assert len(fake_mm.trace.filter(kind="cma_alloc_fail")) == 1
        assert pt.ptes[0x1000] is held and held.is_cma and not held.freed
        assert held.refcount == refcount and fake_mm.folio_test_lru(held)
        assert other.freed and not pt.ptes[0x2000].is_cma    # the movable one moved
        assert_nothing_isolated(fake_mm)

    @pytest.mark.pin_contract(disable=['pin-balance'],
                              reason="model test: keeps an extra reference on purpose (the failure under test)")
    def test_smaller_allocation_takes_next_aligned_slot(self, fake_mm, cma):
        """An allocation whose first slot holds the referenced page uses the next slot."""
        pt = FakePageTable()
        held = folio_at_cma_bottom(fake_mm, pt)
        fake_mm.folio_get(held)
        page = fake_mm.cma_alloc(cma, 4096, 12)
        assert page is not None and page.pfn == CMA_BASE + 4096
        busy = fake_mm.trace.filter(kind="cma_busy")
        assert [e.fields["pfn"] for e in busy] == [CMA_BASE]
        assert fake_mm.stats.cma_alloc_fail == 0 and fake_mm.stats.cma_alloc_success == 1
        assert cma.available_count == CMA_COUNT - 4096
        assert pt.ptes[0x1000] is held and held.pfn == CMA_BASE + 511
        assert_nothing_isolated(fake_mm)

    @pytest.mark.pin_contract(disable=['longterm-placement'],
                              reason="model test: a reference held across cma_alloc on purpose (the failure "
                                     "under test); the checker judges any hold a helper leaves as long-term")
    @pytest.mark.parametrize("how", ["get", "pin"])
    def test_whole_area_after_reference_dropped(self, fake_mm, cma, how):
        """Once the reference is dropped the whole-area allocation succeeds."""
        pt = FakePageTable()
        held = lru_anon_folio(fake_mm, "cma", pt)
        held.write(0, b"kept")
        pin_short_term(fake_mm, held, how)
        assert fake_mm.cma_alloc(cma, CMA_COUNT, 0) is None
        unpin_short_term(fake_mm, held, how)
        page = fake_mm.cma_alloc(cma, CMA_COUNT, 0)
        assert page is not None and page.pfn == CMA_BASE
        assert held.freed and pt.ptes[0x1000].read(0, 4) == b"kept"
        assert (fake_mm.stats.cma_alloc_fail, fake_mm.stats.cma_alloc_success) == (1, 1)
        assert_nothing_isolated(fake_mm)

    @pytest.mark.pin_contract(disable=['pin-balance', 'contiguity'],
                              reason="model test: keeps an extra reference on purpose (the failure under test)")
    def test_no_warn_suppresses_the_failure_message(self, fake_mm, cma):
        """no_warn=True still counts the failure but logs no 'alloc failed' line."""
        held = lru_anon_folio(fake_mm, "cma")
        fake_mm.folio_get(held)
        assert fake_mm.cma_alloc(cma, CMA_COUNT, 0, no_warn=True) is None
        assert fake_mm.stats.cma_alloc_fail == 1
        assert fake_mm.trace.filter(kind="cma_alloc_fail") == []

    @pytest.mark.pin_contract(disable=['pin-balance'],
                              reason="model test: keeps an extra reference on purpose (the failure under test)")
    def test_unreferenced_folio_outside_area_does_not_matter(self, fake_mm, cma):
        """A referenced folio outside the area does not affect cma_alloc."""
        held = lru_anon_folio(fake_mm, "normal")
        fake_mm.folio_get(held)
        assert not held.is_cma
        assert fake_mm.cma_alloc(cma, CMA_COUNT, 0) is not None
        assert fake_mm.stats.migrate_pages_calls == 0


# ---------------------------------------------------------------------------- alloc_contig_range
class TestAllocContigRange:
    START = 0x10000                 # a free DMA32 pageblock range below the CMA area

    def test_free_range(self, fake_mm):
        """A free, movable range is allocated (0) and freed with free_contig_range."""
        s, e = self.START, self.START + 2 * pageblock_nr_pages
        dma32 = fake_mm.zones["DMA32"]
        free = dma32.free_pages
        assert fake_mm.alloc_contig_range(s, e) == 0
        block = fake_mm.pfn_to_folio(s)
        assert block.kind == KIND_CONTIG and block.nr_pages == e - s
        assert dma32.free_pages == free - (e - s)
        assert_nothing_isolated(fake_mm)
        fake_mm.free_contig_range(s, e - s)
        assert dma32.free_pages + dma32.pcp_pages == free       # the last pages on a pcp list
        fake_mm.drain_all_pages()
        assert dma32.free_pages == free
        assert fake_mm.pfn_to_folio(s) is None

    def test_unaligned_range_keeps_the_edges_free(self, fake_mm):
        """Only [start, end) is taken; the rest of the outer pageblocks is free again."""
        s, e = self.START + 100, self.START + 300
        dma32 = fake_mm.zones["DMA32"]
        free = dma32.free_pages
        assert fake_mm.alloc_contig_range(s, e) == 0
        assert dma32.free_pages == free - 200
        assert fake_mm.pfn_to_folio(s - 1) is None and fake_mm.pfn_to_folio(e) is None
        assert dma32.free[MIGRATE_MOVABLE].contains(s - 1)
        assert not dma32.free[MIGRATE_MOVABLE].contains(s)
        assert_nothing_isolated(fake_mm)

    @pytest.mark.parametrize("gfp", BAD_CONTIG_GFPS)
    def test_bad_gfp_is_einval(self, fake_mm, gfp):
        """gfp bits outside reclaim and the allowed action modifiers give -EINVAL."""
        assert fake_mm.alloc_contig_range(self.START, self.START + 512, MIGRATE_MOVABLE, gfp) == -errno.EINVAL
        assert fake_mm.stats.migrate_pages_calls == 0
        assert_nothing_isolated(fake_mm)

    @pytest.mark.parametrize("gfp", [GFP_USER, GFP_HIGHUSER_MOVABLE])
    def test_placement_hints_are_ignored(self, fake_mm, gfp):
        """Zone, mobility and placement bits (__GFP_HARDWALL, __GFP_MOVABLE...) are ignored."""
        assert fake_mm.alloc_contig_range(self.START, self.START + 512, MIGRATE_MOVABLE, gfp) == 0
        assert_nothing_isolated(fake_mm)

    @pytest.mark.parametrize("s,e", [(0x17e00, 0x18200), (0x0e00, 0x1200), (0x1000, 0x1000)])
    def test_range_across_zones_or_empty_is_einval(self, fake_mm, s, e):
        """A range across zones (DMA32/Movable, DMA/DMA32) or an empty range gives -EINVAL."""
        assert fake_mm.alloc_contig_range(s, e) == -errno.EINVAL
        assert_nothing_isolated(fake_mm)

    def test_unmovable_kernel_page_is_ebusy(self, fake_mm):
        """An unmovable kernel allocation in a plain Normal/DMA32 range gives -EBUSY at once."""
        page = fake_mm.alloc_pages(GFP_KERNEL, 0)
        assert page.zone == "DMA32" and not page.is_cma
        s = page.pfn & ~(pageblock_nr_pages - 1)
        assert fake_mm.alloc_contig_range(s, s + pageblock_nr_pages) == -errno.EBUSY
        assert fake_mm.stats.migrate_pages_calls == 0
        assert page.folio.refcount == 1 and not page.folio.freed
        assert_nothing_isolated(fake_mm)

    def test_unmovable_neighbour_in_the_pageblock_is_ignored(self, fake_mm):
        """Only [start, end) is checked: an unmovable page elsewhere in the pageblock stays."""
        page = fake_mm.alloc_pages(GFP_KERNEL, 0)
        s = page.pfn & ~(pageblock_nr_pages - 1)
        assert page.pfn >= s + 16
        assert fake_mm.alloc_contig_range(s, s + 16) == 0
        assert fake_mm.pfn_to_folio(s).kind == KIND_CONTIG
        assert fake_mm.pfn_to_folio(page.pfn) is page.folio
        assert fake_mm.alloc_contig_range(s, page.pfn + 1) == -errno.EBUSY
        assert_nothing_isolated(fake_mm)
        fake_mm.free_contig_range(s, 16)

    def test_cma_pageblock_needs_cma_isolation(self, fake_mm):
        """A CMA pageblock is busy for MIGRATE_MOVABLE isolation, free for MIGRATE_CMA."""
        s, e = CMA_BASE, CMA_BASE + pageblock_nr_pages
        assert fake_mm.alloc_contig_range(s, e, MIGRATE_MOVABLE) == -errno.EBUSY
        assert fake_mm.alloc_contig_range(s, e, MIGRATE_CMA) == 0
        assert fake_mm.get_pageblock_migratetype(s) == MIGRATE_CMA
        assert_nothing_isolated(fake_mm)
        fake_mm.free_contig_range(s, e - s)
        fake_mm.drain_all_pages()                  # the last pages freed wait on a pcp list
        assert fake_mm.zones["DMA32"].free_cma_pages == CMA_COUNT

    @pytest.mark.pin_contract(disable=['pin-balance'],
                              reason="model test: keeps an extra reference on purpose (the failure under test)")
    def test_referenced_page_cache_folio_ebusy_after_five_tries(self, fake_mm):
        """An LRU folio with an extra reference: 5 migrate_pages calls, then -EBUSY, decided
        by test_pages_isolated after the migration's -EBUSY fell through (the failure dump
        comes first, then the busy range).  Kernel: mm/page_alloc.c:alloc_contig_range_noprof
        (``if (ret && ret != -EBUSY) goto done``) and __alloc_contig_migrate_range, v6.12.117."""
        mapping = FakeMapping()
        held = lru_cache_folio(fake_mm, "normal", mapping)
        held.write(0, b"held")
        fake_mm.folio_get(held)
        assert not held.is_cma and held.zone == "DMA32"
        s = held.pfn & ~(pageblock_nr_pages - 1)
        assert fake_mm.alloc_contig_range(s, s + pageblock_nr_pages) == -errno.EBUSY
        assert fake_mm.stats.migrate_pages_calls == 5
        assert fake_mm.stats.pgmigrate_fail == 5
        assert fake_mm.stats.pgmigrate_success == 0
        dumped = fake_mm.trace.filter(kind="contig_busy")
        assert [e.fields["folio"] for e in dumped] == [held, held]
        assert "migration failure" in dumped[0].fields["message"]
        assert "PFNs busy" in dumped[1].fields["message"]
        assert mapping.pages[0] is held and held.read(0, 4) == b"held"
        assert held.refcount == 1 + 1 + 1            # cache + get + LRU batch after putback
        assert_nothing_isolated(fake_mm)
        fake_mm.lru_add_drain()
        assert fake_mm.folio_test_lru(held) and held.refcount == 2

    @pytest.mark.pin_contract(disable=['pin-balance'],
                              reason="model test: keeps an extra reference on purpose (the failure under test)")
    def test_referenced_anon_folio_is_not_even_isolated(self, fake_mm):
        """An anon folio with more references than mappings is skipped: -EBUSY, no migration."""
        held = lru_anon_folio(fake_mm, "normal")
        fake_mm.folio_get(held)
        s = held.pfn & ~(pageblock_nr_pages - 1)
        assert fake_mm.alloc_contig_range(s, s + pageblock_nr_pages) == -errno.EBUSY
        assert fake_mm.stats.migrate_pages_calls == 0
        busy = fake_mm.trace.filter(kind="contig_busy")
        assert len(busy) == 1 and busy[0].fields["folio"] is held
        assert "PFNs busy" in busy[0].fields["message"]
        assert fake_mm.folio_test_lru(held) and held.refcount == 2
        assert_nothing_isolated(fake_mm)

    @pytest.mark.parametrize("fatal", [False, True], ids=["signal", "fatal_signal"])
    def test_only_a_fatal_signal_stops_the_migration(self, fake_mm, fatal):
        """__alloc_contig_migrate_range checks fatal_signal_pending(): a plain pending
        signal does not stop it, SIGKILL gives -EINTR before the first isolation.
        Kernel: mm/page_alloc.c:__alloc_contig_migrate_range, v6.12.117."""
        mapping = FakeMapping()
        folio = lru_cache_folio(fake_mm, "normal", mapping)
        s = folio.pfn & ~(pageblock_nr_pages - 1)
        if fatal:
            fake_mm.current.fatal_signal_pending = True
        else:
            fake_mm.current.signal_pending = True
        rc = fake_mm.alloc_contig_range(s, s + pageblock_nr_pages)
        fake_mm.current.signal_pending = False
        if fatal:
            assert rc == -errno.EINTR and fake_mm.stats.migrate_pages_calls == 0
            assert mapping.pages[0] is folio
        else:
            assert rc == 0 and fake_mm.stats.migrate_pages_calls == 1
            assert folio.freed and mapping.pages[0] is not folio
            fake_mm.free_contig_range(s, pageblock_nr_pages)
        assert_nothing_isolated(fake_mm)

    def test_no_migration_target_is_enomem(self, fake_mm):
        """When no target can be allocated the call stops with -ENOMEM."""
        pt = FakePageTable()
        folio = lru_anon_folio(fake_mm, "normal", pt)
        folio.write(0, b"stay")
        fake_mm.faults.arm("alloc_migration_target", times=-1)
        s = folio.pfn & ~(pageblock_nr_pages - 1)
        assert fake_mm.alloc_contig_range(s, s + pageblock_nr_pages) == -errno.ENOMEM
        assert fake_mm.stats.migrate_pages_calls == 1
        assert pt.ptes[0x1000] is folio and not folio.freed and folio.read(0, 4) == b"stay"
        assert fake_mm.pfn_to_folio(folio.pfn) is folio
        assert_nothing_isolated(fake_mm)
        fake_mm.lru_add_drain()
        assert fake_mm.folio_test_lru(folio) and folio.refcount == 1

    def test_lru_folios_in_zone_movable_are_migrated(self, fake_mm):
        """LRU folios in ZONE_MOVABLE move within ZONE_MOVABLE and the range is allocated."""
        pt = FakePageTable()
        folio = lru_anon_folio(fake_mm, "movable", pt)
        folio.write(0, b"mov")
        s = folio.pfn & ~(pageblock_nr_pages - 1)
        assert fake_mm.alloc_contig_range(s, folio.pfn + 1) == 0
        new = pt.ptes[0x1000]
        assert folio.freed and new.zone == "Movable" and new.read(0, 3) == b"mov"
        assert not s <= new.pfn <= folio.pfn
        assert fake_mm.pfn_to_folio(folio.pfn).kind == KIND_CONTIG
        assert_nothing_isolated(fake_mm)
