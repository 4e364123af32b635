"""A Python model of the RDMA user-memory pinning core (drivers/infiniband/core/umem.c, v6.12).

``ib_umem_get()`` is what every RDMA driver's ``reg_user_mr`` calls to turn a user buffer
into DMA addresses: it grabs the caller's mm, charges ``mm->pinned_vm`` against
RLIMIT_MEMLOCK (unless CAP_IPC_LOCK), pins the buffer long-term with
``pin_user_pages_fast(FOLL_LONGTERM [| FOLL_WRITE])`` in batches of one page of page
pointers (512), appends each batch to an ``sg_append_table`` (merging physically
contiguous pages up to the device's max segment size), and DMA-maps the table for the
device.  Any failure unwinds everything: unpin, free the table, give back pinned_vm, drop
the mm.  ``ib_umem_release()`` undoes a successful get.

Written against the fake mm's kernel-shaped API only (``can_do_mlock``, ``capable``,
``mmgrab``/``mmdrop``, ``kzalloc``/``kfree``, ``alloc_pages``/``free_pages_block`` for the
page list, ``pin_user_pages_fast``, ``sg_alloc_append_table_from_pages``,
``dma_map_sgtable``/``dma_unmap_sgtable``, ``unpin_user_page(s)_*``,
``sg_free_append_table``).  Its allocations are the kernel's, so a fault matrix over
``kmalloc``, ``alloc_pages``, ``try_grab_folio``, ``dma_map_sg``, ``dma_map_page`` hits
ib_umem_get where the kernel can fail.  Kernel references: include/rdma/ib_umem.h,
include/rdma/ib_verbs.h (IB_ACCESS_*, ib_access_writable, ib_dma_max_seg_size).
"""

from __future__ import annotations

import errno
from typing import Any

from pytest_pinfault import pin_entry_point
from pytest_pinfault.mm import FOLL_LONGTERM, FOLL_WRITE, GFP_KERNEL, PAGE_SHIFT, PAGE_SIZE
from pytest_pinfault.mm.dma_mapping import DMA_ATTR_WEAK_ORDERING, DMA_BIDIRECTIONAL, Device
from pytest_pinfault.mm.scatterlist import UINT_MAX, SgAppendTable, for_each_sgtable_sg, sg_page
from pytest_pinfault.mm.user import CAP_IPC_LOCK

__all__ = ["IB_ACCESS_LOCAL_WRITE", "IB_ACCESS_REMOTE_WRITE", "IB_ACCESS_REMOTE_READ",
           "IB_ACCESS_REMOTE_ATOMIC", "IB_ACCESS_MW_BIND", "IB_ACCESS_ON_DEMAND",
           "IB_ACCESS_RELAXED_ORDERING", "IbDevice", "IbUmem", "UmemCore", "ib_umem_num_pages"]

IB_ACCESS_LOCAL_WRITE = 1
IB_ACCESS_REMOTE_WRITE = 1 << 1
IB_ACCESS_REMOTE_READ = 1 << 2
IB_ACCESS_REMOTE_ATOMIC = 1 << 3
IB_ACCESS_MW_BIND = 1 << 4
IB_ACCESS_ON_DEMAND = 1 << 6
IB_ACCESS_RELAXED_ORDERING = 1 << 20
SIZEOF_IB_UMEM = 96
PAGE_PTRS = PAGE_SIZE // 8                    # PAGE_SIZE / sizeof(struct page *)


def ib_access_writable(access: int) -> bool:
    """include/rdma/ib_verbs.h:ib_access_writable."""
    return bool(access & (IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE
                          | IB_ACCESS_REMOTE_ATOMIC | IB_ACCESS_MW_BIND))


class IbDevice:
    """``struct ib_device`` with its DMA device (``dma_device``)."""

    def __init__(self, k: Any, name: str = "mlx5_0", max_seg_size: int = UINT_MAX) -> None:
        self.k = k
        self.name = name
        self.dma_device: Device = k.create_device(name)
        k.dma_set_max_seg_size(self.dma_device, max_seg_size)

    def max_seg_size(self) -> int:
        """include/rdma/ib_verbs.h:ib_dma_max_seg_size (not a virtual-DMA device)."""
        return self.k.dma_get_max_seg_size(self.dma_device)


class IbUmem:
    """``struct ib_umem``: the pinned, DMA-mapped user range."""

    def __init__(self, ibdev: IbDevice, addr: int, size: int, writable: bool, mm: Any, kobj: Any) -> None:
        self.ibdev = ibdev
        self.length = size
        self.address = addr
        self.iova = addr
        self.writable = writable
        self.owning_mm = mm
        self.sgt_append = SgAppendTable()
        self.kobj = kobj

    def __repr__(self) -> str:
        return f"<ib_umem {self.address:#x}+{self.length} nents={self.sgt_append.sgt.nents}>"


def ib_umem_num_pages(umem: IbUmem) -> int:
    """include/rdma/ib_umem.h:ib_umem_num_pages (ib_umem_num_dma_blocks at PAGE_SIZE)."""
    end = (umem.iova + umem.length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    return (end - (umem.iova & ~(PAGE_SIZE - 1))) >> PAGE_SHIFT


class UmemCore:
    """The umem functions bound to a fake mm (``k``, found by ``@pin_entry_point``).
    Buggy twins override one step each (see buggy.py)."""

    def __init__(self, k: Any) -> None:
        self.k = k

    # ------------------------------------------------------------------ release
    def release_pages(self, dev: IbDevice, umem: IbUmem, dirty: bool) -> None:
        """__ib_umem_release: unmap (only when it was mapped), unpin every sg run, free the table."""
        k = self.k
        make_dirty = umem.writable and dirty
        if dirty:
            k.dma_unmap_sgtable(dev.dma_device, umem.sgt_append.sgt, DMA_BIDIRECTIONAL, 0)
        for _, sg in for_each_sgtable_sg(umem.sgt_append.sgt):
            k.unpin_user_page_range_dirty_lock(sg_page(sg), (sg.length + PAGE_SIZE - 1) // PAGE_SIZE,
                                               make_dirty)
        k.sg_free_append_table(umem.sgt_append)

    def uncharge(self, umem: IbUmem, mm: Any) -> None:
        """atomic64_sub(ib_umem_num_pages(umem), &mm->pinned_vm)."""
        mm.pinned_vm -= ib_umem_num_pages(umem)

    def uncharge_on_error(self, umem: IbUmem, mm: Any) -> None:
        self.uncharge(umem, mm)

    def release(self, umem: IbUmem | None) -> None:
        """ib_umem_release."""
        if umem is None:
            return
        self.release_pages(umem.ibdev, umem, True)
        self.uncharge(umem, umem.owning_mm)
        self.k.mmdrop(umem.owning_mm)
        self.k.kfree(umem.kobj)

    # ------------------------------------------------------------------ get
    @pin_entry_point(name="ib_umem_get", count=False)
    def get(self, device: IbDevice, addr: int, size: int, access: int) -> Any:
        """ib_umem_get: an :class:`IbUmem` or a negative errno (ERR_PTR)."""
        k = self.k
        if addr + size >= 1 << 64 or ((addr + size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)) >= 1 << 64:
            return -errno.EINVAL
        if not k.can_do_mlock():
            return -errno.EPERM
        if access & IB_ACCESS_ON_DEMAND:
            return -errno.EOPNOTSUPP
        kobj = k.kzalloc(SIZEOF_IB_UMEM, GFP_KERNEL)
        if kobj is None:
            return -errno.ENOMEM
        mm = k.current.mm
        umem = IbUmem(device, addr, size, ib_access_writable(access), mm, kobj)
        k.mmgrab(mm)
        ret = self.pin_and_map(device, umem, mm, access)
        if ret:
            k.mmdrop(umem.owning_mm)
            k.kfree(kobj)
            return ret
        return umem

    def pin_and_map(self, device: IbDevice, umem: IbUmem, mm: Any, access: int) -> int:
        """From the page list allocation to the DMA map, with the kernel's unwind labels."""
        k = self.k
        page_list = k.alloc_pages(GFP_KERNEL, 0)           # __get_free_page
        if page_list is None:
            return -errno.ENOMEM
        try:
            npages = ib_umem_num_pages(umem)
            if npages == 0 or npages > UINT_MAX:
                return -errno.EINVAL
            lock_limit = k.rlimit_memlock() >> PAGE_SHIFT
            mm.pinned_vm += npages
            if mm.pinned_vm > lock_limit and not k.capable(CAP_IPC_LOCK):
                mm.pinned_vm -= npages
                return -errno.ENOMEM
            ret = self.pin_all(device, umem, npages)
            if ret == 0:
                attrs = DMA_ATTR_WEAK_ORDERING if access & IB_ACCESS_RELAXED_ORDERING else 0
                ret = k.dma_map_sgtable(device.dma_device, umem.sgt_append.sgt, DMA_BIDIRECTIONAL, attrs)
            if ret:
                self.release_pages(device, umem, False)            # umem_release:
                self.uncharge_on_error(umem, mm)
            return ret
        finally:
            k.free_pages_block(page_list, 0)                       # out: free_page(page_list)

    def pin_flags(self, umem: IbUmem) -> int:
        return FOLL_LONGTERM | (FOLL_WRITE if umem.writable else 0)

    def pin_all(self, device: IbDevice, umem: IbUmem, npages: int) -> int:
        """The batch loop: pin up to 512 pages, append them to the sg table."""
        k = self.k
        cur_base = umem.address & ~(PAGE_SIZE - 1)
        flags = self.pin_flags(umem)
        while npages:
            batch: list = []
            pinned = k.pin_user_pages_fast(cur_base, min(npages, PAGE_PTRS), flags, batch)
            if pinned < 0:
                return pinned
            cur_base += pinned * PAGE_SIZE
            npages -= pinned
            ret = k.sg_alloc_append_table_from_pages(umem.sgt_append, batch, pinned, 0, pinned << PAGE_SHIFT,
                                                     device.max_seg_size(), npages, GFP_KERNEL)
            if ret:
                self.unpin_batch(batch, pinned)
                return ret
        return 0

    def unpin_batch(self, batch: list, pinned: int) -> None:
        self.k.unpin_user_pages_dirty_lock(batch, pinned, False)
