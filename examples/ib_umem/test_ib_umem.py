"""ib_umem_get / ib_umem_release against the fake mm: batching, segment merging, the
pinned_vm limit, the device's view, a fault matrix over every allocation and mapping
site, and the buggy twins caught by the checker."""

import errno

import pytest

from pytest_pinfault.mm import (MAP_ANONYMOUS, MAP_PRIVATE, MADV_HUGEPAGE, PAGE_SIZE, PROT_READ,
                                PROT_WRITE)
from pytest_pinfault.mm.scatterlist import for_each_sgtable_dma_sg, for_each_sgtable_sg

from .buggy import BatchLeakOnSgFailure, NoDmaUnmapOnRelease, NoMmdropOnRelease, PinnedVmLeakOnError
from .driver import (IB_ACCESS_LOCAL_WRITE, IB_ACCESS_ON_DEMAND, IB_ACCESS_REMOTE_READ, IbDevice, IbUmem,
                     UmemCore, ib_umem_num_pages)

NPAGES = 8
LENGTH = NPAGES * PAGE_SIZE
RW = IB_ACCESS_LOCAL_WRITE

pytestmark = pytest.mark.mm_config(ram="1GiB", cma="64MiB", movablecore="256MiB", thp="madvise",
                                   memlock="8MiB")


def user_buffer(k, npages=NPAGES, where="cma", huge=False):
    """An anonymous buffer faulted in *where* with fault injection off (so a matrix
    case's faults only hit the driver's path)."""
    mm = k.current.mm
    enabled, k.faults.enabled = k.faults.enabled, False
    try:
        addr = mm.mmap(npages * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        if huge:
            mm.madvise(addr, npages * PAGE_SIZE, MADV_HUGEPAGE)
        with k.steer(where):
            assert mm.write(addr, b"\x5a" * (npages * PAGE_SIZE)) == npages * PAGE_SIZE
    finally:
        k.faults.enabled = enabled
    return addr


def assert_nothing_held(k, mm):
    assert mm.pinned_vm == 0 and mm.mm_count == 1
    assert k.stats.nr_foll_pin_acquired == k.stats.nr_foll_pin_released
    assert k.sg_chunks_live == 0 and k.slab_live == []
    assert all(not d.mappings for d in k._devices)


@pytest.mark.parametrize("where", ["cma", "movable", "normal"])
def test_get_release(fake_mm, where):
    k = fake_mm
    mm = k.current.mm
    addr = user_buffer(k, where=where)
    dev = IbDevice(k)
    core = UmemCore(k)
    umem = core.get(dev, addr + 100, LENGTH - 200, RW)
    assert isinstance(umem, IbUmem) and ib_umem_num_pages(umem) == NPAGES
    assert mm.pinned_vm == NPAGES and mm.mm_count == 2
    sgt = umem.sgt_append.sgt
    pages = [sg.page for _, sg in for_each_sgtable_sg(sgt)]
    assert all(k.folio_is_longterm_pinnable(p.folio) for p in pages)    # migrated out of CMA/movable
    assert sum(sg.length for _, sg in for_each_sgtable_sg(sgt)) == LENGTH
    # the device writes through its DMA addresses; the process sees it
    first = next(iter(for_each_sgtable_dma_sg(sgt)))[1]
    assert k.dma_device_write(dev.dma_device, first.dma_address + 100, b"rdma") == 4
    assert mm.read(addr + 100, 4) == b"rdma"
    core.release(umem)
    assert_nothing_held(k, mm)


def test_contiguous_pages_merge_up_to_max_segment(fake_mm):
    """A 2 MiB THP is one sg entry with an unlimited segment, 32 with 64 KiB segments."""
    k = fake_mm
    addr = user_buffer(k, npages=512, where="normal", huge=True)
    assert k.current.mm.lookup(addr)[0].order == 9
    for seg, nents in ((2 << 20, 1), (64 << 10, 32)):
        dev = IbDevice(k, max_seg_size=seg)
        umem = UmemCore(k).get(dev, addr, 512 * PAGE_SIZE, RW)
        assert umem.sgt_append.sgt.nents == nents
        UmemCore(k).release(umem)
    assert_nothing_held(k, k.current.mm)


def test_batches_of_512_pages(fake_mm):
    """1100 pages: three pin_user_pages_fast batches (512, 512, 76) in one table."""
    k = fake_mm
    addr = user_buffer(k, npages=1100, where="normal")
    before = k.stats.nr_foll_pin_acquired
    umem = UmemCore(k).get(IbDevice(k), addr, 1100 * PAGE_SIZE, IB_ACCESS_REMOTE_READ)
    assert k.stats.nr_foll_pin_acquired - before == 1100
    assert sum(sg.length for _, sg in for_each_sgtable_sg(umem.sgt_append.sgt)) == 1100 * PAGE_SIZE
    UmemCore(k).release(umem)
    assert_nothing_held(k, k.current.mm)


def test_pinned_vm_limit_and_cap_ipc_lock(fake_mm):
    k = fake_mm
    npages = (8 << 20) // PAGE_SIZE + 1
    addr = k.current.mm.mmap(npages * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    core, dev = UmemCore(k), IbDevice(k)
    assert core.get(dev, addr, npages * PAGE_SIZE, RW) == -errno.ENOMEM
    assert_nothing_held(k, k.current.mm)
    k.current.cap_ipc_lock = True
    umem = core.get(dev, addr, PAGE_SIZE, RW)
    assert isinstance(umem, IbUmem)
    core.release(umem)


@pytest.mark.parametrize("args, rc", [((0, 1 << 64, RW), -errno.EINVAL), ((0x1000, 0, RW), -errno.EINVAL),
                                      ((0x1000, PAGE_SIZE, RW | IB_ACCESS_ON_DEMAND), -errno.EOPNOTSUPP),
                                      ((0x1000, PAGE_SIZE, RW), -errno.EFAULT)])
def test_errnos(fake_mm, args, rc):
    assert UmemCore(fake_mm).get(IbDevice(fake_mm), *args) == rc
    assert_nothing_held(fake_mm, fake_mm.current.mm)


def test_no_memlock_no_capability_is_eperm(fake_mm):
    fake_mm.current.mm.rlimit_memlock = 0
    assert UmemCore(fake_mm).get(IbDevice(fake_mm), 0x1000, PAGE_SIZE, RW) == -errno.EPERM


# ------------------------------------------------------------------ fault matrix
@pytest.mark.pinfault_matrix("kmalloc", "alloc_pages", "try_grab_folio", "alloc_migration_target",
                             "dma_map_sg", "dma_map_page",
                             accept=(-errno.ENOMEM, -errno.EIO, -errno.EREMOTEIO), max_nth=3)
def test_get_matrix(fake_mm, pinfault):
    """Every failure point of ib_umem_get returns an errno with nothing held."""
    k = fake_mm
    addr = user_buffer(k, npages=300, where="cma")
    dev = IbDevice(k, max_seg_size=PAGE_SIZE)       # one sg entry per page: several sg chunks
    core = UmemCore(k)
    umem = pinfault.result(core.get(dev, addr, 300 * PAGE_SIZE, RW))
    if isinstance(umem, IbUmem):
        core.release(umem)
    assert_nothing_held(k, k.current.mm)


# ------------------------------------------------------------------ buggy twins
LEAK = "the twin leaks on purpose; the expected rule is what this test shows"


@pytest.mark.pin_contract(expect="error-nothing-held")
@pytest.mark.pin_contract(disable=["accounting"], reason=LEAK)
@pytest.mark.pinfault("dma_map_sg=1*return")
def test_buggy_pinned_vm_leak_on_error(fake_mm):
    k = fake_mm
    assert PinnedVmLeakOnError(k).get(IbDevice(k), user_buffer(k), LENGTH, RW) == -errno.ENOMEM


@pytest.mark.pin_contract(expect="pin-balance")
def test_buggy_no_mmdrop_on_release(fake_mm):
    k = fake_mm
    core = NoMmdropOnRelease(k)
    core.release(core.get(IbDevice(k), user_buffer(k), LENGTH, RW))


@pytest.mark.pin_contract(expect="pin-balance")
def test_buggy_no_dma_unmap_on_release(fake_mm):
    k = fake_mm
    core = NoDmaUnmapOnRelease(k)
    core.release(core.get(IbDevice(k), user_buffer(k), LENGTH, RW))


@pytest.mark.pin_contract(expect="error-nothing-held")
@pytest.mark.pin_contract(disable=["pin-balance", "contiguity"], reason=LEAK)
@pytest.mark.pinfault("kmalloc[nth=2]=1*return")            # the sg chunk, after the umem
def test_buggy_batch_leak_on_sg_failure(fake_mm):
    k = fake_mm
    assert BatchLeakOnSgFailure(k).get(IbDevice(k), user_buffer(k), LENGTH, RW) == -errno.ENOMEM
