"""A Python model of the VFIO type1 IOMMU front end (drivers/vfio/vfio_iommu_type1.c).

`VFIO_IOMMU_MAP_DMA` pins a user buffer long-term with ``pin_user_pages_remote(...,
FOLL_LONGTERM | FOLL_WRITE)`` in batches, maps each physically contiguous run into every
IOMMU domain, charges the pages to the mapping's mm (``locked_vm`` against
RLIMIT_MEMLOCK) and unwinds everything on any failure; `VFIO_IOMMU_UNMAP_DMA` unmaps,
unpins (dirtying writable pages) and uncharges exactly.  Only the public API of the fake
mm is used, so the same shape fits any driver that pins user memory for a device.

Modelled (reference: kernel-contract.md section 6): the vfio_iommu / vfio_dma /
vfio_batch objects, vaddr_get_pfns, vfio_pin_pages_remote (contiguity, RLIMIT_MEMLOCK,
vfio_lock_acct against ``dma->mm``), vfio_pin_map_dma, vfio_unmap_unpin, the errno rules
of vfio_dma_do_map / vfio_dma_do_unmap (v2 semantics), FLAG_VADDR invalidate/update with
vfio_change_dma_owner.  Not modelled: VM_PFNMAP (MMIO) ranges, external (mdev) pins,
dirty-page tracking bitmaps, a container without domain (pinning on attach/replay).
"""

from __future__ import annotations

import bisect
import errno
from dataclasses import dataclass, field
from typing import Any

from pytest_pinfault import pin_entry_point
from pytest_pinfault.mm import FOLL_LONGTERM, FOLL_WRITE, GFP_KERNEL, GFP_KERNEL_ACCOUNT, PAGE_SHIFT, PAGE_SIZE

# ---------------------------------------------------------------- UAPI (include/uapi/linux/vfio.h)
VFIO_DMA_MAP_FLAG_READ = 1 << 0
VFIO_DMA_MAP_FLAG_WRITE = 1 << 1
VFIO_DMA_MAP_FLAG_VADDR = 1 << 2
VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1 << 0
VFIO_DMA_UNMAP_FLAG_ALL = 1 << 1
VFIO_DMA_UNMAP_FLAG_VADDR = 1 << 2

IOMMU_READ = 1 << 0
IOMMU_WRITE = 1 << 1

U64_MAX = (1 << 64) - 1
SIZE_MAX = U64_MAX
DMA_ENTRY_LIMIT = 65535                      # module parameter dma_entry_limit
VFIO_BATCH_MAX_CAPACITY = PAGE_SIZE // 8     # PAGE_SIZE / sizeof(struct page *)

# Driver fault sites (declared in conftest.py through pytest_pinfault_declare_sites).
SITES = {
    "vfio.iommu_map": ("ENOMEM EBUSY", "iommu_map() of one contiguous run into a domain fails"),
    "vfio.lock_acct": ("ENOMEM EINTR", "vfio_lock_acct: mmap_write_lock_killable interrupted"),
}


@dataclass
class vfio_iommu_type1_dma_map:
    """struct vfio_iommu_type1_dma_map (argsz, flags, vaddr, iova, size)."""
    vaddr: int = 0
    iova: int = 0
    size: int = 0
    flags: int = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE
    argsz: int = 32


@dataclass
class vfio_iommu_type1_dma_unmap:
    """struct vfio_iommu_type1_dma_unmap (argsz, flags, iova, size); ``size`` is
    written back with the number of bytes unmapped."""
    iova: int = 0
    size: int = 0
    flags: int = 0
    argsz: int = 24


# ---------------------------------------------------------------- fake IOMMU
class FakeIommuDomain:
    """An IOMMU domain: page table iova -> (pfn, prot), 4 KiB granule."""

    def __init__(self, k: Any, pgsize_bitmap: int = 0x40201000, aperture: tuple[int, int] = (0, (1 << 48) - 1)):
        self.k = k
        self.pgsize_bitmap = pgsize_bitmap
        self.aperture = aperture
        self.entries: dict[int, tuple[int, int]] = {}
        self.map_calls = 0

    def map(self, iova: int, pfn: int, npages: int, prot: int) -> int:
        """iommu_map(): 0 or -errno; maps nothing on failure."""
        self.map_calls += 1
        rc = self.k.fault_point("vfio.iommu_map", iova=iova, npages=npages)
        if rc is not None:
            return rc
        for i in range(npages):
            if iova + i * PAGE_SIZE in self.entries:     # pinfault: never -- the dma tree rejects overlaps first (do_map -EEXIST)
                return -errno.EEXIST
        for i in range(npages):
            self.entries[iova + i * PAGE_SIZE] = (pfn + i, prot)
        return 0

    def unmap(self, iova: int, size: int) -> int:
        """iommu_unmap(): bytes unmapped (stops at the first hole)."""
        done = 0
        while done < size and self.entries.pop(iova + done, None) is not None:
            done += PAGE_SIZE
        return done

    def iova_to_phys(self, iova: int) -> int:
        e = self.entries.get(iova & ~(PAGE_SIZE - 1))
        return 0 if e is None else (e[0] << PAGE_SHIFT) | (iova & (PAGE_SIZE - 1))


# ---------------------------------------------------------------- driver objects
@dataclass(eq=False)
class vfio_dma:
    iova: int
    vaddr: int
    prot: int
    lock_cap: bool
    task: Any
    mm: Any
    size: int = 0
    locked_vm: int = 0           # pages charged to mm (kept for vfio_change_dma_owner)
    vaddr_invalid: bool = False
    iommu_mapped: bool = False
    kobj: Any = None             # the kzalloc'd backing object

    @property
    def end(self) -> int:
        return self.iova + self.size


@dataclass(eq=False)
class vfio_batch:
    pages: list = field(default_factory=list)
    capacity: int = 1
    size: int = 0                # valid entries
    offset: int = 0              # next entry to consume
    page: Any = None             # the backing page of the pointer array, if any


class VfioIommuType1:
    """One container (``struct vfio_iommu``) with its domains and dma tree.

    ``k`` is the fake mm (found by ``@pin_entry_point`` through this attribute)."""

    def __init__(self, k: Any, ndomains: int = 1, dma_entry_limit: int = DMA_ENTRY_LIMIT,
                 disable_hugepages: bool = False, batch_capacity: int = VFIO_BATCH_MAX_CAPACITY):
        self.k = k
        self.domains = [FakeIommuDomain(k) for _ in range(ndomains)]
        self.dma_list: list[vfio_dma] = []       # sorted by iova (the rb-tree)
        self.dma_avail = dma_entry_limit
        self.v2 = True
        self.disable_hugepages = disable_hugepages
        self.batch_capacity = batch_capacity
        self.vaddr_invalid_count = 0
        self.warnings: list[str] = []            # pr_warn() lines
        self.pgsize_bitmap = 0
        for d in self.domains:
            self.pgsize_bitmap = d.pgsize_bitmap if not self.pgsize_bitmap else self.pgsize_bitmap & d.pgsize_bitmap
        self.iova_ranges = [(max(d.aperture[0] for d in self.domains), min(d.aperture[1] for d in self.domains))]

    # ------------------------------------------------------------ iova tree
    def find_dma(self, start: int, size: int) -> vfio_dma | None:
        """vfio_find_dma: a dma overlapping [start, start+size)."""
        for d in self.dma_list:
            if start + size <= d.iova:
                return None
            if start < d.iova + max(d.size, 1) and d.iova < start + size:
                return d
        return None

    def _link(self, dma: vfio_dma) -> None:
        keys = [d.iova for d in self.dma_list]
        self.dma_list.insert(bisect.bisect(keys, dma.iova), dma)

    def _unlink(self, dma: vfio_dma) -> None:
        self.dma_list.remove(dma)

    @property
    def pgsize(self) -> int:
        return self.pgsize_bitmap & -self.pgsize_bitmap

    def iova_dma_valid(self, start: int, end: int) -> bool:
        return any(lo <= start and end <= hi for lo, hi in self.iova_ranges)

    # ------------------------------------------------------------ batch
    def batch_init(self) -> vfio_batch:
        """vfio_batch_init: one page of pointers, or a single entry if that fails."""
        b = vfio_batch()
        if self.disable_hugepages:
            return b
        page = self.k.alloc_pages(GFP_KERNEL, 0)
        if page is not None:
            b.page = page
            b.capacity = self.batch_capacity
        return b

    def batch_fini(self, b: vfio_batch) -> None:
        if b.page is not None:
            self.k.free_pages_block(b.page, 0)
            b.page = None

    def batch_unpin(self, dma: vfio_dma, b: vfio_batch) -> None:
        """vfio_batch_unpin: put the entries not consumed yet."""
        while b.size:
            self.put_pfn(b.pages[b.offset].pfn, dma.prot)
            b.offset += 1
            b.size -= 1

    def put_pfn(self, pfn: int, prot: int) -> int:
        page = self.k.pfn_to_page(pfn)
        self.k.unpin_user_pages_dirty_lock([page], 1, bool(prot & IOMMU_WRITE))
        return 1

    # ------------------------------------------------------------ accounting
    def lock_acct(self, dma: vfio_dma, npage: int) -> int:
        """vfio_lock_acct(dma, npage, async=false): charge dma->mm."""
        if not npage:
            return 0
        if npage > 0:
            rc = self.k.fault_point("vfio.lock_acct", npage=npage)
            if rc is not None:
                return rc
        rc = self.k.account_locked_vm(self.acct_mm(dma), abs(npage), npage > 0)
        if rc == 0:
            dma.locked_vm += npage
        return rc

    def acct_mm(self, dma: vfio_dma) -> Any:
        return dma.mm

    # ------------------------------------------------------------ pinning
    def pin_flags(self, prot: int) -> int:
        return FOLL_LONGTERM | (FOLL_WRITE if prot & IOMMU_WRITE else 0)

    def vaddr_get_pfns(self, mm: Any, vaddr: int, npages: int, prot: int, b: vfio_batch) -> int:
        """Fill the batch: the number of pages pinned or -errno (0 pinned -> -EFAULT)."""
        pages: list = []
        ret = self.k.pin_user_pages_remote(mm, vaddr, min(npages, b.capacity), self.pin_flags(prot), pages, None)
        if ret > 0:
            b.pages = pages
            b.offset = 0
            b.size = ret
            return ret
        return -errno.EFAULT if ret == 0 else ret

    def pin_pages_remote(self, dma: vfio_dma, vaddr: int, npage: int, limit: int, b: vfio_batch) -> tuple[int, int]:
        """vfio_pin_pages_remote: (pages in the contiguous run, first pfn) or (-errno, 0).

        Pins batch after batch while the pfns stay physically contiguous; charges the run
        to dma->mm; on any error unpins everything pinned by this call."""
        mm = self.k.current.mm
        if mm is None:
            return -errno.ENODEV, 0
        pinned = 0
        lock_acct = 0
        pfn_base = 0
        ret = 0
        while npage:
            if not b.size:
                n = self.vaddr_get_pfns(mm, vaddr, npage, dma.prot, b)
                if n < 0:
                    ret = n
                    break
            while True:
                pfn = b.pages[b.offset].pfn
                if pinned == 0:
                    pfn_base = pfn
                elif pfn != pfn_base + pinned:
                    break                                  # not contiguous: run ends here
                if not dma.lock_cap and mm.locked_vm + lock_acct + 1 > limit:
                    self.warnings.append(f"vfio_pin_pages_remote: RLIMIT_MEMLOCK ({limit << PAGE_SHIFT}) exceeded")
                    ret = -errno.ENOMEM
                    break
                lock_acct += 1
                pinned += 1
                npage -= 1
                vaddr += PAGE_SIZE
                b.offset += 1
                b.size -= 1
                if not b.size or not npage:
                    break
            if ret or b.size:                              # error, or a discontiguity
                break
        if not ret:
            ret = self.lock_acct(dma, lock_acct)
        if ret:
            if pinned:
                for pfn in range(pfn_base, pfn_base + pinned):
                    self.put_pfn(pfn, dma.prot)
            self.batch_unpin(dma, b)
            return ret, 0
        return pinned, pfn_base

    def unpin_pages_remote(self, dma: vfio_dma, pfn: int, npage: int, do_accounting: bool) -> int:
        for i in range(npage):
            self.put_pfn(pfn + i, dma.prot)
        if do_accounting:
            self.lock_acct(dma, -npage)
        return npage

    # ------------------------------------------------------------ mapping
    def iommu_map(self, iova: int, pfn: int, npage: int, prot: int) -> int:
        """vfio_iommu_map: map into every domain, unwinding mapped domains on failure."""
        for i, d in enumerate(self.domains):
            ret = d.map(iova, pfn, npage, prot)
            if ret:
                for done in self.domains[:i]:
                    done.unmap(iova, npage << PAGE_SHIFT)
                return ret
        return 0

    def pin_map_dma(self, dma: vfio_dma, map_size: int) -> int:
        """vfio_pin_map_dma: pin and map chunk after chunk; remove the dma on failure."""
        size = map_size
        ret = 0
        limit = self.k.current.mm.rlimit_memlock >> PAGE_SHIFT if self.k.current.mm else 0
        b = self.batch_init()
        while size:
            npage, pfn = self.pin_pages_remote(dma, dma.vaddr + dma.size, size >> PAGE_SHIFT, limit, b)
            if npage <= 0:
                ret = npage or -errno.EFAULT
                break
            ret = self.iommu_map(dma.iova + dma.size, pfn, npage, dma.prot)
            if ret:
                self.unwind_chunk(dma, pfn, npage, b)
                break
            size -= npage << PAGE_SHIFT
            dma.size += npage << PAGE_SHIFT
        self.batch_fini(b)
        if ret:
            self.unwind_failed_map(dma)
        else:
            dma.iommu_mapped = True
        return ret

    def unwind_failed_map(self, dma: vfio_dma) -> None:
        """MAP_DMA is all-or-nothing: the whole dma goes (vfio_remove_dma)."""
        self.remove_dma(dma)

    def unwind_chunk(self, dma: vfio_dma, pfn: int, npage: int, b: vfio_batch) -> None:
        """The chunk that failed to map: unpin and uncharge it, drop the batch leftovers."""
        self.unpin_pages_remote(dma, pfn, npage, True)
        self.batch_unpin(dma, b)

    def unmap_unpin(self, dma: vfio_dma, do_accounting: bool = True) -> int:
        """vfio_unmap_unpin: walk the mapped iova range in physically contiguous extents,
        unmap them from every domain and unpin their pages; return locked_vm."""
        iova, end = dma.iova, dma.iova + dma.size
        unlocked = 0
        if not self.domains:                   # pinfault: never -- the model has no domain-less (mdev-only) container
            return 0
        first, rest = self.domains[0], self.domains[1:]
        for d in rest:                         # only the first domain is walked for pfns
            d.unmap(iova, dma.size)
        while iova < end:
            phys = first.iova_to_phys(iova)
            if not phys:                       # pinfault: never -- dma.size grows only over chunks mapped in every domain: no holes
                iova += PAGE_SIZE
                continue
            length = PAGE_SIZE
            while iova + length < end and first.iova_to_phys(iova + length) == phys + length:
                length += PAGE_SIZE
            unmapped = first.unmap(iova, length)
            if not unmapped:                   # pinfault: never -- iova_to_phys just found the entry
                break
            unlocked += self.unpin_pages_remote(dma, phys >> PAGE_SHIFT, unmapped >> PAGE_SHIFT, False)
            iova += unmapped
        dma.iommu_mapped = False
        if do_accounting:
            self.lock_acct(dma, -unlocked)
        return unlocked

    def remove_dma(self, dma: vfio_dma) -> None:
        """vfio_remove_dma: unmap/unpin/uncharge, unlink, free."""
        self.unmap_unpin(dma, True)
        self._unlink(dma)
        if dma.vaddr_invalid:
            self.vaddr_invalid_count -= 1
        self.k.kfree(dma.kobj)
        self.dma_avail += 1

    def change_dma_owner(self, dma: vfio_dma) -> int:
        """vfio_change_dma_owner: move the locked_vm charge to current's mm."""
        new_mm = self.k.current.mm
        if new_mm is dma.mm:
            return 0
        npage = dma.locked_vm
        if npage:
            ret = self.k.account_locked_vm(new_mm, npage, True)
            if ret:
                return ret
            self.k.account_locked_vm(dma.mm, npage, False)
        dma.mm = new_mm
        dma.task = self.k.current
        dma.lock_cap = self.k.current_capable_ipc_lock()
        return 0

    # ------------------------------------------------------------ ioctls
    def do_map(self, m: vfio_iommu_type1_dma_map) -> int:
        """vfio_dma_do_map (plus the ioctl wrapper's argsz/flags checks)."""
        if m.argsz < 32 or m.flags & ~(VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE | VFIO_DMA_MAP_FLAG_VADDR):
            return -errno.EINVAL
        if not all(0 <= v <= U64_MAX for v in (m.size, m.vaddr, m.iova)):
            return -errno.EINVAL
        set_vaddr = bool(m.flags & VFIO_DMA_MAP_FLAG_VADDR)
        prot = (IOMMU_WRITE if m.flags & VFIO_DMA_MAP_FLAG_WRITE else 0) | \
               (IOMMU_READ if m.flags & VFIO_DMA_MAP_FLAG_READ else 0)
        if bool(prot) == set_vaddr:
            return -errno.EINVAL
        pgsize = self.pgsize
        iova, vaddr, size = m.iova, m.vaddr, m.size
        if not size or (size | iova | vaddr) & (pgsize - 1):
            return -errno.EINVAL
        if iova + size - 1 > U64_MAX or vaddr + size - 1 > U64_MAX:
            return -errno.EINVAL                      # wrap
        dma = self.find_dma(iova, size)
        if set_vaddr:
            if dma is None:
                return -errno.ENOENT
            if not dma.vaddr_invalid or dma.iova != iova or dma.size != size:
                return -errno.EINVAL
            ret = self.change_dma_owner(dma)
            if ret:
                return ret
            dma.vaddr = vaddr
            dma.vaddr_invalid = False
            self.vaddr_invalid_count -= 1
            return 0
        if dma is not None:
            return -errno.EEXIST
        if not self.dma_avail:
            return -errno.ENOSPC
        if not self.iova_dma_valid(iova, iova + size - 1):
            return -errno.EINVAL
        kobj = self.k.kmalloc(128, GFP_KERNEL_ACCOUNT)
        if kobj is None:
            return -errno.ENOMEM
        cur = self.k.current
        self.dma_avail -= 1
        dma = vfio_dma(iova=iova, vaddr=vaddr, prot=prot, lock_cap=self.k.current_capable_ipc_lock(),
                       task=cur, mm=cur.mm, kobj=kobj)
        self._link(dma)
        return self.pin_map_dma(dma, size)

    def do_unmap(self, u: vfio_iommu_type1_dma_unmap) -> int:
        """vfio_dma_do_unmap (v2): 0 with ``u.size`` = bytes unmapped, or -errno."""
        known = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VFIO_DMA_UNMAP_FLAG_ALL | VFIO_DMA_UNMAP_FLAG_VADDR
        if u.argsz < 24 or u.flags & ~known:
            return -errno.EINVAL
        unmap_all = bool(u.flags & VFIO_DMA_UNMAP_FLAG_ALL)
        invalidate_vaddr = bool(u.flags & VFIO_DMA_UNMAP_FLAG_VADDR)
        pgsize = self.pgsize
        iova, size = u.iova, u.size
        unmapped = 0
        ret = -errno.EINVAL
        try:
            if iova & (pgsize - 1):
                return ret
            if unmap_all:
                if iova or size:
                    return ret
                size = U64_MAX
            elif not size or size & (pgsize - 1) or iova + size - 1 > U64_MAX or size > SIZE_MAX:
                return ret
            if u.flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP:
                return ret                             # no dirty tracking in this model
            if self.v2 and not unmap_all:
                d = self.find_dma(iova, 1)
                if d is not None and d.iova != iova:
                    return ret                         # bisects the start of a mapping
                d = self.find_dma(iova + size - 1, 1)
                if d is not None and d.end != iova + size:
                    return ret                         # bisects the end of a mapping
            ret = 0
            for d in [d for d in self.dma_list if iova <= d.iova < iova + size]:
                if invalidate_vaddr:
                    if d.vaddr_invalid:
                        ret = -errno.EINVAL
                        return ret
                    d.vaddr_invalid = True
                    self.vaddr_invalid_count += 1
                    unmapped += d.size
                    continue
                unmapped += d.size
                self.remove_dma(d)
            return ret
        finally:
            u.size = unmapped

    def release(self) -> None:
        """vfio_iommu_type1_release: the container fd was closed."""
        for d in list(self.dma_list):
            self.remove_dma(d)


# ---------------------------------------------------------------- entry points (the ioctls)
@pin_entry_point(name="VFIO_IOMMU_MAP_DMA", count=False)
def vfio_iommu_map_dma(iommu: VfioIommuType1, map: vfio_iommu_type1_dma_map) -> int:
    return iommu.do_map(map)


@pin_entry_point(name="VFIO_IOMMU_UNMAP_DMA", count=False)
def vfio_iommu_unmap_dma(iommu: VfioIommuType1, unmap: vfio_iommu_type1_dma_unmap) -> int:
    return iommu.do_unmap(unmap)


@pin_entry_point(name="vfio_iommu_type1_release", count=False)
def vfio_iommu_release(iommu: VfioIommuType1) -> None:
    iommu.release()


def dma_pages(iommu: VfioIommuType1, iova: int, size: int) -> list:
    """The pages the first domain maps for [iova, iova+size) (None for holes)."""
    d = iommu.domains[0]
    out = []
    for off in range(0, size, PAGE_SIZE):
        e = d.entries.get(iova + off)
        out.append(None if e is None else iommu.k.pfn_to_page(e[0]))
    return out


__all__ = [n for n in dir() if n.startswith(("vfio", "VFIO", "IOMMU", "Fake", "Vfio", "DMA_", "SITES", "dma_"))]
