"""A Python model of drivers/dma-buf/udmabuf.c (v6.11+ behaviour, v6.13 structure).

`/dev/udmabuf` turns ranges of sealed memfds (shmem or hugetlbfs) into a dma-buf.  The
driver pins the backing folios long-term with ``memfd_pin_folios()`` (which migrates them
out of ZONE_MOVABLE/CMA first), expands them into a per-page (folio, offset) table that
mmap/vmap/the sg tables read through, and unpins everything when the dma-buf is released
or any step of the create path fails.

Written against pytest-pinfault's public API only: the fake mm (``memfd_pin_folios``,
``unpin_folio(s)``, ``kmalloc``/``kvmalloc_array``/``kfree``, ``fault_point``) and
``pin_entry_point``.  Kernel references: include/uapi/linux/udmabuf.h,
drivers/dma-buf/udmabuf.c (``udmabuf_ioctl``, ``udmabuf_create``, ``check_memfd_seals``,
``udmabuf_pin_folios``, ``release_udmabuf``, ``mmap_udmabuf``, ``vmap_udmabuf``,
``begin_cpu_udmabuf``, ``map_udmabuf``); see kernel-contract.md section 5.

Driver fault sites (declared by this directory's conftest.py):

* ``udmabuf.dma_buf_export`` (-ENOMEM): ``dma_buf_export()`` fails;
* ``udmabuf.dma_buf_fd`` (-EMFILE): ``dma_buf_fd()`` finds no free descriptor;
* ``udmabuf.sg_alloc`` (-ENOMEM): the sg table of ``map_dma_buf``/``begin_cpu_access``.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from pytest_pinfault import Out, pin_entry_point
from pytest_pinfault.mm import (F_SEAL_FUTURE_WRITE, F_SEAL_SHRINK, F_SEAL_WRITE, GFP_KERNEL, MAP_SHARED,
                                PAGE_SHIFT, PAGE_SIZE)

__all__ = ["UDMABUF_FLAGS_CLOEXEC", "UDMABUF_CREATE", "UDMABUF_CREATE_LIST", "udmabuf_create",
           "udmabuf_create_item", "udmabuf_create_list", "Files", "UdmabufDevice", "UdmaBuf",
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
    "udmabuf.sg_alloc": (["ENOMEM"], "sg table allocation fails in map_dma_buf / begin_cpu_access"),
}

# ----------------------------------------------------------------------------- files


class CharFile:
    """A file that is not a memfd (stdin, /dev/null ...)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<file {self.name}>"


class Files:
    """The calling process's descriptor table (what ``fget``/``fd_install`` see).
    Descriptors 0-2 are ordinary files; ``nofile`` is RLIMIT_NOFILE."""

    def __init__(self, nofile: int = 1024) -> None:
        self.nofile = nofile
        self.fds: dict[int, object] = {0: CharFile("stdin"), 1: CharFile("stdout"), 2: CharFile("stderr")}
        self.cloexec: set[int] = set()

    def install(self, file: object, cloexec: bool = False) -> int:
        """get_unused_fd_flags + fd_install: the lowest free fd or -EMFILE."""
        for fd in range(self.nofile):
            if fd not in self.fds:
                self.fds[fd] = file
                if cloexec:
                    self.cloexec.add(fd)
                return fd
        return -errno.EMFILE

    def fget(self, fd: int) -> object | None:
        return self.fds.get(fd)

    def close(self, fd: int) -> int:
        """close(2): the last close of a dma-buf calls its release."""
        file = self.fds.pop(fd, None)
        if file is None:
            return -errno.EBADF
        self.cloexec.discard(fd)
        if isinstance(file, UdmaBuf):
            file.release()
        elif hasattr(file, "close"):
            file.close()
        return 0


# ----------------------------------------------------------------------------- the buffer


class SgTable:
    """``struct sg_table``: one PAGE_SIZE entry per page (``sg_set_folio``)."""

    def __init__(self, obj, entries, direction) -> None:
        self.obj = obj                # the kmalloc'd table
        self.entries = entries        # [(folio, byte offset in folio, length)]
        self.direction = direction


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
            self._put_sg(self.sg)
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

    def _get_sg(self, direction: str) -> SgTable | int:
        """get_sg_table: sg_alloc_table + one sg_set_folio per page (+ dma_map_sgtable)."""
        rc = self.k.fault_point("udmabuf.sg_alloc", size=self.pagecount)
        if rc is not None:
            return rc
        obj = self.k.kmalloc(64, GFP_KERNEL)
        if obj is None:
            return -errno.ENOMEM
        entries = [(self.folios[i], self.offsets[i], PAGE_SIZE) for i in range(self.pagecount)]
        return SgTable(obj, entries, direction)

    def _put_sg(self, sg: SgTable) -> None:
        self.k.kfree(sg.obj)
        sg.obj = None

    def map_dma_buf(self, direction: str = "bidirectional") -> SgTable | int:
        return self._get_sg(direction)

    def unmap_dma_buf(self, sg: SgTable) -> None:
        self._put_sg(sg)

    def begin_cpu_access(self, direction: str = "bidirectional") -> int:
        """First call: build and cache the device's own sg table; later: sync for cpu."""
        if self.sg is None:
            sg = self._get_sg(direction)
            if isinstance(sg, int):
                return sg
            self.sg = sg
        return 0

    def end_cpu_access(self, direction: str = "bidirectional") -> int:
        return 0 if self.sg is not None else -errno.EINVAL


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


# ----------------------------------------------------------------------------- the device


class UdmabufDevice:
    """The misc device ``/dev/udmabuf`` with its module parameters.  ``ioctl`` returns a
    new dma-buf fd in *files* or -errno."""

    ubuf_class = UdmaBuf

    def __init__(self, k, files: Files | None = None, size_limit_mb: int = 64, list_limit: int = 1024) -> None:
        self.k = k                    # pin_entry_point finds the fake mm here
        self.files = files if files is not None else Files()
        self.size_limit_mb = size_limit_mb
        self.list_limit = list_limit

    def dmabuf(self, fd: int) -> UdmaBuf | None:
        f = self.files.fget(fd)
        return f if isinstance(f, UdmaBuf) else None

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
                memfd = self.files.fget(item.memfd)
                if memfd is None:
                    return self._fail(ubuf, -EBADFD)
                ret = self.check_memfd_seals(memfd)       # under inode_lock_shared
                if ret == 0:
                    ret = self.pin_item(ubuf, memfd, item.offset, item.size, scratch_obj.items)
                if ret:
                    return self._fail(ubuf, ret)
        finally:
            k.kvfree(scratch_obj)
        return self.export(ubuf, head.flags)

    def export(self, ubuf: UdmaBuf, flags: int) -> int:
        """export_udmabuf: dma_buf_export (size = pagecount pages, O_RDWR), dma_buf_fd."""
        rc = self.k.fault_point("udmabuf.dma_buf_export", size=ubuf.size)
        if rc is not None:
            return self._fail(ubuf, rc)
        rc = self.k.fault_point("udmabuf.dma_buf_fd")
        fd = rc if rc is not None else self.files.install(ubuf, bool(flags & UDMABUF_FLAGS_CLOEXEC))
        if fd < 0:
            ubuf.release()                # dma_buf_put(): the release callback unpins
        return fd

    def _fail(self, ubuf: UdmaBuf, ret: int) -> int:
        ubuf.deinit()
        self.k.kfree(ubuf.obj)
        return ret
