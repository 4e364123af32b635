"""The notifier-based userptr driver against CMA allocation, offlining, munmap and faults.

The driver holds no pin or reference between its entry points, so the whole CMA area can
be allocated and a ZONE_MOVABLE block offlined while the buffer exists: the core MM
migrates the pages, the notifier evicts the device mapping, the next job re-faults and
sees the same data.  The buggy twin, which ignores invalidation, keeps pointing its device
at the old pfns; the contract checker cannot see that (nothing is held), so the tests
catch it with the explicit detector ``assert_device_coherent``.
"""

import errno

import pytest

from pytest_pinfault.mm import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE

from .buggy import buggy_userptr_create
from .driver import (PAGE_SIZE, assert_device_coherent, device_mapping_mismatches, userptr_create,
                     userptr_destroy, userptr_read, userptr_write)

NPAGES = 8
LENGTH = NPAGES * PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
PAYLOAD = bytes(range(256)) * (LENGTH // 256)
BLOCK_PAGES = (128 << 20) // PAGE_SIZE

MACHINE = pytest.mark.mm_config(ram="1GiB", cma="64MiB", movablecore="256MiB", boot_reserved="none",
                                thp="never")


def user_buffer(fake_mm, where=None):
    """An anonymous buffer filled with PAYLOAD, its pages placed in *where* ("cma",
    "movable") when given."""
    mm = fake_mm.current.mm
    addr = mm.mmap(LENGTH, RW, ANON)
    assert addr > 0
    if where is None:
        assert mm.write(addr, PAYLOAD) == LENGTH
    else:
        with fake_mm.steer(where):
            assert mm.write(addr, PAYLOAD) == LENGTH
    return mm, addr


def cpu_pfns(mm, addr):
    out = []
    for i in range(NPAGES):
        folio, idx = mm.lookup(addr + i * PAGE_SIZE)
        out.append(folio.pfn + idx)
    return out


def nothing_held(fake_mm, mm, addr):
    """Every page of the buffer has only the references its mapping accounts for."""
    for i in range(NPAGES):
        folio, _ = mm.lookup(addr + i * PAGE_SIZE)
        assert fake_mm.folio_ref_count(folio) == fake_mm.folio_expected_ref_count(folio) + (
            folio.lru_batch >= 0), folio
        assert not fake_mm.folio_maybe_dma_pinned(folio)


# ---------------------------------------------------------------------------- basics
@MACHINE
def test_jobs_read_and_write_through_the_device(fake_mm):
    mm, addr = user_buffer(fake_mm)
    buf = userptr_create(fake_mm, mm, addr, LENGTH)
    assert userptr_read(buf, 0, LENGTH) == (0, PAYLOAD)
    assert userptr_write(buf, 100, b"written by the device") == 0
    assert mm.read(addr + 100, 21) == b"written by the device"       # CPU sees device writes
    assert buf.nr_faults == 1 and buf.bound                          # second job reused the mapping
    assert sorted(buf.dev_pt.values()) == sorted(cpu_pfns(mm, addr))
    nothing_held(fake_mm, mm, addr)                                  # no reference between jobs
    assert userptr_destroy(buf) == 0
    assert mm.notifiers == []


@MACHINE
def test_create_rejects_bad_ranges(fake_mm):
    mm, addr = user_buffer(fake_mm)
    assert userptr_create(fake_mm, mm, addr + 1, LENGTH) == -errno.EINVAL
    assert userptr_create(fake_mm, mm, addr, 0) == -errno.EINVAL
    assert userptr_create(fake_mm, mm, addr, 100) == -errno.EINVAL
    assert mm.notifiers == []


# ---------------------------------------------------------------------------- migration
@MACHINE
def test_cma_alloc_of_the_whole_area_succeeds_while_the_buffer_exists(fake_mm):
    mm, addr = user_buffer(fake_mm, "cma")
    buf = userptr_create(fake_mm, mm, addr, LENGTH)
    assert userptr_read(buf, 0, LENGTH) == (0, PAYLOAD)
    assert all(fake_mm.pfn_to_folio(p).is_cma for p in buf.dev_pt.values())   # bound to CMA pages
    area = fake_mm.cma_areas[0]
    page = fake_mm.cma_alloc(area, area.count, 0)
    assert page is not None                                  # migrated the buffer out of CMA
    assert buf.nr_invalidations >= 1 and not buf.bound and buf.dev_pt == {}
    assert mm.read(addr, LENGTH) == PAYLOAD                  # the data moved with the pages
    assert userptr_read(buf, 0, LENGTH) == (0, PAYLOAD)      # the next job re-faults
    assert buf.nr_faults == 2
    assert not any(fake_mm.pfn_to_folio(p).is_cma for p in buf.dev_pt.values())
    assert device_mapping_mismatches(buf) == []
    assert fake_mm.cma_release(area, page, area.count) is True
    assert userptr_destroy(buf) == 0


@MACHINE
def test_offline_of_a_movable_block_succeeds_while_the_buffer_exists(fake_mm):
    mm, addr = user_buffer(fake_mm, "movable")
    buf = userptr_create(fake_mm, mm, addr, LENGTH)
    assert userptr_write(buf, 0, b"device was here") == 0
    expect = b"device was here" + PAYLOAD[15:]
    pfn = next(iter(buf.dev_pt.values()))
    assert fake_mm.pfn_to_folio(pfn).zone == "Movable"
    block = fake_mm.memory_blocks[pfn // BLOCK_PAGES]
    assert block.zone == "Movable"
    assert block.offline() == 0                               # migrated out of the block
    assert buf.nr_invalidations >= 1 and not buf.bound
    assert mm.read(addr, LENGTH) == expect
    assert userptr_read(buf, 0, LENGTH) == (0, expect)        # re-faulted, same data
    assert all(not (block.start_pfn <= p < block.start_pfn + block.nr_pages)
               for p in buf.dev_pt.values())
    assert_device_coherent(buf)
    assert block.online() == 0
    assert userptr_destroy(buf) == 0


@MACHINE
def test_munmap_invalidates_and_the_next_job_faults(fake_mm):
    mm, addr = user_buffer(fake_mm)
    buf = userptr_create(fake_mm, mm, addr, LENGTH)
    assert userptr_read(buf, 0, 8) == (0, PAYLOAD[:8])
    assert mm.munmap(addr, LENGTH) == 0
    assert buf.nr_invalidations == 1 and buf.dev_pt == {}
    assert userptr_read(buf, 0, 8) == -errno.EFAULT           # nothing mapped any more
    assert userptr_destroy(buf) == 0


@MACHINE
def test_an_invalidation_during_the_fault_makes_the_job_retry(fake_mm, pinfault):
    mm, addr = user_buffer(fake_mm)
    buf = userptr_create(fake_mm, mm, addr, LENGTH)

    def collide(ctx):                        # another thread changes the PTEs mid-fault
        assert mm.mprotect(addr, LENGTH, RW) == 0

    with pinfault.arm("try_grab_folio[nth=3]=1*call(collide)", collide=collide):
        assert userptr_read(buf, 0, LENGTH) == (0, PAYLOAD)
    assert buf.nr_retries == 1 and buf.nr_faults == 1 and buf.nr_invalidations == 1
    nothing_held(fake_mm, mm, addr)
    assert userptr_destroy(buf) == 0


# ---------------------------------------------------------------------------- fault matrix
@MACHINE
@pytest.mark.pinfault_matrix("alloc_pages", "try_grab_folio", accept=(-errno.ENOMEM, -errno.EFAULT))
def test_job_under_faults(fake_mm, pinfault):
    mm = fake_mm.current.mm
    addr = mm.mmap(LENGTH, RW, ANON)              # not populated: the job's fault allocates
    buf = userptr_create(fake_mm, mm, addr, LENGTH)
    if isinstance(buf, int):
        pinfault.result(buf)
        return
    ret = pinfault.result(userptr_write(buf, 0, PAYLOAD))
    if ret == 0:
        assert mm.read(addr, LENGTH) == PAYLOAD
        assert_device_coherent(buf)
    else:
        assert not buf.bound and buf.dev_pt == {}
    assert userptr_destroy(buf) == 0
    assert not fake_mm.slab_live


# ---------------------------------------------------------------------------- buggy twin
@MACHINE
@pytest.mark.pin_contract(expect="coherence")
def test_buggy_twin_keeps_a_stale_device_mapping_after_cma_alloc(fake_mm):
    """Expected failure, asserted: the driver that ignores invalidation still points its
    device at the old CMA pfns after cma_alloc migrated the buffer.  The contract
    checker's coherence rule catches it through the device view the driver declared; the
    explicit detector agrees, the device reads the wrong memory and its write lands in
    the cma_alloc block."""
    mm, addr = user_buffer(fake_mm, "cma")
    buf = buggy_userptr_create(fake_mm, mm, addr, LENGTH)
    assert userptr_read(buf, 0, LENGTH) == (0, PAYLOAD)
    old = dict(buf.dev_pt)
    area = fake_mm.cma_areas[0]
    page = fake_mm.cma_alloc(area, area.count, 0)
    assert page is not None and buf.nr_invalidations >= 1
    assert buf.bound and buf.dev_pt == old                       # the bug: never evicted
    with pytest.raises(AssertionError, match="stale device mapping: 8 of 8 entries"):
        assert_device_coherent(buf)
    ret, data = userptr_read(buf, 0, LENGTH)                     # no re-fault: stale pfns
    assert ret == 0 and data != PAYLOAD and mm.read(addr, LENGTH) == PAYLOAD
    assert userptr_write(buf, 0, b"DMA") == 0                    # lands in someone's CMA block
    assert mm.read(addr, 3) != b"DMA"
    assert page.folio.read((old[0] - page.pfn) * PAGE_SIZE, 3) == b"DMA"
    # rule 6 on the device view, judged once cma_alloc returned (no check() needed):
    # one splat for the 8 stale entries
    caught = [v for v in fake_mm._checker.violations if v.rule.id == "coherence"]
    assert len(caught) == 1 and "8 entries" in caught[0].message
    assert "stale page" in str(caught[0]) and "a missed mmu notifier invalidation" in str(caught[0])
    assert [v.rule.id for v in fake_mm.check()] == ["coherence"]   # still so on demand
    assert fake_mm.cma_release(area, page, area.count) is True
    assert userptr_destroy(buf) == 0


@MACHINE
@pytest.mark.pin_contract(expect="coherence")
def test_buggy_twin_keeps_a_stale_device_mapping_after_offline(fake_mm):
    mm, addr = user_buffer(fake_mm, "movable")
    buf = buggy_userptr_create(fake_mm, mm, addr, LENGTH)
    assert userptr_read(buf, 0, 8) == (0, PAYLOAD[:8])
    block = fake_mm.memory_blocks[next(iter(buf.dev_pt.values())) // BLOCK_PAGES]
    assert block.offline() == 0
    with pytest.raises(AssertionError, match="stale device mapping"):
        assert_device_coherent(buf)
    assert {v.rule.id for v in fake_mm.check()} == {"coherence"}  # rule 6 on the device view
    assert userptr_read(buf, 0, 8) == (0, bytes(8))              # reads an offline hole
    assert block.online() == 0
    assert userptr_destroy(buf) == 0
