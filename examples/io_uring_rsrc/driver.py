"""A Python model of io_uring fixed-buffer registration (io_uring/rsrc.c, io_uring/memmap.c, v6.12).

``IORING_REGISTER_BUFFERS`` reads an array of ``struct iovec`` from user memory and, for
each buffer, pins it long-term (``io_pin_pages``: ``pin_user_pages_fast(FOLL_WRITE |
FOLL_LONGTERM)``, all or ``-EFAULT``), coalesces a buffer made of whole huge folios into one
``bio_vec`` per folio (dropping all pins but one per folio), allocates the
``io_mapped_ubuf`` (imu) with its bvec array, and charges the pages -- a huge folio once,
even across buffers -- to the ring owner's per-user ``locked_vm`` against RLIMIT_MEMLOCK
(unless CAP_IPC_LOCK) and to the ring mm's ``pinned_vm``.  A failure on any buffer
unregisters the ones before it.  Unregistering unpins one pin per bvec and uncharges.

Written against the fake mm's kernel-shaped API only (``get_uid``/``free_uid``,
``current_user``, ``capable``, ``mmgrab``/``mmdrop``, ``copy_from_user``,
``kvmalloc_array``/``kfree``, ``pin_user_pages_fast``, ``unpin_user_pages``,
``unpin_user_folio``, compound-page helpers).  The ring's ``io_uring_create`` and
``io_ring_ctx_free`` keep only what registration needs.
"""

from __future__ import annotations

import errno
from typing import Any

from pytest_pinfault import Out, pin_entry_point
from pytest_pinfault.mm import FOLL_LONGTERM, FOLL_WRITE, GFP_KERNEL, GFP_KERNEL_ACCOUNT, PAGE_SHIFT, PAGE_SIZE
from pytest_pinfault.mm.page_flags import (PageCompound, compound_head, folio_nr_pages, folio_page_idx,
                                           folio_size, page_size)
from pytest_pinfault.mm.user import CAP_IPC_LOCK

__all__ = ["IoRingCtx", "IoMappedUbuf", "IoUringRsrc", "IORING_MAX_REG_BUFFERS", "SZ_1G", "write_iovecs"]

IORING_MAX_REG_BUFFERS = 1 << 14
SZ_1G = 1 << 30
SIZEOF_IOVEC = 16
SIZEOF_IMU = 48                       # struct io_mapped_ubuf without its bvec[]
SIZEOF_BVEC = 16


class IoMappedUbuf:
    """``struct io_mapped_ubuf``: ``ubuf``, ``len``, ``folio_shift``, ``acct_pages`` and
    ``bvec`` as ``(page, len, offset)``; ``kobj`` is its allocation."""

    def __init__(self, kobj: Any) -> None:
        self.kobj = kobj
        self.ubuf = 0
        self.len = 0
        self.folio_shift = PAGE_SHIFT
        self.refs = 1
        self.acct_pages = 0
        self.bvec: list[tuple[Any, int, int]] = []

    @property
    def nr_bvecs(self) -> int:
        return len(self.bvec)


DUMMY_UBUF = IoMappedUbuf(None)        # dummy_ubuf: an empty slot (iov_base NULL)


class IoRingCtx:
    """The part of ``struct io_ring_ctx`` registration uses."""

    def __init__(self, k: Any) -> None:
        self.k = k
        self.user: Any = None
        self.mm_account: Any = None
        self.user_bufs: list[IoMappedUbuf] | None = None
        self.user_bufs_obj: Any = None
        self.nr_user_bufs = 0
        self.buf_data: Any = None


def write_iovecs(k: Any, iovs: list[tuple[int, int]]) -> int:
    """Put an array of ``struct iovec`` in the current process's memory (test helper)."""
    from pytest_pinfault.mm import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
    mm = k.current.mm
    n = max(1, len(iovs)) * SIZEOF_IOVEC
    addr = mm.mmap((n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    data = b"".join(b.to_bytes(8, "little") + n_.to_bytes(8, "little") for b, n_ in iovs)
    assert k.copy_to_user(addr, data, len(data)) == 0
    return addr


class IoUringRsrc:
    """Registration functions bound to a fake mm ``k``; twins override single steps."""

    def __init__(self, k: Any) -> None:
        self.k = k

    # ------------------------------------------------------------------ ring
    def create(self) -> IoRingCtx:
        """io_uring_create: the accounting parts."""
        k = self.k
        ctx = IoRingCtx(k)
        if not k.capable(CAP_IPC_LOCK):
            ctx.user = k.get_uid(k.current_user())
        k.mmgrab(k.current.mm)
        ctx.mm_account = k.current.mm
        return ctx

    def free(self, ctx: IoRingCtx) -> None:
        """io_ring_ctx_free: the accounting parts."""
        if ctx.user_bufs is not None:
            self.sqe_buffers_unregister_all(ctx)
        if ctx.mm_account is not None:
            self.k.mmdrop(ctx.mm_account)
            ctx.mm_account = None
        self.k.free_uid(ctx.user)

    # ------------------------------------------------------------------ accounting
    def account_mem(self, ctx: IoRingCtx, nr_pages: int) -> int:
        """io_account_mem / __io_account_mem."""
        if ctx.user is not None and nr_pages:
            limit = self.k.rlimit_memlock() >> PAGE_SHIFT
            if ctx.user.locked_vm + nr_pages > limit:
                return -errno.ENOMEM
            ctx.user.locked_vm += nr_pages
        if ctx.mm_account is not None:
            ctx.mm_account.pinned_vm += nr_pages
        return 0

    def unaccount_mem(self, ctx: IoRingCtx, nr_pages: int) -> None:
        """io_unaccount_mem."""
        if ctx.user is not None:
            ctx.user.locked_vm -= nr_pages
        if ctx.mm_account is not None:
            ctx.mm_account.pinned_vm -= nr_pages

    @staticmethod
    def headpage_already_acct(ctx: IoRingCtx, pages: list, nr_pages: int, hpage: Any) -> bool:
        for i in range(nr_pages):
            if PageCompound(pages[i]) and compound_head(pages[i]) == hpage:
                return True
        for i in range(ctx.nr_user_bufs):
            for page, _, _ in ctx.user_bufs[i].bvec:
                if PageCompound(page) and compound_head(page) == hpage:
                    return True
        return False

    def buffer_account_pin(self, ctx: IoRingCtx, pages: list, nr_pages: int, imu: IoMappedUbuf,
                           last_hpage: Out) -> int:
        """io_buffer_account_pin: small pages count 1, a huge folio once (all its pages)."""
        imu.acct_pages = 0
        for i in range(nr_pages):
            if not PageCompound(pages[i]):
                imu.acct_pages += 1
                continue
            hpage = compound_head(pages[i])
            if hpage == last_hpage.value:
                continue
            last_hpage.value = hpage
            if self.headpage_already_acct(ctx, pages, i, hpage):
                continue
            imu.acct_pages += page_size(hpage) >> PAGE_SHIFT
        if not imu.acct_pages:
            return 0
        ret = self.account_mem(ctx, imu.acct_pages)
        if ret:
            imu.acct_pages = 0
        return ret

    # ------------------------------------------------------------------ pinning
    def pin_pages(self, uaddr: int, length: int) -> Any:
        """io_pin_pages (memmap.c): ``(pages_obj, pages)`` or a negative errno."""
        k = self.k
        end = uaddr + length
        if end >= 1 << 64 or end + PAGE_SIZE - 1 >= 1 << 64:
            return -errno.EOVERFLOW
        nr_pages = ((end + PAGE_SIZE - 1) >> PAGE_SHIFT) - (uaddr >> PAGE_SHIFT)
        if nr_pages == 0:
            return -errno.EINVAL
        obj = k.kvmalloc_array(nr_pages, 8, GFP_KERNEL)
        if obj is None:
            return -errno.ENOMEM
        pages: list = []
        ret = k.pin_user_pages_fast(uaddr, nr_pages, FOLL_WRITE | FOLL_LONGTERM, pages)
        if ret == nr_pages:
            return obj, pages
        if ret >= 0:
            if ret:
                k.unpin_user_pages(pages, ret)
            ret = -errno.EFAULT
        k.kfree(obj)
        return ret

    def try_coalesce_buffer(self, pages: list) -> dict | None:
        """io_try_coalesce_buffer: the shape of a buffer made of equal huge folios, or None."""
        if len(pages) <= 1:
            return None
        folio = pages[0].folio
        data = {"nr_pages_mid": folio_nr_pages(folio)}
        if data["nr_pages_mid"] == 1:
            return None
        data["folio_shift"] = folio.order + PAGE_SHIFT
        data["first_folio_page_idx"] = folio_page_idx(folio, pages[0])
        count, nr_folios = 1, 1
        for i in range(1, len(pages)):
            if pages[i].folio is folio and pages[i].pfn == pages[i - 1].pfn + 1:
                count += 1
                continue
            if nr_folios == 1:
                if folio_page_idx(folio, pages[i - 1]) != data["nr_pages_mid"] - 1:
                    return None
                data["nr_pages_head"] = count
            elif count != data["nr_pages_mid"]:
                return None
            folio = pages[i].folio
            if folio_size(folio) != 1 << data["folio_shift"] or folio_page_idx(folio, pages[i]) != 0:
                return None
            count = 1
            nr_folios += 1
        if nr_folios == 1:
            data["nr_pages_head"] = count
        data["nr_folios"] = nr_folios
        return data

    def do_coalesce_buffer(self, pages: list, data: dict) -> list | None:
        """io_do_coalesce_buffer: one head page per folio, the other pins dropped."""
        k = self.k
        nr_folios = data["nr_folios"]
        new = k.kvmalloc_array(nr_folios, 8, GFP_KERNEL)
        if new is None:
            return None
        heads = [compound_head(pages[0])]
        left = len(pages)
        if data["nr_pages_head"] > 1:
            self.drop_extra_pins(pages[1:], data["nr_pages_head"] - 1)
        j = data["nr_pages_head"]
        left -= data["nr_pages_head"]
        for _ in range(1, nr_folios):
            heads.append(pages[j])
            nr_unpin = min(left - 1, data["nr_pages_mid"] - 1)
            if nr_unpin:
                self.drop_extra_pins(pages[j + 1:], nr_unpin)
            j += data["nr_pages_mid"]
            left -= data["nr_pages_mid"]
        k.kfree(new)                          # the model keeps the heads in a Python list
        return heads

    def drop_extra_pins(self, pages: list, n: int) -> None:
        self.k.unpin_user_pages(pages, n)

    # ------------------------------------------------------------------ one buffer
    def sqe_buffer_register(self, ctx: IoRingCtx, iov: tuple[int, int], last_hpage: Out) -> tuple[int, IoMappedUbuf]:
        """io_sqe_buffer_register: (0 or -errno, the imu for the slot)."""
        k = self.k
        base, length = iov
        if not base:
            return 0, DUMMY_UBUF
        r = self.pin_pages(base, length)
        if isinstance(r, int):
            return r, DUMMY_UBUF
        pages_obj, pages = r
        data = self.try_coalesce_buffer(pages)
        if data is not None:
            heads = self.do_coalesce_buffer(pages, data)
            if heads is None:
                data = None
            else:
                pages = heads
        nr_pages = len(pages)
        ret = -errno.ENOMEM
        imu = None
        kobj = k.kvmalloc_array(1, SIZEOF_IMU + SIZEOF_BVEC * nr_pages, GFP_KERNEL_ACCOUNT)
        if kobj is not None:
            imu = IoMappedUbuf(kobj)
            ret = self.buffer_account_pin(ctx, pages, nr_pages, imu, last_hpage)
        if ret:
            if imu is not None:
                k.kfree(imu.kobj)
            self.unpin_on_error(pages, nr_pages)
            k.kfree(pages_obj)
            return ret, DUMMY_UBUF
        imu.ubuf, imu.len = base, length
        if data is not None:
            imu.folio_shift = data["folio_shift"]
        off = base & (PAGE_SIZE - 1)
        if data is not None:
            off += data["first_folio_page_idx"] << PAGE_SHIFT
        size = length
        for p in pages:
            vec_len = min(size, (1 << imu.folio_shift) - off)
            imu.bvec.append((p, vec_len, off))
            off = 0
            size -= vec_len
        k.kfree(pages_obj)
        return 0, imu

    def unpin_on_error(self, pages: list, nr_pages: int) -> None:
        for i in range(nr_pages):
            self.k.unpin_user_folio(pages[i].folio, 1)

    def buffer_unmap(self, ctx: IoRingCtx, i: int) -> None:
        """io_buffer_unmap."""
        imu = ctx.user_bufs[i]
        ctx.user_bufs[i] = DUMMY_UBUF
        if imu is DUMMY_UBUF:
            return
        imu.refs -= 1
        if imu.refs:
            return
        for page, _, _ in imu.bvec:
            self.k.unpin_user_folio(page.folio, 1)
        if imu.acct_pages:
            self.unaccount_mem(ctx, imu.acct_pages)
        self.k.kfree(imu.kobj)

    # ------------------------------------------------------------------ the table
    def sqe_buffers_unregister_all(self, ctx: IoRingCtx) -> None:
        """__io_sqe_buffers_unregister."""
        for i in range(ctx.nr_user_bufs):
            self.buffer_unmap(ctx, i)
        self.k.kfree(ctx.user_bufs_obj)
        self.k.kfree(ctx.buf_data)
        ctx.user_bufs, ctx.user_bufs_obj, ctx.buf_data, ctx.nr_user_bufs = None, None, None, 0

    def sqe_buffers_unregister(self, ctx: IoRingCtx) -> int:
        """io_sqe_buffers_unregister (no requests in flight: the quiesce succeeds)."""
        if ctx.buf_data is None:
            return -errno.ENXIO
        self.sqe_buffers_unregister_all(ctx)
        return 0

    @staticmethod
    def buffer_validate(iov: tuple[int, int]) -> int:
        """io_buffer_validate."""
        base, length = iov
        if not base:
            return -errno.EFAULT if length else 0
        if not length or length > SZ_1G:
            return -errno.EFAULT
        if base + length + PAGE_SIZE - 1 >= 1 << 64:
            return -errno.EOVERFLOW
        return 0

    @pin_entry_point(name="io_sqe_buffers_register", count=False)
    def sqe_buffers_register(self, ctx: IoRingCtx, arg: int, nr_args: int) -> int:
        """IORING_REGISTER_BUFFERS: 0 or -errno with nothing registered."""
        k = self.k
        if ctx.user_bufs is not None:
            return -errno.EBUSY
        if not nr_args or nr_args > IORING_MAX_REG_BUFFERS:
            return -errno.EINVAL
        data = k.kvmalloc_array(nr_args, 8, GFP_KERNEL)                # io_rsrc_data_alloc: the tags
        if data is None:
            return -errno.ENOMEM
        bufs = k.kmalloc_array(nr_args, 8, GFP_KERNEL)                 # io_buffers_map_alloc
        if bufs is None:
            k.kfree(data)
            return -errno.ENOMEM
        ctx.user_bufs, ctx.user_bufs_obj = [DUMMY_UBUF] * nr_args, bufs
        last_hpage = Out(None)
        ret = 0
        for i in range(nr_args):
            raw = bytearray(SIZEOF_IOVEC)
            if k.copy_from_user(raw, arg + i * SIZEOF_IOVEC, SIZEOF_IOVEC):
                ret = -errno.EFAULT
                break
            iov = (int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little"))
            ret = self.buffer_validate(iov)
            if ret:
                break
            ret, ctx.user_bufs[i] = self.sqe_buffer_register(ctx, iov, last_hpage)
            if ret:
                break
            ctx.nr_user_bufs += 1
        ctx.buf_data = data
        if ret:
            self.sqe_buffers_unregister_all(ctx)
        return ret
