"""The dma-buf core: export, descriptors, references, attachments, CPU access, vmap.

Kernel: drivers/dma-buf/dma-buf.c (dma_buf_export, dma_buf_getfile, dma_buf_fd,
dma_buf_get, dma_buf_put, dma_buf_release, dma_buf_dynamic_attach, dma_buf_attach,
dma_buf_detach, dma_buf_map_attachment(_unlocked), dma_buf_unmap_attachment(_unlocked),
dma_buf_begin_cpu_access, dma_buf_end_cpu_access, dma_buf_vmap(_unlocked),
dma_buf_vunmap(_unlocked)), include/linux/dma-buf.h (struct dma_buf_ops,
struct dma_buf_export_info, get_dma_buf), v6.12.

An exporter passes ``DmaBufExportInfo(ops=..., size=..., priv=..., flags=...)``; ``ops``
is any object whose attributes are the ``struct dma_buf_ops`` callbacks (missing or None
means NULL), called with the kernel's arguments (``ops.map_dma_buf(attach, dir)`` ...).
The dma-buf's file is a :class:`~pytest_pinfault.mm.file.File`: ``dma_buf_fd`` installs it,
``get_dma_buf``/``dma_buf_put`` are ``get_file``/``fput``, and the last reference calls
``ops.release(dmabuf)`` (``dma_buf_release``).  Allocations go through the ``kmalloc``
site where the kernel allocates (the file, the dma_buf, each attachment).

Counters: ``dma_buf.refs`` (references on dma-bufs not yet released: a dma-buf still
alive at teardown, from a leaked ``get_dma_buf``, an attachment's owner or an fd never
closed), ``dma_buf.attachments`` and ``dma_buf.vmaps`` (rule 4 at teardown, rule 2 on
error returns).

.. note:: No reservation objects or fences (``resv`` is accepted and ignored; the
   ``_unlocked`` variants equal the locked ones), no dynamic importers' move_notify, no
   ``dma_buf_mmap`` (drivers implement their mmap op on the fake mm directly), no
   debugfs or sysfs stats.
"""

from __future__ import annotations

import dataclasses
import errno
from typing import TYPE_CHECKING, Any

from .dma_mapping import DMA_BIDIRECTIONAL
from .file import File
from .gfp import GFP_KERNEL

if TYPE_CHECKING:  # pragma: no cover
    from ._proto import FakeMMProto
    from .dma_mapping import Device
    from .fakemm import FakeMM

if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object

__all__ = ["DmaBuf", "DmaBufAttachment", "DmaBufExportInfo", "IosysMap", "SIZEOF_DMA_BUF"]

SIZEOF_DMA_BUF = 512
SIZEOF_FILE = 232
SIZEOF_ATTACHMENT = 96
O_ACCMODE, O_NONBLOCK = 0o3, 0o4000


def _op(ops: Any, name: str) -> Any:
    return getattr(ops, name, None)


@dataclasses.dataclass
class DmaBufExportInfo:
    """``struct dma_buf_export_info`` (DEFINE_DMA_BUF_EXPORT_INFO fills exp_name/owner)."""

    ops: Any = None
    size: int = 0
    priv: Any = None
    flags: int = 0
    exp_name: str = "fake"
    owner: Any = None
    resv: Any = None


class IosysMap:
    """``struct iosys_map``: ``vaddr`` (whatever the exporter's vmap put there; None is
    the cleared map)."""

    __slots__ = ("vaddr",)

    def __init__(self, vaddr: Any = None) -> None:
        self.vaddr: Any = vaddr

    def is_null(self) -> bool:
        return self.vaddr is None

    def __repr__(self) -> str:
        return f"<iosys_map {self.vaddr!r}>"


class DmaBuf:
    """``struct dma_buf``: ``size``, ``file``, ``ops``, ``priv``, ``exp_name``,
    ``attachments``, ``vmapping_counter``/``vmap_ptr``."""

    def __init__(self, info: DmaBufExportInfo, file: File, kobj: Any) -> None:
        self.size: int = info.size
        self.ops: Any = info.ops
        self.priv: Any = info.priv
        self.exp_name: str = info.exp_name
        self.owner: Any = info.owner
        self.file = file
        self.kobj = kobj
        self.attachments: list[DmaBufAttachment] = []
        self.vmapping_counter = 0
        self.vmap_ptr: IosysMap = IosysMap()
        self.released = False

    def __repr__(self) -> str:
        return (f"<dma_buf {self.exp_name} size={self.size} refs={self.file.f_count}"
                f"{' released' if self.released else ''}>")


class DmaBufAttachment:
    """``struct dma_buf_attachment``: ``dmabuf``, ``dev``, ``sgt``/``dir`` (a cached
    mapping), ``priv`` (the exporter's), ``importer_ops``/``importer_priv``."""

    def __init__(self, dmabuf: DmaBuf, dev: Any, kobj: Any) -> None:
        self.dmabuf = dmabuf
        self.dev = dev
        self.kobj = kobj
        self.sgt: Any = None
        self.dir = DMA_BIDIRECTIONAL
        self.priv: Any = None
        self.importer_ops: Any = None
        self.importer_priv: Any = None

    def __repr__(self) -> str:
        return f"<dma_buf_attachment {self.dmabuf.exp_name} -> {getattr(self.dev, 'name', self.dev)}>"


class _DmaBufFops:
    """dma_buf_fops: the file's last reference releases the dma-buf."""

    def __init__(self, k: "FakeMMProto") -> None:
        self.k = k

    def release(self, file: File) -> None:
        self.k._dma_buf_release(file.private_data)


def _is_err(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x < 0


class DmaBufMixin(_Base):
    """drivers/dma-buf/dma-buf.c half of :class:`~pytest_pinfault.FakeMM`."""

    def _init_dma_buf(self) -> None:
        self._dmabufs: dict[int, DmaBuf] = {}
        self._dma_buf_fops = _DmaBufFops(self)
        c = self.counters
        c.register("dma_buf.refs", self._read_dma_buf_refs,
                   doc="references on dma-bufs not released")
        c.register("dma_buf.attachments", self._read_dma_buf_attachments,
                   doc="dma-buf attachments never detached")
        c.register("dma_buf.vmaps", self._read_dma_buf_vmaps,
                   doc="dma-buf vmaps never vunmapped")

    # the counters' readers (bound methods: no cell or closure tuple per machine)
    def _read_dma_buf_refs(self) -> dict[Any, int]:
        return {b: b.file.f_count for b in self._dmabufs.values()} if self._dmabufs else {}

    def _read_dma_buf_attachments(self) -> dict[Any, int]:
        return {b: len(b.attachments) for b in self._dmabufs.values()} if self._dmabufs else {}

    def _read_dma_buf_vmaps(self) -> dict[Any, int]:
        return {b: b.vmapping_counter for b in self._dmabufs.values()} if self._dmabufs else {}

    # ---------------------------------------------------------------- export
    def dma_buf_export(self, exp_info: DmaBufExportInfo) -> DmaBuf | int:
        """A new dma-buf with one reference (its file's), or -EINVAL (a WARN: no priv, no
        ops, or ops without map_dma_buf/unmap_dma_buf/release; pin without unpin; a
        cached sgt mapping with pin) / -ENOMEM (the file or the dma_buf allocation).
        Kernel: drivers/dma-buf/dma-buf.c:dma_buf_export (v6.12)."""
        ops = exp_info.ops
        if (exp_info.priv is None or ops is None or _op(ops, "map_dma_buf") is None
                or _op(ops, "unmap_dma_buf") is None or _op(ops, "release") is None):
            self._warn("dma_buf_export", "WARN_ON(!exp_info->priv || !exp_info->ops || !map_dma_buf "
                                         "|| !unmap_dma_buf || !release)")
            return -errno.EINVAL
        if getattr(ops, "cache_sgt_mapping", False) and (_op(ops, "pin") or _op(ops, "unpin")):
            self._warn("dma_buf_export", "WARN_ON(cache_sgt_mapping && (pin || unpin))")
            return -errno.EINVAL
        if (_op(ops, "pin") is None) != (_op(ops, "unpin") is None):
            self._warn("dma_buf_export", "WARN_ON(!pin != !unpin)")
            return -errno.EINVAL
        fobj = self.kmalloc(SIZEOF_FILE, GFP_KERNEL)              # dma_buf_getfile: alloc_file_pseudo
        if fobj is None:
            return -errno.ENOMEM
        file = File("dmabuf", self._dma_buf_fops, None, exp_info.flags & (O_ACCMODE | O_NONBLOCK))
        kobj = self.kmalloc(SIZEOF_DMA_BUF, GFP_KERNEL)           # kzalloc(struct dma_buf + resv)
        if kobj is None:
            self.kfree(fobj)                                      # err_file: fput(file)
            return -errno.ENOMEM
        file._fobj = fobj
        dmabuf = DmaBuf(exp_info, file, kobj)
        file.private_data = dmabuf
        self._dmabufs[id(dmabuf)] = dmabuf
        self._trace("dma_buf_export", name=exp_info.exp_name, size=exp_info.size)
        return dmabuf

    def _dma_buf_release(self, dmabuf: DmaBuf) -> None:
        """dma_buf_release: the exporter's release, then the dma_buf is freed."""
        if dmabuf.vmapping_counter:
            self._warn("dma_buf_release", f"BUG_ON(dmabuf->vmapping_counter): {dmabuf!r} released while vmapped")
        dmabuf.ops.release(dmabuf)
        if dmabuf.attachments:
            self._warn("dma_buf_release", f"WARN_ON(!list_empty(&dmabuf->attachments)): "
                                          f"{len(dmabuf.attachments)} attachment(s) left")
        dmabuf.released = True
        self._dmabufs.pop(id(dmabuf), None)
        self.kfree(dmabuf.kobj)
        self.kfree(getattr(dmabuf.file, "_fobj", None))

    def dma_buf_fd(self, dmabuf: DmaBuf, flags: int) -> int:
        """Install the dma-buf's file (its reference goes to the table): the fd, or
        -EINVAL / -EMFILE.  Kernel: drivers/dma-buf/dma-buf.c:dma_buf_fd (v6.12)."""
        if dmabuf is None or _is_err(dmabuf) or dmabuf.file is None:
            return -errno.EINVAL
        return self._install_new(dmabuf.file, flags)

    def dma_buf_get(self, fd: int) -> DmaBuf | int:
        """The dma-buf behind *fd* with a new reference, or -EBADF / -EINVAL (not a
        dma-buf).  Kernel: drivers/dma-buf/dma-buf.c:dma_buf_get (v6.12)."""
        file = self.fget(fd)
        if file is None:
            return -errno.EBADF
        if getattr(file, "f_op", None) is not self._dma_buf_fops:
            self.fput(file)
            return -errno.EINVAL
        dmabuf: DmaBuf = file.private_data        # dma-buf files carry their DmaBuf
        return dmabuf

    def get_dma_buf(self, dmabuf: DmaBuf) -> None:
        """Take a reference.  Kernel: include/linux/dma-buf.h:get_dma_buf."""
        self.get_file(dmabuf.file)

    def dma_buf_put(self, dmabuf: DmaBuf) -> None:
        """Drop a reference; the last one releases the dma-buf (WARN on NULL).
        Kernel: drivers/dma-buf/dma-buf.c:dma_buf_put (v6.12)."""
        if dmabuf is None or _is_err(dmabuf) or dmabuf.file is None:
            self._warn("dma_buf_put", "WARN_ON(!dmabuf || !dmabuf->file)")
            return
        self.fput(dmabuf.file)

    # ---------------------------------------------------------------- attachments
    def dma_buf_dynamic_attach(self, dmabuf: DmaBuf, dev: "Device", importer_ops: Any,
                               importer_priv: Any) -> DmaBufAttachment | int:
        """Attach *dev*; the exporter's ``attach`` op may refuse (its errno).  An
        exporter with ``pin``/``unpin`` (dynamic) and a static importer get the mapping
        made and cached here.  Kernel: drivers/dma-buf/dma-buf.c:dma_buf_dynamic_attach."""
        if dmabuf is None or dev is None:
            self._warn("dma_buf_attach", "WARN_ON(!dmabuf || !dev)")
            return -errno.EINVAL
        kobj = self.kmalloc(SIZEOF_ATTACHMENT, GFP_KERNEL)
        if kobj is None:
            return -errno.ENOMEM
        attach = DmaBufAttachment(dmabuf, dev, kobj)
        attach.importer_ops, attach.importer_priv = importer_ops, importer_priv
        op = _op(dmabuf.ops, "attach")
        if op is not None:
            ret: int = op(dmabuf, attach)        # the exporter's int
            if ret:
                self.kfree(kobj)
                return ret
        dmabuf.attachments.append(attach)
        dynamic_exp = _op(dmabuf.ops, "pin") is not None
        if dynamic_exp != (importer_ops is not None):
            if dynamic_exp:
                ret = dmabuf.ops.pin(attach)
                if ret:
                    self.dma_buf_detach(dmabuf, attach)
                    return ret
            sgt = dmabuf.ops.map_dma_buf(attach, DMA_BIDIRECTIONAL)
            if sgt is None or _is_err(sgt):
                if dynamic_exp:
                    dmabuf.ops.unpin(attach)
                self.dma_buf_detach(dmabuf, attach)
                return sgt if _is_err(sgt) else -errno.ENOMEM
            attach.sgt, attach.dir = sgt, DMA_BIDIRECTIONAL
        return attach

    def dma_buf_attach(self, dmabuf: DmaBuf, dev: "Device") -> DmaBufAttachment | int:
        """Kernel: drivers/dma-buf/dma-buf.c:dma_buf_attach (v6.12)."""
        return self.dma_buf_dynamic_attach(dmabuf, dev, None, None)

    def dma_buf_detach(self, dmabuf: DmaBuf, attach: DmaBufAttachment) -> None:
        """Unmap a cached mapping, call the exporter's ``detach``, free the attachment.
        Kernel: drivers/dma-buf/dma-buf.c:dma_buf_detach (v6.12)."""
        if dmabuf is None or attach is None or attach.dmabuf is not dmabuf or attach not in dmabuf.attachments:
            self._warn("dma_buf_detach", "WARN_ON(!dmabuf || !attach || dmabuf != attach->dmabuf)")
            return
        if attach.sgt is not None:
            dmabuf.ops.unmap_dma_buf(attach, attach.sgt, attach.dir)
            if _op(dmabuf.ops, "unpin") is not None:
                dmabuf.ops.unpin(attach)
            attach.sgt = None
        dmabuf.attachments.remove(attach)
        op = _op(dmabuf.ops, "detach")
        if op is not None:
            op(dmabuf, attach)
        self.kfree(attach.kobj)

    def dma_buf_map_attachment(self, attach: DmaBufAttachment, direction: int) -> Any:
        """The exporter's sg table for the attachment (cached when the exporter says
        ``cache_sgt_mapping``), or -errno (-EBUSY: a cached mapping in another
        direction; -ENOMEM for a NULL from the exporter).
        Kernel: drivers/dma-buf/dma-buf.c:dma_buf_map_attachment (v6.12)."""
        if attach is None or attach.dmabuf is None:
            self._warn("dma_buf_map_attachment", "WARN_ON(!attach || !attach->dmabuf)")
            return -errno.EINVAL
        dmabuf = attach.dmabuf
        if attach.sgt is not None:
            if attach.dir != direction and attach.dir != DMA_BIDIRECTIONAL:
                return -errno.EBUSY
            return attach.sgt
        dynamic = _op(dmabuf.ops, "pin") is not None
        if dynamic:
            r = dmabuf.ops.pin(attach)
            if r:
                return r
        sgt = dmabuf.ops.map_dma_buf(attach, direction)
        if sgt is None:
            sgt = -errno.ENOMEM
        if _is_err(sgt) and dynamic:
            dmabuf.ops.unpin(attach)
        if not _is_err(sgt) and getattr(dmabuf.ops, "cache_sgt_mapping", False):
            attach.sgt, attach.dir = sgt, direction
        return sgt

    dma_buf_map_attachment_unlocked = dma_buf_map_attachment

    def dma_buf_unmap_attachment(self, attach: DmaBufAttachment, sg_table: Any,
                                 direction: int) -> None:
        """Give a mapping back (a cached one stays until detach).
        Kernel: drivers/dma-buf/dma-buf.c:dma_buf_unmap_attachment (v6.12)."""
        if attach is None or attach.dmabuf is None or sg_table is None:
            self._warn("dma_buf_unmap_attachment", "WARN_ON(!attach || !attach->dmabuf || !sg_table)")
            return
        if attach.sgt is sg_table:
            return
        attach.dmabuf.ops.unmap_dma_buf(attach, sg_table, direction)
        if _op(attach.dmabuf.ops, "unpin") is not None:
            attach.dmabuf.ops.unpin(attach)

    dma_buf_unmap_attachment_unlocked = dma_buf_unmap_attachment

    # ---------------------------------------------------------------- CPU access
    def dma_buf_begin_cpu_access(self, dmabuf: DmaBuf, direction: int) -> int:
        """The exporter's ``begin_cpu_access`` (0 without one).
        Kernel: drivers/dma-buf/dma-buf.c:dma_buf_begin_cpu_access (v6.12)."""
        if dmabuf is None:
            self._warn("dma_buf_begin_cpu_access", "WARN_ON(!dmabuf)")
            return -errno.EINVAL
        op = _op(dmabuf.ops, "begin_cpu_access")
        return op(dmabuf, direction) if op is not None else 0

    def dma_buf_end_cpu_access(self, dmabuf: DmaBuf, direction: int) -> int:
        """Kernel: drivers/dma-buf/dma-buf.c:dma_buf_end_cpu_access (v6.12)."""
        if dmabuf is None:
            self._warn("dma_buf_end_cpu_access", "WARN_ON(!dmabuf)")
            return -errno.EINVAL
        op = _op(dmabuf.ops, "end_cpu_access")
        return op(dmabuf, direction) if op is not None else 0

    def dma_buf_vmap(self, dmabuf: DmaBuf, map: IosysMap) -> int:
        """Map the buffer for the kernel, counted: the first call asks the exporter's
        ``vmap(dmabuf, map)``; *map* gets the shared mapping.  0, or -EINVAL (no vmap
        op) / the exporter's errno (a WARN).
        Kernel: drivers/dma-buf/dma-buf.c:dma_buf_vmap (v6.12)."""
        map.vaddr = None
        if dmabuf is None:
            self._warn("dma_buf_vmap", "WARN_ON(!dmabuf)")
            return -errno.EINVAL
        op = _op(dmabuf.ops, "vmap")
        if op is None:
            return -errno.EINVAL
        if dmabuf.vmapping_counter:
            dmabuf.vmapping_counter += 1
            map.vaddr = dmabuf.vmap_ptr.vaddr
            return 0
        ptr = IosysMap()
        ret: int = op(dmabuf, ptr)                # the exporter's int
        if ret:
            self._warn("dma_buf_vmap", f"WARN_ON_ONCE(ret): exporter vmap failed with {ret}")
            return ret
        dmabuf.vmap_ptr = ptr
        dmabuf.vmapping_counter = 1
        map.vaddr = ptr.vaddr
        return 0

    dma_buf_vmap_unlocked = dma_buf_vmap

    def dma_buf_vunmap(self, dmabuf: DmaBuf, map: IosysMap) -> None:
        """Drop a vmap; the last one calls the exporter's ``vunmap``.  Unbalanced or
        mismatched calls are the kernel's BUG_ON: recorded warnings here.
        Kernel: drivers/dma-buf/dma-buf.c:dma_buf_vunmap (v6.12)."""
        if dmabuf is None:
            self._warn("dma_buf_vunmap", "WARN_ON(!dmabuf)")
            return
        if dmabuf.vmapping_counter == 0 or dmabuf.vmap_ptr.vaddr is not map.vaddr:
            self._warn("dma_buf_vunmap", "BUG_ON(vmapping_counter == 0 || vmap_ptr != map)")
            return
        dmabuf.vmapping_counter -= 1
        if dmabuf.vmapping_counter == 0:
            op = _op(dmabuf.ops, "vunmap")
            if op is not None:
                op(dmabuf, map)
            dmabuf.vmap_ptr = IosysMap()

    dma_buf_vunmap_unlocked = dma_buf_vunmap
