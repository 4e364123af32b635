"""The ``fake_mm`` fixture and ``pinfault_machine`` take their checker's baseline from
what ``FakeMM()`` construction recorded (``Checker.boot_baseline``) instead of reading
the machine again: the machine is fresh, only its injector was armed.  These tests hold
that shortcut to its promise: in every way a test's machine is set up (trace on, faults
armed by option, marker and matrix case, a budget, the configure hook, a
``pinfault_machine`` block) the baseline equals one read from the machine as the test
starts, and a change made before the test starts is judged against it."""

pytest_plugins = ["pytester"]

SAME_BASELINE = """
import pytest
from pytest_pinfault.contracts import Checker
from pytest_pinfault.contracts.counters import snapshot
from pytest_pinfault.mm import GFP_KERNEL


def same_baseline(k):
    '''The checker's baseline against one read from the machine now.'''
    ck = k._checker
    now = Checker(k, register=False)
    for name in ("_b_pins", "_b_isolated", "_b_warnings", "_b_livelocks", "_b_seq", "_b_faults",
                 "_b_hugetlb", "_b_isolated_folios"):
        assert getattr(ck, name) == getattr(now, name), name
    for c in k.counters:
        assert ck._b_counters.get(c.name, c.initial) == now._b_counters[c.name], c.name
    assert snapshot(k) == now._b_counters
    assert {z: n for z, n in now._b_isolate_pb.items() if n} == \\
        {z: n for z, n in ck._b_isolate_pb.items() if n}
    assert {p: f for p, f in now._b_task_flags.items() if f} == \\
        {p: f for p, f in ck._b_task_flags.items() if f}
    assert {i: (lv, pv) for i, (_, lv, pv) in now._b_mm.items() if lv or pv} == \\
        {i: (lv, pv) for i, (_, lv, pv) in ck._b_mm.items() if lv or pv}
    assert {i: (p, r) for i, (_, p, r) in now._b_folios.items() if p or r} == \\
        {i: (p, r) for i, (_, p, r) in ck._b_folios.items() if p or r}
    assert ck._seen_valid and ck.attached


def test_plain(fake_mm):
    same_baseline(fake_mm)


@pytest.mark.mm_config(ram="2GiB", cma="64MiB", movablecore="256MiB", hugetlb={2 << 20: 4})
@pytest.mark.pinfault("kmalloc[nth=50]=return", "alloc_migration_target[nth=9]=return")
def test_marker_faults_and_pools(fake_mm):
    same_baseline(fake_mm)


def test_pinfault_machine(pinfault_machine):
    with pinfault_machine("kmalloc[nth=50]=return") as k:
        same_baseline(k)


def grab(k):
    o = k.kmalloc(64, GFP_KERNEL)
    if o is None:
        return -12
    k.kfree(o)
    return 0


@pytest.mark.pinfault_matrix("kmalloc")
def test_matrix(fake_mm, pinfault):
    same_baseline(fake_mm)
    pinfault.result(grab(fake_mm))
"""


def test_boot_baseline_equals_the_machine_read_as_the_test_starts(pytester, run):
    pytester.makeini("""
        [pytest]
        pinfault_budget = 1000
        pinfault_sites = drv_alloc: ENOMEM
    """)
    pytester.makepyfile(test_base=SAME_BASELINE)
    result = run("-v", "--pinfault-trace=verbose", "--pinfault-faults=kmalloc[nth=99]=return")
    result.assert_outcomes(passed=6)   # the matrix test: fault-free and two cases


def test_boot_baseline_with_a_configure_hook(pytester, run):
    """A ``pytest_pinfault_configure`` hook changes the machine before the test: the
    baseline is read again after it, so what it left is not a violation, and what the
    test gives back below it is."""
    pytester.makeconftest("""
        def pytest_pinfault_configure(fake_mm, request):
            fake_mm.current_user().locked_vm += 2
    """)
    pytester.makepyfile(test_base=SAME_BASELINE + """

def test_gives_back_too_much(fake_mm):
    fake_mm.current_user().locked_vm -= 3
""")
    result = run("-v")
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines(["*accounting*user.locked_vm*is -1, baseline 2*"])


def test_changes_below_the_boot_values_are_judged(pytester, run):
    """Counters, pins, isolation, task flags, mm accounting and hugetlb pools that a test
    leaves off the construction-time values -- above or below them -- fail it."""
    pytester.makepyfile("""
        from pytest_pinfault.mm import PF_MEMALLOC_PIN

        def test_counter_below(fake_mm):
            fake_mm.current_user().locked_vm -= 1

        def test_driver_counter(fake_mm):
            n = [0]
            fake_mm.counters.register("drv.n", lambda: n[0])
            n[0] += 1

        def test_scope(fake_mm):
            fake_mm.current.flags |= PF_MEMALLOC_PIN

        def test_pinned_vm(fake_mm):
            fake_mm.current.mm.pinned_vm += 1

        def test_pins_released_twice_as_counted(fake_mm):
            fake_mm.stats.nr_foll_pin_released += 1

        def test_isolated(fake_mm):
            fake_mm.stats.nr_isolated_anon += 1
    """)
    result = run("-v", "-p", "no:randomly")
    result.assert_outcomes(failed=6)
    result.stdout.fnmatch_lines_random([
        "*accounting*user.locked_vm*is -1, baseline 0*",
        "*pin-balance*drv.n is 1, baseline 0*",
        "*scope-hygiene*PF_MEMALLOC_PIN left set*",
        "*accounting*pinned_vm*is 1 pages, baseline 0*",
        "*pin-balance*more pins released than acquired*",
        "*isolation-hygiene*NR_ISOLATED not back to baseline*",
    ])
