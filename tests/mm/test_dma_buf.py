"""The dma-buf core (drivers/dma-buf/dma-buf.c v6.12): export checks, descriptors and
references with release on the last one, attachments and cached mappings, CPU access,
counted vmaps, and what the checker sees when a reference is leaked."""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.contracts import Checker
from pytest_pinfault.mm import GFP_KERNEL, PAGE_SIZE
from pytest_pinfault.mm.dma_buf import DmaBufExportInfo, IosysMap
from pytest_pinfault.mm.dma_mapping import DMA_BIDIRECTIONAL, DMA_TO_DEVICE
from pytest_pinfault.mm.scatterlist import SgTable


@pytest.fixture
def k() -> FakeMM:
    return FakeMM(MMConfig(ram="512MiB"))


class PagesExporter:
    """A minimal exporter: four kernel pages, mapped per attachment."""

    def __init__(self, k, cache=False):
        self.k = k
        self.page = k.alloc_pages(GFP_KERNEL, 2)
        self.cache_sgt_mapping = cache
        self.calls = []

    def map_dma_buf(self, attach, direction):
        self.calls.append("map")
        sgt = SgTable()
        if self.k.sg_alloc_table_from_pages(sgt, [self.page], 1, 0, 4 * PAGE_SIZE, GFP_KERNEL):
            return -errno.ENOMEM
        rc = self.k.dma_map_sgtable(attach.dev, sgt, direction, 0)
        if rc:
            self.k.sg_free_table(sgt)
            return rc
        return sgt

    def unmap_dma_buf(self, attach, sgt, direction):
        self.calls.append("unmap")
        self.k.dma_unmap_sgtable(attach.dev, sgt, direction, 0)
        self.k.sg_free_table(sgt)

    def vmap(self, dmabuf, map):
        map.vaddr = self.page.folio
        return 0

    def vunmap(self, dmabuf, map):
        self.calls.append("vunmap")

    def release(self, dmabuf):
        self.calls.append("release")
        self.k.free_pages_block(self.page, 2)


def export(k, ops):
    return k.dma_buf_export(DmaBufExportInfo(ops=ops, size=4 * PAGE_SIZE, priv=ops, flags=2))


def test_export_fd_and_release_on_last_reference(k):
    ops = PagesExporter(k)
    buf = export(k, ops)
    fd = k.dma_buf_fd(buf, 0)
    assert fd >= 0 and buf.file.f_count == 1
    got = k.dma_buf_get(fd)
    assert got is buf and buf.file.f_count == 2
    k.get_dma_buf(buf)
    assert k.close_fd(fd) == 0
    k.dma_buf_put(buf)
    assert ops.calls == []
    k.dma_buf_put(buf)
    assert ops.calls == ["release"] and buf.released and k.slab_live == []
    assert k.dma_buf_get(fd) == -errno.EBADF


def test_export_checks(k):
    class NoRelease:
        def map_dma_buf(self, a, d): ...
        def unmap_dma_buf(self, a, s, d): ...
    assert k.dma_buf_export(DmaBufExportInfo(ops=NoRelease(), size=1, priv=1)) == -errno.EINVAL
    assert "WARN_ON" in k.warnings[-1].message
    assert k.dma_buf_export(DmaBufExportInfo(ops=PagesExporter(k), size=1, priv=None)) == -errno.EINVAL


@pytest.mark.parametrize("nth", [1, 2])
def test_export_allocation_failures(k, nth):
    """The file and the dma_buf allocations both hit kmalloc; nothing is left."""
    k.faults.arm("kmalloc", nth=nth)
    assert export(k, PagesExporter(k)) == -errno.ENOMEM
    assert k.slab_live == []


def test_dma_buf_get_of_another_file(k):
    f = k.memfd_create("x", 0)
    assert k.dma_buf_get(f.fd) == -errno.EINVAL and f.f_count == 1


def test_attach_map_unmap_detach(k):
    ops = PagesExporter(k)
    buf = export(k, ops)
    dev = k.create_device("gpu")
    at = k.dma_buf_attach(buf, dev)
    sgt = k.dma_buf_map_attachment(at, DMA_BIDIRECTIONAL)
    assert sgt.sgl.dma_address == ops.page.pfn << 12 and len(dev.mappings) == 1
    k.dma_buf_unmap_attachment(at, sgt, DMA_BIDIRECTIONAL)
    assert dev.mappings == {}
    k.dma_buf_detach(buf, at)
    k.dma_buf_put(buf)
    assert ops.calls == ["map", "unmap", "release"] and k.warnings == []


def test_cached_mapping_stays_until_detach(k):
    ops = PagesExporter(k, cache=True)
    buf = export(k, ops)
    at = k.dma_buf_attach(buf, k.create_device())
    sgt = k.dma_buf_map_attachment(at, DMA_TO_DEVICE)
    assert k.dma_buf_map_attachment(at, DMA_TO_DEVICE) is sgt
    assert k.dma_buf_map_attachment(at, DMA_BIDIRECTIONAL) == -errno.EBUSY
    k.dma_buf_unmap_attachment(at, sgt, DMA_TO_DEVICE)
    assert ops.calls == ["map"]
    k.dma_buf_detach(buf, at)
    assert ops.calls == ["map", "unmap"]
    k.dma_buf_put(buf)


def test_vmap_is_counted(k):
    ops = PagesExporter(k)
    buf = export(k, ops)
    m1, m2 = IosysMap(), IosysMap()
    assert k.dma_buf_vmap(buf, m1) == 0 and k.dma_buf_vmap(buf, m2) == 0
    assert m1.vaddr is m2.vaddr is ops.page.folio and buf.vmapping_counter == 2
    k.dma_buf_vunmap(buf, m1)
    assert ops.calls == []
    k.dma_buf_vunmap(buf, m2)
    assert ops.calls == ["vunmap"]
    k.dma_buf_vunmap(buf, m2)
    assert "BUG_ON" in k.warnings[-1].message
    assert k.dma_buf_begin_cpu_access(buf, DMA_BIDIRECTIONAL) == 0
    k.dma_buf_put(buf)


def test_release_with_attachment_warns(k):
    buf = export(k, PagesExporter(k))
    k.dma_buf_attach(buf, k.create_device())
    k.dma_buf_put(buf)
    assert "attachments" in k.warnings[-1].message


def test_checker_sees_leaked_reference_and_attachment(k):
    ck = Checker(k)
    buf = export(k, PagesExporter(k))
    k.get_dma_buf(buf)
    k.dma_buf_attach(buf, k.create_device())
    k.dma_buf_put(buf)
    msgs = [v.message for v in ck.check(final=True) if v.rule.id == "pin-balance"]
    assert any("dma_buf.refs" in m for m in msgs) and any("dma_buf.attachments" in m for m in msgs)
