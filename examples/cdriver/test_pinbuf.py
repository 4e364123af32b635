"""pinbuf.c, compiled unmodified against the bridge's headers: its errno table, a fault
matrix over every site REGISTER reaches, and each buggy variant caught by the rule it
breaks."""

import errno

import pytest

from pytest_pinfault.cdriver import DriverCrash
from pytest_pinfault.mm import PAGE_SIZE

pytestmark = pytest.mark.mm_config(ram="1GiB", cma="64MiB", movablecore="128MiB")


def test_register_pins_migrates_charges_and_unregister_undoes(fake_mm, pinbuf, user_buf):
    addr = user_buf(8, cma=True)
    rc, req = pinbuf.register(addr, 8 * PAGE_SIZE, flags=1)
    assert rc == 0 and req.id == 1 and 1 <= req.nr_segments <= 8
    mm = fake_mm.current.mm
    assert mm.locked_vm == 8
    for i in range(8):
        folio, _ = mm.lookup(addr + i * PAGE_SIZE)
        assert not folio.is_cma and folio.pincount == 1          # migrated out, then pinned
        assert folio.read(0, 1) == bytes([65 + i])               # with its data
    assert pinbuf.unregister(req.id) == 0
    assert mm.locked_vm == 0
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released
    assert pinbuf.unregister(req.id) == -errno.ENOENT


def test_release_unpins_what_is_still_registered(fake_mm, pinbuf, user_buf):
    for _ in range(3):
        assert pinbuf.register(user_buf(4), 4 * PAGE_SIZE)[0] == 0
    assert fake_mm.current.mm.locked_vm == 12
    pinbuf.file.close()
    assert fake_mm.current.mm.locked_vm == 0
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released


@pytest.mark.parametrize("case, expected", [
    ("misaligned addr", -errno.EINVAL),
    ("misaligned len", -errno.EINVAL),
    ("zero len", -errno.EINVAL),
    ("unknown flag", -errno.EINVAL),
    ("too large", -errno.E2BIG),
    ("unmapped", -errno.EFAULT),
    ("bad arg pointer", -errno.EFAULT),
    ("over RLIMIT_MEMLOCK", -errno.ENOMEM),
    ("unknown ioctl", -errno.ENOTTY),
])
def test_errno_table(fake_mm, pinbuf, user_buf, case, expected):
    addr = user_buf(4)
    args = {"misaligned addr": (addr + 1, PAGE_SIZE, 0), "misaligned len": (addr, 100, 0),
            "zero len": (addr, 0, 0), "unknown flag": (addr, PAGE_SIZE, 0x80),
            "too large": (addr, (65536 + 1) * PAGE_SIZE, 0), "unmapped": (0x7000_0000_0000, PAGE_SIZE, 0),
            "over RLIMIT_MEMLOCK": (addr, 4 * PAGE_SIZE, 0)}
    if case == "bad arg pointer":
        rc = pinbuf.file.ioctl(pinbuf.REGISTER, 0x10)
    elif case == "unknown ioctl":
        rc = pinbuf.file.ioctl(0xDEAD, pinbuf.arg)
    else:
        if case == "over RLIMIT_MEMLOCK":
            fake_mm.current.mm.rlimit_memlock = 2 * PAGE_SIZE
        rc, _ = pinbuf.register(*args[case])
    assert rc == expected
    assert fake_mm.current.mm.locked_vm == 0


def test_region_limit_is_enospc(fake_mm, pinbuf, user_buf):
    addr = user_buf(1)
    for _ in range(16):
        assert pinbuf.register(addr, PAGE_SIZE)[0] == 0
    assert pinbuf.register(addr, PAGE_SIZE)[0] == -errno.ENOSPC


def test_module_param_bounds_the_region(fake_mm, load_c_driver, user_buf):
    from .conftest import HEADER, HERE, UAPI, Pinbuf
    drv = load_c_driver(HERE / "pinbuf.c", include_dirs=[UAPI], uapi_headers=[HEADER], params={"max_pages": 2})
    assert drv.param("max_pages") == 2
    assert Pinbuf(drv).register(user_buf(4), 3 * PAGE_SIZE)[0] == -errno.E2BIG


# every site the driver reaches with a buffer in CMA: its allocations (kmalloc: module_init's
# device, open's context, REGISTER's tables), GUP's pin, the migration out of CMA and the
# DMA mapping of the sg table
MATRIX_SITES = ("kmalloc", "try_grab_folio", "folio_isolate_lru", "alloc_migration_target", "migrate_folio",
                "lru_add_drain_all", "dma_map_sg", "dma_map_page")


@pytest.mark.mm_config(gup_retry_limit=8)
@pytest.mark.pin_contract(disable=["termination"],
                          reason="persistent isolation/migration faults exhaust the core's retry bound")
# max_nth=12 covers every allocation of module_init, open and REGISTER; GUP's later
# occurrences repeat the same per-page path (persistent cases reach the second batch)
@pytest.mark.pinfault_matrix(*MATRIX_SITES, max_nth=12,
                             accept=(-errno.ENOMEM, -errno.EFAULT, -errno.EAGAIN, -errno.EBUSY, -errno.EREMOTEIO,
                                     -errno.EIO))
def test_register_matrix(fake_mm, pinfault, load_c_driver, user_buf):
    from .conftest import HEADER, HERE, UAPI, Pinbuf
    addr = user_buf(70, cma=True)             # two pin batches (64 + 6)
    drv = load_c_driver(HERE / "pinbuf.c", include_dirs=[UAPI], uapi_headers=[HEADER], init=False)
    if pinfault.result(drv.init()) != 0:      # misc_register's device allocation
        return
    try:
        pb = Pinbuf(drv)
    except OSError as e:                      # open: the context allocation
        assert pinfault.result(-e.errno) == -errno.ENOMEM
        return
    rc, req = pb.register(addr, 70 * PAGE_SIZE)
    if pinfault.result(rc) == 0:
        assert fake_mm.current.mm.locked_vm == 70
        assert pb.unregister(req.id) == 0
    assert fake_mm.current.mm.locked_vm == 0
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released


# ------------------------------------------------------------------ the buggy variants


@pytest.mark.pin_contract(expect="error-nothing-held")
def test_leaky_twin_file_is_caught_by_rule_2(fake_mm, pinfault, pinbuf_loader, user_buf):
    """pinbuf_leaky.c: a kmalloc failure after the first batch leaves 64 pins behind."""
    pb = pinbuf_loader("pinbuf_leaky.c")
    addr = user_buf(70)
    with pinfault.arm("kmalloc[nth=3]=1*return"):        # the ubuf, its page array, then the sg table
        rc, _ = pb.register(addr, 70 * PAGE_SIZE)
    assert rc == -errno.ENOMEM
    mm = fake_mm.current.mm
    leaked = [mm.lookup(addr + i * PAGE_SIZE)[0] for i in range(70)]
    fake_mm.unpin_user_pages([f for f in leaked], 70)       # clean up: only rule 2 is the finding


def test_fixed_driver_passes_the_same_fault(fake_mm, pinfault, pinbuf, user_buf):
    with pinfault.arm("kmalloc[nth=3]=1*return"):
        rc, _ = pinbuf.register(user_buf(70), 70 * PAGE_SIZE)
    assert rc == -errno.ENOMEM
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released


@pytest.mark.pin_contract(expect="longterm-placement")
def test_no_longterm_variant_is_caught_by_rule_1(fake_mm, pinbuf_loader, user_buf):
    pb = pinbuf_loader(PINBUF_BUG_NO_LONGTERM=1)
    rc, req = pb.register(user_buf(4, cma=True), 4 * PAGE_SIZE)
    assert rc == 0                               # pins taken in place, in CMA, and kept


@pytest.mark.pin_contract(expect="accounting")
def test_no_unaccount_variant_is_caught_by_rule_9(fake_mm, pinbuf_loader, user_buf):
    pb = pinbuf_loader(PINBUF_BUG_NO_UNACCOUNT=1)
    rc, req = pb.register(user_buf(4), 4 * PAGE_SIZE)
    assert rc == 0 and pb.unregister(req.id) == 0
    assert fake_mm.current.mm.locked_vm == 4      # never given back


@pytest.mark.pin_contract(expect="kernel-warnings")
def test_lock_held_variant_is_caught_by_lockdep(fake_mm, pinbuf_loader, user_buf):
    pb = pinbuf_loader(PINBUF_BUG_LOCK_HELD=1)
    addr = user_buf(1)
    for _ in range(16):
        assert pb.register(addr, PAGE_SIZE)[0] == 0
    assert pb.register(addr, PAGE_SIZE)[0] == -errno.ENOSPC     # returns with ctx->lock held
    assert any("held when returning to user space: &ctx->lock" in w.message for w in fake_mm.warnings)


def test_null_deref_variant_fails_with_the_driver_line(fake_mm, pinbuf_loader):
    pb = pinbuf_loader(PINBUF_BUG_NULL_DEREF=1)
    with pytest.raises(DriverCrash) as crash:
        pb.unregister(42)
    assert crash.value.signal == "SIGSEGV"
    assert "NULL pointer dereference" in str(crash.value)
    assert "pinbuf_unregister (" in crash.value.location and "pinbuf.c:" in crash.value.location


@pytest.mark.pin_contract(expect="pin-balance")
def test_no_unmap_variant_is_caught_by_rule_4(fake_mm, pinbuf_loader, user_buf):
    """The DMA mapping is the model's: one never unmapped is left at teardown."""
    pb = pinbuf_loader(PINBUF_BUG_NO_UNMAP=1)
    rc, req = pb.register(user_buf(4), 4 * PAGE_SIZE)
    assert rc == 0 and pb.unregister(req.id) == 0
    (dev,) = [d for d in fake_mm._devices if d.name == "pinbuf"]
    assert len(dev.mappings) == 1                    # still mapped after UNREGISTER


def test_the_device_sees_the_pinned_pages(fake_mm, pinbuf, user_buf):
    addr = user_buf(3)
    rc, req = pinbuf.register(addr, 3 * PAGE_SIZE, flags=1)
    assert rc == 0
    (dev,) = [d for d in fake_mm._devices if d.name == "pinbuf"]
    (m,) = dev.mappings.values()
    mapped = {page.pfn for page, _, _, _ in m.segments}
    assert mapped == {fake_mm.current.mm.lookup(addr + i * PAGE_SIZE)[0].pfn for i in range(3)}
    assert pinbuf.unregister(req.id) == 0 and not dev.mappings
