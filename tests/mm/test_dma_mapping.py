"""The streaming DMA API (kernel/dma/mapping.c, kernel/dma/direct.c, v6.12) over a fake
device: addresses, masks, the two fault sites, DMA-API-debug style misuse warnings, and
the device's view of mapped pages judged by the checker."""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.contracts import Checker
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, GFP_KERNEL, MAP_ANONYMOUS, MAP_PRIVATE,
                                MAP_SHARED, PAGE_SIZE, PROT_READ, PROT_WRITE)
from pytest_pinfault.mm.dma_mapping import (DMA_BIDIRECTIONAL, DMA_BIT_MASK, DMA_FROM_DEVICE,
                                            DMA_MAPPING_ERROR, DMA_TO_DEVICE, SZ_64K)
from pytest_pinfault.mm.scatterlist import SgTable, for_each_sgtable_dma_sg


@pytest.fixture
def k() -> FakeMM:
    return FakeMM(MMConfig(ram="8GiB"))


def _pinned(k, n=4):
    mm = k.current.mm
    addr = mm.mmap(n * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    pages = []
    assert k.pin_user_pages(addr, n, FOLL_LONGTERM | FOLL_WRITE, pages) == n
    return addr, pages


def test_dma_bit_mask():
    assert DMA_BIT_MASK(32) == 0xFFFFFFFF and DMA_BIT_MASK(64) == (1 << 64) - 1


def test_map_page_is_the_physical_address(k):
    dev = k.create_device("nic")
    _, pages = _pinned(k, 1)
    addr = k.dma_map_page(dev, pages[0], 16, 100, DMA_TO_DEVICE)
    assert addr == (pages[0].pfn << 12) + 16 and k.dma_mapping_error(dev, addr) == 0
    assert k.counters.snapshot()["dma.mappings"] == {dev: 1}
    k.dma_unmap_page(dev, addr, 100, DMA_TO_DEVICE)
    assert dev.mappings == {}
    k.unpin_user_pages(pages, 1)


def test_mask_overflow_is_mapping_error_and_warning(k):
    """dma-direct without swiotlb: an address above the mask cannot be mapped."""
    dev = k.create_device("old", DMA_BIT_MASK(32))
    page = None
    while page is None or page.pfn < (1 << 20):       # above 4 GiB
        page = k.alloc_pages(GFP_KERNEL, 0)
    assert k.dma_map_page(dev, page, 0, PAGE_SIZE, DMA_TO_DEVICE) == DMA_MAPPING_ERROR
    assert k.dma_mapping_error(dev, DMA_MAPPING_ERROR) == -errno.ENOMEM
    assert "overflow" in k.warnings[-1].message


def test_map_sgtable_sets_dma_fields(k):
    dev = k.create_device()
    _, pages = _pinned(k, 4)
    t = SgTable()
    assert k.sg_alloc_table_from_pages(t, pages, 4, 0, 4 * PAGE_SIZE, GFP_KERNEL) == 0
    assert k.dma_map_sgtable(dev, t, DMA_BIDIRECTIONAL, 0) == 0
    assert t.nents == t.orig_nents
    for _, sg in for_each_sgtable_dma_sg(t):
        assert sg.dma_address == sg.page.pfn << 12 and sg.dma_length == sg.length
    k.dma_sync_sgtable_for_cpu(dev, t, DMA_BIDIRECTIONAL)
    k.dma_unmap_sgtable(dev, t, DMA_BIDIRECTIONAL, 0)
    k.sg_free_table(t)
    k.unpin_user_pages(pages, 4)
    assert k.warnings == []


@pytest.mark.parametrize("site, rc", [("dma_map_sg", -errno.ENOMEM), ("dma_map_page", -errno.EIO)])
def test_fault_sites(k, site, rc):
    """Both sites fail dma_map_sgtable with nothing left mapped."""
    dev = k.create_device()
    _, pages = _pinned(k, 3)
    t = SgTable()
    k.sg_alloc_table_from_pages(t, [pages[0], pages[2]], 2, 0, 2 * PAGE_SIZE, GFP_KERNEL)
    assert t.orig_nents == 2
    k.faults.arm(site, nth=2 if site == "dma_map_page" else 1)
    assert k.dma_map_sgtable(dev, t, DMA_TO_DEVICE, 0) == rc
    assert dev.mappings == {}
    assert k.dma_map_sg(dev, t.sgl, t.orig_nents, DMA_TO_DEVICE) == 2   # disarmed: times=1
    k.dma_unmap_sg(dev, t.sgl, t.orig_nents, DMA_TO_DEVICE)
    k.sg_free_table(t)
    k.unpin_user_pages(pages, 3)


def test_unmap_misuse_is_recorded(k):
    dev = k.create_device()
    _, pages = _pinned(k, 1)
    k.dma_unmap_page(dev, 0x1000, 10, DMA_TO_DEVICE)
    assert "has not allocated" in k.warnings[-1].message
    addr = k.dma_map_page(dev, pages[0], 0, 64, DMA_TO_DEVICE)
    k.dma_unmap_page(dev, addr, 64, DMA_FROM_DEVICE)
    assert "different size or direction" in k.warnings[-1].message
    k.dma_sync_single_for_cpu(dev, addr, 64, DMA_TO_DEVICE)
    assert "has not allocated" in k.warnings[-1].message


def test_device_view_reads_and_writes_pages(k):
    dev = k.create_device()
    addr, pages = _pinned(k, 1)
    dma = k.dma_map_page(dev, pages[0], 0, PAGE_SIZE, DMA_FROM_DEVICE)
    assert k.dma_device_write(dev, dma + 8, b"device!") == 7
    assert k.current.mm.read(addr + 8, 7) == b"device!"
    assert k.dma_device_write(dev, dma + PAGE_SIZE, b"x") == -errno.EFAULT
    k.dma_unmap_page(dev, dma, PAGE_SIZE, DMA_FROM_DEVICE)
    k.unpin_user_pages(pages, 1)


def test_max_seg_size_default(k):
    dev = k.create_device()
    assert k.dma_get_max_seg_size(dev) == SZ_64K
    k.dma_set_max_seg_size(dev, 1 << 31)
    assert k.dma_get_max_seg_size(dev) == 1 << 31


class TestChecker:
    def test_mapping_never_unmapped_is_rule4(self, k):
        ck = Checker(k)
        dev = k.create_device()
        _, pages = _pinned(k, 1)
        k.dma_map_page(dev, pages[0], 0, PAGE_SIZE, DMA_TO_DEVICE)
        k.unpin_user_pages(pages, 1)
        vs = ck.check(final=True)
        assert any(v.rule.id == "pin-balance" and "dma.mappings" in v.message for v in vs)

    def test_page_freed_while_mapped_is_coherence(self, k):
        """A driver that maps a page it does not hold: freeing the page breaks rule 6."""
        ck = Checker(k)
        dev = k.create_device()
        mm = k.current.mm
        addr = mm.mmap(PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        pages = []
        assert k.get_user_pages_fast(addr, 1, FOLL_WRITE, pages) == 1
        dma = k.dma_map_page(dev, pages[0], 0, PAGE_SIZE, DMA_FROM_DEVICE)
        k.put_page(pages[0])
        assert ck.check() == []
        mm.munmap(addr, PAGE_SIZE)
        k.lru_add_drain_all()                       # the LRU batch held the last reference
        assert pages[0].folio.freed
        vs = ck.check()
        assert [v.rule.id for v in vs] == ["coherence"] and "freed" in vs[0].message
        k.dma_unmap_page(dev, dma, PAGE_SIZE, DMA_FROM_DEVICE)
        assert ck.check() == []

    def test_truncated_while_mapped_is_coherence(self, k):
        ck = Checker(k)
        dev = k.create_device()
        f = k.memfd_create("buf", 0)
        f.ftruncate(PAGE_SIZE)
        f.pwrite(b"x", 0)
        mm = k.current.mm
        addr = mm.mmap(PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, file=f)
        pages = []
        assert k.pin_user_pages(addr, 1, FOLL_LONGTERM | FOLL_WRITE, pages) == 1
        dma = k.dma_map_page(dev, pages[0], 0, PAGE_SIZE, DMA_BIDIRECTIONAL)
        f.ftruncate(0)
        vs = ck.check()
        assert [v.rule.id for v in vs] == ["coherence"] and "truncated" in vs[0].message
        k.dma_unmap_page(dev, dma, PAGE_SIZE, DMA_BIDIRECTIONAL)
        k.unpin_user_pages(pages, 1)


def test_page_migrated_while_mapped_is_coherence():
    """cma_alloc migrates an unpinned, DMA-mapped page out of CMA: the device still has
    the old page mapped (rule 6)."""
    k = FakeMM(MMConfig(ram="1GiB", cma="16MiB"))
    ck = Checker(k)
    dev = k.create_device()
    mm = k.current.mm
    addr = mm.mmap(PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    with k.steer("cma"):
        mm.write(addr, b"x")
    pages = []
    assert k.get_user_pages_fast(addr, 1, FOLL_WRITE, pages) == 1
    assert pages[0].is_cma
    dma = k.dma_map_page(dev, pages[0], 0, PAGE_SIZE, DMA_FROM_DEVICE)
    k.put_page(pages[0])                        # the driver keeps only the DMA address
    area = k.cma_areas[0]
    got = k.cma_alloc(area, area.count, 0, no_warn=True)
    assert got is not None and mm.lookup(addr)[0] is not pages[0].folio
    vs = ck.check()
    assert [v.rule.id for v in vs] == ["coherence"] and "migrated" in vs[0].message
    k.cma_release(area, got, area.count)
    k.dma_unmap_page(dev, dma, PAGE_SIZE, DMA_FROM_DEVICE)
