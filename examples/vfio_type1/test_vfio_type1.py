"""VFIO type1 MAP_DMA / UNMAP_DMA against the fake mm: happy paths, the errno table,
RLIMIT_MEMLOCK, a fault matrix over the map path, and the buggy twins caught."""

import errno

import pytest

from pytest_pinfault.mm import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE

from .buggy import LeakyUnwindType1, NoLongtermType1, UnaccountedUnwindType1, WrongMMType1
from .driver import (DMA_ENTRY_LIMIT, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_VADDR, VFIO_DMA_MAP_FLAG_WRITE,
                     VFIO_DMA_UNMAP_FLAG_ALL, VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, VFIO_DMA_UNMAP_FLAG_VADDR,
                     VfioIommuType1, dma_pages, vfio_iommu_map_dma, vfio_iommu_release, vfio_iommu_type1_dma_map,
                     vfio_iommu_type1_dma_unmap, vfio_iommu_unmap_dma)

NPAGES = 8
LENGTH = NPAGES * PAGE_SIZE
IOVA = 0x100000
RW = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE
PAYLOAD = bytes(range(256)) * (LENGTH // 256)

pytestmark = pytest.mark.mm_config(ram="1GiB", cma="64MiB", movablecore="256MiB", thp="never")


def user_buffer(k, npages=NPAGES, where="cma", task=None):
    """An anonymous buffer of *task* (default current) faulted in *where*, with fault
    injection off so that a matrix case's faults only hit the driver's path."""
    mm = (task or k.current).mm
    enabled, k.faults.enabled = k.faults.enabled, False
    try:
        addr = mm.mmap(npages * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        with k.steer(where):
            assert mm.write(addr, PAYLOAD[:PAGE_SIZE] * npages) == npages * PAGE_SIZE
    finally:
        k.faults.enabled = enabled
    return addr


def do_map(iommu, vaddr, iova=IOVA, size=LENGTH, flags=RW):
    return vfio_iommu_map_dma(iommu, vfio_iommu_type1_dma_map(vaddr=vaddr, iova=iova, size=size, flags=flags))


def do_unmap(iommu, iova=IOVA, size=LENGTH, flags=0):
    u = vfio_iommu_type1_dma_unmap(iova=iova, size=size, flags=flags)
    return vfio_iommu_unmap_dma(iommu, u), u.size


def assert_nothing_held(k, iommu, mm):
    assert not iommu.dma_list and all(not d.entries for d in iommu.domains)
    assert mm.locked_vm == 0
    assert k.stats.nr_foll_pin_acquired == k.stats.nr_foll_pin_released
    assert iommu.dma_avail == DMA_ENTRY_LIMIT


# ------------------------------------------------------------------ happy paths
@pytest.mark.parametrize("where", ["cma", "movable", "normal"])
@pytest.mark.parametrize("ndomains", [1, 2])
def test_map_unmap(fake_mm, where, ndomains):
    k = fake_mm
    mm = k.current.mm
    addr = user_buffer(k, where=where)
    iommu = VfioIommuType1(k, ndomains=ndomains)
    assert do_map(iommu, addr) == 0
    assert mm.locked_vm == NPAGES
    pages = dma_pages(iommu, IOVA, LENGTH)
    assert all(p is not None for p in pages)
    for p in pages:                                       # migrated out of CMA / ZONE_MOVABLE
        assert k.folio_is_longterm_pinnable(p.folio) and k.folio_maybe_dma_pinned(p.folio)
        assert not p.is_cma and p.zone != "Movable"
    for d in iommu.domains[1:]:                           # every domain maps the same pfns
        assert d.entries == iommu.domains[0].entries
    assert mm.read(addr, LENGTH) == PAYLOAD[:PAGE_SIZE] * NPAGES   # data intact
    # one iommu map call per physically contiguous run, and runs do not touch
    pfns = [p.pfn for p in pages]
    runs = 1 + sum(1 for a, b in zip(pfns, pfns[1:]) if b != a + 1)
    assert iommu.domains[0].map_calls == runs
    assert do_unmap(iommu) == (0, LENGTH)
    assert_nothing_held(k, iommu, mm)


def test_batches_of_512_and_contiguity_across_batches(fake_mm):
    k = fake_mm
    iommu = VfioIommuType1(k, batch_capacity=4)        # small batches: runs span refills
    addr = user_buffer(k, npages=NPAGES * 2, where="normal")
    assert do_map(iommu, addr, size=2 * LENGTH) == 0
    assert all(p is not None for p in dma_pages(iommu, IOVA, 2 * LENGTH))
    assert do_unmap(iommu, size=2 * LENGTH) == (0, 2 * LENGTH)
    assert_nothing_held(k, iommu, k.current.mm)


def test_several_mappings_unmap_all_and_release(fake_mm):
    k = fake_mm
    iommu = VfioIommuType1(k)
    a = user_buffer(k)
    b = user_buffer(k, where="movable")
    assert do_map(iommu, a) == 0
    assert do_map(iommu, b, iova=IOVA + LENGTH, flags=VFIO_DMA_MAP_FLAG_READ) == 0
    assert k.current.mm.locked_vm == 2 * NPAGES
    assert do_unmap(iommu, iova=0, size=0, flags=VFIO_DMA_UNMAP_FLAG_ALL) == (0, 2 * LENGTH)
    assert_nothing_held(k, iommu, k.current.mm)
    assert do_map(iommu, a) == 0
    vfio_iommu_release(iommu)                          # closing the container unmaps all
    assert_nothing_held(k, iommu, k.current.mm)


def test_unmap_from_another_mm_returns_the_owners_locked_vm(fake_mm):
    k = fake_mm
    owner = k.current
    other = k.create_task("other")
    iommu = VfioIommuType1(k)
    assert do_map(iommu, user_buffer(k)) == 0
    with k.run_as(other):
        assert do_unmap(iommu) == (0, LENGTH)
    assert owner.mm.locked_vm == 0 and other.mm.locked_vm == 0


def test_vaddr_invalidate_and_update_moves_the_charge(fake_mm):
    k = fake_mm
    iommu = VfioIommuType1(k)
    addr = user_buffer(k)
    assert do_map(iommu, addr) == 0
    assert do_unmap(iommu, flags=VFIO_DMA_UNMAP_FLAG_VADDR) == (0, LENGTH)
    assert k.current.mm.locked_vm == NPAGES                       # still pinned and charged
    new = k.create_task("qemu-after-exec")
    with k.run_as(new):
        assert do_map(iommu, 0x7000000, flags=VFIO_DMA_MAP_FLAG_VADDR) == 0
    assert k.current.mm.locked_vm == 0 and new.mm.locked_vm == NPAGES
    assert do_unmap(iommu) == (0, LENGTH)
    assert new.mm.locked_vm == 0


def test_vaddr_update_over_the_new_owners_memlock_is_enomem(fake_mm):
    k = fake_mm
    iommu = VfioIommuType1(k)
    assert do_map(iommu, user_buffer(k)) == 0
    assert do_unmap(iommu, flags=VFIO_DMA_UNMAP_FLAG_VADDR) == (0, LENGTH)
    new = k.create_task("qemu-after-exec")
    new.mm.rlimit_memlock = PAGE_SIZE                              # cannot take the charge
    with k.run_as(new):
        assert do_map(iommu, 0x7000000, flags=VFIO_DMA_MAP_FLAG_VADDR) == -errno.ENOMEM
    assert k.current.mm.locked_vm == NPAGES and new.mm.locked_vm == 0   # charge unmoved
    assert iommu.dma_list[0].vaddr_invalid
    vfio_iommu_release(iommu)
    assert_nothing_held(k, iommu, k.current.mm)


def test_map_from_a_task_without_mm_is_enodev(fake_mm):
    k = fake_mm
    kthread = k.create_task("kworker")
    kthread.mm = None                                               # a kernel thread
    iommu = VfioIommuType1(k)
    with k.run_as(kthread):
        assert do_map(iommu, 0x7000000) == -errno.ENODEV
    assert_nothing_held(k, iommu, k.current.mm)


# ------------------------------------------------------------------ errno table
def _setup_existing(k, iommu):
    assert do_map(iommu, user_buffer(k)) == 0


MAP_CASES = {
    "size-0": (dict(size=0), -errno.EINVAL),
    "size-unaligned": (dict(size=LENGTH - 1), -errno.EINVAL),
    "iova-unaligned": (dict(iova=IOVA + 1), -errno.EINVAL),
    "vaddr-unaligned": (dict(vaddr_off=1), -errno.EINVAL),
    "no-prot": (dict(flags=0), -errno.EINVAL),
    "prot-and-vaddr": (dict(flags=RW | VFIO_DMA_MAP_FLAG_VADDR), -errno.EINVAL),
    "unknown-flag": (dict(flags=RW | 1 << 7), -errno.EINVAL),
    "argsz-small": (dict(argsz=16), -errno.EINVAL),
    "iova-wrap": (dict(iova=(1 << 64) - PAGE_SIZE), -errno.EINVAL),
    "iova-beyond-aperture": (dict(iova=1 << 48), -errno.EINVAL),
    "not-u64": (dict(iova=1 << 64), -errno.EINVAL),
    "overlap": (dict(existing=True, iova=IOVA + PAGE_SIZE), -errno.EEXIST),
    "same-range": (dict(existing=True), -errno.EEXIST),
    "vaddr-no-mapping": (dict(flags=VFIO_DMA_MAP_FLAG_VADDR), -errno.ENOENT),
    "vaddr-not-invalidated": (dict(existing=True, flags=VFIO_DMA_MAP_FLAG_VADDR), -errno.EINVAL),
    "dma-avail-exhausted": (dict(limit=0), -errno.ENOSPC),
    "fault-hole": (dict(vaddr=0x10000), -errno.EFAULT),
}


@pytest.mark.parametrize("case", list(MAP_CASES))
def test_map_errno(fake_mm, case):
    k = fake_mm
    kw, want = MAP_CASES[case]
    kw = dict(kw)
    iommu = VfioIommuType1(k, dma_entry_limit=kw.pop("limit", DMA_ENTRY_LIMIT))
    if kw.pop("existing", False):
        _setup_existing(k, iommu)
    held = (iommu.dma_avail, k.current.mm.locked_vm, k.stats.nr_foll_pin_acquired)
    vaddr = kw.pop("vaddr", None) or user_buffer(k) + kw.pop("vaddr_off", 0)
    m = vfio_iommu_type1_dma_map(vaddr=vaddr, iova=IOVA, size=LENGTH, flags=RW)
    for f, v in kw.items():
        setattr(m, f, v)
    assert vfio_iommu_map_dma(iommu, m) == want
    assert (iommu.dma_avail, k.current.mm.locked_vm, k.stats.nr_foll_pin_acquired) == held
    vfio_iommu_release(iommu)


UNMAP_CASES = {
    "iova-unaligned": (dict(iova=IOVA + 1), -errno.EINVAL, 0),
    "size-0": (dict(size=0), -errno.EINVAL, 0),
    "size-unaligned": (dict(size=LENGTH + 1), -errno.EINVAL, 0),
    "wrap": (dict(iova=(1 << 64) - PAGE_SIZE, size=2 * PAGE_SIZE), -errno.EINVAL, 0),
    "all-with-range": (dict(flags=VFIO_DMA_UNMAP_FLAG_ALL), -errno.EINVAL, 0),
    "unknown-flag": (dict(flags=1 << 9), -errno.EINVAL, LENGTH),   # ioctl wrapper: no copy back
    "dirty-bitmap-untracked": (dict(flags=VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP), -errno.EINVAL, 0),
    "bisect-start": (dict(iova=IOVA + PAGE_SIZE, size=LENGTH - PAGE_SIZE), -errno.EINVAL, 0),
    "bisect-end": (dict(size=LENGTH - PAGE_SIZE), -errno.EINVAL, 0),
    "bisect-wider": (dict(iova=IOVA - PAGE_SIZE, size=LENGTH), -errno.EINVAL, 0),
    "missing-range": (dict(iova=IOVA + 2 * LENGTH), 0, 0),          # v2: success, size 0
    "covering-range": (dict(iova=IOVA - LENGTH, size=3 * LENGTH), 0, LENGTH),
    "vaddr-twice": (dict(flags=VFIO_DMA_UNMAP_FLAG_VADDR, twice=True), -errno.EINVAL, 0),
}


@pytest.mark.parametrize("case", list(UNMAP_CASES))
def test_unmap_errno(fake_mm, case):
    k = fake_mm
    kw, want, size = UNMAP_CASES[case]
    kw = dict(kw)
    iommu = VfioIommuType1(k)
    _setup_existing(k, iommu)
    u = dict(iova=IOVA, size=LENGTH, flags=0)
    if kw.pop("twice", False):
        assert do_unmap(iommu, **{**u, **kw}) == (0, LENGTH)
    u.update(kw)
    assert do_unmap(iommu, **u) == (want, size)
    assert k.current.mm.locked_vm == (0 if want == 0 and size else NPAGES)
    vfio_iommu_release(iommu)
    assert_nothing_held(k, iommu, k.current.mm)


@pytest.mark.mm_config(memlock=f"{4 * PAGE_SIZE}")
def test_rlimit_memlock_exceeded_is_enomem_with_nothing_held(fake_mm):
    k = fake_mm
    iommu = VfioIommuType1(k)
    addr = user_buffer(k)
    assert do_map(iommu, addr) == -errno.ENOMEM
    assert any("RLIMIT_MEMLOCK" in w for w in iommu.warnings)
    assert_nothing_held(k, iommu, k.current.mm)
    assert do_map(iommu, addr, size=4 * PAGE_SIZE) == 0          # exactly the limit fits
    assert do_map(iommu, addr + 4 * PAGE_SIZE, iova=IOVA + LENGTH, size=PAGE_SIZE) == -errno.ENOMEM
    k.current.cap_ipc_lock = True                                   # CAP_IPC_LOCK: no limit
    assert do_map(iommu, addr + 4 * PAGE_SIZE, iova=IOVA + LENGTH, size=4 * PAGE_SIZE) == 0
    vfio_iommu_release(iommu)
    k.current.cap_ipc_lock = False
    assert_nothing_held(k, iommu, k.current.mm)


# ------------------------------------------------------------------ fault matrix
# persistent folio_isolate_lru failures make core GUP loop for ever: the kernel's outcome
# (KERNEL: the task is killed out of it, the call returns -EINTR), not the driver's
@pytest.mark.mm_config(gup_retry_limit=8)
@pytest.mark.pinfault_matrix("try_grab_folio", "alloc_migration_target", "migrate_folio", "folio_isolate_lru",
                             "alloc_pages", "kmalloc", "vfio.iommu_map", "vfio.lock_acct",
                             accept=(-errno.ENOMEM, -errno.EBUSY, -errno.EINTR, -errno.EAGAIN))
def test_map_dma_matrix(fake_mm, pinfault):
    k = fake_mm
    addr = user_buffer(k)
    iommu = VfioIommuType1(k, ndomains=2, batch_capacity=4)
    ret = pinfault.result(do_map(iommu, addr))
    mm = k.current.mm
    if ret == 0:
        assert mm.locked_vm == NPAGES
        assert all(k.folio_is_longterm_pinnable(p.folio) for p in dma_pages(iommu, IOVA, LENGTH))
        assert mm.read(addr, LENGTH) == PAYLOAD[:PAGE_SIZE] * NPAGES
        assert do_unmap(iommu) == (0, LENGTH)
    assert_nothing_held(k, iommu, mm)


# ------------------------------------------------------------------ buggy twins
LEAK_REASON = "the twin leaks on purpose; rule 2 at the MAP_DMA return is what this test shows"


@pytest.mark.pin_contract(expect="error-nothing-held")
@pytest.mark.pin_contract(disable=["pin-balance", "accounting", "contiguity"], reason=LEAK_REASON)
@pytest.mark.pinfault("vfio.iommu_map[nth=2]=1*return")
def test_buggy_partial_map_unwind_leaks_pins(fake_mm):
    iommu = LeakyUnwindType1(fake_mm, batch_capacity=2)       # several chunks: the 2nd fails
    assert do_map(iommu, user_buffer(fake_mm)) == -errno.ENOMEM
    assert fake_mm.stats.nr_foll_pin_acquired > fake_mm.stats.nr_foll_pin_released   # pins leaked


@pytest.mark.pin_contract(expect="error-nothing-held")
@pytest.mark.pin_contract(disable=["accounting"], reason=LEAK_REASON)
@pytest.mark.pinfault("vfio.iommu_map[nth=2]=1*return")
def test_buggy_partial_map_unwind_leaks_locked_vm(fake_mm):
    iommu = UnaccountedUnwindType1(fake_mm, batch_capacity=2)
    assert do_map(iommu, user_buffer(fake_mm)) == -errno.ENOMEM
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released
    assert fake_mm.current.mm.locked_vm > 0                   # locked_vm never returned


@pytest.mark.pin_contract(expect="accounting")
def test_buggy_accounts_current_mm_instead_of_owner(fake_mm, pinfault):
    k = fake_mm
    owner = k.current
    iommu = WrongMMType1(k)
    assert do_map(iommu, user_buffer(k)) == 0
    assert owner.mm.locked_vm == NPAGES
    other = k.create_task("other")                  # e.g. the owner exec()ed: a new mm
    with pinfault.expect_violation("kernel-warnings"):            # locked_vm underflow WARN
        with k.run_as(other):
            assert do_unmap(iommu) == (0, LENGTH)
    assert owner.mm.locked_vm == NPAGES             # the owner's charge is never returned
    assert other.mm.locked_vm == -NPAGES
    other.mm.locked_vm = 0                          # leave only the owner's leak (rule 9)


@pytest.mark.pin_contract(expect="longterm-placement")
def test_buggy_pins_without_foll_longterm(fake_mm):
    k = fake_mm
    iommu = NoLongtermType1(k)
    assert do_map(iommu, user_buffer(k, where="cma")) == 0       # rule 1 fires at this return
    assert any(p.is_cma for p in dma_pages(iommu, IOVA, LENGTH))
    assert do_unmap(iommu) == (0, LENGTH)
