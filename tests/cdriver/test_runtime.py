"""The runtime under a test driver (drivers/probe.c): the slab on the kmalloc site with
leaks and double frees seen, crash isolation with the driver's line, kernel warnings,
lock checks, user copies, GUP handles, module params and a fresh instance per load."""

import errno
from pathlib import Path

import pytest

from pytest_pinfault.cdriver import DriverCrash

PROBE = Path(__file__).parent / "drivers" / "probe.c"


def line_of(marker):
    for i, ln in enumerate(PROBE.read_text().splitlines(), 1):
        if marker in ln:
            return i
    raise AssertionError(marker)


@pytest.fixture
def probe(load_c_driver, cdriver_cache):
    drv = load_c_driver(PROBE, cache_dir=cdriver_cache)
    return drv, drv.open("probe")


def test_kmalloc_goes_through_the_kmalloc_fault_site(fake_mm, pinfault, probe):
    drv, f = probe
    live = len(drv._slab)                               # misc_register's device
    assert f.ioctl(1, 64) == 0
    with pinfault.arm("kmalloc=1*return"):
        assert f.ioctl(1, 64) == -errno.ENOMEM
    assert [r.site for r in pinfault.fired] == ["kmalloc"]
    with pinfault.expect_violation("kernel-warnings") as caught:
        assert f.ioctl(1, 8 << 20) == -errno.ENOMEM   # above KMALLOC_MAX_SIZE: the model's WARN
    assert "kmalloc of 8388608 bytes" in caught[0].message
    assert len(drv._slab) == live


def test_double_free_is_a_kernel_warning(fake_mm, pinfault, probe):
    drv, f = probe
    with pinfault.expect_violation("kernel-warnings") as caught:
        assert f.ioctl(2) == 0
    assert "double free" in caught[0].message and "probe_ioctl" in caught[0].message


def test_a_leak_is_reported_at_module_unload(fake_mm, pinfault, probe):
    drv, f = probe
    assert f.ioctl(3) == 0
    with pinfault.expect_violation("kernel-warnings") as caught:
        drv.unload()
    assert "kmemleak: 1 unreferenced object(s)" in caught[0].message
    assert "48 bytes from probe_ioctl (" in caught[0].message


@pytest.mark.parametrize("cmd, marker, what", [
    (4, "PROBE-NULL", "NULL pointer dereference at 0x8"),
    (5, "PROBE-ERRPTR", "ERR_PTR dereference at 0xfffffffffffffff4 (near ERR_PTR(-12))"),
])
def test_a_crash_fails_with_the_driver_line_and_the_process_lives_on(fake_mm, probe, cmd, marker, what):
    drv, f = probe
    with pytest.raises(DriverCrash) as e:
        f.ioctl(cmd)
    assert e.value.signal == "SIGSEGV" and what in str(e.value)
    assert e.value.location.endswith(f"probe.c:{line_of(marker)})")
    assert e.value.location.startswith("probe_ioctl (")
    with pytest.raises(DriverCrash, match="crashed earlier"):   # tainted: no more driver code
        f.ioctl(1, 8)


def test_bug_on_unwinds_with_its_line(fake_mm, probe):
    drv, f = probe
    assert f.ioctl(6, 0) == 0
    with pytest.raises(DriverCrash) as e:
        f.ioctl(6, 6)
    assert e.value.signal == "BUG"
    assert str(e.value).startswith(f"kernel BUG at {PROBE}:{line_of('PROBE-BUG')}: BUG_ON(arg == 6)")


def test_struct_page_is_opaque(fake_mm, probe):
    drv, f = probe
    addr = drv.user_alloc(4096)
    fake_mm.current.mm.write(addr, b"x")
    with pytest.raises(DriverCrash, match="direct access to struct page"):
        f.ioctl(13, addr)
    folio, _ = fake_mm.current.mm.lookup(addr)
    fake_mm.unpin_folio(folio)                  # the crashed call's pin (a tainted module keeps it)


def test_warn_on_is_a_kernel_warning_with_its_line(fake_mm, pinfault, probe):
    drv, f = probe
    assert f.ioctl(7, 0) == 0
    with pinfault.expect_violation("kernel-warnings") as caught:
        assert f.ioctl(7, 7) == 0
    assert f"WARN_ON(arg == 7) at {PROBE}:{line_of('PROBE-WARN')}" in caught[0].message


def test_unlocking_an_unlocked_mutex_is_a_lockdep_warning(fake_mm, pinfault, probe):
    drv, f = probe
    with pinfault.expect_violation("kernel-warnings") as caught:
        f.ioctl(8)
    assert "bad unlock balance" in caught[0].message and "probe_lock" in caught[0].message


def test_copy_to_user_returns_what_it_could_not_copy(fake_mm, probe):
    drv, f = probe
    addr = drv.user_alloc(4096)
    assert f.ioctl(9, addr) == 0
    assert fake_mm.current.mm.read(addr, 16) == b"0123456789abcdef"
    assert f.ioctl(9, addr + 4096 - 6) == 10                   # only 6 bytes were mapped
    assert fake_mm.current.mm.read(addr + 4090, 6) == b"012345"
    assert f.ioctl(9, 0x1000) == 16


def test_pinned_page_handles_map_back_to_the_model(fake_mm, probe):
    drv, f = probe
    addr = drv.user_alloc(4096)
    fake_mm.current.mm.write(addr, b"x")
    assert f.ioctl(10, addr) == 1000 + 1        # an order-0 folio holding one pin (bias 1024)
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released == 1


@pytest.mark.mm_config(cma="64MiB")
@pytest.mark.pin_contract(expect="longterm-placement")
def test_a_reference_held_after_the_ioctl_is_judged_long_term(fake_mm, probe):
    drv, f = probe
    addr = drv.user_alloc(4096)
    with fake_mm.steer("cma"):
        fake_mm.current.mm.write(addr, b"x")
    assert f.ioctl(11, addr) == 1               # get_user_pages_fast, kept: rule 1
    assert f.ioctl(12) == 0


def test_a_callback_exception_unwinds_the_driver_and_is_raised(fake_mm, probe, monkeypatch):
    drv, f = probe

    def boom(size, gfp):
        raise RuntimeError("model error inside kmalloc")
    monkeypatch.setattr(fake_mm, "kmalloc", boom)
    with pytest.raises(RuntimeError, match="model error inside kmalloc"):
        f.ioctl(1, 64)
    monkeypatch.undo()
    assert f.ioctl(1, 64) == 0                  # not tainted: the driver goes on


def test_each_load_is_a_fresh_module_instance(fake_mm, load_c_driver, cdriver_cache):
    a = load_c_driver(PROBE, cache_dir=cdriver_cache)
    a.open("probe")
    assert a.param("probe_opened") == 1
    a.unload()
    b = load_c_driver(PROBE, cache_dir=cdriver_cache, params={"probe_opened": 40})
    b.open("probe")
    assert b.param("probe_opened") == 41


def test_a_device_left_registered_is_reported(fake_mm, pinfault, load_c_driver, cdriver_cache):
    drv = load_c_driver(PROBE, cache_dir=cdriver_cache, defines={"PROBE_NO_DEREGISTER": 1})
    with pinfault.expect_violation("kernel-warnings") as caught:
        drv.unload()
    assert "misc device 'probe' still registered" in caught[0].message


def test_opening_an_unregistered_device_names_what_exists(fake_mm, probe):
    drv, _ = probe
    with pytest.raises(FileNotFoundError, match=r"/dev/nope: .*\['probe'\]"):
        drv.open("/dev/nope")


def test_fault_records_name_the_c_caller_and_caller_filters_match_c_functions(fake_mm, pinfault, probe):
    drv, f = probe
    with pinfault.arm("kmalloc[caller=probe_open]=return"):
        assert f.ioctl(1, 64) == 0                       # probe_ioctl's allocation: not filtered in
    with pinfault.arm("kmalloc[caller=probe_ioctl]=1*return"):
        assert f.ioctl(1, 64) == -errno.ENOMEM
    (rec,) = pinfault.fired
    line = next(i for i, ln in enumerate(PROBE.read_text().splitlines(), 1) if "p = kmalloc(arg, GFP_KERNEL);" in ln)
    assert rec.caller == f"<C> {PROBE}:{line} probe_ioctl"


def test_read_and_write_fops_move_user_memory(fake_mm, probe):
    drv, f = probe
    addr = drv.user_alloc(4096)
    assert f.read(addr, 64) == 13
    assert fake_mm.current.mm.read(addr, 13) == b"probe says hi"
    assert f.write(addr, 8) == 8
    assert f.write(addr, 9) == -errno.EINVAL
    assert f.read(0x10, 4) == -errno.EFAULT


def test_a_driver_retry_loop_ends_on_the_fault_budget_naming_the_c_caller(fake_mm, pinfault, probe):
    from pytest_pinfault.faults.injector import FaultBudgetExceeded
    drv, f = probe
    fake_mm.faults.budget = fake_mm.faults.total_hits + 200
    with pinfault.arm("kmalloc=return"):
        with pytest.raises(FaultBudgetExceeded) as e:
            f.ioctl(14)
    assert e.value.site == "kmalloc" and e.value.caller.endswith(" probe_ioctl")
    assert f"<C> {PROBE}:" in e.value.caller
    fake_mm.faults.budget = 1 << 30
    assert drv.tainted is None and f.ioctl(14) == 0          # unwound, not a crash


def test_sg_tables_are_chunked_like_the_kernel(fake_mm, pinfault, probe):
    """300 entries: two page chunks (alloc_pages site, 127 entries + a chain entry each)
    and a kmalloc'ed chunk of 46; a failure at any chunk frees the earlier ones."""
    drv, f = probe
    pinfault.record(True)
    before = dict(pinfault.hits)
    assert f.ioctl(15, 300) == 300
    hits = {k: v - before.get(k, 0) for k, v in pinfault.hits.items()}
    assert hits.get("alloc_pages") == 2 and hits.get("kmalloc") == 1
    with pinfault.arm("alloc_pages[nth=2]=1*return"):
        assert f.ioctl(15, 300) == -errno.ENOMEM
    with pinfault.arm("kmalloc=1*return"):
        assert f.ioctl(15, 300) == -errno.ENOMEM          # the third chunk
    assert f.ioctl(15, 128) == 128                          # exactly one page chunk
    assert drv.lib.pf_sgpages_live() == 0


def test_a_scatterlist_never_freed_is_a_leak(fake_mm, pinfault, probe):
    drv, f = probe
    assert f.ioctl(15, -200) == 200
    with pinfault.expect_violation("kernel-warnings") as caught:
        drv.unload()
    msgs = " ".join(v.message for v in caught)
    assert "1 scatterlist page chunk(s) of probe.c never freed" in msgs and "kmemleak: 1 unreferenced" in msgs


def test_a_c_driver_hits_a_fault_site_it_declared(fake_mm, pinfault, probe):
    drv, f = probe
    pinfault.declare_site("probe.setup", ["EIO"])
    assert f.ioctl(16) == 0
    with pinfault.arm("probe.setup=1*return"):
        assert f.ioctl(16) == -errno.EIO
    assert pinfault.fired[0].caller.endswith(" probe_ioctl")


def test_an_undeclared_c_fault_site_is_named(fake_mm, probe):
    drv, f = probe
    with pytest.raises(LookupError, match=r"pinfault_fault_point\('probe.setup'\)"):
        f.ioctl(16)


def test_a_cpu_view_never_unmapped_is_reported(fake_mm, pinfault, probe):
    drv, f = probe
    addr = drv.user_alloc(4096)
    fake_mm.current.mm.write(addr, b"Q")
    assert f.ioctl(17, addr) == ord("Q")                  # kmap_local_page sees the page's bytes
    with pinfault.expect_violation("kernel-warnings") as caught:
        drv.unload()
    assert "1 CPU mapping(s) (vm_map_ram/vmap/kmap_local) of probe.c never unmapped" in caught[0].message


def test_stack_overflow_is_a_crash_too(fake_mm, probe):
    drv, f = probe
    with pytest.raises(DriverCrash) as e:
        f.ioctl(18, 0)
    assert e.value.signal == "SIGSEGV" and "stack overflow" in str(e.value)
    assert e.value.location.startswith("probe_recurse (")
    assert f"probe.c:{line_of('PROBE-RECURSE')})" in str(e.value)      # the recursive call


def test_division_by_zero_is_a_crash_too(fake_mm, probe):
    drv, f = probe
    with pytest.raises(DriverCrash) as e:
        f.ioctl(19, 0)
    assert e.value.signal == "SIGFPE"
    assert e.value.location.endswith(f"probe.c:{line_of('PROBE-DIV')})")


def test_mm_pinned_vm_written_in_c_is_the_models(fake_mm, pinfault, probe):
    drv, f = probe
    mm = fake_mm.current.mm
    mm.pinned_vm = 10                                    # changed from Python between calls
    assert f.ioctl(20, 0) == 14 and mm.pinned_vm == 14
    assert f.ioctl(21) == 0 and mm.pinned_vm == 10
    with pinfault.expect_violation("error-nothing-held") as caught:
        assert f.ioctl(20, -1) == -errno.ENOMEM
    assert "pinned_vm +4" in caught[0].message
    mm.pinned_vm = 0


CHARDEV = Path(__file__).parent / "drivers" / "chardev.c"


def test_a_character_device_opens_by_its_device_node_name(fake_mm, load_c_driver, cdriver_cache):
    drv = load_c_driver(CHARDEV, cache_dir=cdriver_cache)
    (name,) = drv.devices
    assert name == "chardev3"
    f = drv.open("/dev/chardev3")                     # open() finds its struct via inode->i_cdev
    assert f.ioctl(1) == 1 and f.ioctl(2) == 3        # opens, MINOR(i_rdev)
    g = drv.open("chardev")                           # by the region's name too
    assert g.ioctl(1) == 2


@pytest.mark.parametrize("nth", [1, 2, 3])
def test_character_device_init_unwinds_on_each_failure(fake_mm, pinfault, load_c_driver, cdriver_cache, nth):
    drv = load_c_driver(CHARDEV, cache_dir=cdriver_cache, init=False)
    with pinfault.arm(f"kmalloc[nth={nth}]=1*return"):  # the chardev, the class, the device node
        assert drv.init() == -errno.ENOMEM
    assert not drv.chrdevs and not drv.cdevs and not drv.devices and not drv._slab


def test_a_region_left_registered_is_reported(fake_mm, pinfault, load_c_driver, cdriver_cache):
    drv = load_c_driver(CHARDEV, cache_dir=cdriver_cache, defines={"CHARDEV_LEAK_REGION": 1})
    with pinfault.expect_violation("kernel-warnings") as caught:
        drv.unload()
    assert "character device region 'chardev' (major 254) still registered" in caught[0].message


def test_mm_references_go_to_the_model(fake_mm, pinfault, probe):
    """mmgrab/mmdrop from C are the model's: one never dropped is rule 4 at teardown."""
    drv, f = probe
    mm = fake_mm.current.mm
    base = mm.mm_count
    assert f.ioctl(22) == 0 and mm.mm_count == base + 1
    assert f.ioctl(23) == 0 and mm.mm_count == base
    assert f.ioctl(22) == 0
    with pinfault.expect_violation("pin-balance") as caught:
        drv.unload()
    assert "mm.mm_count" in caught[0].message and "+1 not returned" in caught[0].message
    fake_mm.mmdrop(mm)


def test_an_fget_never_put_is_the_models_file_reference_leak(fake_mm, pinfault, probe):
    """fget/fput from C are the model's (mm/file.py): a reference never put is rule 4."""
    drv, f = probe
    fd = drv.fd_install("a file")
    assert drv.fget(fd) == "a file"
    assert f.ioctl(24, 99) == -errno.EBADF
    assert f.ioctl(24, fd) == 0
    with pinfault.expect_violation("pin-balance") as caught:
        drv.unload()
    assert "file.refs" in caught[0].message
    fake_mm.fput(fake_mm.fd_file(fd))

def test_signal_pending_reads_the_model_current_task(fake_mm, probe):
    """signal_pending()/fatal_signal_pending() in C see the model's current task
    (include/linux/sched/signal.h, v6.12), as do mmap_read_lock_killable's -EINTR."""
    drv, f = probe
    task = fake_mm.current
    assert f.ioctl(25) == 0 and f.ioctl(26) == 0
    task.signal_pending = True
    assert f.ioctl(25) == -512                       # -ERESTARTSYS: a signal, not fatal
    assert f.ioctl(26) == 0                          # killable waits ignore it
    task.fatal_signal_pending = True
    assert f.ioctl(25) == -errno.EINTR
    assert f.ioctl(26) == -errno.EINTR
    task.signal_pending = False
    assert f.ioctl(25) == 0 and f.ioctl(26) == 0
    other = fake_mm.create_task("other")
    other.fatal_signal_pending = True
    with fake_mm.run_as(other):                      # the C current follows the model's
        assert f.ioctl(25) == -errno.EINTR
    assert f.ioctl(25) == 0


def test_signal_pending_of_another_task_struct_is_a_kernel_warning(fake_mm, pinfault, probe):
    drv, f = probe
    fake_mm.current.signal_pending = True
    with pinfault.expect_violation("kernel-warnings") as caught:
        assert f.ioctl(27) == 0
    assert "signal_pending of a task_struct that is not current" in caught[0].message
    assert f"probe.c:{line_of('PROBE-OTHER-TASK')}" in caught[0].message
    fake_mm.current.signal_pending = False
