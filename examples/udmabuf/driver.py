"""A Python model of drivers/dma-buf/udmabuf.c (v6.11+ behaviour, v6.13 structure).

`/dev/udmabuf` turns ranges of sealed memfds (shmem or hugetlbfs) into a dma-buf.  The
driver pins the backing folios long-term with ``memfd_pin_folios()`` (which migrates them
out of ZONE_MOVABLE/CMA first), expands them into a per-page (folio, offset) table that
mmap/vmap/the sg tables read through, and unpins everything when the dma-buf is released
or any step of the create path fails.

Written against pytest-pinfault's public API only: the fake mm (``memfd_pin_folios``,
``unpin_folio(s)``, ``kmalloc``/``kvmalloc_array``/``kfree``, ``fault_point``, the
descriptor table -- ``fget``/``fput``, the dma-buf core -- ``dma_buf_export``,
``dma_buf_fd``, ``dma_buf_put``, and the sg/DMA API -- ``sg_alloc_table``,
``sg_set_folio``, ``dma_map_sgtable`` on the misc device) and ``pin_entry_point``.  Kernel references: include/uapi/linux/udmabuf.h,
drivers/dma-buf/udmabuf.c (``udmabuf_ioctl``, ``udmabuf_create``, ``check_memfd_seals``,
``udmabuf_pin_folios``, ``release_udmabuf``, ``mmap_udmabuf``, ``vmap_udmabuf``,
``begin_cpu_udmabuf``, ``map_udmabuf``); see kernel-contract.md section 5.

Driver fault sites (declared by this directory's conftest.py):

* ``udmabuf.dma_buf_export`` (-ENOMEM): ``dma_buf_export()`` fails for a reason the
  core does not model (the anonymous inode); its own allocations hit ``kmalloc``;
* ``udmabuf.dma_buf_fd`` (-EMFILE): ``dma_buf_fd()`` finds no free descriptor (the core
  gives -EMFILE too when RLIMIT_NOFILE is reached).

The sg tables of ``map_dma_buf``/``begin_cpu_access`` are real ``sg_alloc_table`` tables:
they fail at the ``kmalloc``/``alloc_pages`` sites, and their DMA mapping at
``dma_map_sg``/``dma_map_page``.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from pytest_pinfault import Out, pin_entry_point
from pytest_pinfault.mm import (F_SEAL_FUTURE_WRITE, F_SEAL_SHRINK, F_SEAL_WRITE, GFP_KERNEL, MAP_SHARED,
                                PAGE_SHIFT, PAGE_SIZE)
from pytest_pinfault.mm.dma_buf import DmaBufExportInfo
from pytest_pinfault.mm.dma_mapping import DMA_BIDIRECTIONAL
from pytest_pinfault.mm.file import O_CLOEXEC, O_RDWR
from pytest_pinfault.mm.scatterlist import SgTable, for_each_sgtable_sg, sg_set_folio

__all__ = ["UDMABUF_FLAGS_CLOEXEC", "UDMABUF_CREATE", "UDMABUF_CREATE_LIST", "udmabuf_create",
           "udmabuf_create_item", "udmabuf_create_list", "UdmabufDevice", "UdmaBuf", "UdmabufOps",
           "SITES", "EBADFD"]

EBADFD = errno.EBADFD

# ----------------------------------------------------------------------------- UAPI


def _IOW(type_: str, nr: int, size: int) -> int:
    """include/uapi/asm-generic/ioctl.h: dir=WRITE(1) << 30 | size << 16 | type << 8 | nr."""
    return (1 << 30) | (size << 16) | (ord(type_) << 8) | nr


UDMABUF_FLAGS_CLOEXEC = 0x01


@dataclass
class udmabuf_create:
    """``struct udmabuf_create { __u32 memfd; __u32 flags; __u64 offset; __u64 size; }``"""
    memfd: int
    flags: int = 0
    offset: int = 0
    size: int = 0


@dataclass
class udmabuf_create_item:
    """``struct udmabuf_create_item { __u32 memfd; __u32 __pad; __u64 offset; __u64 size; }``"""
    memfd: int
    offset: int = 0
    size: int = 0
    pad: int = 0                      # ``__pad``: not validated by the driver


@dataclass
class udmabuf_create_list:
    """``struct udmabuf_create_list { __u32 flags; __u32 count; struct udmabuf_create_item list[]; }``"""
    flags: int = 0
    count: int = 0
    list: list = field(default_factory=list)


UDMABUF_CREATE = _IOW("u", 0x42, 24)         # sizeof(struct udmabuf_create)
UDMABUF_CREATE_LIST = _IOW("u", 0x43, 8)     # sizeof(struct udmabuf_create_list)

# driver fault sites: name -> (errnos, meaning); conftest.py declares them for the run
SITES = {
    "udmabuf.dma_buf_export": (["ENOMEM"], "dma_buf_export() fails in udmabuf_create"),
    "udmabuf.dma_buf_fd": (["EMFILE"], "dma_buf_fd() finds no free file descriptor"),
}

# ----------------------------------------------------------------------------- the buffer

class UdmaBuf:
    """``struct udmabuf`` behind an exported dma-buf: ``pagecount``, the per-page
    ``folios``/``offsets`` tables, ``pinned_folios`` (one pin each), the cached sg table."""

    def __init__(self, dev: "UdmabufDevice", obj) -> None:
        self.dev = dev
        self.k = dev.k
        self.obj = obj                        # kzalloc(sizeof(*ubuf))
        self.pagecount = 0
        self.folios_arr = self.offsets_arr = self.pinned_arr = None
        self.nr_pinned = 0
        self.sg: SgTable | None = None
        self.sg_objs: dict = {}
        self.released = False

    # the C arrays live in the kvmalloc'd objects' ``items``
    @property
    def folios(self) -> list:
        return self.folios_arr.items

    @property
    def offsets(self) -> list:
        return self.offsets_arr.items

    @property
    def pinned_folios(self) -> list:
        return self.pinned_arr.items[:self.nr_pinned]

    @property
    def size(self) -> int:
        return self.pagecount << PAGE_SHIFT

    # ------------------------------------------------------------- init/deinit
    def init(self, pgcnt: int) -> int:
        """init_udmabuf: the per-page tables and the pinned list (-ENOMEM)."""
        k = self.k
        self.folios_arr = k.kvmalloc_array(pgcnt, 8, GFP_KERNEL)
        if self.folios_arr is None:
            return -errno.ENOMEM
        self.offsets_arr = k.kvmalloc_array(pgcnt, 8, GFP_KERNEL)
        if self.offsets_arr is None:
            return -errno.ENOMEM
        self.pinned_arr = k.kvmalloc_array(pgcnt, 8, GFP_KERNEL)
        if self.pinned_arr is None:
            return -errno.ENOMEM
        return 0

    def unpin_all(self) -> None:
        """unpin_all_folios: one ``unpin_folio()`` per recorded pin."""
        for folio in self.pinned_folios:
            self.k.unpin_folio(folio)
        self.nr_pinned = 0

    def deinit(self) -> None:
        """deinit_udmabuf: unpin everything pinned so far and free the tables."""
        if self.pinned_arr is not None:
            self.unpin_all()
        for arr in (self.pinned_arr, self.offsets_arr, self.folios_arr):
            self.k.kfree(arr)
        self.pinned_arr = self.offsets_arr = self.folios_arr = None
        self.pagecount = 0

    def release(self) -> None:
        """release_udmabuf (the dma-buf's last reference went away)."""
        if self.released:
            return
        self.released = True
        if self.sg is not None:
            self._put_sg(self.dev.misc, self.sg, DMA_BIDIRECTIONAL)
            self.sg = None
        self.deinit()
        self.k.kfree(self.obj)

    # ------------------------------------------------------------- page access
    def _page(self, pgoff: int):
        if not 0 <= pgoff < self.pagecount:
            return None
        return self.folios[pgoff], self.offsets[pgoff]

    def _read(self, off: int, n: int) -> bytes | int:
        out = bytearray()
        while n > 0:
            ent = self._page(off >> PAGE_SHIFT)
            if ent is None:
                return -errno.EFAULT                  # VM_FAULT_SIGBUS
            folio, foff = ent
            inpage = off & (PAGE_SIZE - 1)
            take = min(n, PAGE_SIZE - inpage)
            out += folio.read(foff + inpage, take)
            off += take
            n -= take
        return bytes(out)

    def _write(self, off: int, data: bytes) -> int:
        pos = 0
        while pos < len(data):
            ent = self._page((off + pos) >> PAGE_SHIFT)
            if ent is None:
                return -errno.EFAULT
            folio, foff = ent
            inpage = (off + pos) & (PAGE_SIZE - 1)
            take = min(len(data) - pos, PAGE_SIZE - inpage)
            folio.write(foff + inpage, data[pos:pos + take])
            pos += take
        return pos

    # ------------------------------------------------------------- dma-buf ops
    def mmap(self, flags: int = MAP_SHARED, pgoff: int = 0) -> "UdmabufMapping | int":
        """mmap_udmabuf: VM_PFNMAP mapping of the pinned pages; -EINVAL unless shared."""
        if self.released:
            return -errno.EBADF
        if flags & 0x0F != MAP_SHARED:
            return -errno.EINVAL
        return UdmabufMapping(self, pgoff)

    def vmap(self) -> "UdmabufMapping | int":
        """vmap_udmabuf: a PFN array (kvmalloc_array, -ENOMEM) and vmap_pfn()."""
        pfns = self.k.kvmalloc_array(self.pagecount, 8, GFP_KERNEL)
        if pfns is None:
            return -errno.ENOMEM
        for i in range(self.pagecount):
            folio, foff = self._page(i)
            pfns.items[i] = folio.pfn + (foff >> PAGE_SHIFT)
        return UdmabufMapping(self, 0, pfns)

    def vunmap(self, vmap: "UdmabufMapping") -> None:
        self.k.kfree(vmap.pfns)
        vmap.pfns = None

    def _get_sg(self, dev, direction: int) -> SgTable | int:
        """get_sg_table: kzalloc the table, sg_alloc_table, one sg_set_folio per page,
        dma_map_sgtable for *dev*; each failure undoes the steps before it."""
        k = self.k
        obj = k.kzalloc(16, GFP_KERNEL)                         # sizeof(struct sg_table)
        if obj is None:
            return -errno.ENOMEM
        sg = SgTable()
        ret = k.sg_alloc_table(sg, self.pagecount, GFP_KERNEL)
        if ret < 0:
            k.kfree(obj)
            return ret
        for i, sgl in for_each_sgtable_sg(sg):
            sg_set_folio(sgl, self.folios[i], PAGE_SIZE, self.offsets[i])
        ret = k.dma_map_sgtable(dev, sg, direction, 0)
        if ret < 0:
            k.sg_free_table(sg)
            k.kfree(obj)
            return ret
        self.sg_objs[id(sg)] = obj
        return sg

    def _put_sg(self, dev, sg: SgTable, direction: int) -> None:
        """put_sg_table: unmap, free the table and its allocation."""
        self.k.dma_unmap_sgtable(dev, sg, direction, 0)
        self.k.sg_free_table(sg)
        self.k.kfree(self.sg_objs.pop(id(sg), None))

    def map_dma_buf(self, dev=None, direction: int = DMA_BIDIRECTIONAL) -> SgTable | int:
        """map_udmabuf: a mapped table for the importer's device (the misc device by default)."""
        return self._get_sg(dev or self.dev.misc, direction)

    def unmap_dma_buf(self, sg: SgTable, dev=None, direction: int = DMA_BIDIRECTIONAL) -> None:
        """unmap_udmabuf."""
        self._put_sg(dev or self.dev.misc, sg, direction)

    def begin_cpu_access(self, direction: int = DMA_BIDIRECTIONAL) -> int:
        """begin_cpu_udmabuf: first call builds and caches the misc device's table; later
        calls sync it for the cpu."""
        if self.sg is None:
            sg = self._get_sg(self.dev.misc, direction)
            if isinstance(sg, int):
                return sg
            self.sg = sg
        else:
            self.k.dma_sync_sg_for_cpu(self.dev.misc, self.sg.sgl, self.sg.nents, direction)
        return 0

    def end_cpu_access(self, direction: int = DMA_BIDIRECTIONAL) -> int:
        """end_cpu_udmabuf: -EINVAL without a cached table, else sync for the device."""
        if self.sg is None:
            return -errno.EINVAL
        self.k.dma_sync_sg_for_device(self.dev.misc, self.sg.sgl, self.sg.nents, direction)
        return 0


class UdmabufMapping:
    """A user mapping (mmap) or kernel mapping (vmap) of a udmabuf; reads and writes go
    through the pinned folios, as the PFN mapping does."""

    def __init__(self, ubuf: UdmaBuf, pgoff: int, pfns=None) -> None:
        self.ubuf = ubuf
        self.base = pgoff << PAGE_SHIFT
        self.pfns = pfns

    def read(self, off: int, n: int) -> bytes | int:
        return self.ubuf._read(self.base + off, n)

    def write(self, off: int, data: bytes) -> int:
        return self.ubuf._write(self.base + off, data)


class UdmabufOps:
    """udmabuf_ops (``struct dma_buf_ops``) with the kernel's callback signatures."""

    cache_sgt_mapping = False

    def __init__(self, k) -> None:
        self.k = k

    def map_dma_buf(self, attach, direction: int):
        return attach.dmabuf.priv.map_dma_buf(attach.dev, direction)

    def unmap_dma_buf(self, attach, sg, direction: int) -> None:
        attach.dmabuf.priv.unmap_dma_buf(sg, attach.dev, direction)

    def release(self, dmabuf) -> None:
        dmabuf.priv.release()

    def begin_cpu_access(self, dmabuf, direction: int) -> int:
        return dmabuf.priv.begin_cpu_access(direction)

    def end_cpu_access(self, dmabuf, direction: int) -> int:
        return dmabuf.priv.end_cpu_access(direction)

    def vmap(self, dmabuf, map) -> int:
        v = dmabuf.priv.vmap()
        if isinstance(v, int):
            return v
        map.vaddr = v
        return 0

    def vunmap(self, dmabuf, map) -> None:
        dmabuf.priv.vunmap(map.vaddr)


# ----------------------------------------------------------------------------- the device


class UdmabufDevice:
    """The misc device ``/dev/udmabuf`` with its module parameters.  ``ioctl`` returns a
    new dma-buf fd in *files* or -errno."""

    ubuf_class = UdmaBuf

    def __init__(self, k, size_limit_mb: int = 64, list_limit: int = 1024) -> None:
        self.k = k                    # pin_entry_point finds the fake mm here
        self.misc = k.create_device("udmabuf")     # udmabuf_misc.this_device
        self.ops = UdmabufOps(k)
        self.size_limit_mb = size_limit_mb
        self.list_limit = list_limit

    @property
    def files(self):
        """The calling process's descriptor table."""
        return self.k.files()

    def dmabuf(self, fd: int) -> UdmaBuf | None:
        """The udmabuf behind a dma-buf descriptor (no reference taken; test helper)."""
        f = self.k.fd_file(fd)
        buf = getattr(f, "private_data", None)
        return buf.priv if getattr(buf, "ops", None) is self.ops else None

    @pin_entry_point(name="udmabuf_ioctl")
    def ioctl(self, cmd: int, arg) -> int:
        """udmabuf_ioctl: UDMABUF_CREATE / UDMABUF_CREATE_LIST, else -ENOTTY.  ``arg``
        None stands for a faulting user pointer (-EFAULT)."""
        if cmd == UDMABUF_CREATE:
            if not isinstance(arg, udmabuf_create):
                return -errno.EFAULT
            head = udmabuf_create_list(flags=arg.flags, count=1)
            items = [udmabuf_create_item(memfd=arg.memfd, offset=arg.offset, size=arg.size)]
            return self.create(head, items)
        if cmd == UDMABUF_CREATE_LIST:
            if not isinstance(arg, udmabuf_create_list):
                return -errno.EFAULT
            if arg.count > self.list_limit:
                return -errno.EINVAL
            if len(arg.list) < arg.count:             # memdup_user beyond the user buffer
                return -errno.EFAULT
            # memdup_user(): a kmalloc of count items (-ENOMEM), freed after create
            dup = self.k.kmalloc(max(arg.count, 1) * 24, GFP_KERNEL)
            if dup is None:
                return -errno.ENOMEM
            try:
                return self.create(arg, list(arg.list[:arg.count]))
            finally:
                self.k.kfree(dup)
        return -errno.ENOTTY

    # ------------------------------------------------------------- create
    def check_memfd_seals(self, memfd) -> int:
        if not (hasattr(memfd, "shmem_file") and (memfd.shmem_file() or memfd.is_file_hugepages())):
            return -EBADFD
        seals = memfd.get_seals()              # memfd_fcntl(F_GET_SEALS)
        if seals < 0:                          # pinfault: never -- F_GET_SEALS fails only for non-shmem/hugetlb files, rejected above
            return -EBADFD
        if not seals & F_SEAL_SHRINK or seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE):
            return -errno.EINVAL
        return 0

    def pin_item(self, ubuf: UdmaBuf, memfd, start: int, size: int, scratch: list) -> int:
        """udmabuf_pin_folios: pin one item, expand its folios into per-page entries."""
        k = self.k
        pgcnt = size >> PAGE_SHIFT
        end = start + (pgcnt << PAGE_SHIFT) - 1
        pgoff = Out(0)
        nr_folios = k.memfd_pin_folios(memfd, start, end, scratch, pgcnt, pgoff)
        if nr_folios <= 0:
            return nr_folios if nr_folios else -errno.EINVAL
        upgcnt = ubuf.pagecount
        cur_pgcnt = 0
        subpgoff = pgoff.value
        for i in range(nr_folios):
            folio = scratch[i]
            ubuf.pinned_arr.items[ubuf.nr_pinned] = folio
            ubuf.nr_pinned += 1
            fsize = folio.nr_pages << PAGE_SHIFT
            while subpgoff < fsize and cur_pgcnt < pgcnt:
                ubuf.folios[upgcnt] = folio
                ubuf.offsets[upgcnt] = subpgoff
                upgcnt += 1
                cur_pgcnt += 1
                subpgoff += PAGE_SIZE
            subpgoff = 0
        ubuf.pagecount = upgcnt
        return 0

    @pin_entry_point(name="udmabuf_create")
    def create(self, head: udmabuf_create_list, items: list) -> int:
        k = self.k
        pglimit = (self.size_limit_mb * (1 << 20)) >> PAGE_SHIFT
        obj = k.kmalloc(128, GFP_KERNEL)
        if obj is None:
            return -errno.ENOMEM
        ubuf = self.ubuf_class(self, obj)
        pgcnt = 0
        max_ipgcnt = 0
        for item in items[:head.count]:
            if item.offset & (PAGE_SIZE - 1) or item.size & (PAGE_SIZE - 1):
                return self._fail(ubuf, -errno.EINVAL)
            ipgcnt = item.size >> PAGE_SHIFT
            pgcnt += ipgcnt
            if pgcnt > pglimit:
                return self._fail(ubuf, -errno.EINVAL)
            max_ipgcnt = max(max_ipgcnt, ipgcnt)
        if pgcnt == 0:
            return self._fail(ubuf, -errno.EINVAL)
        ret = ubuf.init(pgcnt)
        if ret:
            return self._fail(ubuf, ret)
        scratch_obj = k.kvmalloc_array(max_ipgcnt, 8, GFP_KERNEL)
        if scratch_obj is None:
            return self._fail(ubuf, -errno.ENOMEM)
        try:
            for item in items[:head.count]:
                memfd = k.fget(item.memfd)
                if memfd is None:
                    return self._fail(ubuf, -EBADFD)
                ret = self.check_memfd_seals(memfd)       # under inode_lock_shared
                if ret == 0:
                    ret = self.pin_item(ubuf, memfd, item.offset, item.size, scratch_obj.items)
                k.fput(memfd)
                if ret:
                    return self._fail(ubuf, ret)
        finally:
            k.kvfree(scratch_obj)
        return self.export(ubuf, head.flags)

    def export(self, ubuf: UdmaBuf, flags: int) -> int:
        """export_udmabuf: dma_buf_export (size = pagecount pages, O_RDWR), dma_buf_fd;
        a failed dma_buf_fd puts the dma-buf, whose release unpins (v6.13)."""
        k = self.k
        rc = k.fault_point("udmabuf.dma_buf_export", size=ubuf.size)
        buf = rc if rc is not None else k.dma_buf_export(
            DmaBufExportInfo(ops=self.ops, size=ubuf.size, priv=ubuf, flags=O_RDWR, exp_name="udmabuf"))
        if isinstance(buf, int):
            return self._fail(ubuf, buf)
        rc = k.fault_point("udmabuf.dma_buf_fd")
        fd = rc if rc is not None else k.dma_buf_fd(buf, O_CLOEXEC if flags & UDMABUF_FLAGS_CLOEXEC else 0)
        if fd < 0:
            k.dma_buf_put(buf)
        return fd

    def _fail(self, ubuf: UdmaBuf, ret: int) -> int:
        ubuf.deinit()
        self.k.kfree(ubuf.obj)
        return ret
