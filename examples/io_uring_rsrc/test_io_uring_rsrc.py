"""IORING_REGISTER_BUFFERS against the fake mm: pinning, huge-page coalescing, per-user
locked_vm and pinned_vm accounting (a huge folio once across buffers), RLIMIT_MEMLOCK,
a fault matrix, and the buggy twins caught by the checker."""

import errno

import pytest

from pytest_pinfault.mm import (MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, MADV_HUGEPAGE, PAGE_SIZE, PROT_READ,
                                PROT_WRITE)

from .buggy import AccountFailLeaksPins, CoalesceKeepsPins, UserLockedVmLeak
from .driver import DUMMY_UBUF, IoUringRsrc, write_iovecs

HUGE = 2 << 20
pytestmark = pytest.mark.mm_config(ram="1GiB", cma="64MiB", movablecore="256MiB", thp="madvise",
                                   memlock="16MiB")


def user_buffer(k, nbytes, where="normal", huge=False):
    mm = k.current.mm
    enabled, k.faults.enabled = k.faults.enabled, False
    try:
        addr = mm.mmap(nbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        if huge:
            mm.madvise(addr, nbytes, MADV_HUGEPAGE)
        with k.steer(where):
            assert mm.write(addr, b"\x11" * nbytes) == nbytes
    finally:
        k.faults.enabled = enabled
    return addr


def iovecs(k, iovs):
    enabled, k.faults.enabled = k.faults.enabled, False
    try:
        return write_iovecs(k, iovs)
    finally:
        k.faults.enabled = enabled


def assert_nothing_held(k, ctx):
    assert ctx.user is None or ctx.user.locked_vm == 0
    assert ctx.mm_account.pinned_vm == 0
    assert k.stats.nr_foll_pin_acquired == k.stats.nr_foll_pin_released
    assert ctx.user_bufs is None and k.slab_live == []


@pytest.mark.parametrize("where", ["cma", "movable", "normal"])
def test_register_small_pages(fake_mm, where):
    k = fake_mm
    io = IoUringRsrc(k)
    ctx = io.create()
    a = user_buffer(k, 4 * PAGE_SIZE, where)
    b = user_buffer(k, 3 * PAGE_SIZE, where)
    assert io.sqe_buffers_register(ctx, iovecs(k, [(a + 10, 4 * PAGE_SIZE - 10), (0, 0), (b, 3 * PAGE_SIZE)]), 3) == 0
    assert ctx.nr_user_bufs == 3 and ctx.user_bufs[1] is DUMMY_UBUF
    imu = ctx.user_bufs[0]
    assert imu.nr_bvecs == 4 and imu.bvec[0][2] == 10
    assert all(k.folio_is_longterm_pinnable(p.folio) for p, _, _ in imu.bvec)
    assert ctx.user is k.current_user() and ctx.user.locked_vm == 7 and ctx.mm_account.pinned_vm == 7
    assert io.sqe_buffers_unregister(ctx) == 0
    assert_nothing_held(k, ctx)
    io.free(ctx)


def test_huge_pages_coalesce_and_account_once(fake_mm):
    """Two buffers on the same THPs: one bvec per folio, 512 pages charged per folio once."""
    k = fake_mm
    io = IoUringRsrc(k)
    ctx = io.create()
    a = user_buffer(k, 2 * HUGE, huge=True)
    assert k.current.mm.lookup(a)[0].order == 9
    arg = iovecs(k, [(a, 2 * HUGE), (a + HUGE, PAGE_SIZE)])
    assert io.sqe_buffers_register(ctx, arg, 2) == 0
    big, small = ctx.user_bufs[0], ctx.user_bufs[1]
    assert big.nr_bvecs == 2 and big.folio_shift == 21 and big.acct_pages == 1024
    assert small.nr_bvecs == 1 and small.acct_pages == 0          # its THP is already charged
    assert [p.folio.pincount for p, _, _ in big.bvec] == [1, 2]
    assert ctx.user.locked_vm == 1024
    io.free(ctx)
    assert k.stats.nr_foll_pin_acquired == k.stats.nr_foll_pin_released


@pytest.mark.mm_config(shmem_enabled="always")
def test_shmem_thp_buffer_coalesces_after_migrating_out_of_cma(fake_mm):
    """A buffer in a shared mapping of THP shmem placed in CMA: the long-term pin
    migrates each THP whole, and the buffer coalesces to one bvec per folio."""
    k = fake_mm
    io = IoUringRsrc(k)
    ctx = io.create()
    mf = k.memfd_create("ring-buf", 0)
    assert mf.ftruncate(2 * HUGE) == 0
    mm = k.current.mm
    enabled, k.faults.enabled = k.faults.enabled, False
    try:
        a = mm.mmap(2 * HUGE, PROT_READ | PROT_WRITE, MAP_SHARED, mf)
        with k.steer("cma"):
            assert mm.write(a, b"\x22" * (2 * HUGE)) == 2 * HUGE
    finally:
        k.faults.enabled = enabled
    assert mm.lookup(a)[0].order == 9 and mm.lookup(a)[0].is_cma
    assert io.sqe_buffers_register(ctx, iovecs(k, [(a, 2 * HUGE)]), 1) == 0
    imu = ctx.user_bufs[0]
    assert imu.nr_bvecs == 2 and imu.folio_shift == 21
    assert all(p.folio.order == 9 and not p.folio.is_cma for p, _, _ in imu.bvec)
    assert ctx.user.locked_vm == 1024
    io.free(ctx)
    assert k.stats.nr_foll_pin_acquired == k.stats.nr_foll_pin_released


def test_rlimit_memlock_fails_and_unwinds(fake_mm):
    k = fake_mm
    io = IoUringRsrc(k)
    ctx = io.create()
    a = user_buffer(k, 8 << 20)
    b = user_buffer(k, 12 << 20)
    assert io.sqe_buffers_register(ctx, iovecs(k, [(a, 8 << 20), (b, 12 << 20)]), 2) == -errno.ENOMEM
    assert_nothing_held(k, ctx)
    io.free(ctx)


def test_cap_ipc_lock_skips_user_accounting(fake_mm):
    k = fake_mm
    k.current.cap_ipc_lock = True
    io = IoUringRsrc(k)
    ctx = io.create()
    assert ctx.user is None
    a = user_buffer(k, 20 << 20)
    assert io.sqe_buffers_register(ctx, iovecs(k, [(a, 20 << 20)]), 1) == 0
    assert ctx.mm_account.pinned_vm == 5120
    io.free(ctx)


@pytest.mark.parametrize("iov, rc", [((0x1000, 0), -errno.EFAULT), ((0, 5), -errno.EFAULT),
                                     ((0x1000, (1 << 30) + 1), -errno.EFAULT), ((0x1000, PAGE_SIZE), -errno.EFAULT)])
def test_errnos(fake_mm, iov, rc):
    io = IoUringRsrc(fake_mm)
    ctx = io.create()
    assert io.sqe_buffers_register(ctx, iovecs(fake_mm, [iov]), 1) == rc
    assert_nothing_held(fake_mm, ctx)
    assert io.sqe_buffers_register(ctx, 0x10, 1) == -errno.EFAULT       # unreadable iovec array
    assert io.sqe_buffers_register(ctx, 0x10, 0) == -errno.EINVAL
    assert io.sqe_buffers_unregister(ctx) == -errno.ENXIO
    io.free(ctx)


@pytest.mark.pinfault_matrix("kmalloc", "try_grab_folio", "alloc_migration_target",
                             accept=(-errno.ENOMEM, -errno.EFAULT), max_nth=3)
def test_register_matrix(fake_mm, pinfault):
    k = fake_mm
    io = IoUringRsrc(k)
    ctx = io.create()
    a = user_buffer(k, 4 * PAGE_SIZE, "cma")
    h = user_buffer(k, HUGE, "normal", huge=True)
    arg = iovecs(k, [(a, 4 * PAGE_SIZE), (h, HUGE)])
    if pinfault.result(io.sqe_buffers_register(ctx, arg, 2)) == 0:
        assert io.sqe_buffers_unregister(ctx) == 0
    assert_nothing_held(k, ctx)
    io.free(ctx)


# ------------------------------------------------------------------ buggy twins
LEAK = "the twin leaks on purpose; the expected rule is what this test shows"


@pytest.mark.pin_contract(expect="accounting")
def test_buggy_user_locked_vm_leak(fake_mm):
    k = fake_mm
    io = UserLockedVmLeak(k)
    ctx = io.create()
    a = user_buffer(k, 4 * PAGE_SIZE)
    assert io.sqe_buffers_register(ctx, iovecs(k, [(a, 4 * PAGE_SIZE)]), 1) == 0
    assert io.sqe_buffers_unregister(ctx) == 0
    io.free(ctx)


@pytest.mark.pin_contract(expect="pin-balance")
def test_buggy_coalesce_keeps_pins(fake_mm):
    k = fake_mm
    io = CoalesceKeepsPins(k)
    ctx = io.create()
    h = user_buffer(k, 2 * HUGE, huge=True)
    assert io.sqe_buffers_register(ctx, iovecs(k, [(h, 2 * HUGE)]), 1) == 0
    assert io.sqe_buffers_unregister(ctx) == 0
    io.free(ctx)


@pytest.mark.pin_contract(expect="error-nothing-held")
@pytest.mark.pin_contract(disable=["pin-balance", "contiguity"], reason=LEAK)
def test_buggy_account_failure_leaks_pins(fake_mm):
    k = fake_mm
    io = AccountFailLeaksPins(k)
    ctx = io.create()
    a = user_buffer(k, 20 << 20)
    assert io.sqe_buffers_register(ctx, iovecs(k, [(a, 20 << 20)]), 1) == -errno.ENOMEM
    io.free(ctx)
