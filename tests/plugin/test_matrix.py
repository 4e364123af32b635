"""pinfault_matrix: expansion, ids, selection, replay, skips, accept= and the driver bug hunt."""

from pytest_pinfault.faults.sites import BUILTIN_SITES

pytest_plugins = ["pytester"]

DRIVER = """
import errno
import pytest
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, GFP_KERNEL, MAP_ANONYMOUS,
                                MAP_PRIVATE, PROT_READ, PROT_WRITE)


def my_driver_create(mm):
    '''Allocate a header, pin one user page long-term, allocate the sg table (retried
    once), release everything.  The error path of the retried allocation is wrong: it
    frees the header but forgets to unpin.'''
    hdr = mm.kmalloc(64, GFP_KERNEL)                        # kmalloc hit 1
    if hdr is None:
        return -errno.ENOMEM
    addr = mm.current.mm.mmap(1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    mm.current.mm.write(addr, b"data")
    pages = []
    ret = mm.pin_user_pages(addr, 1, FOLL_LONGTERM | FOLL_WRITE, pages)   # try_grab_folio hit 1
    if ret < 0:
        mm.kfree(hdr)
        return ret
    sg = mm.kmalloc(256, GFP_KERNEL)                        # kmalloc hit 2
    if sg is None:
        sg = mm.kmalloc(256, GFP_KERNEL)                    # kmalloc hit 3: the retry
        if sg is None:
            mm.kfree(hdr)
            return -errno.ENOMEM                            # BUG: missing unpin_user_pages(pages, ret)
    mm.kfree(sg)
    mm.unpin_user_pages(pages, ret)
    mm.kfree(hdr)
    return 0
"""

MATRIX_TEST = DRIVER + """

@pytest.mark.pinfault_matrix("kmalloc", "try_grab_folio", "alloc_migration_target",
                             accept=(-errno.ENOMEM,))
def test_create(fake_mm, pinfault):
    pinfault.result(my_driver_create(fake_mm))
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released
"""


def _outcomes(result):
    """nodeid suffix -> outcome word, from a -v run."""
    out = {}
    for line in result.stdout.lines:
        if "::test_create[" in line and " " in line:
            nodeid, word = line.split(" ")[:2]
            out[nodeid.split("::")[1]] = word
    return out


def test_matrix_finds_exactly_the_buggy_error_path(pytester, run):
    pytester.makepyfile(test_drv=MATRIX_TEST)
    result = run("-v", "-rs")
    result.assert_outcomes(failed=1, passed=5, skipped=12)
    outcomes = _outcomes(result)
    failed = sorted(k for k, v in outcomes.items() if v == "FAILED")
    passed = sorted(k for k, v in outcomes.items() if v == "PASSED")
    # only the persistent failure of the sg allocation makes the retry fail too:
    # the transient case recovers through the retry and never reaches the bad path
    assert failed == ["test_create[kmalloc#2-persistent]"]
    assert passed == sorted(["test_create[kmalloc#1-transient]", "test_create[kmalloc#1-persistent]",
                             "test_create[kmalloc#2-transient]", "test_create[try_grab_folio#1-transient]",
                             "test_create[try_grab_folio#1-persistent]"])
    assert len(outcomes) == 18 and all(v == "SKIPPED" for k, v in outcomes.items()
                                       if k not in failed and k not in passed)
    result.stdout.fnmatch_lines([
        "SKIPPED [[]2] test_drv.py:*: kmalloc reached only 2 time(s), not 3",
        "SKIPPED [[]2] test_drv.py:*: alloc_migration_target reached only 0 time(s), not 1",
    ], consecutive=False)
    result.stdout.fnmatch_lines(["*assert 1 == 0*"])


def test_case_ids_select_and_replay(pytester, run):
    pytester.makepyfile(test_drv=MATRIX_TEST)
    result = run("-v", "-k", "kmalloc and persistent")
    result.assert_outcomes(failed=1, passed=1, skipped=1)
    result = run("-v", "test_drv.py::test_create[kmalloc#2-persistent]")
    result.assert_outcomes(failed=1)
    result = run("-v", "test_drv.py::test_create[kmalloc#2-transient]")
    result.assert_outcomes(passed=1)
    result = run("--collect-only", "-q", "--pinfault-max-nth=1")
    result.stdout.fnmatch_lines([
        "test_drv.py::test_create[[]kmalloc#1-transient]",
        "test_drv.py::test_create[[]kmalloc#1-persistent]",
        "test_drv.py::test_create[[]try_grab_folio#1-transient]",
        "test_drv.py::test_create[[]try_grab_folio#1-persistent]",
        "test_drv.py::test_create[[]alloc_migration_target#1-transient]",
        "test_drv.py::test_create[[]alloc_migration_target#1-persistent]",
        "6 tests collected*",
    ])


def test_accept_rejects_an_unexpected_errno(pytester, run):
    pytester.makepyfile(test_acc=DRIVER + """

def leaky_errno(mm):
    ret = my_driver_create(mm)
    return -errno.EINVAL if ret == -errno.ENOMEM else ret

@pytest.mark.pinfault_matrix("kmalloc", max_nth=1, modes=("transient",), accept=(-errno.ENOMEM,))
def test_wrong_errno(fake_mm, pinfault):
    pinfault.result(leaky_errno(fake_mm))

@pytest.mark.pinfault_matrix("kmalloc", max_nth=1, modes="transient", accept=lambda r: r in (0, -12))
def test_predicate(fake_mm, pinfault):
    pinfault.result(my_driver_create(fake_mm))

@pytest.mark.pinfault_matrix("kmalloc", max_nth=1, modes=("transient",), accept=("ENOMEM",))
def test_forgot_result(fake_mm, pinfault):
    my_driver_create(fake_mm)

@pytest.mark.pinfault_matrix("kmalloc", max_nth=1, modes=("persistent",))
def test_no_accept(fake_mm, pinfault):
    pinfault.result(leaky_errno(fake_mm))
""")
    result = run("-v")
    result.assert_outcomes(failed=2, passed=2)
    result.stdout.fnmatch_lines([
        "*test_wrong_errno?kmalloc#1-transient? FAILED*",
        "*test_predicate?kmalloc#1-transient? PASSED*",
        "*test_forgot_result?kmalloc#1-transient? FAILED*",
        "*test_no_accept?kmalloc#1-persistent? PASSED*",
        "kmalloc#1-transient: with kmalloc failing at hit 1 (transient), the call returned -EINVAL (-22); "
        "acceptable: success (>= 0) or -ENOMEM",
        "kmalloc#1-transient: pinfault_matrix(accept=...) needs the outcome: pass the return value of the "
        "call under test to pinfault.result()",
    ])
    assert "matrix.py" not in result.stdout.str()


def test_matrix_combines_with_parametrize_and_defaults_to_every_site(pytester, run):
    pytester.makepyfile("""
        import pytest
        from pytest_pinfault.faults.sites import BUILTIN_SITES

        @pytest.mark.parametrize("size", [8, 64])
        @pytest.mark.pinfault_matrix("kmalloc", max_nth=2, modes=("persistent",))
        def test_param(fake_mm, pinfault, size):
            from pytest_pinfault.mm import GFP_KERNEL
            assert (fake_mm.kmalloc(size, GFP_KERNEL) is None) == (pinfault.case.nth == 1)
            assert pinfault.case.mode == "persistent"

        @pytest.mark.pinfault_matrix(max_nth=1, modes=("transient",))
        def test_all_sites(request, fake_mm):
            pass

        def test_count(request):
            names = [i.name for i in request.session.items if i.name.startswith("test_all_sites")]
            assert names == [f"test_all_sites[{s}#1-transient]" for s in BUILTIN_SITES]
    """)
    result = run("-v", "-p", "no:randomly")
    result.stdout.fnmatch_lines([
        "*test_param?kmalloc#1-persistent-8? PASSED*",
        "*test_param?kmalloc#1-persistent-64? PASSED*",
        "*test_param?kmalloc#2-persistent-8? SKIPPED*",
    ])
    result.assert_outcomes(passed=3, skipped=2 + len(BUILTIN_SITES))


def test_declared_sites_join_matrices(pytester, run):
    pytester.makeini("""
        [pytest]
        pinfault_sites =
            udmabuf.sg_alloc: ENOMEM EINVAL
    """)
    pytester.makeconftest("""
        def pytest_pinfault_declare_sites(declare):
            declare("drv.map", "EFAULT", meaning="mapping the buffer fails")
    """)
    pytester.makepyfile("""
        import errno
        import pytest

        @pytest.mark.pinfault_matrix("udmabuf.sg_alloc", "drv.map", max_nth=1)
        def test_user_sites(fake_mm, pinfault):
            a = fake_mm.fault_point("udmabuf.sg_alloc")
            b = fake_mm.fault_point("drv.map")
            assert (a, b) in [(-errno.ENOMEM, None), (None, -errno.EFAULT)]
    """)
    run().assert_outcomes(passed=4)
