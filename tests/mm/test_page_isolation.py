"""Pageblock isolation: has_unmovable_pages, start/undo_isolate_page_range,
test_pages_isolated.

Kernel: mm/page_isolation.c (docs/kernel-contract §7.3).  The machine: 512 MiB with a
32 MiB CMA area (pfn 0x16000..0x18000) at the top of DMA32 and 128 MiB of ZONE_MOVABLE
(pfn 0x18000..0x20000) whose top 8 MiB hold the memmap reservation (pfn 0x1f800..).
"""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import MMConfig
from pytest_pinfault.mm import (GFP_HIGHUSER_MOVABLE, GFP_KERNEL, MIGRATE_CMA, MIGRATE_ISOLATE,
                                MIGRATE_MOVABLE, pageblock_nr_pages)
from pytest_pinfault.mm.folio import KIND_ANON, PG_lru

CMA_BASE = 0x16000
MOVABLE_START = 0x18000
MEMMAP_START = 0x1f800
KERNEL_IMAGE = 0x1000
FREE_PB = 0x10000                  # a free, plain (Movable-type) DMA32 pageblock
PB = pageblock_nr_pages


@pytest.fixture
def mm_config() -> MMConfig:
    return MMConfig(ram="512MiB", cma="32MiB", movablecore="128MiB")


def pb_of(pfn: int) -> int:
    return pfn & ~(PB - 1)


def anon_folio(k, where, lru=True):
    with k.steer(where):
        folio = k._alloc_folio(GFP_HIGHUSER_MOVABLE, 0, KIND_ANON)
    folio._mapcount = 1
    k.folio_add_lru(folio)
    if lru:
        k.lru_add_drain()
    return folio


def isolated_pageblocks(k):
    return sorted(pb for pb, mt in k._pb_mt.items() if mt == MIGRATE_ISOLATE)


class TestHasUnmovablePages:
    def test_free_pageblock_is_movable(self, fake_mm):
        """A pageblock of free pages has nothing unmovable."""
        assert fake_mm.has_unmovable_pages(FREE_PB, FREE_PB + PB, MIGRATE_MOVABLE) == -1

    def test_cma_pageblock_movable_only_for_cma_isolation(self, fake_mm):
        """A CMA pageblock is unmovable unless the isolation is for MIGRATE_CMA."""
        assert fake_mm.has_unmovable_pages(CMA_BASE, CMA_BASE + PB, MIGRATE_MOVABLE) == CMA_BASE
        assert fake_mm.has_unmovable_pages(CMA_BASE, CMA_BASE + PB, MIGRATE_CMA) == -1

    def test_cma_pageblock_with_kernel_page_movable_for_cma(self, fake_mm):
        """For CMA isolation a CMA pageblock is not inspected page by page."""
        with fake_mm.steer("cma"):
            page = fake_mm.alloc_pages(GFP_HIGHUSER_MOVABLE, 0)
        assert page.is_cma
        s = pb_of(page.pfn)
        assert fake_mm.has_unmovable_pages(s, s + PB, MIGRATE_CMA) == -1

    def test_reserved_page_unmovable_even_in_zone_movable(self, fake_mm):
        """The memmap reservation in ZONE_MOVABLE is unmovable."""
        assert fake_mm.has_unmovable_pages(MEMMAP_START, MEMMAP_START + PB, MIGRATE_MOVABLE) == MEMMAP_START
        assert fake_mm.zones["Movable"].zone_spans_pfn(MEMMAP_START)

    def test_reserved_kernel_image_unmovable(self, fake_mm):
        """The kernel image reservation in DMA32 is unmovable."""
        assert fake_mm.has_unmovable_pages(KERNEL_IMAGE, KERNEL_IMAGE + PB, MIGRATE_MOVABLE) == KERNEL_IMAGE

    def test_everything_else_movable_in_zone_movable(self, fake_mm):
        """In ZONE_MOVABLE a non-LRU in-use page is assumed movable."""
        with fake_mm.steer("movable"):
            page = fake_mm.alloc_pages(GFP_HIGHUSER_MOVABLE, 0)
        assert page.zone == "Movable" and not page.folio.flags & PG_lru
        s = pb_of(page.pfn)
        assert s != pb_of(MEMMAP_START)
        assert fake_mm.has_unmovable_pages(s, s + PB, MIGRATE_MOVABLE) == -1

    def test_non_lru_page_unmovable_outside_zone_movable(self, fake_mm):
        """Outside ZONE_MOVABLE an in-use page that is not on the LRU is unmovable."""
        page = fake_mm.alloc_pages(GFP_KERNEL, 0)
        assert page.zone == "DMA32" and not page.is_cma
        s = pb_of(page.pfn)
        assert fake_mm.has_unmovable_pages(s, s + PB, MIGRATE_MOVABLE) == page.pfn

    def test_large_kernel_allocation_reported_at_its_first_pfn_in_range(self, fake_mm):
        """A large unmovable block is reported at max(its head, the range start)."""
        page = fake_mm.alloc_pages(GFP_KERNEL, 3)
        s = pb_of(page.pfn)
        assert fake_mm.has_unmovable_pages(s, s + PB, MIGRATE_MOVABLE) == page.pfn
        assert fake_mm.has_unmovable_pages(page.pfn + 4, s + PB, MIGRATE_MOVABLE) == page.pfn + 4

    def test_lru_folio_movable(self, fake_mm):
        """An LRU folio outside ZONE_MOVABLE is movable."""
        folio = anon_folio(fake_mm, "normal")
        s = pb_of(folio.pfn)
        assert fake_mm.has_unmovable_pages(s, s + PB, MIGRATE_MOVABLE) == -1

    def test_folio_in_lru_batch_is_unmovable(self, fake_mm):
        """A folio still in a per-cpu LRU batch lacks PG_lru, so it counts as unmovable."""
        folio = anon_folio(fake_mm, "normal", lru=False)
        s = pb_of(folio.pfn)
        assert fake_mm.has_unmovable_pages(s, s + PB, MIGRATE_MOVABLE) == folio.pfn
        fake_mm.lru_add_drain()
        assert fake_mm.has_unmovable_pages(s, s + PB, MIGRATE_MOVABLE) == -1


class TestStartUndoIsolatePageRange:
    def test_free_pages_move_to_and_from_the_isolate_list(self, fake_mm):
        """Isolation moves free pages to MIGRATE_ISOLATE (not counted free); undo moves them back."""
        dma32 = fake_mm.zones["DMA32"]
        free = dma32.free_pages
        assert dma32.free[MIGRATE_MOVABLE].count_range(FREE_PB, FREE_PB + 2 * PB) == 2 * PB
        assert fake_mm.start_isolate_page_range(FREE_PB, FREE_PB + 2 * PB, MIGRATE_MOVABLE) == 0
        assert fake_mm.get_pageblock_migratetype(FREE_PB) == MIGRATE_ISOLATE
        assert fake_mm.get_pageblock_migratetype(FREE_PB + PB) == MIGRATE_ISOLATE
        assert dma32.free[MIGRATE_ISOLATE].nr_free == 2 * PB
        assert dma32.free[MIGRATE_MOVABLE].count_range(FREE_PB, FREE_PB + 2 * PB) == 0
        assert dma32.free_pages == free - 2 * PB
        assert dma32.nr_isolate_pageblock == 2
        fake_mm.undo_isolate_page_range(FREE_PB, FREE_PB + 2 * PB, MIGRATE_MOVABLE)
        assert fake_mm.get_pageblock_migratetype(FREE_PB) == MIGRATE_MOVABLE
        assert dma32.free[MIGRATE_ISOLATE].nr_free == 0
        assert dma32.free[MIGRATE_MOVABLE].count_range(FREE_PB, FREE_PB + 2 * PB) == 2 * PB
        assert dma32.free_pages == free
        assert dma32.nr_isolate_pageblock == 0
        assert isolated_pageblocks(fake_mm) == []

    def test_unaligned_range_isolates_whole_pageblocks(self, fake_mm):
        """An unaligned range isolates every pageblock it touches."""
        assert fake_mm.start_isolate_page_range(FREE_PB + 10, FREE_PB + PB + 1, MIGRATE_MOVABLE) == 0
        assert isolated_pageblocks(fake_mm) == [FREE_PB // PB, FREE_PB // PB + 1]
        fake_mm.undo_isolate_page_range(FREE_PB + 10, FREE_PB + PB + 1, MIGRATE_MOVABLE)
        assert isolated_pageblocks(fake_mm) == []

    def test_cma_pageblock_returns_to_cma(self, fake_mm):
        """A CMA pageblock isolated for CMA leaves NR_FREE_CMA_PAGES and comes back as CMA."""
        dma32 = fake_mm.zones["DMA32"]
        cma_free = dma32.free_cma_pages
        assert fake_mm.start_isolate_page_range(CMA_BASE, CMA_BASE + PB, MIGRATE_CMA) == 0
        assert dma32.free_cma_pages == cma_free - PB
        fake_mm.undo_isolate_page_range(CMA_BASE, CMA_BASE + PB, MIGRATE_CMA)
        assert fake_mm.get_pageblock_migratetype(CMA_BASE) == MIGRATE_CMA
        assert dma32.free_cma_pages == cma_free
        assert dma32.free[MIGRATE_CMA].count_range(CMA_BASE, CMA_BASE + PB) == PB

    def test_in_use_pages_stay_allocated(self, fake_mm):
        """Only free pages move; an LRU folio in the pageblock stays allocated."""
        folio = anon_folio(fake_mm, "normal")
        s = pb_of(folio.pfn)
        dma32 = fake_mm.zones["DMA32"]
        fake_mm.drain_all_pages()
        free_in_pb = dma32.free[MIGRATE_MOVABLE].count_range(s, s + PB)
        assert free_in_pb == PB - 1
        assert fake_mm.start_isolate_page_range(s, s + PB, MIGRATE_MOVABLE) == 0
        assert dma32.free[MIGRATE_ISOLATE].nr_free == PB - 1
        assert fake_mm.pfn_to_folio(folio.pfn) is folio and folio.migratetype == MIGRATE_ISOLATE
        assert not fake_mm.folio_is_longterm_pinnable(folio)
        fake_mm.undo_isolate_page_range(s, s + PB, MIGRATE_MOVABLE)
        assert fake_mm.folio_is_longterm_pinnable(folio)

    def test_unmovable_page_fails_and_rolls_back(self, fake_mm):
        """An unmovable page in the last pageblock gives -EBUSY with nothing left isolated."""
        page = fake_mm.alloc_pages(GFP_KERNEL, 0)
        last = pb_of(page.pfn)
        dma32 = fake_mm.zones["DMA32"]
        free = dma32.free_pages
        assert fake_mm.start_isolate_page_range(last - 2 * PB, last + PB, MIGRATE_MOVABLE) == -errno.EBUSY
        assert isolated_pageblocks(fake_mm) == []
        assert dma32.nr_isolate_pageblock == 0 and dma32.free[MIGRATE_ISOLATE].nr_free == 0
        assert dma32.free_pages == free

    def test_double_isolation_is_ebusy(self, fake_mm):
        """Isolating an already isolated pageblock gives -EBUSY and undoes its own work."""
        second = FREE_PB + PB
        assert fake_mm.start_isolate_page_range(second, second + PB, MIGRATE_MOVABLE) == 0
        dma32 = fake_mm.zones["DMA32"]
        free = dma32.free_pages
        assert fake_mm.start_isolate_page_range(FREE_PB, second + PB, MIGRATE_MOVABLE) == -errno.EBUSY
        assert isolated_pageblocks(fake_mm) == [second // PB]      # only the first caller's
        assert dma32.free_pages == free and dma32.nr_isolate_pageblock == 1
        assert fake_mm.start_isolate_page_range(second, second + PB, MIGRATE_MOVABLE) == -errno.EBUSY
        fake_mm.undo_isolate_page_range(second, second + PB, MIGRATE_MOVABLE)
        assert isolated_pageblocks(fake_mm) == []
        assert dma32.nr_isolate_pageblock == 0

    def test_page_freed_into_isolated_pageblock(self, fake_mm):
        """A page freed while its pageblock is isolated lands on the isolate list."""
        folio = anon_folio(fake_mm, "normal")
        s = pb_of(folio.pfn)
        dma32 = fake_mm.zones["DMA32"]
        assert fake_mm.start_isolate_page_range(s, s + PB, MIGRATE_MOVABLE) == 0
        free = dma32.free_pages
        folio._mapcount = 0
        fake_mm.folio_put(folio)
        assert folio.freed
        assert dma32.free[MIGRATE_ISOLATE].contains(folio.pfn)
        assert dma32.free_pages == free
        assert dma32.pcp_pages == 0
        fake_mm.undo_isolate_page_range(s, s + PB, MIGRATE_MOVABLE)
        assert dma32.free[MIGRATE_MOVABLE].contains(folio.pfn)
        assert dma32.free_pages == free + PB

    def test_undo_of_a_range_never_isolated_is_a_no_op(self, fake_mm):
        """undo_isolate_page_range leaves pageblocks that are not isolated alone."""
        dma32 = fake_mm.zones["DMA32"]
        free = dma32.free_pages
        fake_mm.undo_isolate_page_range(CMA_BASE, CMA_BASE + PB, MIGRATE_MOVABLE)
        assert fake_mm.get_pageblock_migratetype(CMA_BASE) == MIGRATE_CMA
        assert dma32.free_pages == free


class TestTestPagesIsolated:
    def test_free_isolated_range(self, fake_mm):
        """An isolated range of free pages passes (0)."""
        assert fake_mm.start_isolate_page_range(FREE_PB, FREE_PB + PB, MIGRATE_MOVABLE) == 0
        assert fake_mm.test_pages_isolated(FREE_PB, FREE_PB + PB) == 0
        assert fake_mm.test_pages_isolated(FREE_PB + 3, FREE_PB + 7) == 0
        fake_mm.undo_isolate_page_range(FREE_PB, FREE_PB + PB, MIGRATE_MOVABLE)

    def test_not_isolated_range(self, fake_mm):
        """A free range that is not isolated fails (-EBUSY)."""
        assert fake_mm.test_pages_isolated(FREE_PB, FREE_PB + PB) == -errno.EBUSY

    def test_partly_isolated_range(self, fake_mm):
        """A range with one pageblock not isolated fails."""
        assert fake_mm.start_isolate_page_range(FREE_PB, FREE_PB + PB, MIGRATE_MOVABLE) == 0
        assert fake_mm.test_pages_isolated(FREE_PB, FREE_PB + 2 * PB) == -errno.EBUSY
        fake_mm.undo_isolate_page_range(FREE_PB, FREE_PB + PB, MIGRATE_MOVABLE)

    def test_in_use_page_fails_until_freed(self, fake_mm):
        """An allocated page in the isolated range fails the test until it is freed."""
        folio = anon_folio(fake_mm, "normal")
        s = pb_of(folio.pfn)
        assert fake_mm.start_isolate_page_range(s, s + PB, MIGRATE_MOVABLE) == 0
        assert fake_mm.test_pages_isolated(s, s + PB) == -errno.EBUSY
        assert fake_mm.test_pages_isolated(s, folio.pfn) == 0        # the part before it
        folio._mapcount = 0
        fake_mm.folio_put(folio)
        assert fake_mm.test_pages_isolated(s, s + PB) == 0
        fake_mm.undo_isolate_page_range(s, s + PB, MIGRATE_MOVABLE)

    def test_per_cpu_pages_fail_until_drained(self, fake_mm):
        """Free pages parked on per-cpu lists are not free buddy pages until drained."""
        page = fake_mm.alloc_pages(GFP_KERNEL, 0)        # refills this cpu's list
        fake_mm.free_pages_block(page, 0)                 # and goes back to it
        dma32 = fake_mm.zones["DMA32"]
        assert dma32.pcp_pages > 0
        s = pb_of(page.pfn)
        assert fake_mm.start_isolate_page_range(s, s + PB, MIGRATE_MOVABLE) == 0
        assert fake_mm.test_pages_isolated(s, s + PB) == -errno.EBUSY
        fake_mm.drain_all_pages(dma32)
        assert dma32.pcp_pages == 0
        assert fake_mm.test_pages_isolated(s, s + PB) == 0
        fake_mm.undo_isolate_page_range(s, s + PB, MIGRATE_MOVABLE)
