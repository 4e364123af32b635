"""Address spaces: ``mm_struct``, VMAs, page tables and page faults.

Kernel: include/linux/mm_types.h (FOLL_* since v6.2, mm_struct, vm_area_struct),
mm/mmap.c (do_mmap, mmap_region), mm/memory.c (handle_mm_fault, do_anonymous_page,
do_wp_page, finish_fault), mm/mlock.c, mm/mprotect.c, mm/util.c (__account_locked_vm),
kernel/fork.c (dup_mmap, copy_present_page), v6.12.

Page tables map a virtual page either through a PTE (one base page of a folio; one
folio reference and one mapcount each) or through a huge leaf (a PMD-mapped THP or a
hugetlb folio: one reference and one mapcount for the whole folio).  Every mapping is
recorded in ``folio.rmap`` as ``(mm, key)`` so that migration can move it to the new
folio and tell the registered mmu interval notifiers.

Private hugetlb mappings (MAP_PRIVATE of a hugetlbfs memfd, MAP_PRIVATE|MAP_HUGETLB)
reserve one pool page per huge page at mmap (hugetlb_reserve_pages, -ENOMEM when the pool
cannot promise them), map a hole with a new anonymous pool folio that uses up the
mapping's reservation (hugetlb_no_page), map a page-cache folio read-only and copy it on
a write or unshare fault (hugetlb_wp); munmap gives the unused reservations back
(hugetlb_vm_op_close).  A fork's child has no reservation (hugetlb_dup_vma_private).

.. note:: No swap, no NUMA, no KSM, no userfaultfd; a THP mapping is not split by a COW
   fault (it re-maps it with 512 PTEs and copies the touched page); mlock'ed folios do
   not go through the mlock batch; MAP_NORESERVE matters for hugetlb only (no
   reservation); the hugetlb COW of an owner whose pool is exhausted
   (unmap_ref_private) is not modelled: that fault fails.
"""

from __future__ import annotations

import enum
import errno
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING, Any, ContextManager, Iterator

from . import gfp as _g
from .folio import (KIND_ANON, KIND_HUGETLB, KIND_SHMEM, KIND_ZERO, PAGE_SHIFT, PAGE_SIZE,
                    PG_anon_exclusive, PG_dirty, PG_hugetlb_migratable, PG_mlocked, PG_uptodate,
                    Folio)
from .mmzone import HPAGE_PMD_ORDER
from .hostgc import gc_pause, gc_resume

_DIRECT_RECLAIM = int(_g.gfp_t.DIRECT_RECLAIM)

if TYPE_CHECKING:  # pragma: no cover
    from ._proto import FakeMMProto
    from .fakemm import FakeMM
    from .memfd import MemFile
    from .sched import Task

if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object

__all__ = ["FOLL", "MMStruct", "VMA", "pte_entry", "PROT_NONE", "PROT_READ", "PROT_WRITE", "PROT_EXEC",
           "MAP_SHARED", "MAP_PRIVATE", "MAP_SHARED_VALIDATE", "MAP_FIXED", "MAP_ANONYMOUS", "MAP_POPULATE",
           "MAP_NORESERVE", "VM_NORESERVE",
           "MAP_HUGETLB", "MLOCK_ONFAULT", "VM_READ", "VM_WRITE", "VM_EXEC", "VM_SHARED",
           "VM_MAYREAD", "VM_MAYWRITE", "VM_LOCKED", "VM_IO", "VM_PFNMAP", "VM_HUGETLB",
           "VM_LOCKONFAULT", "VM_HUGEPAGE", "VM_NOHUGEPAGE", "MADV_HUGEPAGE", "MADV_NOHUGEPAGE"]


class FOLL(enum.IntFlag):
    """``FOLL_*`` flags (anonymous enum in include/linux/mm_types.h since v6.2; the
    internal ones from mm/internal.h)."""

    WRITE = 1 << 0
    GET = 1 << 1
    DUMP = 1 << 2
    FORCE = 1 << 3
    NOWAIT = 1 << 4
    NOFAULT = 1 << 5
    HWPOISON = 1 << 6
    ANON = 1 << 7
    LONGTERM = 1 << 8
    SPLIT_PMD = 1 << 9
    PCI_P2PDMA = 1 << 10
    INTERRUPTIBLE = 1 << 11
    HONOR_NUMA_FAULT = 1 << 12
    # internal (mm/internal.h)
    TOUCH = 1 << 16
    TRIED = 1 << 17
    REMOTE = 1 << 18
    PIN = 1 << 19
    FAST_ONLY = 1 << 20
    UNLOCKABLE = 1 << 21
    MADV_POPULATE = 1 << 22


INTERNAL_GUP_FLAGS = int(FOLL.TOUCH | FOLL.TRIED | FOLL.REMOTE | FOLL.PIN | FOLL.FAST_ONLY
                         | FOLL.UNLOCKABLE | FOLL.MADV_POPULATE)

PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE, MAP_TYPE = 0x01, 0x02, 0x03, 0x0F
MAP_FIXED, MAP_ANONYMOUS, MAP_POPULATE, MAP_HUGETLB = 0x10, 0x20, 0x8000, 0x40000
MAP_NORESERVE = 0x4000
MLOCK_ONFAULT = 0x01

VM_READ, VM_WRITE, VM_EXEC, VM_SHARED = 0x1, 0x2, 0x4, 0x8
VM_MAYREAD, VM_MAYWRITE, VM_MAYEXEC, VM_MAYSHARE = 0x10, 0x20, 0x40, 0x80
VM_IO, VM_PFNMAP = 0x4000, 0x400
VM_LOCKED = 0x2000
VM_NORESERVE = 0x00200000
VM_HUGETLB = 0x400000
VM_LOCKONFAULT = 0x00080000
VM_HUGEPAGE = 0x20000000
VM_NOHUGEPAGE = 0x40000000
MADV_HUGEPAGE = 14             # include/uapi/asm-generic/mman-common.h
MADV_NOHUGEPAGE = 15

MMAP_BASE = 0x7F0000000000
TASK_SIZE = 0x7FFFFFFFF000
MMAP_MIN_ADDR = 0x10000        # vm.mmap_min_addr default
MAX_LFS_FILESIZE = (1 << 63) - 1
HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER


class VMA:
    """``vm_area_struct``: ``[start, end)``, ``flags`` (VM_*), the backing ``file`` and
    ``pgoff``; anonymous VMAs have ``file is None``; MAP_SHARED|MAP_ANONYMOUS VMAs get an
    internal shmem file like ``shmem_zero_setup``."""

    __slots__ = ("mm", "start", "end", "flags", "file", "pgoff", "anon", "resv")

    def __init__(self, mm: "MMStruct", start: int, end: int, flags: int, file: Any, pgoff: int) -> None:
        self.mm: MMStruct = mm
        self.start: int = start
        self.end: int = end
        self.flags: int = flags
        self.file: Any = file
        self.pgoff: int = pgoff
        self.anon: bool = file is None
        # a private hugetlb mapping's resv_map (HPAGE_RESV_OWNER): the file indices whose
        # reservation a fault used up; shared by the pieces of a split VMA
        self.resv: set[int] | None = None

    def is_hugetlb(self) -> bool:
        """Whether ``VM_HUGETLB`` is set (include/linux/hugetlb_inline.h:is_vm_hugetlb_page)."""
        return bool(self.flags & VM_HUGETLB)

    def is_shared(self) -> bool:
        """Whether ``VM_SHARED`` is set."""
        return bool(self.flags & VM_SHARED)

    def is_shared_maywrite(self) -> bool:
        """VM_SHARED and VM_MAYWRITE: the VMA counts in the file's ``i_mmap_writable``
        (what F_SEAL_WRITE refuses).  Kernel: include/linux/mm.h:is_shared_maywrite."""
        return self.flags & (VM_SHARED | VM_MAYWRITE) == VM_SHARED | VM_MAYWRITE

    def _link_file(self, delta: int) -> None:
        """Count this VMA in (+1) or out of (-1) its file's mappers (vma_link/unlink)."""
        if self.file is not None:
            self.file._mappers += delta
            if self.is_shared_maywrite():
                self.file._writable_maps += delta

    def file_index(self, addr: int) -> int:
        """Page-cache index (base pages) of *addr*."""
        return self.pgoff + ((addr - self.start) >> PAGE_SHIFT)

    def __repr__(self) -> str:
        kind = "anon" if self.file is None else getattr(self.file, "name", "file")
        return f"<vma {self.start:#x}-{self.end:#x} flags={self.flags:#x} {kind}>"


def pte_entry(ent: "Folio | tuple[Folio, int]") -> tuple[Folio, int]:
    """``(folio, page index)`` of a value of :attr:`MMStruct.pte`, which holds the folio
    alone where its first page is mapped (every small folio) and a ``(folio, index)``
    pair for the other pages of a large folio.  Kernel: what vm_normal_page() and
    page_folio() / folio_page_idx() give for a present PTE (mm/memory.c, v6.12)."""
    return ent if isinstance(ent, tuple) else (ent, 0)


class MMStruct:
    """``mm_struct`` of one process.  Methods with a system call's name behave like the
    call and return ``-errno`` on failure."""

    def __init__(self, kmm: "FakeMMProto", rlimit_memlock: int) -> None:
        self._k = kmm
        self.vmas: list[VMA] = []
        self._starts: list[int] = []
        # vpn -> the folio whose first page is mapped there, or (folio, page index) for
        # any other page of a large folio (no tuple for the usual small folio; pte_entry
        # reads both forms)
        self.pte: dict[int, Folio | tuple[Folio, int]] = {}
        self.huge: dict[int, Folio] = {}                 # aligned vpn -> huge-leaf-mapped folio
        self.swap_pte: dict[int, Any] = {}               # vpn -> SwapEntry of a swapped-out anon page
        self.locked_vm: int = 0
        self.pinned_vm = 0
        self.rlimit_memlock = rlimit_memlock
        self.has_pinned = False                          # MMF_HAS_PINNED
        self.write_protect_seq = 0
        self.notifiers: list[Any] = []
        self._mmap_top = MMAP_BASE
        self.users = 1                                   # mm_users (mmget/mmput)
        self.mm_count = 1                                # mm_count (mmgrab/mmdrop)

    # ------------------------------------------------------------------ VMAs
    def find_vma(self, addr: int) -> VMA | None:
        """The VMA containing *addr* (vma_lookup semantics), or None."""
        if type(addr) is not int and not isinstance(addr, int):
            raise TypeError(f"find_vma: addr must be an int, got {type(addr).__name__}")
        i = bisect_right(self._starts, addr) - 1
        if i >= 0:
            vma = self.vmas[i]
            if addr < vma.end:
                return vma
        return None

    def _insert_vma(self, vma: VMA) -> None:
        i = bisect_right(self._starts, vma.start)
        self._starts.insert(i, vma.start)
        self.vmas.insert(i, vma)

    def _remove_vma(self, vma: VMA) -> None:
        # VMAs never overlap, so their starts are distinct and sorted
        i = bisect_left(self._starts, vma.start)
        if i == len(self.vmas) or self.vmas[i] is not vma:
            i = self.vmas.index(vma)        # (a VMA whose start moved under its entry)
        del self.vmas[i], self._starts[i]

    def _overlapping(self, start: int, end: int) -> list[VMA]:
        """The VMAs meeting ``[start, end)``, lowest first: found by bisection, so the
        cost follows the VMAs returned, not the address space's size."""
        vmas = self.vmas
        i = max(bisect_right(self._starts, start) - 1, 0)
        out = []
        n = len(vmas)
        while i < n:
            v = vmas[i]
            if v.start >= end:
                break
            if start < v.end:
                out.append(v)
            i += 1
        return out

    def _may_split(self, *addrs: int) -> int:
        """0, or -EINVAL when a VMA would be split at an address that is not aligned to
        its huge page size (``vm_ops->may_split``).  Checked for every split point before
        anything changes, so a refused call leaves the address space as it was.
        Kernel: mm/hugetlb.c:hugetlb_vm_op_split, mm/vma.c:__split_vma (v6.12)."""
        for addr in addrs:
            vma = self.find_vma(addr)
            if vma is not None and vma.start != addr and vma.is_hugetlb() \
                    and addr & (vma.file.hstate.size - 1):
                return -errno.EINVAL
        return 0

    def _split(self, addr: int) -> None:
        vma = self.find_vma(addr)
        if vma is None or vma.start == addr:
            return
        # vma_adjust_trans_huge: a PMD-mapped THP straddling the new boundary is
        # split into PTEs first, so each half's page tables stay inside its VMA
        vpn = addr >> PAGE_SHIFT
        head = vpn & ~(HPAGE_PMD_NR - 1)
        if head != vpn:
            folio = self.huge.get(head)
            if folio is not None and folio.kind == KIND_ANON:
                self._k._split_huge_pmd(self, vma, head << PAGE_SHIFT)
            elif folio is not None and folio.kind == KIND_SHMEM:
                self._k._zap_huge_pmd(self, head)
        tail = VMA(self, addr, vma.end, vma.flags, vma.file, vma.file_index(addr) if vma.file else 0)
        tail.anon = vma.anon
        tail.resv = vma.resv             # hugetlb_vm_op_open: the resv_map is shared
        tail._link_file(1)
        vma.end = addr
        self._insert_vma(tail)

    def _get_unmapped_area(self, length: int, align: int) -> int:
        top = self._mmap_top
        vmas = self.vmas
        # the VMAs below the search's top, highest first (they are sorted by start)
        for i in range(bisect_left(self._starts, top) - 1, -1, -1):
            v = vmas[i]
            cand = (top - length) & ~(align - 1)
            if cand >= v.end:
                break
            top = v.start
        cand = (top - length) & ~(align - 1)
        if cand < MMAP_MIN_ADDR:
            return -errno.ENOMEM             # no hole big enough below the mmap base
        self._mmap_top = min(self._mmap_top, cand)
        return cand

    # ------------------------------------------------------------------ mmap family
    def mmap(self, length: int, prot: int, flags: int, file: "MemFile | None" = None,
             offset: int = 0, addr: int = 0) -> int:
        """Map *length* bytes; the start address or -errno (EINVAL for bad
        flags/length/offset/alignment, EACCES/EPERM for a sealed or read-only memfd,
        ENOMEM for a length beyond TASK_SIZE or no room left, EOVERFLOW for a file range
        past MAX_LFS_FILESIZE, EBADF (and a warning) for another machine's file,
        EBADF for a closed memfd, ENOMEM when locking would exceed RLIMIT_MEMLOCK).  Anonymous mappings whose length
        is a non-zero multiple of 2 MiB are 2 MiB aligned when THP is enabled ("mm, mmap:
        limit THP alignment of anonymous mappings to PMD-aligned sizes", v6.12).
        Kernel: mm/mmap.c:do_mmap, __get_unmapped_area (v6.12).
        """
        k = self._k
        mtype = flags & MAP_TYPE
        if mtype == MAP_SHARED_VALIDATE:
            mtype = MAP_SHARED             # the flags it would validate are all known here
        if length == 0 or offset % PAGE_SIZE or mtype not in (MAP_SHARED, MAP_PRIVATE):
            return -errno.EINVAL
        if length < 0 or length > TASK_SIZE:
            return -errno.ENOMEM               # PAGE_ALIGN(len) wrapped, or len > TASK_SIZE
        if flags & MAP_ANONYMOUS:
            file = None
        elif file is not None:
            if getattr(file, "_k", None) is not k:
                k._warn("foreign_object", f"mmap: file {file!r} belongs to another FakeMM")
                return -errno.EBADF
            if getattr(file, "closed", False):
                return -errno.EBADF            # mmap(2) of a closed descriptor
            if offset < 0 or offset + length > MAX_LFS_FILESIZE:
                return -errno.EOVERFLOW        # file_mmap_ok
        hstate = getattr(file, "hstate", None) if file is not None else None
        if flags & MAP_HUGETLB and file is None:
            hstate = k.hstate()
        align = PAGE_SIZE
        if hstate is not None:
            align = hstate.size
            if offset % align or (flags & MAP_FIXED and addr % align):
                return -errno.EINVAL
        length = (length + align - 1) & ~(align - 1)
        if file is None and hstate is None and k.config.thp != "never" and length >= (2 << 20) and not length % (2 << 20):
            align = 2 << 20
        elif hstate is None and length >= (2 << 20) and not offset % (2 << 20) and k._shmem_huge_possible \
                and (file is not None or mtype == MAP_SHARED):
            align = 2 << 20        # shmem_get_unmapped_area: room for PMD-mapped shmem THPs
        if file is not None:
            rc = file._mmap_check(prot, mtype)
            if rc:
                return rc
        if flags & MAP_FIXED:
            if addr % PAGE_SIZE:
                return -errno.EINVAL
            if addr < 0 or addr + length > TASK_SIZE:
                return -errno.ENOMEM
            rc = self.munmap(addr, length)
            if rc:
                return rc                       # e.g. would split a hugetlb VMA
        else:
            addr = self._get_unmapped_area(length, align)
            if addr < 0:
                return addr
        vmflags = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
        vmflags |= (VM_READ if prot & PROT_READ else 0) | (VM_WRITE if prot & PROT_WRITE else 0) \
            | (VM_EXEC if prot & PROT_EXEC else 0)
        if mtype == MAP_SHARED:
            vmflags |= VM_SHARED | VM_MAYSHARE
            if file is not None and not file._writable_mapping_allowed():
                vmflags &= ~VM_MAYWRITE
        if hstate is not None:
            vmflags |= VM_HUGETLB
            if flags & MAP_NORESERVE:
                vmflags |= VM_NORESERVE    # do_mmap: always honoured for hugetlbfs files
        if file is None and (mtype == MAP_SHARED or hstate is not None):
            new = k._shmem_zero_setup(length, hstate)
            if isinstance(new, int):
                return new
            file = new
            offset = 0
        resv: set[int] | None = None
        if vmflags & VM_NORESERVE:
            pass                           # hugetlb_reserve_pages: nothing reserved, no resv_map
        elif file is not None and hstate is not None and mtype == MAP_SHARED:
            rc = file._hugetlb_reserve(offset >> PAGE_SHIFT, (offset + length) >> PAGE_SHIFT)
            if rc:
                return rc
        elif hstate is not None:
            # hugetlb_reserve_pages, private: a reservation for every huge page of the
            # range, whatever the page cache holds (chg = to - from)
            chg = length // hstate.size
            if chg > hstate.available:
                return -errno.ENOMEM
            hstate.resv_huge_pages += chg
            resv = set()
        vma = VMA(self, addr, addr + length, vmflags, file, offset >> PAGE_SHIFT)
        vma.resv = resv
        self._insert_vma(vma)
        vma._link_file(1)
        if flags & MAP_POPULATE:
            k._populate(self, addr, addr + length, write=bool(prot & PROT_WRITE) and mtype == MAP_SHARED)
        return addr

    def munmap(self, addr: int, length: int) -> int:
        """Unmap ``[addr, addr+length)``: 0 or -EINVAL.  Drops the page-table references;
        pinned folios stay allocated for their pinners.  Kernel: mm/mmap.c:do_vmi_munmap."""
        if addr % PAGE_SIZE or length <= 0 or addr < 0 or addr + length > TASK_SIZE:
            return -errno.EINVAL
        end = addr + ((length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
        rc = self._may_split(addr, end)
        if rc:
            return rc
        self._split(addr)
        self._split(end)
        k = self._k
        k._mmu_notify(self, addr, end, "unmap")
        for v in self._overlapping(addr, end):
            self._zap_range(v.start, v.end)
            if v.flags & VM_LOCKED:
                self.locked_vm -= (v.end - v.start) >> PAGE_SHIFT
            if v.resv is not None:
                k._hugetlb_vm_op_close(v)
            v._link_file(-1)
            if v.file is not None and v.file.closed and v.file._mappers == 0:
                v.file._release()          # last reference to a closed file: evict it
            self._remove_vma(v)
        return 0

    def _zap_range(self, start: int, end: int) -> None:
        k = self._k
        # a PMD-mapped THP only partly inside the range is split first (__split_huge_pmd)
        for edge in {start >> PAGE_SHIFT, end >> PAGE_SHIFT}:
            head = edge & ~(HPAGE_PMD_NR - 1)
            folio = self.huge.get(head)
            if head != edge and folio is not None and folio.kind == KIND_ANON:
                k._split_huge_pmd(self, None, head << PAGE_SHIFT)
            elif head != edge and folio is not None and folio.kind == KIND_SHMEM:
                k._zap_huge_pmd(self, head)
        swap_pte = self.swap_pte
        for vpn in range(start >> PAGE_SHIFT, end >> PAGE_SHIFT):
            ent = self.pte.pop(vpn, None)
            if ent is not None:
                k._unmap_folio(self, ("pte", vpn), ent[0] if isinstance(ent, tuple) else ent)
            folio = self.huge.pop(vpn, None)
            if folio is not None:
                k._unmap_folio(self, ("huge", vpn), folio)
            if swap_pte:
                entry = swap_pte.pop(vpn, None)
                if entry is not None:
                    k._swap_entry_put(entry)          # zap_pte_range: free_swap_and_cache

    def mprotect(self, addr: int, length: int, prot: int) -> int:
        """Change protections: 0, -EINVAL, -ENOMEM (a hole), -EACCES (write on a shared
        mapping that may not become writable).  Kernel: mm/mprotect.c (v6.12)."""
        if addr % PAGE_SIZE:
            return -errno.EINVAL
        end = addr + ((length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
        covered = sum(min(v.end, end) - max(v.start, addr) for v in self._overlapping(addr, end))
        if covered != end - addr:
            return -errno.ENOMEM
        for v in self._overlapping(addr, end):
            if prot & PROT_WRITE and v.is_shared() and not v.flags & VM_MAYWRITE:
                return -errno.EACCES
        rc = self._may_split(addr, end)
        if rc:
            return rc
        self._split(addr)
        self._split(end)
        self._k._mmu_notify(self, addr, end, "protection")
        for v in self._overlapping(addr, end):
            v.flags &= ~(VM_READ | VM_WRITE | VM_EXEC)
            v.flags |= (VM_READ if prot & PROT_READ else 0) | (VM_WRITE if prot & PROT_WRITE else 0) \
                | (VM_EXEC if prot & PROT_EXEC else 0)
        return 0

    def madvise(self, addr: int, length: int, advice: int) -> int:
        """madvise(2) for ``MADV_HUGEPAGE`` / ``MADV_NOHUGEPAGE``: set one of
        VM_HUGEPAGE / VM_NOHUGEPAGE and clear the other on the range (splitting VMAs), so
        that with ``thp="madvise"`` later anonymous faults map THPs (or, with NOHUGEPAGE,
        never do).  0; -EINVAL for an unaligned address or another advice; -ENOMEM when
        the range has a hole (after advising what is mapped, as the kernel does).
        Already-mapped pages are left as they are (no collapse: khugepaged is not
        modelled).  Kernel: mm/madvise.c:do_madvise, mm/khugepaged.c:hugepage_madvise
        (v6.12)."""
        if addr % PAGE_SIZE or advice not in (MADV_HUGEPAGE, MADV_NOHUGEPAGE):
            return -errno.EINVAL
        end = addr + ((length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
        vmas = self._overlapping(addr, end)
        covered = sum(min(v.end, end) - max(v.start, addr) for v in vmas)
        rc = self._may_split(addr, end)
        if rc:
            return rc
        self._split(addr)
        self._split(end)
        set_, clear = (VM_HUGEPAGE, VM_NOHUGEPAGE) if advice == MADV_HUGEPAGE else (VM_NOHUGEPAGE, VM_HUGEPAGE)
        for v in self._overlapping(addr, end):
            v.flags = (v.flags & ~clear) | set_
        return 0 if covered == end - addr else -errno.ENOMEM

    def mlock(self, addr: int, length: int) -> int:
        """mlock(2): lock and populate; 0, -ENOMEM (limit or hole)."""
        return self.mlock2(addr, length, 0)

    def mlock2(self, addr: int, length: int, flags: int) -> int:
        """mlock2(2) with MLOCK_ONFAULT: lock without populating.  RLIMIT_MEMLOCK is
        checked against ``locked_vm`` (-ENOMEM).  hugetlb VMAs are neither split nor
        marked VM_LOCKED nor counted, only populated (mlock_fixup skips them).
        Kernel: mm/mlock.c:do_mlock, mlock_fixup (v6.12)."""
        if flags & ~MLOCK_ONFAULT:
            return -errno.EINVAL
        start = addr & ~(PAGE_SIZE - 1)
        end = (addr + length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        vmas = self._overlapping(start, end)
        if sum(min(v.end, end) - max(v.start, start) for v in vmas) != end - start:
            return -errno.ENOMEM
        new = sum((min(v.end, end) - max(v.start, start)) >> PAGE_SHIFT for v in vmas
                  if not v.flags & VM_LOCKED and not v.is_hugetlb())
        if self.locked_vm + new > self.rlimit_memlock >> PAGE_SHIFT and not self._k.current_capable_ipc_lock():
            return -errno.ENOMEM
        # mlock_fixup leaves hugetlb VMAs alone: not split, not VM_LOCKED, not counted
        # (their pages are never evictable); they are only populated
        for at in (start, end):
            v = self.find_vma(at)
            if v is None or not v.is_hugetlb():
                self._split(at)
        for v in self._overlapping(start, end):
            if v.is_hugetlb():
                continue
            if not v.flags & VM_LOCKED:
                self.locked_vm += (v.end - v.start) >> PAGE_SHIFT
            v.flags |= VM_LOCKED | (VM_LOCKONFAULT if flags & MLOCK_ONFAULT else 0)
        if not flags & MLOCK_ONFAULT:
            rc = self._k._populate(self, start, end, write=False)
            if rc:
                return -errno.EAGAIN if rc == -errno.ENOMEM else -errno.ENOMEM  # __mlock_posix_error_return
        return 0

    # ------------------------------------------------------------------ user access
    def read(self, addr: int, n: int) -> bytes | int:
        """Read user memory, faulting pages in; the bytes or -EFAULT."""
        out = bytearray()
        while n > 0:
            r = self._k._user_page(self, addr, write=False)
            if isinstance(r, int):
                return r
            folio, idx = r
            off = addr & (PAGE_SIZE - 1)
            take = min(n, PAGE_SIZE - off)
            out += folio.read((idx << PAGE_SHIFT) + off, take)
            addr += take
            n -= take
        return bytes(out)

    def write(self, addr: int, data: bytes) -> int:
        """Write user memory, faulting pages in (COW as needed); bytes written or -EFAULT."""
        pos = 0
        n = len(data)
        paused = gc_pause(n >> PAGE_SHIFT)        # mm/hostgc.py: a fault per page
        try:
            while pos < n:
                r = self._k._user_page(self, addr + pos, write=True)
                if isinstance(r, int):
                    return r
                folio, idx = r
                off = (addr + pos) & (PAGE_SIZE - 1)
                take = min(n - pos, PAGE_SIZE - off)
                folio.write((idx << PAGE_SHIFT) + off, data[pos:pos + take])
                pos += take
        finally:
            gc_resume(paused)
        return n

    # ------------------------------------------------------------------ lookups
    def lookup(self, addr: int) -> tuple[Folio, int] | None:
        """(folio, page index) mapped at *addr*, or None (follow_page without faulting)."""
        if type(addr) is not int and not isinstance(addr, int):
            raise TypeError(f"lookup: addr must be an int, got {type(addr).__name__}")
        vpn = addr >> PAGE_SHIFT
        ent = self.pte.get(vpn)
        if ent is not None:
            return ent if isinstance(ent, tuple) else (ent, 0)
        for order in (HPAGE_PMD_ORDER, 18):
            head = vpn & ~((1 << order) - 1)
            f = self.huge.get(head)
            if f is not None and f.order == order:
                return f, vpn - head
        return None

    def replace_folio(self, key: tuple[str, int], old: Folio, new: Folio) -> None:
        """Migration moved *old* to *new*: repoint the page-table entry *key* (the
        notifiers heard of it when the attempt unmapped *old*, see
        ``MigrateMixin._migrate_invalidate``)."""
        kind, vpn = key
        if kind == "pte":
            ent = self.pte[vpn]
            self.pte[vpn] = (new, ent[1]) if isinstance(ent, tuple) else new
        else:
            self.huge[vpn] = new

    def __repr__(self) -> str:
        return f"<mm {len(self.vmas)} vmas, {len(self.pte)} ptes, locked_vm={self.locked_vm} pinned_vm={self.pinned_vm}>"


class AddressSpaceMixin(_Base):
    """Address-space half of :class:`~pytest_pinfault.FakeMM`: tasks' mms, faults, fork."""

    def create_mm(self) -> MMStruct:
        """A new, empty address space with the configured RLIMIT_MEMLOCK."""
        return MMStruct(self, self.config.memlock)

    def run_as(self, task: Task) -> ContextManager[Task]:
        """Context manager: make *task* ``current`` inside the block."""
        import contextlib

        @contextlib.contextmanager
        def _cm() -> Iterator[Task]:
            old = self.current
            self.current: Task = task
            try:
                yield task
            finally:
                self.current = old
        return _cm()

    def current_capable_ipc_lock(self) -> bool:
        """Whether the current task has CAP_IPC_LOCK (its ``cap_ipc_lock`` attribute), which
        lifts the RLIMIT_MEMLOCK check.  Kernel: kernel/capability.c:capable(CAP_IPC_LOCK) as
        mm/util.c:__account_locked_vm calls it (v6.12)."""
        return bool(getattr(self.current, "cap_ipc_lock", False))

    def account_locked_vm(self, mm: MMStruct | None, pages: int, inc: bool) -> int:
        """Charge (*inc*) or uncharge *pages* to ``mm.locked_vm``: 0, or -ENOMEM when
        the charge would exceed RLIMIT_MEMLOCK without CAP_IPC_LOCK.  Uncharging more
        than is charged records a warning (and underflows, as the kernel does).

        Kernel: mm/util.c:account_locked_vm / __account_locked_vm (v6.12).
        """
        if pages == 0 or mm is None:
            return 0
        if self._foreign(mm, MMStruct, "account_locked_vm", "mm"):
            return -errno.EINVAL
        if inc:
            if (mm.locked_vm + pages > mm.rlimit_memlock >> PAGE_SHIFT
                    and not self.current_capable_ipc_lock()):
                return -errno.ENOMEM
            mm.locked_vm += pages
        else:
            if pages > mm.locked_vm:
                self._warn("account_locked_vm", f"WARN_ON_ONCE(pages > locked_vm): uncharging {pages} of {mm.locked_vm}")
            mm.locked_vm -= pages
        return 0

    # ------------------------------------------------------------------ mapping helpers
    def _map_pte(self, mm: MMStruct, vpn: int, folio: Folio, idx: int) -> None:
        mm.pte[vpn] = (folio, idx) if idx else folio
        if folio.kind == KIND_ZERO:
            return
        folio._refcount += 1
        folio._mapcount += 1
        if folio.rmap is None:
            folio.rmap = []
        folio.rmap.append((mm, ("pte", vpn)))

    def _map_huge(self, mm: MMStruct, vpn: int, folio: Folio) -> None:
        mm.huge[vpn] = folio
        folio._refcount += 1
        folio._mapcount += 1
        if folio.rmap is None:
            folio.rmap = []
        folio.rmap.append((mm, ("huge", vpn)))

    def _unmap_folio(self, mm: MMStruct, key: tuple[str, int], folio: Folio) -> None:
        if folio.kind == KIND_ZERO:
            return
        try:
            folio.rmap.remove((mm, key))
        except (AttributeError, ValueError):
            self._warn("rmap", "unmapping a folio that has no such mapping", folio=folio)
            return
        folio._mapcount -= 1
        self.folio_put(folio)

    def _user_page(self, mm: MMStruct, addr: int, write: bool) -> tuple[Folio, int] | int:
        """What user-space access at *addr* sees, after faulting: (folio, idx) or -EFAULT."""
        vma = mm.find_vma(addr)
        if vma is None or not vma.flags & (VM_WRITE if write else VM_READ):
            return -errno.EFAULT
        ent = mm.lookup(addr)
        if ent is not None and (not write or self._pte_writable(mm, vma, addr, ent[0])):
            return ent
        rc = self.handle_mm_fault(mm, vma, addr, write, unshare=False)
        if rc:
            return -errno.EFAULT
        return mm.lookup(addr)  # type: ignore[return-value]

    def _pte_writable(self, mm: MMStruct, vma: VMA, addr: int, folio: Folio) -> bool:
        if folio.kind == KIND_ZERO:
            return False
        if vma.is_shared():
            return bool(vma.flags & VM_WRITE)
        # private: writable only if the folio is this mm's exclusive anon page
        return (folio.kind == KIND_ANON or (folio.kind == KIND_HUGETLB and folio.mapping is None)) \
            and bool(folio.flags & PG_anon_exclusive) and bool(vma.flags & VM_WRITE)

    def _populate(self, mm: MMStruct, start: int, end: int, write: bool) -> int:
        """__mm_populate: fault ``[start, end)`` in; 0, or the first fault's error (the
        walk stops there, so its cost follows the memory the machine has).  Read faults
        of private anonymous memory that is not locked would only map the zero page,
        which an unpopulated entry reads as too: they are skipped."""
        addr = start
        paused = gc_pause((end - start) >> PAGE_SHIFT)     # mm/hostgc.py: a fault per page
        try:
            while addr < end:
                vma = mm.find_vma(addr)
                if vma is None:
                    break
                if vma.file is None and not write and not vma.flags & VM_LOCKED:
                    addr = vma.end
                    continue
                if mm.lookup(addr) is None or write:
                    rc = self.handle_mm_fault(mm, vma, addr, write and bool(vma.flags & VM_WRITE), unshare=False)
                    if rc:
                        return rc
                addr += PAGE_SIZE
        finally:
            gc_resume(paused)
        return 0

    # ------------------------------------------------------------------ faults
    def handle_mm_fault(self, mm: MMStruct, vma: VMA, addr: int, write: bool, unshare: bool) -> int:
        """Resolve a fault at *addr*: 0, or -ENOMEM (OOM) / -EFAULT (SIGBUS: beyond the
        file, no hugetlb page).  *unshare* is FAULT_FLAG_UNSHARE (GUP pinning a shared
        anonymous page read-only).  Kernel: mm/memory.c:handle_mm_fault (v6.12)."""
        if vma.is_hugetlb():
            return self._hugetlb_fault(mm, vma, addr, write, unshare)
        if mm.swap_pte and addr >> PAGE_SHIFT in mm.swap_pte:
            rc = self._do_swap_page(mm, vma, addr >> PAGE_SHIFT)
            if rc or not (write or unshare):
                return rc
        if vma.file is not None and (vma.is_shared() or not (write or unshare)):
            return self._file_fault(mm, vma, addr)
        ent = mm.lookup(addr)
        if ent is None:
            if vma.file is not None:
                rc = self._file_fault(mm, vma, addr)          # map the page-cache page, then COW
                if rc:
                    return rc
                ent = mm.lookup(addr)
                assert ent is not None      # _file_fault mapped it
            elif not write:
                if vma.flags & VM_LOCKED or unshare:
                    return self._do_anonymous_page(mm, vma, addr)
                self._map_pte(mm, addr >> PAGE_SHIFT, self.zero_folio, 0)
                return 0
            else:
                return self._do_anonymous_page(mm, vma, addr)
        return self._do_wp_page(mm, vma, addr, ent)

    def _new_anon_folio(self, vma: VMA, order: int) -> Folio | None:
        gfp = int(_g.GFP_HIGHUSER_MOVABLE)
        if order:       # vma_thp_gfp_mask, defrag "madvise": reclaim only for MADV_HUGEPAGE
            gfp |= _g._COMP
            if not vma.flags & VM_HUGEPAGE:
                gfp &= ~_DIRECT_RECLAIM
        folio = self._alloc_folio(gfp, order, KIND_ANON)
        if folio is not None:
            folio.flags |= PG_anon_exclusive
            if vma.flags & VM_LOCKED:
                folio.flags |= PG_mlocked
        return folio

    def _thp_allowed(self, vma: VMA, addr: int, mm: MMStruct) -> bool:
        thp = self.config.thp
        if thp == "never" or vma.flags & VM_NOHUGEPAGE or (thp == "madvise" and not vma.flags & VM_HUGEPAGE):
            return False
        head = addr & ~((2 << 20) - 1)
        if head < vma.start or head + (2 << 20) > vma.end:
            return False
        base = head >> PAGE_SHIFT
        return not any((base + i) in mm.pte for i in range(HPAGE_PMD_NR))

    def _do_anonymous_page(self, mm: MMStruct, vma: VMA, addr: int) -> int:
        if vma.file is None and self._thp_allowed(vma, addr, mm):
            folio = self._new_anon_folio(vma, HPAGE_PMD_ORDER)
            if folio is not None:
                head = (addr & ~((2 << 20) - 1)) >> PAGE_SHIFT
                self._map_huge(mm, head, folio)
                self.folio_put(folio)          # the mapping now holds it
                self.folio_add_lru(folio)
                return 0
        folio = self._new_anon_folio(vma, 0)
        if folio is None:
            return -errno.ENOMEM
        vpn = addr >> PAGE_SHIFT
        old = mm.pte.pop(vpn, None)
        if old is not None:
            self._forget_rmap(mm, ("pte", vpn), pte_entry(old)[0])
        self._map_pte(mm, vpn, folio, 0)
        self.folio_put(folio)
        self.folio_add_lru(folio)
        return 0

    def _forget_rmap(self, mm: MMStruct, key: tuple[str, int], folio: Folio) -> None:
        if folio.kind != KIND_ZERO:
            self._unmap_folio(mm, key, folio)

    def _do_wp_page(self, mm: MMStruct, vma: VMA, addr: int, ent: tuple[Folio, int]) -> int:
        """Write (or unshare) fault on a present read-only PTE: reuse an exclusive anon
        page, otherwise copy (COW).  Kernel: mm/memory.c:do_wp_page (v6.12)."""
        folio, idx = ent
        if folio.kind == KIND_ANON and folio._mapcount == 1 and folio._refcount == 1 + (1 if folio.lru_batch >= 0 else 0):
            folio.flags |= PG_anon_exclusive
            return 0
        # (COW of a PMD-mapped THP: the kernel splits the PMD; the model copies the
        # touched base page into a new small folio, as for any other page.)
        new = self._new_anon_folio(vma, 0)
        if new is None:
            return -errno.ENOMEM
        if folio.kind != KIND_ZERO:
            new.write(0, folio.read(idx << PAGE_SHIFT, PAGE_SIZE))
            new.flags &= ~PG_dirty  # not dirty just because it was copied
        vpn = addr >> PAGE_SHIFT
        if vpn in mm.pte:
            self._mmu_notify(mm, vpn << PAGE_SHIFT, (vpn + 1) << PAGE_SHIFT, "cow")
            mm.pte.pop(vpn)
            self._forget_rmap(mm, ("pte", vpn), folio)
        else:
            head = vpn & ~(HPAGE_PMD_NR - 1)      # the PMD split invalidates all of it
            self._mmu_notify(mm, head << PAGE_SHIFT, (head + HPAGE_PMD_NR) << PAGE_SHIFT, "cow")
            self._split_huge_pmd(mm, vma, addr)
            ent2 = mm.pte.pop(vpn, None)
            if ent2 is not None:
                self._forget_rmap(mm, ("pte", vpn), pte_entry(ent2)[0])
        self._map_pte(mm, vpn, new, 0)
        self.folio_put(new)
        self.folio_add_lru(new)
        return 0

    def _zap_huge_pmd(self, mm: MMStruct, head: int) -> None:
        """__split_huge_pmd of a file (shmem) THP: the PMD mapping is removed and the
        pages fault back in by PTEs.  Kernel: mm/huge_memory.c:__split_huge_pmd_locked
        (v6.12, the !vma_is_anonymous branch)."""
        folio = mm.huge.pop(head, None)
        if folio is None:
            return
        self._mmu_notify(mm, head << PAGE_SHIFT, (head + HPAGE_PMD_NR) << PAGE_SHIFT, "unmap")
        self._unmap_folio(mm, ("huge", head), folio)

    def _split_huge_pmd(self, mm: MMStruct, vma: VMA | None, addr: int) -> None:
        """Replace a PMD mapping of a THP by 512 PTEs of the same folio."""
        head = (addr >> PAGE_SHIFT) & ~(HPAGE_PMD_NR - 1)
        folio = mm.huge.pop(head, None)
        if folio is None:
            return
        for i in range(HPAGE_PMD_NR):
            self._map_pte(mm, head + i, folio, i)
        self._unmap_folio(mm, ("huge", head), folio)

    def _file_fault(self, mm: MMStruct, vma: VMA, addr: int) -> int:
        """shmem_fault + finish_fault: look the page up (allocating it, large if the
        shmem settings allow) and map it.  A PMD-sized folio in a shared mapping whose
        2 MiB range fits the VMA at a matching file offset, with no PTE there yet, is
        mapped by one huge leaf (do_set_pmd); a large folio of a shared anonymous
        mapping is mapped whole by PTEs when it lies inside the VMA and one page table;
        otherwise the faulting page alone is mapped.  Kernel: mm/memory.c:finish_fault,
        do_set_pmd (v6.12).  (Private mappings of a large folio are PTE-mapped only.)"""
        file = vma.file
        index = vma.file_index(addr)
        folio = file._get_folio_for_fault(index, vma)
        if isinstance(folio, int):
            return folio
        vpn = addr >> PAGE_SHIFT
        if vpn not in mm.pte:
            idx = index - folio.index
            if not folio.order or not self._map_large_file_folio(mm, vma, vpn, folio, idx):
                self._map_pte(mm, vpn, folio, idx)
        self.folio_put(folio)
        return 0

    def _map_large_file_folio(self, mm: MMStruct, vma: VMA, vpn: int, folio: Folio, idx: int) -> bool:
        pte = mm.pte
        if folio.order == HPAGE_PMD_ORDER and vma.is_shared() and not vma.flags & VM_NOHUGEPAGE:
            head = vpn & ~(HPAGE_PMD_NR - 1)
            haddr = head << PAGE_SHIFT
            if idx == vpn - head and not ((vma.start >> PAGE_SHIFT) - vma.pgoff) & (HPAGE_PMD_NR - 1) \
                    and vma.start <= haddr and haddr + (2 << 20) <= vma.end \
                    and head not in mm.huge and not any((head + i) in pte for i in range(HPAGE_PMD_NR)):
                self._map_huge(mm, head, folio)
                return True
        if not getattr(vma.file, "anon_shmem", False):
            return False
        nr = folio.nr_pages
        vma_off = vpn - (vma.start >> PAGE_SHIFT)
        pte_off = vpn & (HPAGE_PMD_NR - 1)
        if vma_off < idx or vma_off + nr - idx > (vma.end - vma.start) >> PAGE_SHIFT \
                or pte_off < idx or pte_off + nr - idx > HPAGE_PMD_NR:
            return False
        first = vpn - idx
        if any((first + i) in pte for i in range(nr)):
            return False
        for i in range(nr):
            self._map_pte(mm, first + i, folio, i)
        return True

    def _hugetlb_fault(self, mm: MMStruct, vma: VMA, addr: int, write: bool = False,
                       unshare: bool = False) -> int:
        """hugetlb_fault: 0, or -EFAULT (SIGBUS: beyond EOF, no pool page).  Shared: map
        the page-cache folio.  Private: a hole gets a new anonymous pool folio (using
        up the mapping's reservation), a page-cache folio is mapped read-only and copied
        on a write or unshare fault, an anonymous one reused when this is its only
        mapping.  Kernel: mm/hugetlb.c:hugetlb_no_page, hugetlb_wp (v6.12)."""
        file = vma.file
        h = file.hstate
        head_addr = addr & ~(h.size - 1)
        head = head_addr >> PAGE_SHIFT
        index = vma.file_index(head_addr)
        folio = mm.huge.get(head)
        if vma.is_shared():
            if folio is not None:
                return 0
            folio = file._get_folio_for_fault(index)
            if isinstance(folio, int):
                return folio
            self._map_huge(mm, head, folio)
            self.folio_put(folio)
            return 0
        if folio is None:
            if index << PAGE_SHIFT >= file.i_size:
                return -errno.EFAULT
            folio = file.mapping.lookup(index)
            if folio is None:
                new = self._alloc_hugetlb_private(vma, index, False)
                if new is None:
                    return -errno.EFAULT        # alloc_hugetlb_folio: -ENOSPC, VM_FAULT_SIGBUS
                self._map_huge(mm, head, new)
                self.folio_put(new)
                return 0
            self._map_huge(mm, head, folio)     # the page-cache folio, read-only
        if not (write or unshare):
            return 0
        # hugetlb_wp
        anon = folio.mapping is None
        if anon and folio._mapcount == 1:
            folio.flags |= PG_anon_exclusive    # reuse
            return 0
        new = self._alloc_hugetlb_private(vma, index, anon and vma.resv is not None)
        if new is None:
            return -errno.EFAULT
        if folio._data:
            new._data = {i: (bytearray(d) if type(d) is bytearray else d) for i, d in folio._data.items()}
        self._mmu_notify(mm, head_addr, head_addr + h.size, "cow")
        mm.huge.pop(head)
        self._unmap_folio(mm, ("huge", head), folio)
        self._map_huge(mm, head, new)
        self.folio_put(new)
        return 0

    def _alloc_hugetlb_private(self, vma: VMA, index: int, avoid_reserve: bool) -> Folio | None:
        """alloc_hugetlb_folio for a private mapping: a new anonymous, exclusive pool
        folio with one reference, or None (-ENOSPC).  It uses the mapping's reservation
        for *index* unless that is used up, the mapping has none (a fork's child) or
        *avoid_reserve* (an owner's COW of its own anonymous page); then only an
        unreserved free page will do.  Kernel: mm/hugetlb.c:alloc_hugetlb_folio,
        vma_needs_reservation, vma_commit_reservation (v6.12)."""
        h = vma.file.hstate
        resv = vma.resv
        use_resv = resv is not None and not avoid_reserve and index not in resv
        if not use_resv:
            if h.available <= 0:
                return None
            h.resv_huge_pages += 1              # taken for the dequeue just below
        folio = self.dequeue_hugetlb_folio(h, self.current_gfp_context(int(_g.GFP_HIGHUSER_MOVABLE)))
        if folio is None:
            if not use_resv:
                h.resv_huge_pages -= 1
            return None
        h.resv_huge_pages -= 1
        if resv is not None:
            resv.add(index)                     # region_add: the reservation is used
        folio.flags |= PG_hugetlb_migratable | PG_uptodate | PG_anon_exclusive
        folio.index = index
        return folio

    def _hugetlb_vm_op_close(self, vma: VMA) -> None:
        """Give back the reservations of *vma*'s range that no fault used.
        Kernel: mm/hugetlb.c:hugetlb_vm_op_close (v6.12)."""
        h = vma.file.hstate
        step = h.size >> PAGE_SHIFT
        first = vma.pgoff
        last = vma.file_index(vma.end)
        resv = vma.resv
        assert resv is not None            # only private hugetlb VMAs get here
        unused = sum(1 for i in range(first, last, step) if i not in resv)
        h.resv_huge_pages -= unused

    # ------------------------------------------------------------------ fork
    def fork(self, mm: MMStruct) -> MMStruct:
        """Duplicate *mm* (dup_mmap): private anonymous pages are shared copy-on-write,
        except pages that may be DMA-pinned in an mm with MMF_HAS_PINNED, which are copied
        at once (copy_present_page).  Another machine's *mm* is a recorded warning and
        gives None.  Kernel: kernel/fork.c, mm/memory.c (v6.12)."""
        if self._foreign(mm, MMStruct, "fork", "mm"):
            return None  # type: ignore[return-value]
        child = self.create_mm()
        mm.write_protect_seq += 2
        for v in mm.vmas:                     # copy_page_range write-protects COW ranges
            if not v.is_shared() and v.flags & VM_MAYWRITE:
                self._mmu_notify(mm, v.start, v.end, "protection")
        for v in mm.vmas:
            nv = VMA(child, v.start, v.end, v.flags, v.file, v.pgoff)
            nv.anon = v.anon
            if v.flags & VM_LOCKED:
                nv.flags &= ~(VM_LOCKED | VM_LOCKONFAULT)
            child._insert_vma(nv)
            nv._link_file(1)
        for vpn, ent in list(mm.pte.items()):
            folio, idx = pte_entry(ent)
            vma = mm.find_vma(vpn << PAGE_SHIFT)
            assert vma is not None          # a mapped page lies in a VMA
            if folio.kind == KIND_ANON and not vma.is_shared():
                if mm.has_pinned and self.folio_maybe_dma_pinned(folio):
                    new = self._new_anon_folio(vma, 0)
                    if new is not None:
                        new.write(0, folio.read(idx << PAGE_SHIFT, PAGE_SIZE))
                        self._map_pte(child, vpn, new, 0)
                        self.folio_put(new)
                        self.folio_add_lru(new)
                        continue
                folio.flags &= ~PG_anon_exclusive
            self._map_pte(child, vpn, folio, idx)
        for vpn, entry in mm.swap_pte.items():     # copy_nonpresent_pte: swap_duplicate
            entry.count += 1
            child.swap_pte[vpn] = entry
        for vpn, folio in list(mm.huge.items()):
            vma = mm.find_vma(vpn << PAGE_SHIFT)
            assert vma is not None          # a mapped page lies in a VMA
            if folio.kind == KIND_HUGETLB and folio.mapping is None and not vma.is_shared():
                # copy_hugetlb_page_range: an anonymous hugetlb page is shared COW, or
                # copied at once when it may be pinned (the copy comes from the pool;
                # when the pool has none the model shares it: see docs/kernel-map.md)
                if mm.has_pinned and self.folio_maybe_dma_pinned(folio):
                    cvma = child.find_vma(vpn << PAGE_SHIFT)
                    assert cvma is not None     # the child has every VMA of the parent
                    new = self._alloc_hugetlb_private(cvma, vma.file_index(vpn << PAGE_SHIFT), True)
                    if new is not None:
                        if folio._data:
                            new._data = {i: (bytearray(d) if type(d) is bytearray else d)
                                         for i, d in folio._data.items()}
                        self._map_huge(child, vpn, new)
                        self.folio_put(new)
                        continue
                folio.flags &= ~PG_anon_exclusive
                self._map_huge(child, vpn, folio)
                continue
            if folio.kind == KIND_ANON and not vma.is_shared():
                if mm.has_pinned and self.folio_maybe_dma_pinned(folio):
                    # copy_huge_pmd cannot share a maybe-pinned THP: the PMD is split and
                    # the child gets its own copy of every page (copy_present_page)
                    for i in range(folio.nr_pages):
                        new = self._new_anon_folio(vma, 0)
                        if new is None:
                            break
                        if folio._data and i in folio._data:
                            new.write(0, folio.read(i << PAGE_SHIFT, PAGE_SIZE))
                        self._map_pte(child, vpn + i, new, 0)
                        self.folio_put(new)
                        self.folio_add_lru(new)
                    continue
                folio.flags &= ~PG_anon_exclusive
            self._map_huge(child, vpn, folio)
        return child
