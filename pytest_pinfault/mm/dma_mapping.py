"""The streaming DMA API over a fake device: ``dma_map_page``, ``dma_map_sgtable``,
``dma_unmap_*``, ``dma_sync_*``, DMA masks and segment sizes.

Kernel: kernel/dma/mapping.c (dma_map_page_attrs, __dma_map_sg_attrs, dma_map_sgtable,
dma_unmap_*_attrs, __dma_sync_*, dma_set_mask), kernel/dma/direct.c (dma_direct_map_sg,
dma_direct_map_page), include/linux/dma-mapping.h (DMA_MAPPING_ERROR, DMA_BIT_MASK,
dma_get_max_seg_size, dma_sync_sgtable_*), kernel/dma/debug.c (what DMA-API debugging
reports), v6.12.

A :class:`Device` maps directly (dma-direct, no IOMMU, no swiotlb): the DMA address of
a page is its physical address.  Every live mapping is recorded as the device's view of
those pages, and the model judges it the way CONFIG_DMA_API_DEBUG and the pinning
contract would:

* unmapping or syncing what was never mapped (or with another size or direction) is a
  recorded kernel warning;
* a page freed, migrated (its page table or page cache now maps another folio) or
  truncated while mapped is a coherence breach (probe ``dma.coherence``, rule 6);
* a mapping never unmapped is left on counter ``dma.mappings`` (rule 4 at teardown,
  rule 2 after an error return).

Two fault sites: ``dma_map_page`` (the mapping of one page or sg entry fails:
DMA_MAPPING_ERROR; dma_map_sg then unmaps what it mapped and fails with -EIO) and
``dma_map_sg`` (the whole sg mapping fails up front, as an IOMMU out of IOVA space does).

.. note:: No IOMMU (entries are never merged, ``nents == orig_nents`` after mapping), no
   bounce buffers (an address above the mask is a DMA_MAPPING_ERROR with the kernel's
   ``dev_WARN_ONCE``), no P2PDMA; syncs move no data (every device is coherent), they
   are only checked.  ``dma_device_read``/``dma_device_write`` are model-only helpers
   with which a device model accesses memory through its DMA addresses.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Iterator

from .folio import KIND_ANON, PAGE_SHIFT, PAGE_SIZE, Folio, Page
from .scatterlist import Scatterlist, SgTable, for_each_sg, sg_next

if TYPE_CHECKING:  # pragma: no cover
    from .fakemm import FakeMM

if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object

__all__ = ["Device", "DmaMapping", "DMA_BIDIRECTIONAL", "DMA_TO_DEVICE", "DMA_FROM_DEVICE",
           "DMA_NONE", "DMA_MAPPING_ERROR", "DMA_BIT_MASK", "DMA_ATTR_SKIP_CPU_SYNC",
           "DMA_ATTR_WEAK_ORDERING", "SZ_64K"]

DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_NONE = 0, 1, 2, 3
DMA_MAPPING_ERROR = (1 << 64) - 1
DMA_ATTR_WEAK_ORDERING = 1 << 1
DMA_ATTR_SKIP_CPU_SYNC = 1 << 5
SZ_64K = 1 << 16
_DIR_NAMES = {0: "DMA_BIDIRECTIONAL", 1: "DMA_TO_DEVICE", 2: "DMA_FROM_DEVICE", 3: "DMA_NONE"}


def DMA_BIT_MASK(n: int) -> int:
    """include/linux/dma-mapping.h:DMA_BIT_MASK."""
    return (1 << 64) - 1 if n == 64 else (1 << n) - 1


class Device:
    """``struct device`` as the DMA API sees it: ``name``, ``dma_mask``,
    ``coherent_dma_mask``, ``max_segment_size`` (``dma_parms``; 0 = unset, 64 KiB) and
    its live mappings."""

    __slots__ = ("name", "dma_mask", "coherent_dma_mask", "max_segment_size", "mappings",
                 "__weakref__")

    def __init__(self, name: str, dma_mask: int) -> None:
        self.name: str = name
        self.dma_mask: int = dma_mask
        self.coherent_dma_mask: int = dma_mask
        self.max_segment_size: int = 0
        self.mappings: dict[Any, DmaMapping] = {}

    def __repr__(self) -> str:
        return f"<device {self.name} mask={self.dma_mask:#x} mappings={len(self.mappings)}>"


class DmaMapping:
    """One live mapping: ``dev``, ``dir``, ``handle`` (the DMA address of a single
    mapping or the first sg entry), ``nents`` and ``segments``: ``(page, offset, size,
    dma_addr)``; for the coherence probe, what each page's folio was at map time."""

    __slots__ = ("dev", "dir", "handle", "nents", "segments", "_views", "caller")

    def __init__(self, dev: Device, dir: int, handle: Any, nents: int, caller: str) -> None:
        self.dev: Device = dev
        self.dir: int = dir
        self.handle: Any = handle
        self.nents: int = nents
        self.segments: list[tuple[Page, int, int, int]] = []
        self._views: list[tuple[Folio, Any, int, tuple[Any, ...]]] = []
        self.caller: str = caller

    def __repr__(self) -> str:
        return (f"<dma mapping {self.dev.name} {_DIR_NAMES.get(self.dir, self.dir)} "
                f"{len(self.segments)} segment(s) from {self.caller}>")


def _valid_dir(dir: int) -> bool:
    return dir in (DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE)


class DmaMappingMixin(_Base):
    """kernel/dma/mapping.c half of :class:`~pytest_pinfault.FakeMM`."""

    def _init_dma(self) -> None:
        self._devices: list[Device] = []
        self.counters.register("dma.mappings", self._read_dma_mappings,
                               doc="streaming DMA mappings never unmapped")
        self.counters.register_probe("dma.coherence", self._dma_coherence, rule="coherence")

    def _read_dma_mappings(self) -> dict[Any, int]:
        """The ``dma.mappings`` counter's reading: each device's live streaming mappings."""
        return {d: len(d.mappings) for d in self._devices} if self._devices else {}

    # ---------------------------------------------------------------- devices
    def create_device(self, name: str = "dev", dma_mask: int = DMA_BIT_MASK(64)) -> Device:
        """A DMA-capable device with *dma_mask* (model only: stands for a probed
        ``struct device``)."""
        d = Device(name, dma_mask)
        self._devices.append(d)
        return d

    def dma_set_mask(self, dev: Device, mask: int) -> int:
        """0, or -EIO for a mask below the machine's lowest memory (dma_supported).
        Kernel: kernel/dma/mapping.c:dma_set_mask (v6.12)."""
        mask &= DMA_BIT_MASK(64)
        if mask < DMA_BIT_MASK(24):
            return -errno.EIO
        dev.dma_mask = mask
        return 0

    def dma_set_mask_and_coherent(self, dev: Device, mask: int) -> int:
        """Kernel: include/linux/dma-mapping.h:dma_set_mask_and_coherent."""
        rc = self.dma_set_mask(dev, mask)
        if rc == 0:
            dev.coherent_dma_mask = mask & DMA_BIT_MASK(64)
        return rc

    def dma_get_max_seg_size(self, dev: Device) -> int:
        """``dma_parms->max_segment_size`` or 64 KiB.
        Kernel: include/linux/dma-mapping.h:dma_get_max_seg_size (v6.12)."""
        return dev.max_segment_size or SZ_64K

    def dma_set_max_seg_size(self, dev: Device, size: int) -> None:
        """Kernel: include/linux/dma-mapping.h:dma_set_max_seg_size (v6.12)."""
        dev.max_segment_size = size

    def dma_mapping_error(self, dev: Device, dma_addr: int) -> int:
        """-ENOMEM for DMA_MAPPING_ERROR, else 0.
        Kernel: include/linux/dma-mapping.h:dma_mapping_error."""
        return -errno.ENOMEM if dma_addr == DMA_MAPPING_ERROR else 0

    # ---------------------------------------------------------------- mapping
    def _direct_map_page(self, dev: Device, page: Page, offset: int, size: int) -> int:
        """kernel/dma/direct.h:dma_direct_map_page: the physical address, or
        DMA_MAPPING_ERROR (fault site, or above the mask: dev_WARN_ONCE)."""
        fi = self.faults
        if fi.active and fi.hit("dma_map_page", folio=page.folio, size=size) is not None:
            return DMA_MAPPING_ERROR
        addr = (page.pfn << PAGE_SHIFT) + offset
        if addr + size - 1 > dev.dma_mask:
            self._warn("dma_direct_map_page",
                       f"{dev.name}: DMA addr {addr:#x}+{size} overflow (mask {dev.dma_mask:#x}, "
                       f"no swiotlb)", folio=page.folio)
            return DMA_MAPPING_ERROR
        return addr

    def _record_view(self, m: DmaMapping, page: Page, offset: int, size: int, addr: int) -> None:
        m.segments.append((page, offset, size, addr))
        f = page.folio
        rmap = tuple(f.rmap or ()) if f.kind == KIND_ANON else ()
        m._views.append((f, f.mapping, f.index, rmap))

    def dma_map_page_attrs(self, dev: Device, page: Page | Folio, offset: int, size: int,
                           dir: int, attrs: int) -> int:
        """Map *size* bytes of *page* from *offset* for *dev*: the DMA address, or
        DMA_MAPPING_ERROR (check with :meth:`dma_mapping_error`).  An invalid direction
        is the kernel's BUG_ON: a recorded warning and DMA_MAPPING_ERROR here.
        Kernel: kernel/dma/mapping.c:dma_map_page_attrs (v6.12)."""
        from .bug import external_caller
        if isinstance(page, Folio):
            page = Page(page, page.pfn)
        if not _valid_dir(dir):
            self._warn("dma_map_page", f"BUG_ON(!valid_dma_direction({dir}))", folio=page.folio)
            return DMA_MAPPING_ERROR
        addr = self._direct_map_page(dev, page, offset, size)
        if addr == DMA_MAPPING_ERROR:
            return addr
        m = DmaMapping(dev, dir, addr, 1, external_caller(2))
        self._record_view(m, page, offset, size, addr)
        dev.mappings[("page", addr)] = m
        self._trace("dma_map", dev=dev.name, addr=addr, size=size, folio=page.folio)
        return addr

    def dma_map_page(self, dev: Device, page: Page | Folio, offset: int, size: int, dir: int) -> int:
        """``dma_map_page_attrs(dev, page, offset, size, dir, 0)``.
        Kernel: include/linux/dma-mapping.h:dma_map_page (a macro, v6.12)."""
        return self.dma_map_page_attrs(dev, page, offset, size, dir, 0)

    def dma_unmap_page_attrs(self, dev: Device, addr: int, size: int, dir: int, attrs: int) -> None:
        """Unmap a :meth:`dma_map_page` mapping; an address never mapped, or another
        size or direction, is recorded as DMA-API debug does ("device driver tries to
        free DMA memory it has not allocated").
        Kernel: kernel/dma/mapping.c:dma_unmap_page_attrs (v6.12)."""
        m = dev.mappings.get(("page", addr))
        if m is None:
            self._warn("dma_unmap_page", f"{dev.name}: device driver tries to free DMA memory it has not "
                                          f"allocated [device address={addr:#x}] [size={size} bytes]")
            return
        _, _, msize, _ = m.segments[0]
        if msize != size or m.dir != dir:
            self._warn("dma_unmap_page", f"{dev.name}: device driver frees DMA memory with different "
                                          f"size or direction [mapped {msize} {_DIR_NAMES[m.dir]}] "
                                          f"[unmapped {size} {_DIR_NAMES.get(dir, dir)}]")
        del dev.mappings[("page", addr)]

    def dma_unmap_page(self, dev: Device, addr: int, size: int, dir: int) -> None:
        """``dma_unmap_page_attrs(dev, addr, size, dir, 0)``.
        Kernel: include/linux/dma-mapping.h:dma_unmap_page (a macro, v6.12)."""
        self.dma_unmap_page_attrs(dev, addr, size, dir, 0)

    def dma_map_sg_attrs(self, dev: Device, sg: Scatterlist, nents: int, dir: int,
                         attrs: int) -> int:
        """Map *nents* entries from *sg*: the number of DMA entries (each entry's
        ``dma_address``/``dma_length`` set), or 0 on failure with nothing left mapped.
        Kernel: kernel/dma/mapping.c:dma_map_sg_attrs (v6.12)."""
        rc = self._map_sg(dev, sg, nents, dir, attrs)
        return rc if rc > 0 else 0

    def dma_map_sg(self, dev: Device, sg: Scatterlist, nents: int, dir: int) -> int:
        """``dma_map_sg_attrs(dev, sg, nents, dir, 0)``: the number of DMA entries, or 0 on
        failure with nothing left mapped.  Kernel: include/linux/dma-mapping.h:dma_map_sg
        (a macro, v6.12)."""
        return self.dma_map_sg_attrs(dev, sg, nents, dir, 0)

    def _map_sg(self, dev: Device, sg: Scatterlist | None, nents: int, dir: int, attrs: int) -> int:
        """kernel/dma/mapping.c:__dma_map_sg_attrs + kernel/dma/direct.c:dma_direct_map_sg."""
        from .bug import external_caller
        if not _valid_dir(dir):
            self._warn("dma_map_sg", f"BUG_ON(!valid_dma_direction({dir}))")
            return -errno.EINVAL
        if sg is None or nents <= 0:
            return -errno.EINVAL
        fi = self.faults
        if fi.active:
            rc = fi.hit("dma_map_sg", nents=nents)
            if rc is not None:
                return rc
        m = DmaMapping(dev, dir, sg, nents, external_caller(3))
        for _, s in for_each_sg(sg, nents):
            if s.page is None:
                self._warn("dma_map_sg", "mapping an sg entry with no page")
                return -errno.EINVAL
            addr = self._direct_map_page(dev, s.page, s.offset, s.length)
            if addr == DMA_MAPPING_ERROR:
                for _, t in for_each_sg(sg, len(m.segments)):
                    t.dma_address, t.dma_length = 0, 0
                return -errno.EIO
            s.dma_address, s.dma_length = addr, s.length
            self._record_view(m, s.page, s.offset, s.length, addr)
        dev.mappings[("sg", id(sg))] = m
        self._trace("dma_map_sg", dev=dev.name, nents=nents)
        return nents

    def dma_unmap_sg_attrs(self, dev: Device, sg: Scatterlist, nents: int, dir: int,
                           attrs: int) -> None:
        """Unmap what :meth:`dma_map_sg` mapped; *nents* must be the count passed to it
        (not the one it returned), *dir* the same direction (else a recorded DMA-API
        debug warning).  Kernel: kernel/dma/mapping.c:dma_unmap_sg_attrs (v6.12)."""
        m = dev.mappings.get(("sg", id(sg)))
        if m is None or m.handle is not sg:
            self._warn("dma_unmap_sg", f"{dev.name}: device driver tries to free DMA memory it has not "
                                        f"allocated [sg with {nents} entries]")
            return
        if m.nents != nents or m.dir != dir:
            self._warn("dma_unmap_sg", f"{dev.name}: device driver frees DMA sg list with different "
                                        f"entry count or direction [map count={m.nents} "
                                        f"{_DIR_NAMES[m.dir]}] [unmap count={nents} "
                                        f"{_DIR_NAMES.get(dir, dir)}]")
        del dev.mappings[("sg", id(sg))]

    def dma_unmap_sg(self, dev: Device, sg: Scatterlist, nents: int, dir: int) -> None:
        """``dma_unmap_sg_attrs(dev, sg, nents, dir, 0)``; *nents* is the count passed to
        :meth:`dma_map_sg`.  Kernel: include/linux/dma-mapping.h:dma_unmap_sg (a macro, v6.12)."""
        self.dma_unmap_sg_attrs(dev, sg, nents, dir, 0)

    def dma_map_sgtable(self, dev: Device, sgt: SgTable, dir: int, attrs: int) -> int:
        """Map ``sgt->orig_nents`` entries and set ``sgt->nents``: 0, or -EINVAL, -EIO
        (a page could not be mapped), -ENOMEM/-EREMOTEIO (fault site) with nothing
        mapped.  Kernel: kernel/dma/mapping.c:dma_map_sgtable (v6.12)."""
        rc = self._map_sg(dev, sgt.sgl, sgt.orig_nents, dir, attrs)
        if rc < 0:
            return rc
        sgt.nents = rc
        return 0

    def dma_unmap_sgtable(self, dev: Device, sgt: SgTable, dir: int, attrs: int) -> None:
        """``dma_unmap_sg_attrs(dev, sgt->sgl, sgt->orig_nents, dir, attrs)``.
        Kernel: include/linux/dma-mapping.h:dma_unmap_sgtable (v6.12)."""
        self.dma_unmap_sg_attrs(dev, sgt.sgl, sgt.orig_nents, dir, attrs)  # type: ignore[arg-type]  # sgl is None only for an empty table, which the call refuses (TypeError)

    # ---------------------------------------------------------------- sync
    def _find_mapping(self, dev: Device, addr: int, size: int) -> DmaMapping | None:
        for m in dev.mappings.values():
            for _, _, sz, a in m.segments:
                if a <= addr and addr + size <= a + sz:
                    return m
        return None

    def _sync_single(self, dev: Device, addr: int, size: int, dir: int, who: str) -> None:
        m = self._find_mapping(dev, addr, size)
        if m is None:
            self._warn(who, f"{dev.name}: device driver tries to sync DMA memory it has not allocated "
                            f"[device address={addr:#x}] [size={size} bytes]")
        elif m.dir != dir and m.dir != DMA_BIDIRECTIONAL:
            self._warn(who, f"{dev.name}: device driver syncs DMA memory with different direction "
                            f"[mapped {_DIR_NAMES[m.dir]}] [synced {_DIR_NAMES.get(dir, dir)}]")

    def dma_sync_single_for_cpu(self, dev: Device, addr: int, size: int, dir: int) -> None:
        """Hand a mapped range to the CPU (checked, no data moves on a coherent device).
        Kernel: kernel/dma/mapping.c:__dma_sync_single_for_cpu (v6.12)."""
        self._sync_single(dev, addr, size, dir, "dma_sync_single_for_cpu")

    def dma_sync_single_for_device(self, dev: Device, addr: int, size: int, dir: int) -> None:
        """Kernel: kernel/dma/mapping.c:__dma_sync_single_for_device (v6.12)."""
        self._sync_single(dev, addr, size, dir, "dma_sync_single_for_device")

    def _sync_sg(self, dev: Device, sg: Scatterlist | None, nelems: int, dir: int, who: str) -> None:
        m = dev.mappings.get(("sg", id(sg)))
        if m is None:
            self._warn(who, f"{dev.name}: device driver tries to sync an sg list it has not mapped")
        elif m.dir != dir and m.dir != DMA_BIDIRECTIONAL:
            self._warn(who, f"{dev.name}: device driver syncs an sg list with different direction "
                            f"[mapped {_DIR_NAMES[m.dir]}] [synced {_DIR_NAMES.get(dir, dir)}]")

    def dma_sync_sg_for_cpu(self, dev: Device, sg: Scatterlist, nelems: int, dir: int) -> None:
        """Kernel: kernel/dma/mapping.c:__dma_sync_sg_for_cpu (v6.12)."""
        self._sync_sg(dev, sg, nelems, dir, "dma_sync_sg_for_cpu")

    def dma_sync_sg_for_device(self, dev: Device, sg: Scatterlist, nelems: int, dir: int) -> None:
        """Kernel: kernel/dma/mapping.c:__dma_sync_sg_for_device (v6.12)."""
        self._sync_sg(dev, sg, nelems, dir, "dma_sync_sg_for_device")

    def dma_sync_sgtable_for_cpu(self, dev: Device, sgt: SgTable, dir: int) -> None:
        """Kernel: include/linux/dma-mapping.h:dma_sync_sgtable_for_cpu (v6.12)."""
        self._sync_sg(dev, sgt.sgl, sgt.orig_nents, dir, "dma_sync_sgtable_for_cpu")

    def dma_sync_sgtable_for_device(self, dev: Device, sgt: SgTable, dir: int) -> None:
        """Kernel: include/linux/dma-mapping.h:dma_sync_sgtable_for_device (v6.12)."""
        self._sync_sg(dev, sgt.sgl, sgt.orig_nents, dir, "dma_sync_sgtable_for_device")

    # ---------------------------------------------------------------- the device's view
    def _dma_segment(self, dev: Device, addr: int, write: bool) -> tuple[Page, int, int] | None:
        for m in dev.mappings.values():
            if write and m.dir == DMA_TO_DEVICE or not write and m.dir == DMA_FROM_DEVICE:
                continue
            for page, off, size, a in m.segments:
                if a <= addr < a + size:
                    return page, off + addr - a, a + size - addr
        return None

    def _dma_access(self, dev: Device, addr: int, n: int, data: bytes | None) -> bytes | int:
        out = bytearray()
        pos = 0
        while pos < n:
            seg = self._dma_segment(dev, addr + pos, data is not None)
            if seg is None:
                self._warn("dma_device_access", f"{dev.name}: DMA {'write' if data is not None else 'read'} "
                                                f"at {addr + pos:#x} outside every live mapping (IOMMU fault)")
                return -errno.EFAULT
            page, off, left = seg
            f = page.folio
            at = ((page.pfn - f.pfn) << PAGE_SHIFT) + off
            take = min(n - pos, left, f.size - at)
            if data is not None:
                f.write(at, data[pos:pos + take])
            else:
                out += f.read(at, take)
            pos += take
        return n if data is not None else bytes(out)

    def dma_device_write(self, dev: Device, addr: int, data: bytes) -> int:
        """The device writes *data* at DMA address *addr* (model only): bytes written,
        or -EFAULT (a recorded IOMMU-fault warning) where nothing is mapped for writing."""
        return self._dma_access(dev, addr, len(data), bytes(data))  # type: ignore[return-value]

    def dma_device_read(self, dev: Device, addr: int, n: int) -> bytes | int:
        """The device reads *n* bytes at DMA address *addr* (model only)."""
        return self._dma_access(dev, addr, n, None)

    # ---------------------------------------------------------------- coherence probe
    def _dma_coherence(self) -> Iterator[tuple[str, tuple[Any, ...], Any]]:
        for dev in self._devices:
            for m in list(dev.mappings.values()):
                for (page, _, _, addr), (f, mapping, index, rmap) in zip(m.segments, m._views):
                    why, now = None, None
                    if f.freed:
                        why = "was freed (or migrated away) while DMA-mapped"
                    elif mapping is not None and f.mapping is None:
                        why = f"was truncated out of {getattr(mapping.host, 'name', 'its file')} while DMA-mapped"
                    elif mapping is not None and mapping.lookup(index) not in (None, f):
                        now = mapping.lookup(index)
                        why = "was replaced in the page cache (migrated) while DMA-mapped"
                    else:
                        for mm, (kind, vpn) in rmap:
                            ent = mm.pte.get(vpn) if kind == "pte" else mm.huge.get(vpn)
                            cur = ent[0] if isinstance(ent, tuple) else ent
                            if cur is not None and cur is not f:
                                now = cur
                                why = f"is no longer what the page table maps at {vpn << PAGE_SHIFT:#x} " \
                                      f"(migrated) while DMA-mapped"
                                break
                    if why:
                        yield (f"{dev.name}: page pfn={page.pfn:#x} mapped at DMA {addr:#x} by "
                               f"{m.caller} {why}", (f, now), (id(m), page.pfn))
