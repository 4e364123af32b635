"""End to end: coverage dynamic contexts per test and ``--pinfault-errpaths``, in a
subprocess where coverage.py starts before the driver is imported (``python -m coverage
run -m pytest``), serially and under pytest-xdist."""

import json
import sys
import textwrap

import pytest

from .conftest import INNER

pytest_plugins = ["pytester"]

pytest.importorskip("coverage")

DRIVER = textwrap.dedent('''\
    import errno

    from pytest_pinfault.mm import GFP_KERNEL


    def create(k, n):
        buf = k.kmalloc(n, GFP_KERNEL)
        if buf is None:
            return -errno.ENOMEM
        if n > 1 << 40:
            return -errno.EINVAL
        if n == 0:
            return -errno.EFAULT          # pinfault: never
        return 0
    ''')
ENOMEM_LINE, EINVAL_LINE, NEVER_LINE = 9, 11, 13

TEST = textwrap.dedent('''\
    import errno

    import pytest

    import drv


    @pytest.mark.pinfault_matrix({sites})
    def test_create(fake_mm, pinfault):
        assert drv.create(fake_mm, 64) in (0, -errno.ENOMEM)


    def test_plain(fake_mm):
        assert drv.create(fake_mm, 64) == 0
    ''')


def _project(pytester, sites='"kmalloc"'):
    pytester.makepyfile(drv=DRIVER, test_drv=TEST.format(sites=sites))


def _coverage_run(pytester, *args, parallel=False):
    cov = ["--source=drv"] + (["--parallel-mode"] if parallel else [])
    return pytester.run(sys.executable, "-m", "coverage", "run", *cov, "-m", "pytest", *INNER, *args)


def _errpaths(pytester, *args):
    return pytester.run(sys.executable, "-m", "pytest_pinfault.errpaths", *args)


def test_contexts_and_the_terminal_report(pytester):
    _project(pytester)
    result = _coverage_run(pytester, "--pinfault-errpaths=drv")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*pinfault: error paths*",
                                 "drv.py: reached only under injected faults:",
                                 f"  {ENOMEM_LINE}: kmalloc",
                                 f"drv.py: error-path lines no run reached: {EINVAL_LINE}",
                                 "error-path lines reached / found: 1 / 2 (50.0%)"])
    import coverage
    data = coverage.CoverageData(basename=str(pytester.path / ".coverage"))
    data.read()
    contexts = data.measured_contexts()
    assert "test_drv.py::test_plain|nofault" in contexts
    assert "test_drv.py::test_create[kmalloc-1-transient]|kmalloc#1/transient" in contexts
    assert "test_drv.py::test_create[kmalloc-1-persistent]|kmalloc#1/persistent" in contexts
    assert "test_drv.py::test_create[fault-free]|nofault" in contexts
    # the command line reads the same data
    out = _errpaths(pytester, ".coverage", "--packages", "drv", "--json", "ep.json")
    assert out.ret == 0, out.stderr.str()
    out.stdout.fnmatch_lines([f"  {ENOMEM_LINE}: kmalloc"])
    js = json.loads((pytester.path / "ep.json").read_text())
    (f,) = js["files"]
    assert f["fault_only"][str(ENOMEM_LINE)]["sites"] == ["kmalloc"]
    assert f["unreached"] == [EINVAL_LINE] and f["never"] == [NEVER_LINE]


def test_removing_the_site_from_the_matrix_makes_the_path_unreached(pytester):
    _project(pytester, sites='"alloc_pages"')
    result = _coverage_run(pytester, "--pinfault-errpaths=drv")
    # the driver never reaches alloc_pages: the matrix has no case, and says so
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(["*pinfault_matrix: no case to run: the fault-free run never reached "
                                 "alloc_pages*"])
    result.stdout.fnmatch_lines([f"drv.py: error-path lines no run reached: {ENOMEM_LINE}, {EINVAL_LINE}",
                                 "error-path lines reached / found: 0 / 2 (0.0%)"])
    assert "reached only under injected faults" not in result.stdout.str()


def test_without_coverage_a_warning(pytester):
    _project(pytester)
    result = pytester.runpytest_subprocess(*INNER, "--pinfault-errpaths=drv")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*warning: --pinfault-errpaths needs coverage.py measuring the run*"])


def test_xdist_workers_record_the_contexts(pytester):
    pytest.importorskip("xdist")
    _project(pytester)
    (pytester.path / ".coveragerc").write_text("[run]\nparallel = true\npatch = subprocess\nsource = drv\n")
    result = pytester.run(sys.executable, "-m", "coverage", "run", "-m", "pytest", *INNER, "-p", "xdist.plugin", "-n", "2")
    assert result.ret == 0, result.stdout.str()
    assert pytester.run(sys.executable, "-m", "coverage", "combine").ret == 0
    out = _errpaths(pytester, ".coverage", "--packages", "drv")
    assert out.ret == 0, out.stderr.str()
    out.stdout.fnmatch_lines([f"  {ENOMEM_LINE}: kmalloc",
                              f"drv.py: error-path lines no run reached: {EINVAL_LINE}",
                              "error-path lines reached / found: 1 / 2 (50.0%)"])


def test_pytest_cov_terminal_report(pytester):
    """With pytest-cov (``--cov``) instead of ``coverage run``: same contexts, same report."""
    pytest.importorskip("pytest_cov")
    _project(pytester)
    result = pytester.runpytest_subprocess(*INNER, "-p", "pytest_cov", "--cov=drv", "--pinfault-errpaths=drv")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*pinfault: error paths*",
                                 "drv.py: reached only under injected faults:",
                                 f"  {ENOMEM_LINE}: kmalloc",
                                 f"drv.py: error-path lines no run reached: {EINVAL_LINE}",
                                 "error-path lines reached / found: 1 / 2 (50.0%)"])
