"""The contract checker in the plugin: every fake_mm is watched, violations fail the
test with the splat, ``pin_contract`` markers, ``pinfault.check()`` /
``pinfault.expect_violation``, the ``pytest_pinfault_violation`` hook, the report."""

import json

import pytest

pytest_plugins = ["pytester"]

DRIVER = """
    import errno
    import pytest
    from pytest_pinfault import pin_entry_point
    from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, GFP_KERNEL, MAP_ANONYMOUS,
                                    MAP_PRIVATE, PROT_READ, PROT_WRITE)

    NPAGES = 4


    def buffer(k):
        mm = k.current.mm
        addr = mm.mmap(NPAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        assert mm.write(addr, b"x" * (NPAGES * 4096)) == NPAGES * 4096
        return addr


    def register(k, addr, fail_alloc, fixed):
        # pin the buffer, allocate a descriptor (which may fail), unpin on that error
        # path only when *fixed*
        pages = []
        ret = k.pin_user_pages(addr, NPAGES, FOLL_LONGTERM | FOLL_WRITE, pages)
        if ret < 0:
            return ret
        desc = None if fail_alloc else k.kmalloc(64, GFP_KERNEL)
        if desc is None:
            if fixed:
                k.unpin_user_pages(pages, ret)
            return -errno.ENOMEM
        k.kfree(desc)
        k.unpin_user_pages(pages, ret)
        return 0


    register_entry = pin_entry_point(name="drv_register")(register)
"""


def esc(pattern):
    return pattern.replace("[", "[[]")


def make(pytester, body):
    pytester.makepyfile(drv=DRIVER)
    pytester.makepyfile(test_drv="from drv import *\n" + body)


# ------------------------------------------------------------------ failing tests
def test_buggy_driver_fails_with_pin_balance_splat_and_fixed_twin_passes(pytester, run):
    make(pytester, """
def test_buggy(fake_mm):
    assert register(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=False) == -errno.ENOMEM

def test_fixed(fake_mm):
    assert register(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=True) == -errno.ENOMEM
""")
    result = run("-rf")
    result.assert_outcomes(failed=1, passed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*_ test_buggy _*",
        "pin contract violation: [[]pin-balance] 4 pin(s) never released: acquired 4, released 0*",
        "  rule 4 (pin-balance): *",
        "FAILED test_drv.py::test_buggy*",
    ])
    assert "test_fixed" not in out.split("short test summary")[1]
    # a clean failure: the splat only, no traceback through the plugin or the checker
    for internal in ("fixtures.py", "contract.py", "checker.py", "Traceback", "raise "):
        assert internal not in out
    assert "ERROR" not in out          # reported as a failed test, not a teardown error


def test_entry_point_violation_fails_the_call_phase(pytester, run):
    make(pytester, """
def test_buggy(fake_mm):
    assert register_entry(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=False) == -errno.ENOMEM

def test_fixed(fake_mm):
    assert register_entry(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=True) == -errno.ENOMEM
""")
    result = run()
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "pin contract violation: [[]error-nothing-held] drv_register returned -ENOMEM but left 4 new pin(s)*",
        "  call: drv_register (called from test_drv.py:* test_buggy)",
    ])
    out = result.stdout.str()
    assert "checker.py" not in out and "matrix.py" not in out
    # reported once, in the call phase (the final check's pin-balance only as a section)
    assert out.count("test_buggy _") == 1


def test_fault_armed_by_marker_on_the_error_path(pytester, run):
    make(pytester, """
@pytest.mark.pinfault("kmalloc=return")
def test_buggy(fake_mm, pinfault):
    assert register(fake_mm, buffer(fake_mm), fail_alloc=False, fixed=False) == -errno.ENOMEM
    assert pinfault.fired

@pytest.mark.pinfault("kmalloc=return")
def test_fixed(fake_mm, pinfault):
    assert register(fake_mm, buffer(fake_mm), fail_alloc=False, fixed=True) == -errno.ENOMEM
    assert pinfault.fired
""")
    result = run()
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*_ test_buggy _*", "pin contract violation: [[]pin-balance]*"])


# ------------------------------------------------------------------ markers
def test_expect_passes_when_violated_and_fails_when_not(pytester, run):
    make(pytester, """
@pytest.mark.pin_contract(expect="pin-balance")
def test_buggy(fake_mm):
    register(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=False)

@pytest.mark.pin_contract(expect=4)
def test_fixed(fake_mm):
    register(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=True)
""")
    result = run("-rf")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "*_ test_fixed _*",
        "pin contract: expected a pin-balance violation, none happened*",
        "FAILED test_drv.py::test_fixed*",
    ])
    assert "[pin-balance] 4 pin(s)" not in result.stdout.str()     # swallowed in test_buggy


def test_expect_swallows_only_its_rule(pytester, run):
    make(pytester, """
@pytest.mark.pin_contract(expect="accounting")
def test_buggy(fake_mm):
    register(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=False)
""")
    result = run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["pin contract violation: [[]pin-balance]*",
                                 "pin contract: expected a accounting violation, none happened*"])


def test_disable_switches_rules_off(pytester, run):
    make(pytester, """
@pytest.mark.pin_contract(disable=["pin-balance", 10], reason="the buffer is left pinned on purpose")
def test_buggy(fake_mm):
    register(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=False)

@pytest.mark.pin_contract(disable=["kernel-warnings"], reason="not the rule that breaks")
def test_other_rule(fake_mm):
    register(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=False)
""")
    result = run()
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*_ test_other_rule _*", "pin contract violation: [[]pin-balance]*"])


@pytest.mark.parametrize("marker, message", [
    ('pin_contract(disable=["pin-balance"])',
     '@pytest.mark.pin_contract: disable: expected a reason="..." saying why the rules are switched off, '
     'got none'),
    ('pin_contract(disable=[4], reason="  ")',
     '@pytest.mark.pin_contract: disable: expected a reason="..."*'),
    ('pin_contract(disable=["pin-balanse"], reason="x")',
     "@pytest.mark.pin_contract: unknown contract rule 'pin-balanse'; valid rules: 1=longterm-placement, *"),
    ('pin_contract(expect=12)',
     "@pytest.mark.pin_contract: unknown contract rule 12; valid rules: 1=longterm-placement, *11=kernel-warnings"),
])
def test_bad_pin_contract_is_a_usage_error(pytester, run, marker, message):
    pytester.makepyfile(test_bad=f"""
        import pytest

        @pytest.mark.{marker}
        def test_x(fake_mm):
            pass
    """)
    result = run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([esc(f"ERROR: test_bad.py::test_x: {message}")])


def test_rules_by_number_and_id_are_accepted(pytester, run):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.pin_contract(disable=[1, "2", "Count-Honesty"], reason="demo")
        def test_x(fake_mm):
            pass
    """)
    run().assert_outcomes(passed=1)


# ------------------------------------------------------------------ controller
def test_check_mid_test_returns_violations(pytester, run):
    make(pytester, """
@pytest.mark.pin_contract(expect="pin-balance")
def test_expected(fake_mm, pinfault):
    assert pinfault.check() == []
    pages = []
    assert fake_mm.pin_user_pages(buffer(fake_mm), 1, FOLL_WRITE, pages) == 1
    assert pinfault.check() == []                  # rule 4 is judged by a final check only
    found = pinfault.check(final=True)
    assert [v.rule_id for v in found] == ["pin-balance"]
    assert str(found[0]).startswith("pin contract violation: [pin-balance]")
    fake_mm.unpin_user_pages(pages, 1)

def test_unexpected(fake_mm, pinfault):
    pages = []
    fake_mm.pin_user_pages(buffer(fake_mm), 1, FOLL_WRITE, pages)
    assert [v.rule_id for v in pinfault.check(final=True)] == ["pin-balance"]
    fake_mm.unpin_user_pages(pages, 1)
""")
    result = run()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*_ test_unexpected _*", "pin contract violation: [[]pin-balance]*"])


def test_expect_violation_context_manager(pytester, run):
    make(pytester, """
def test_caught(fake_mm, pinfault):
    with pinfault.expect_violation("pin-balance") as caught:
        register(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=False)
    assert [v.rule_id for v in caught] == ["pin-balance"]
    assert pinfault.checker is fake_mm._checker

def test_not_caught(fake_mm, pinfault):
    with pinfault.expect_violation(4):
        register(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=True)
""")
    result = run()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: expected a violation of rule 4 (pin-balance*"])


def test_checker_is_attached_to_fake_mm(pytester, run):
    pytester.makepyfile("""
        from pytest_pinfault import Checker
        from pytest_pinfault.contracts import checker_for

        def test_x(fake_mm, pinfault):
            assert isinstance(fake_mm._checker, Checker)
            assert checker_for(fake_mm) is fake_mm._checker is pinfault.checker
    """)
    run().assert_outcomes(passed=1)


# ------------------------------------------------------------------ hook and report
def test_violation_hook_is_called(pytester, run):
    pytester.makeconftest("""
        SEEN = []

        def pytest_pinfault_violation(violation, item):
            SEEN.append(f"{item.name}:{violation.rule.id}")

        def pytest_terminal_summary(terminalreporter):
            terminalreporter.line("SEEN " + " ".join(SEEN))
    """)
    make(pytester, """
def test_buggy(fake_mm):
    register(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=False)

@pytest.mark.pin_contract(expect="pin-balance")
def test_expected(fake_mm):
    register(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=False)

@pytest.mark.pin_contract(disable=["pin-balance", "contiguity"], reason="demo")
def test_disabled(fake_mm):
    register(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=False)

def test_clean(fake_mm):
    register(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=True)
""")
    result = run()
    result.assert_outcomes(failed=1, passed=3)
    result.stdout.fnmatch_lines(["SEEN test_buggy:pin-balance test_expected:pin-balance"])


BUGGY_AND_FIXED = """
@pytest.mark.parametrize("i", range(3))
def test_buggy(fake_mm, i):
    register(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=False)

@pytest.mark.parametrize("i", range(3))
def test_fixed(fake_mm, i):
    register(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=True)

@pytest.mark.pin_contract(expect="pin-balance")
def test_expected(fake_mm):
    register(fake_mm, buffer(fake_mm), fail_alloc=True, fixed=False)
"""


def test_json_lists_violations_and_summary_counts_them(pytester, run):
    make(pytester, BUGGY_AND_FIXED)
    result = run("--pinfault-trace=on", "--pinfault-json=out.json")
    result.assert_outcomes(failed=3, passed=4)
    data = json.loads(pytester.path.joinpath("out.json").read_text())
    tests = {t["nodeid"]: t for t in data["tests"]}
    (v,) = tests["test_drv.py::test_buggy[0]"]["violations"]
    assert v["rule"] == "pin-balance" and v["number"] == 4 and not v["expected"]
    assert v["message"].startswith("4 pin(s) never released")
    assert tests["test_drv.py::test_fixed[0]"]["violations"] == []
    assert [(v["rule"], v["expected"]) for v in tests["test_drv.py::test_expected"]["violations"]] == [
        ("pin-balance", True)]
    row = data["sites"]["try_grab_folio"]
    # no fault was injected: the failures are attributed to no site, the site merely saw them
    assert (row["tests"], row["failed"], row["violations"], row["hit_in_failed"]) == (7, 0, 0, 3)
    from tests.plugin.test_report import check_report
    check_report(data)


def test_violations_aggregate_under_xdist(pytester, run_subprocess):
    pytest.importorskip("xdist")
    make(pytester, BUGGY_AND_FIXED)
    serial = run_subprocess("--pinfault-seed=3", "--pinfault-trace=on", "--pinfault-json=serial.json")
    serial.assert_outcomes(failed=3, passed=4)
    dist = run_subprocess("--pinfault-seed=3", "--pinfault-trace=on", "--pinfault-json=dist.json",
                          "-p", "xdist.plugin", "-n", "2")
    dist.assert_outcomes(failed=3, passed=4)
    dist.stdout.fnmatch_lines(["pin contract violation: [[]pin-balance]*"])
    s, d = (json.loads(pytester.path.joinpath(n).read_text()) for n in ("serial.json", "dist.json"))
    assert s == d
    assert d["sites"]["try_grab_folio"]["hit_in_failed"] == 3
    assert sum(bool(t["violations"]) for t in d["tests"]) == 4
    from tests.plugin.test_report import check_report
    check_report(d)


def test_final_check_waits_for_fixtures_that_depend_on_fake_mm(pytester, run):
    make(pytester, """
@pytest.fixture
def pinned(fake_mm):
    pages = []
    assert fake_mm.pin_user_pages(buffer(fake_mm), NPAGES, FOLL_WRITE, pages) == NPAGES
    yield pages
    fake_mm.unpin_user_pages(pages, NPAGES)

@pytest.fixture
def leaky(fake_mm):
    pages = []
    assert fake_mm.pin_user_pages(buffer(fake_mm), NPAGES, FOLL_WRITE, pages) == NPAGES
    yield pages

def test_released_by_fixture(pinned):
    assert len(pinned) == NPAGES

def test_leaked_by_fixture(leaky):
    assert len(leaky) == NPAGES
""")
    result = run()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*_ ERROR at teardown of test_leaked_by_fixture _*",
                                 "pin contract violation: [[]pin-balance] 4 pin(s) never released*"])
    out = result.stdout.str()
    assert "fixtures.py" not in out and "Traceback" not in out


def test_configure_hook_state_is_part_of_the_baseline(pytester, run):
    pytester.makeconftest("""
        from drv import FOLL_WRITE, buffer

        def pytest_pinfault_configure(fake_mm, request):
            assert fake_mm._checker is not None
            fake_mm.pin_user_pages(buffer(fake_mm), 2, FOLL_WRITE, [])   # pinned for good
    """)
    make(pytester, """
def test_x(fake_mm):
    assert fake_mm.stats.nr_foll_pin_acquired == 2
""")
    run().assert_outcomes(passed=1)
