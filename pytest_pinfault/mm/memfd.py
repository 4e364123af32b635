"""memfd files on shmem and hugetlbfs, their page cache, and seals.

Kernel: mm/memfd.c (memfd_create, memfd_add_seals, memfd_get_seals, memfd_alloc_folio,
memfd_wait_for_pins), mm/shmem.c (shmem_get_folio, shmem_fallocate, shmem_setattr,
shmem_file_write_iter, shmem_zero_setup), fs/hugetlbfs/inode.c (hugetlbfs_fallocate,
hugetlbfs_setattr, no write_iter), mm/filemap.c (filemap_get_folio,
filemap_get_folios_contig), mm/hugetlb.c (hugetlb_reserve_pages,
hugetlb_add_to_page_cache), v6.12–v6.17.

Page-cache indices are in base pages for both shmem and hugetlbfs (since v6.7); a
hugetlb folio occupies the index range of its pages and is found by any of them.
shmem folios are allocated with the mapping's GFP_HIGHUSER_MOVABLE (so they can land in
ZONE_MOVABLE or CMA) and go through the LRU batch like any new page-cache folio.

shmem folios are large when ``MMConfig.shmem_enabled`` (and, for shared anonymous
mappings, ``MMConfig.shmem_mthp``) allow it: mm/shmem.c:shmem_allowable_huge_orders picks
the orders, shmem_suitable_orders drops those whose aligned range already has a page or
(on a fault) does not fit the VMA, and shmem_alloc_and_add_folio tries them from the
highest down, falling back to order 0 (v6.12).  A large folio sits in the page cache at
its aligned head index and is found by any index it covers.

.. note:: No swap, no quota, no fadvise/huge= of other tmpfs mounts (memfds live on the
   internal shm mount, whose ``huge=`` is ``shmem_enabled``); a truncation or hole punch
   that covers part of a large shmem folio zeroes that part and keeps the folio (what the
   kernel does when truncate_inode_partial_folio cannot split it); the hugetlb
   reservation map is per file and counts pages, not regions.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from . import gfp as _g
from .folio import (KIND_SHMEM, PAGE_SHIFT, PAGE_SIZE, PG_hugetlb_migratable, PG_swapbacked,
                    PG_uptodate, Folio)
from .mm_types import PROT_WRITE, VM_HUGEPAGE, VM_NOHUGEPAGE
from .mmzone import HPAGE_PMD_ORDER
from .hostgc import gc_pause, gc_resume

HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER

if TYPE_CHECKING:  # pragma: no cover
    from ._proto import FakeMMProto
    from .fakemm import FakeMM
    from .hugetlb import HState

if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object

__all__ = ["MemFile", "AddressSpace", "MFD_CLOEXEC", "MFD_ALLOW_SEALING", "MFD_HUGETLB",
           "MFD_NOEXEC_SEAL", "MFD_EXEC", "MFD_HUGE_2MB", "MFD_HUGE_1GB", "F_SEAL_SEAL",
           "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE", "F_SEAL_FUTURE_WRITE", "F_SEAL_EXEC",
           "FALLOC_FL_KEEP_SIZE", "FALLOC_FL_PUNCH_HOLE"]

MFD_CLOEXEC = 0x0001
MFD_ALLOW_SEALING = 0x0002
MFD_HUGETLB = 0x0004
MFD_NOEXEC_SEAL = 0x0008
MFD_EXEC = 0x0010
MFD_HUGE_SHIFT = 26
MFD_HUGE_MASK = 0x3F
MFD_HUGE_2MB = 21 << MFD_HUGE_SHIFT
MFD_HUGE_1GB = 30 << MFD_HUGE_SHIFT
MFD_NAME_MAX_LEN = 249

F_SEAL_SEAL = 0x0001
F_SEAL_SHRINK = 0x0002
F_SEAL_GROW = 0x0004
F_SEAL_WRITE = 0x0008
F_SEAL_FUTURE_WRITE = 0x0010
F_SEAL_EXEC = 0x0020
F_ALL_SEALS = 0x003F

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

_MAPPING_GFP = int(_g.GFP_HIGHUSER_MOVABLE)
MAX_LFS_FILESIZE = (1 << 63) - 1    # s_maxbytes of shmem and hugetlbfs; loff_t's limit
MAX_RW_COUNT = 0x7FFFF000           # INT_MAX & PAGE_MASK: the most one read(2) transfers


class AddressSpace:
    """``struct address_space``: the page cache of one file (index -> folio)."""

    __slots__ = ("host", "pages", "order", "nrpages", "max_order", "swapped")

    def __init__(self, host: "MemFile", order: int) -> None:
        self.host: MemFile = host
        self.pages: dict[int, Folio] = {}       # head index -> folio
        self.order: int = order                 # hugetlbfs: the one folio order
        self.nrpages: int = 0
        self.max_order: int = order             # highest order ever cached (shmem: varies)
        self.swapped: dict[int, Any] = {}       # index -> SwapEntry (shmem pages in swap)

    def lookup(self, index: int) -> Folio | None:
        """The folio covering base-page *index*, or None."""
        order = self.order
        if order == self.max_order:
            return self.pages.get(index & ~((1 << order) - 1))
        pages = self.pages
        for o in range(self.max_order + 1):
            head = index & ~((1 << o) - 1)
            f = pages.get(head)
            if f is not None:
                # a folio at *head* not reaching *index*: no larger one can cover it
                return f if head + f.nr_pages > index else None
        return None

    def range_empty(self, first: int, nr: int) -> bool:
        """No folio covers any index of ``[first, first + nr)`` (xa_find ... XA_PRESENT)."""
        if self.lookup(first) is not None:
            return False
        pages, swapped = self.pages, self.swapped
        if swapped and any(i in swapped for i in range(first, first + nr)):
            return False                        # a swap entry is an xarray entry too
        return not any(i in pages for i in range(first + 1, first + nr))

    def replace_folio(self, index: int, old: Folio, new: Folio) -> None:
        """Migration moved *old* to *new* (folio_migrate_mapping's xarray update)."""
        if self.pages.get(index) is old:
            self.pages[index] = new

    def __len__(self) -> int:
        return len(self.pages)


class MemFile:
    """An open memfd (``struct file`` + inode): ``ftruncate``, ``fallocate``, ``pread``,
    ``pwrite``, ``add_seals``/``get_seals``, and its page cache ``mapping``."""

    def __init__(self, kmm: "FakeMMProto", name: str, flags: int, hstate: "HState | None",
                 sealable: bool) -> None:
        self._k = kmm
        self.name = name
        self.flags = flags
        self.hstate = hstate
        self.mapping: AddressSpace = AddressSpace(self, hstate.order if hstate else 0)
        self.i_size: int = 0
        self.seals = 0 if sealable else F_SEAL_SEAL
        self._mappers = 0
        self._writable_maps = 0
        self._resv: set[int] = set()           # reserved hugetlb indices (head, base pages)
        self.closed: bool = False
        self.f_count = 1                       # struct file references (mm/file.py)
        self.fd = -1                           # the descriptor memfd_create installed
        self.anon_shmem = False                # backs a MAP_SHARED|MAP_ANONYMOUS mapping
        self.fallocend = 0                     # shmem_inode_info.fallocend (pages)

    @property
    def is_hugetlb(self) -> bool:
        """Whether the file is on hugetlbfs (``MFD_HUGETLB``)."""
        return self.hstate is not None

    def shmem_file(self) -> bool:
        """Whether the file is a shmem file (include/linux/shmem_fs.h:shmem_file)."""
        return self.hstate is None

    def is_file_hugepages(self) -> bool:
        """Whether the file is on hugetlbfs (include/linux/hugetlb.h:is_file_hugepages)."""
        return self.hstate is not None

    @property
    def _unit(self) -> int:
        return PAGE_SIZE if self.hstate is None else self.hstate.size

    # ------------------------------------------------------------------ seals
    def get_seals(self) -> int:
        """F_GET_SEALS.  Kernel: mm/memfd.c:memfd_get_seals."""
        if self.closed:
            return -errno.EBADF
        return self.seals

    def add_seals(self, seals: int) -> int:
        """F_ADD_SEALS: 0, -EINVAL (unknown bits), -EPERM (F_SEAL_SEAL set, or not
        sealable), -EBUSY (F_SEAL_WRITE with writable shared mappings or pinned pages).
        Kernel: mm/memfd.c:memfd_add_seals (v6.12)."""
        if self.closed:
            return -errno.EBADF
        if seals & ~F_ALL_SEALS:
            return -errno.EINVAL
        if self.seals & F_SEAL_SEAL:
            return -errno.EPERM
        if seals & F_SEAL_WRITE and not self.seals & F_SEAL_WRITE:
            if self._writable_maps:
                return -errno.EBUSY
            if self._has_extra_refs():
                return -errno.EBUSY
        self.seals |= seals
        return 0

    def _has_extra_refs(self) -> bool:
        """memfd_wait_for_pins: a page-cache folio with references beyond the cache's
        and its mappings' (the kernel waits ~150 ms, then gives -EBUSY)."""
        for folio in self.mapping.pages.values():
            expected = folio.nr_pages + folio._mapcount + (1 if folio.lru_batch >= 0 else 0)
            if folio._refcount != expected:
                return True
        return False

    def _writable_mapping_allowed(self) -> bool:
        return not self.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)

    def _mmap_check(self, prot: int, mtype: int) -> int:
        from .mm_types import MAP_SHARED
        if mtype == MAP_SHARED and prot & PROT_WRITE and not self._writable_mapping_allowed():
            return -errno.EPERM
        return 0

    # ------------------------------------------------------------------ size
    def ftruncate(self, length: int) -> int:
        """Set the size: 0, -EINVAL (negative; unaligned on hugetlbfs), -EPERM (sealed
        against shrinking/growing).  Shrinking drops the page cache beyond the new size
        and unmaps it.  Kernel: mm/shmem.c:shmem_setattr, fs/hugetlbfs/inode.c."""
        if self.closed:
            return -errno.EBADF
        if length < 0 or length > MAX_LFS_FILESIZE:
            return -errno.EINVAL               # a negative loff_t
        if self.hstate is not None and length % self.hstate.size:
            return -errno.EINVAL
        if length < self.i_size and self.seals & F_SEAL_SHRINK:
            return -errno.EPERM
        if length > self.i_size and self.seals & F_SEAL_GROW:
            return -errno.EPERM
        if length < self.i_size:
            self._zero_range(length, -(-length // PAGE_SIZE) * PAGE_SIZE)
            self._truncate_from(-(-length // PAGE_SIZE))
        self.i_size = length
        return 0

    def _zero_range(self, start: int, end: int) -> None:
        """Zero bytes ``[start, end)`` of the cached folios: the partial pages a
        truncation or hole punch keeps (truncate_inode_partial_folio)."""
        pos = start
        while pos < end:
            folio = self.mapping.lookup(pos >> PAGE_SHIFT)
            if folio is None and pos >> PAGE_SHIFT in self.mapping.swapped:
                got = self._k._shmem_swapin(self, pos >> PAGE_SHIFT)   # the kept partial page
                if not isinstance(got, int):
                    self._k.folio_put(got)
                    folio = got
            stop = min(end, ((pos >> PAGE_SHIFT) + 1) << PAGE_SHIFT)
            if folio is not None and folio._data:
                folio.write(pos - (folio.index << PAGE_SHIFT), bytes(stop - pos))
            pos = stop

    def _truncate_from(self, index: int, end: int | None = None) -> None:
        k = self._k
        swapped = self.mapping.swapped
        if swapped:                          # shmem_undo_range: swap entries go too
            for i in [i for i in swapped if i >= index and (end is None or i < end)]:
                k._swap_entry_put(swapped.pop(i))
        pages = self.mapping.pages
        if index < self.fallocend and (end is None or self.fallocend <= end):
            self.fallocend = index                # shmem_undo_range
        if end is not None and end - index <= len(pages):     # cost follows the range
            first = index & ~((1 << self.mapping.max_order) - 1)
            items = [(i, pages[i]) for i in range(first, end) if i in pages]
        else:
            items = sorted(pages.items())
        for head, folio in items:
            if head + folio.nr_pages <= index or (end is not None and head >= end):
                continue
            if head < index or (end is not None and head + folio.nr_pages > end):
                # part of a large shmem folio: zeroed, the folio stays (the kernel's
                # truncate_inode_partial_folio when the split fails)
                lo = max(head, index)
                hi = head + folio.nr_pages if end is None else min(head + folio.nr_pages, end)
                if folio._data:
                    folio.write((lo - head) << PAGE_SHIFT, bytes((hi - lo) << PAGE_SHIFT))
                continue
            k._unmap_mapping_folio(self, folio)
            del self.mapping.pages[head]
            self.mapping.nrpages -= folio.nr_pages
            folio.mapping = None
            folio._refcount -= folio.nr_pages - 1
            if self.hstate is not None:
                self._resv.discard(head)
            k.folio_put(folio)

    def fallocate(self, mode: int, offset: int, length: int) -> int:
        """Allocate (mode 0 / FALLOC_FL_KEEP_SIZE) or punch a hole
        (FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE): 0, -EINVAL, -EOPNOTSUPP, -EPERM
        (seals), -EFBIG (end past MAX_LFS_FILESIZE), -ENOMEM (shmem: no memory; the
        pages this call allocated are freed again, as shmem_undo_range does) / -ENOSPC
        (hugetlbfs: no free huge page; what was allocated stays, as in the kernel).
        Kernel: mm/shmem.c:shmem_fallocate, fs/hugetlbfs/inode.c:hugetlbfs_fallocate,
        fs/open.c:vfs_fallocate."""
        if self.closed:
            return -errno.EBADF
        if offset < 0 or length <= 0 or offset > MAX_LFS_FILESIZE or length > MAX_LFS_FILESIZE:
            return -errno.EINVAL
        if offset + length > MAX_LFS_FILESIZE:
            return -errno.EFBIG
        if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE):
            return -errno.EOPNOTSUPP
        unit = self._unit
        if mode & FALLOC_FL_PUNCH_HOLE:
            if not mode & FALLOC_FL_KEEP_SIZE:
                return -errno.EOPNOTSUPP
            if self.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE):
                return -errno.EPERM
            first = -(-offset // unit) * unit
            last = ((offset + length) // unit) * unit
            end = min(offset + length, self.i_size)
            if first < last:
                self._zero_range(offset, min(first, end))
                self._zero_range(max(last, offset), end)
                self._truncate_from(first >> PAGE_SHIFT, last >> PAGE_SHIFT)
            else:
                self._zero_range(offset, end)
            return 0
        end = offset + length
        if end > self.i_size and not mode & FALLOC_FL_KEEP_SIZE and self.seals & F_SEAL_GROW:
            return -errno.EPERM
        start_idx = (offset // unit) * (unit >> PAGE_SHIFT)
        end_idx = -(-end // unit) * (unit >> PAGE_SHIFT)
        step = unit >> PAGE_SHIFT
        added: list[tuple[int, int]] = []
        paused = gc_pause((end_idx - start_idx) // step)   # mm/hostgc.py: a folio per step
        try:
            for idx in range(start_idx, end_idx, step):
                if self.mapping.lookup(idx) is not None:
                    continue
                folio = self._alloc_cache_folio(idx)
                if isinstance(folio, int):
                    if self.hstate is not None:
                        return -errno.ENOSPC
                    for i, n in added:              # shmem_undo_range of this call's pages
                        self._truncate_from(i, i + n)
                    return folio
                self._k.folio_put(folio)
                added.append((folio.index, folio.nr_pages))
        finally:
            gc_resume(paused)
        if end > self.i_size and not mode & FALLOC_FL_KEEP_SIZE:
            self.i_size = end
        if self.hstate is None:
            self.fallocend = max(self.fallocend, end_idx)
        return 0

    # ------------------------------------------------------------------ data
    def pwrite(self, data: bytes, offset: int) -> int:
        """Write at *offset*: bytes written, or -EINVAL (hugetlbfs has no write(2)),
        -EPERM (F_SEAL_WRITE/F_SEAL_FUTURE_WRITE, or growing with F_SEAL_GROW), -ENOSPC.
        Kernel: mm/shmem.c:shmem_file_write_iter (v6.12)."""
        if self.closed:
            return -errno.EBADF
        if self.hstate is not None:
            return -errno.EINVAL
        if offset < 0 or offset > MAX_LFS_FILESIZE:
            return -errno.EINVAL
        if offset + len(data) > MAX_LFS_FILESIZE:
            return -errno.EFBIG                 # generic_write_check_limits
        if self.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE):
            return -errno.EPERM
        end = offset + len(data)
        if end > self.i_size and self.seals & F_SEAL_GROW:
            return -errno.EPERM
        pos = 0
        while pos < len(data):
            idx = (offset + pos) >> PAGE_SHIFT
            off = (offset + pos) & (PAGE_SIZE - 1)
            take = min(len(data) - pos, PAGE_SIZE - off)
            folio = self.mapping.lookup(idx)
            if folio is None:
                new = self._alloc_cache_folio(idx, None, end)
                if isinstance(new, int):
                    return pos if pos else new
                folio = new
                self._k.folio_put(folio)
            folio.write(((idx - folio.index) << PAGE_SHIFT) + off, data[pos:pos + take])
            pos += take
            if offset + pos > self.i_size:
                self.i_size = offset + pos
        return pos

    def pread(self, n: int, offset: int) -> bytes | int:
        """Read up to *n* bytes at *offset* (short at EOF and beyond MAX_RW_COUNT; holes
        read as zeros); -EINVAL for a negative count or an offset past ``loff_t``.
        Kernel: mm/shmem.c:shmem_file_read_iter, fs/read_write.c:rw_verify_area."""
        if self.closed:
            return -errno.EBADF
        if offset < 0 or n < 0 or offset > MAX_LFS_FILESIZE:
            return -errno.EINVAL
        n = max(0, min(n, self.i_size - offset, MAX_RW_COUNT))     # rw_verify_area's cap
        out = bytearray()
        pos = offset
        while len(out) < n:
            idx = pos >> PAGE_SHIFT
            off = pos & (PAGE_SIZE - 1)
            take = min(n - len(out), PAGE_SIZE - off)
            folio = self.mapping.lookup(idx)
            if folio is None and idx in self.mapping.swapped:     # shmem_get_folio(SGP_READ)
                got = self._k._shmem_swapin(self, idx)
                if isinstance(got, int):
                    return bytes(out) if out else got
                self._k.folio_put(got)
                folio = got
            out += folio.read(((idx - folio.index) << PAGE_SHIFT) + off, take) if folio else bytes(take)
            pos += take
        return bytes(out)

    # ------------------------------------------------------------------ page cache
    def _alloc_cache_folio(self, index: int, vma: Any = None, write_end: int = 0) -> Folio | int:
        """Allocate and insert the folio for *index* (a reference is returned to the
        caller): shmem_alloc_and_add_folio / hugetlb pool allocation.  The task's gfp
        context (PF_MEMALLOC_PIN) applies: _alloc_folio and the pool dequeue see it.
        shmem: a large folio of the highest order :meth:`_shmem_huge_orders` allows whose
        allocation succeeds (each try hits the ``alloc_pages`` fault site), else order 0;
        *vma* is the faulting mapping (None for read/write/fallocate/memfd_alloc_folio),
        *write_end* the end of a write(2).  Kernel: mm/shmem.c:shmem_get_folio_gfp,
        shmem_alloc_and_add_folio (v6.12)."""
        k = self._k
        if self.hstate is not None:
            return k._hugetlb_cache_folio(self, index & ~((1 << self.hstate.order) - 1))
        if index in self.mapping.swapped:
            return k._shmem_swapin(self, index)     # shmem_get_folio_gfp: shmem_swapin_folio
        folio = None
        orders = self._shmem_huge_orders(index, vma, write_end) if k._shmem_huge_possible else 0
        if orders:
            # shmem_alloc_and_add_folio: highest order first, each failure falls back
            huge_gfp = _MAPPING_GFP | _g._COMP | int(_g.gfp_t.NOWARN)
            for order in range(HPAGE_PMD_ORDER, 0, -1):
                if not orders >> order & 1:
                    continue
                folio = k._alloc_folio(huge_gfp, order, KIND_SHMEM)
                if folio is not None:
                    index &= ~((1 << order) - 1)
                    if order == HPAGE_PMD_ORDER:
                        k.stats.thp_file_alloc += 1
                    break
                if order == HPAGE_PMD_ORDER:
                    k.stats.thp_file_fallback += 1
                if k.trace.on:
                    k._trace("shmem_fallback", order=order, index=index)
        if folio is None:
            folio = k._alloc_folio(_MAPPING_GFP, 0, KIND_SHMEM)
            if folio is None:
                return -errno.ENOMEM
        self._add_to_page_cache(folio, index)
        folio.flags |= PG_uptodate | PG_swapbacked
        k.folio_add_lru(folio)
        return folio

    def _shmem_huge_orders(self, index: int, vma: Any, write_end: int) -> int:
        """Bitmask of the large-folio orders a new shmem folio at *index* may have:
        shmem_allowable_huge_orders (the shm mount's ``huge=`` from
        ``MMConfig.shmem_enabled``; for a shared anonymous mapping also the per-size
        ``MMConfig.shmem_mthp`` settings) narrowed by shmem_suitable_orders (the aligned
        range must be empty and, on a fault, inside the VMA at a matching alignment).
        Kernel: mm/shmem.c:shmem_huge_global_enabled, shmem_allowable_huge_orders,
        shmem_suitable_orders, include/linux/huge_mm.h:thp_vma_suitable_order (v6.12)."""
        cfg = self._k.config
        mode = cfg.shmem_enabled
        vm_flags = vma.flags if vma is not None else 0
        if mode == "deny" or vm_flags & VM_NOHUGEPAGE:
            return 0                          # vma_thp_disabled covers VM_NOHUGEPAGE
        pmd = 1 << HPAGE_PMD_ORDER
        # shmem_huge_global_enabled: the mount's huge= (the shm mount's is shmem_enabled)
        if mode in ("force", "always"):
            glob = pmd
        elif mode == "within_size" and max(write_end, self.i_size) + PAGE_SIZE - 1 >> PAGE_SHIFT \
                >= -(-(index + 1) // HPAGE_PMD_NR) * HPAGE_PMD_NR:
            glob = pmd
        elif mode in ("within_size", "advise") and vm_flags & VM_HUGEPAGE:
            glob = pmd
        else:
            glob = 0
        anon = vma is not None and self.anon_shmem
        if not anon or mode == "force":
            orders = self._k._shmem_mthp["inherit"] if anon else glob
        else:
            m = self._k._shmem_mthp
            orders = m["always"]
            within = m["within_size"]
            isize_pages = (self.i_size + PAGE_SIZE - 1) >> PAGE_SHIFT
            for order in range(HPAGE_PMD_ORDER, 0, -1):
                if within >> order & 1 and isize_pages >= -(-(index + 1) >> order) << order:
                    orders |= within
                    break
            if vm_flags & VM_HUGEPAGE:
                orders |= m["advise"]
            if glob:
                orders |= m["inherit"]
        if not orders:
            return 0
        suitable = 0
        for order in range(HPAGE_PMD_ORDER, 0, -1):
            if not orders >> order & 1:
                continue
            nr = 1 << order
            first = index & ~(nr - 1)
            if vma is not None:
                # thp_vma_suitable_order: file offset and address congruent, inside the VMA
                if ((vma.start >> PAGE_SHIFT) - vma.pgoff) & (nr - 1):
                    continue
                haddr = vma.start + ((first - vma.pgoff) << PAGE_SHIFT)
                if haddr < vma.start or haddr + (nr << PAGE_SHIFT) > vma.end:
                    continue
            if self.mapping.range_empty(first, nr):
                suitable |= nr
        return suitable

    def _add_to_page_cache(self, folio: Folio, index: int) -> None:
        folio.mapping = self.mapping
        folio.index = index
        folio._refcount += folio.nr_pages        # the page cache's references
        self.mapping.pages[index] = folio
        self.mapping.nrpages += folio.nr_pages
        if folio.order > self.mapping.max_order:
            self.mapping.max_order = folio.order

    def _get_folio_for_fault(self, index: int, vma: Any = None) -> Folio | int:
        """Fault path lookup/allocation: a referenced folio or -EFAULT (SIGBUS beyond
        EOF or no huge page) / -ENOMEM."""
        if index << PAGE_SHIFT >= self.i_size:
            return -errno.EFAULT
        folio = self.mapping.lookup(index)
        if folio is not None:
            folio._refcount += 1
            return folio
        new = self._alloc_cache_folio(index, vma)
        if isinstance(new, int):            # a swap read error is VM_FAULT_SIGBUS too
            return -errno.EFAULT if self.hstate is not None or new == -errno.EIO else new
        return new

    def _hugetlb_reserve(self, start_idx: int, end_idx: int) -> int:
        """hugetlb_reserve_pages for a shared mapping of [start_idx, end_idx)."""
        h = self.hstate
        assert h is not None        # called for hugetlb files only
        step = 1 << h.order
        need = [i for i in range(start_idx, end_idx, step)
                if i not in self._resv and self.mapping.lookup(i) is None]
        if len(need) > h.available:
            return -errno.ENOMEM
        self._resv.update(need)
        h.resv_huge_pages += len(need)
        return 0

    def close(self) -> None:
        """close(2) of the descriptor ``memfd_create`` installed: it drops that reference;
        when the last one goes (a driver may hold ``fget`` references, a mapping holds
        the file) the file is closed, answers -EBADF, and with no mappings left its page
        cache goes away (pinned folios stay allocated for their pinners)."""
        ft = getattr(self, "_fdtable", None)
        if self.fd >= 0 and ft is not None and ft.fdt.get(self.fd) is self:
            self._k._close_in(ft, self.fd)
            return
        if self.f_count > 0 and not self.closed:
            self._k._fput_table_ref(self)

    def _last_fput(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._mappers == 0:
            self._release()

    def _release(self) -> None:
        self._truncate_from(0)
        if self.hstate is not None and self._resv:
            self.hstate.resv_huge_pages -= len(self._resv)
            self._resv.clear()

    def __repr__(self) -> str:
        kind = f"hugetlbfs {self.hstate.size >> 20}MiB" if self.hstate else "shmem"
        return f"<memfd:{self.name} {kind} size={self.i_size} seals={self.seals:#x} pages={self.mapping.nrpages}>"


class MemfdMixin(_Base):
    """memfd half of :class:`~pytest_pinfault.FakeMM`."""

    def memfd_create(self, name: str, flags: int) -> MemFile | int:
        """A new memfd: a :class:`MemFile`, or -EINVAL (unknown flags, hugetlb size flag
        without MFD_HUGETLB, name too long, MFD_EXEC with MFD_NOEXEC_SEAL), -ENODEV (a
        huge page size the machine has no hstate for).
        Without MFD_ALLOW_SEALING the file carries F_SEAL_SEAL.
        Kernel: mm/memfd.c:memfd_create (v6.12)."""
        known = MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB | MFD_NOEXEC_SEAL | MFD_EXEC
        if flags & MFD_HUGETLB:
            if flags & ~(known | (MFD_HUGE_MASK << MFD_HUGE_SHIFT)):
                return -errno.EINVAL
        elif flags & ~known:
            return -errno.EINVAL
        if flags & MFD_EXEC and flags & MFD_NOEXEC_SEAL:
            return -errno.EINVAL
        if not isinstance(name, str) or len(name) > MFD_NAME_MAX_LEN:
            return -errno.EINVAL
        hstate = None
        if flags & MFD_HUGETLB:
            shift = (flags >> MFD_HUGE_SHIFT) & MFD_HUGE_MASK
            size = (1 << shift) if shift else self.config.default_hugepagesz
            hstate = self._hstates.get(size)
            if hstate is None:
                return -errno.ENODEV       # hugetlb_file_setup: no hstate of that size
        sealable = bool(flags & (MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL))
        fd = self.get_unused_fd_flags(0o2000000 if flags & MFD_CLOEXEC else 0)
        if fd < 0:
            return fd
        f = MemFile(self, name, flags, hstate, sealable)
        if flags & MFD_NOEXEC_SEAL:
            f.seals |= F_SEAL_EXEC
        self.fd_install(fd, f)
        return f

    def _shmem_zero_setup(self, length: int, hstate: Any) -> MemFile | int:
        f = MemFile(self, "dev/zero" if hstate is None else "anon_hugepage", 0, hstate, False)
        f.anon_shmem = hstate is None      # vma_is_anon_shmem: shmem_anon_vm_ops
        f.i_size = length
        f.closed = True
        f.f_count = 0
        return f

    def filemap_get_folio(self, mapping: AddressSpace, index: int) -> Folio | int:
        """The folio at *index* with a new reference, or -ENOENT.
        Kernel: mm/filemap.c:filemap_get_folio (v6.12; ERR_PTR(-ENOENT))."""
        if not isinstance(mapping, AddressSpace):
            raise TypeError(f"filemap_get_folio: mapping must be an AddressSpace, got {type(mapping).__name__}")
        if self._foreign(mapping.host, MemFile, "filemap_get_folio", "mapping"):
            return -errno.ENOENT
        folio = mapping.lookup(index)
        if folio is None:
            return -errno.ENOENT
        folio._refcount += 1
        return folio

    def filemap_get_folios_contig(self, mapping: AddressSpace, start: Any, end: int,
                                  batch: list[Folio]) -> int:
        """Append to *batch* (with a reference each) the folios of the contiguous run of
        present entries starting at ``start.value`` up to *end* (inclusive), stopping at
        the first hole; advance ``start.value`` past them; return how many were added.
        Kernel: mm/filemap.c:filemap_get_folios_contig (v6.12)."""
        if not hasattr(start, "value"):
            raise TypeError(f"filemap_get_folios_contig: start must be an Out box, got {type(start).__name__}")
        idx = start.value
        n = 0
        lookup = mapping.lookup
        watch = self._ref_watch
        while idx <= end and len(batch) < 31:
            folio = lookup(idx)
            if folio is None:
                break
            if watch is not None:                  # folio._refcount += 1, written out
                watch(folio, folio._rc + 1)
            folio._rc += 1
            batch.append(folio)
            n += 1
            idx = folio.index + folio.nr_pages
        start.value = idx
        return n

    def memfd_alloc_folio(self, memfd: MemFile, idx: int) -> Folio | int:
        """Allocate and add the folio for base-page index *idx* of *memfd*; return it
        with a reference, or -ENOMEM, -EINVAL (shmem index beyond EOF), -EEXIST (hugetlb:
        already present; shmem returns the cached folio like shmem_read_folio); the fault
        site can also produce -ENOSPC.  Hits the
        ``memfd_alloc_folio`` fault site.  shmem: shmem_read_folio; hugetlb (v6.17):
        reserve, allocate a pool folio (long-term pinnable under PF_MEMALLOC_PIN), add it.
        Kernel: mm/memfd.c:memfd_alloc_folio (v6.17)."""
        if self._foreign(memfd, MemFile, "memfd_alloc_folio", "memfd"):
            return -errno.EINVAL
        fi = self.faults
        if fi.active:
            rc = fi.hit("memfd_alloc_folio", file=memfd, index=idx)
            if rc is not None:
                if rc == -errno.EEXIST and memfd.mapping.lookup(idx) is None:
                    rc = self._memfd_race_winner(memfd, idx)
                return rc
        present = memfd.mapping.lookup(idx)
        if present is not None:
            if memfd.hstate is not None:
                return -errno.EEXIST        # hugetlb_add_to_page_cache lost the race
            present._refcount += 1          # shmem_read_folio finds the cached folio
            return present
        if memfd.hstate is None and idx << PAGE_SHIFT >= memfd.i_size:
            return -errno.EINVAL            # shmem_get_folio(SGP_CACHE) beyond EOF
        return memfd._alloc_cache_folio(idx)

    def _memfd_race_winner(self, memfd: MemFile, idx: int) -> int:
        """An injected -EEXIST: another task (not under PF_MEMALLOC_PIN) won the race and
        its folio is in the page cache now, so the caller's next lookup finds it.  If
        that allocation fails there was no race to lose: its error is returned."""
        from .sched import PF_MEMALLOC_PIN
        task = self.current
        saved = task.flags
        task.flags &= ~PF_MEMALLOC_PIN
        try:
            won = memfd._alloc_cache_folio(idx)
        finally:
            task.flags = saved
        if isinstance(won, int):
            return won
        self.folio_put(won)
        return -errno.EEXIST

    def _hugetlb_cache_folio(self, memfd: MemFile, head: int) -> Folio | int:
        h = memfd.hstate
        assert h is not None        # called for hugetlb files only
        had_resv = head in memfd._resv
        if not had_resv:
            if h.available <= 0:
                return -errno.ENOMEM
            h.resv_huge_pages += 1
        folio = self.dequeue_hugetlb_folio(h, self.current_gfp_context(_MAPPING_GFP))
        if folio is None:
            if not had_resv:
                h.resv_huge_pages -= 1
            return -errno.ENOMEM
        h.resv_huge_pages -= 1
        memfd._resv.discard(head)
        folio.flags |= PG_hugetlb_migratable | PG_uptodate      # in use
        memfd._add_to_page_cache(folio, head)
        return folio

    def _unmap_mapping_folio(self, memfd: MemFile, folio: Folio) -> None:
        """unmap_mapping_range for one folio: drop every page-table mapping of it."""
        for mm, key in list(folio.rmap or ()):
            kind, vpn = key
            self._mmu_notify(mm, vpn << PAGE_SHIFT, (vpn + (1 if kind == "pte" else folio.nr_pages)) << PAGE_SHIFT, "unmap")
            if kind == "pte":
                mm.pte.pop(vpn, None)
            else:
                mm.huge.pop(vpn, None)
            self._unmap_folio(mm, key, folio)
