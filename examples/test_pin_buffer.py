"""A first fault matrix: a minimal driver-style long-term pin path under every fault.

`pin_buffer` is what a driver's "register user buffer" ioctl does: pin the pages with
FOLL_LONGTERM (which migrates them out of CMA first), allocate a descriptor, and unwind
on every failure.  The matrix runs the test once per (fault site, occurrence, mode);
each case must end with either success or -ENOMEM and with every pin given back.
The full udmabuf and VFIO examples are tracked in the issues.
"""

import errno

import pytest

from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, GFP_KERNEL, MAP_ANONYMOUS, MAP_PRIVATE,
                                PROT_READ, PROT_WRITE)

NPAGES = 4


def pin_buffer(k, addr, npages):
    """Pin *npages* at *addr* and allocate a descriptor; (0, held) or (-errno, None)."""
    pages = []
    ret = k.pin_user_pages(addr, npages, FOLL_LONGTERM | FOLL_WRITE, pages)
    if ret < 0:
        return ret, None
    if ret != npages:                       # a short pin is a failure for this driver
        k.unpin_user_pages(pages, ret)
        return -errno.EFAULT, None
    desc = k.kmalloc(64, GFP_KERNEL)
    if desc is None:
        k.unpin_user_pages(pages, ret)
        return -errno.ENOMEM, None
    return 0, (pages, desc)


def release_buffer(k, held):
    pages, desc = held
    k.unpin_user_pages_dirty_lock(pages, len(pages), True)
    k.kfree(desc)


@pytest.mark.mm_config(ram="1GiB", cma="64MiB", gup_retry_limit=8)
# A persistent folio_isolate_lru fault makes the core GUP retry loop spin for ever: the
# kernel's outcome (the task is killed out of it and the call returns -EINTR), reported as
# KERNEL, not a driver bug; the driver must still clean up after the -EINTR.
@pytest.mark.pinfault_matrix("folio_isolate_lru", "alloc_migration_target", "migrate_folio", "kmalloc",
                             accept=(-errno.ENOMEM,))
def test_pin_buffer(fake_mm, pinfault):
    mm = fake_mm.current.mm
    addr = mm.mmap(NPAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    with fake_mm.steer("cma"):
        assert mm.write(addr, b"payload!" * (NPAGES * 512)) == NPAGES * 4096   # the buffer sits in CMA
    ret, held = pin_buffer(fake_mm, addr, NPAGES)
    pinfault.result(ret)
    if held is not None:
        assert all(fake_mm.folio_is_longterm_pinnable(p.folio) for p in held[0])
        assert mm.read(addr + 4096, 8) == b"payload!"           # migrated with its data
        release_buffer(fake_mm, held)
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released
    assert not fake_mm.slab_live
