"""The ``load_c_driver`` fixture end to end: a C driver under an inner pytest run, a crash
that fails one test with the driver's line while the run goes on, a missing kernel API
reported in a few lines, the build cache shared by pytest-xdist workers, and the pinbuf
example suite."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import INNER

pytest_plugins = ["pytester"]

pytest.importorskip("cffi", reason="the C-driver bridge needs the [c] extra (cffi)")

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "cdriver" / "drivers" / "probe.c"


@pytest.fixture
def cache(pytester, tmp_path):
    d = tmp_path / "cdriver-cache"
    pytester.makeini(f"[pytest]\npinfault_cdriver_cache = {d}\n")
    return d


def test_a_driver_runs_under_the_fixture_and_a_crash_fails_only_its_test(pytester, run_subprocess, cache):
    pytester.makepyfile(test_drv=f"""
        import errno
        PROBE = {str(PROBE)!r}

        def test_ioctl(load_c_driver):
            f = load_c_driver(PROBE).open("probe")
            assert f.ioctl(1, 64) == 0 and f.ioctl(99) == -errno.ENOTTY

        def test_crash(fake_mm, load_c_driver):
            load_c_driver(fake_mm, PROBE).open("probe").ioctl(4)

        def test_after_the_crash(load_c_driver):
            assert load_c_driver(PROBE).open("probe").ioctl(1, 8) == 0
        """)
    r = run_subprocess("-q")
    r.assert_outcomes(passed=2, failed=1)
    out = r.stdout.str()
    line = next(i for i, ln in enumerate(PROBE.read_text().splitlines(), 1) if "PROBE-NULL" in ln)
    assert "DriverCrash: driver crash in probe_ioctl: SIGSEGV, NULL pointer dereference at 0x8" in out
    assert f"at probe_ioctl ({PROBE}:{line})" in out
    assert len(list(cache.iterdir())) == 1          # one compile for the three tests


def test_a_missing_kernel_api_fails_with_a_short_report(pytester, run, cache):
    pytester.makefile(".c", drv="""
        #include <linux/mm.h>
        int f(void) { return iommu_map_pages(0, 1); }
        """)
    pytester.makepyfile(test_missing="""
        def test_load(load_c_driver):
            load_c_driver("drv.c")
        """)
    r = run("-q")
    r.assert_outcomes(failed=1)
    out = r.stdout.str()
    assert "the C-driver bridge lacks 1 kernel API(s) this driver uses" in out
    assert "iommu_map_pages (function) used at" in out and "drv.c:2" in out
    assert "implicit declaration" not in out         # not gcc's output
    assert "Traceback" not in out


def test_a_bad_call_of_the_fixture_is_a_usage_error(pytester, run, cache):
    pytester.makepyfile(test_bad="""
        def test_load(load_c_driver):
            load_c_driver("a.c", "b.c")
        """)
    r = run("-q")
    assert "load_c_driver([fake_mm,] source, **options): expected one source path" in r.stdout.str() + r.stderr.str()


def test_xdist_workers_share_one_cache_entry(pytester, run_subprocess, cache):
    pytester.makepyfile(test_par=f"""
        import pytest
        PROBE = {str(PROBE)!r}

        @pytest.mark.parametrize("i", range(4))
        def test_load(load_c_driver, i):
            assert load_c_driver(PROBE).open("probe").ioctl(1, 16 * (i + 1)) == 0
        """)
    r = run_subprocess("-q", "-p", "xdist.plugin", "-n", "2")
    r.assert_outcomes(passed=4)
    entries = list(cache.iterdir())
    assert len(entries) == 1 and (entries[0] / "driver.so").is_file()


def test_the_pinbuf_example_suite_passes(tmp_path):
    env = dict(os.environ, PINFAULT_CDRIVER_CACHE=str(tmp_path / "cache"))
    env.pop("PINFAULT_FAULTS", None)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", *INNER, "examples/cdriver"],
                       cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:]
    summary = r.stdout.strip().splitlines()[-1]
    assert re.search(r"\b\d+ passed\b", summary) and "failed" not in summary and "error" not in summary, summary


def test_a_buggy_c_driver_fails_with_the_rule_and_its_entry_point(pytester, run, cache):
    pinbuf = ROOT / "examples" / "cdriver"
    pytester.makepyfile(test_buggy=f"""
        import pytest
        from pytest_pinfault.mm import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE

        @pytest.mark.mm_config(cma="64MiB")
        def test_register(fake_mm, load_c_driver):
            drv = load_c_driver({str(pinbuf / "pinbuf.c")!r}, include_dirs=[{str(pinbuf / "uapi")!r}],
                                uapi_headers=[{str(pinbuf / "uapi" / "linux" / "pinbuf.h")!r}],
                                defines={{"PINBUF_BUG_NO_LONGTERM": 1}})
            mm = fake_mm.current.mm
            buf = mm.mmap(4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
            with fake_mm.steer("cma"):
                for i in range(4):
                    mm.write(buf + i * 4096, b"x")
            arg = drv.user_alloc(4096)
            drv.put_user(arg, "struct pinbuf_region", {{"addr": buf, "len": 4 * 4096}})
            assert drv.open("pinbuf").ioctl(drv.const("PINBUF_REGISTER"), arg) == 0
        """)
    r = run("-q")
    r.assert_outcomes(failed=1)
    out = r.stdout.str()
    assert "[longterm-placement] 4 long-term holds sit in CMA (taken by pinbuf_ioctl)" in out


def test_relative_paths_resolve_next_to_the_test_file(pytester, run, cache):
    sub = pytester.mkdir("sub")
    (sub / "mini.c").write_text(
        "#include <linux/module.h>\n#include <linux/miscdevice.h>\n#include <linux/fs.h>\n"
        "static long mini_ioctl(struct file *f, unsigned int cmd, unsigned long arg) { return cmd * 2; }\n"
        "static const struct file_operations mini_fops = { .unlocked_ioctl = mini_ioctl };\n"
        "static struct miscdevice mini = { .minor = MISC_DYNAMIC_MINOR, .name = \"mini\", .fops = &mini_fops };\n"
        "static int __init mini_init(void) { return misc_register(&mini); }\n"
        "static void __exit mini_exit(void) { misc_deregister(&mini); }\n"
        "module_init(mini_init);\nmodule_exit(mini_exit);\n")
    (sub / "test_mini.py").write_text(
        "def test_mini(load_c_driver):\n"
        "    assert load_c_driver('mini.c').open('mini').ioctl(21) == 42\n")
    run("-q", "sub").assert_outcomes(passed=1)


C_DRIVER = r'''
#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/slab.h>

static long cov_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	void *a, *b;

	a = kmalloc(64, GFP_KERNEL);
	if (!a)
		return -ENOMEM;
	b = kmalloc(64, GFP_KERNEL);
	if (!b)
		goto err_free_a;
	if (arg == 77)
		goto err_free_b;
	kfree(b);
	kfree(a);
	return 0;
err_free_b:
	kfree(b);
err_free_a:
	kfree(a);
	return -ENOMEM;
}

static const struct file_operations cov_fops = { .unlocked_ioctl = cov_ioctl };
static struct miscdevice cov_misc = { .minor = MISC_DYNAMIC_MINOR, .name = "cov", .fops = &cov_fops };
static int __init cov_init(void) { return misc_register(&cov_misc); }
static void __exit cov_exit(void) { misc_deregister(&cov_misc); }
module_init(cov_init);
module_exit(cov_exit);
'''


COV_TEST = """
        import errno
        import pytest

        @pytest.mark.pinfault_matrix("kmalloc")
        def test_ioctl(load_c_driver, pinfault):
            drv = load_c_driver("covdrv.c", init=False)
            if pinfault.result(drv.init()) != 0:
                return
            assert pinfault.result(drv.open("cov").ioctl(1)) in (0, -errno.ENOMEM)
        """


def _cov_lines():
    src = C_DRIVER.lstrip("\n").splitlines()
    no = {text: i for i, text in enumerate(src, 1)}
    return (no["\t\treturn -ENOMEM;"], no["\t\tgoto err_free_a;"], no["\t\tgoto err_free_b;"], no["err_free_a:"],
            no["err_free_b:"] + 1)


def test_c_lines_keep_their_cases_under_xdist_with_pytest_cov(pytester, cache):
    """Each pytest-xdist worker records its C lines under the case contexts in its own
    data; pytest-cov combines them and the controller reports."""
    pytest.importorskip("xdist")
    pytest.importorskip("pytest_cov")
    pytester.makefile(".c", covdrv=C_DRIVER)
    pytester.makepyfile(test_cov=COV_TEST)
    r = pytester.run(sys.executable, "-m", "pytest", *INNER, "-p", "xdist.plugin", "-p", "pytest_cov", "-n", "2",
                     "--cov=.", "--pinfault-errpaths=covdrv")
    assert r.ret == 0, r.stdout.str()
    enomem, goto_a, goto_b, label_a, free_b = _cov_lines()
    r.stdout.fnmatch_lines(["covdrv.c: reached only under injected faults:",
                            f"  {enomem}, {goto_a}, {label_a}-{label_a + 2}: kmalloc",
                            f"covdrv.c: error-path lines no run reached: {goto_b}, {free_b}",
                            "error-path lines reached / found: 4 / 6 (66.7%)"])


SLOW_SECOND_WORKER = """
import os
import pathlib
import time

MARK = pathlib.Path(os.getcwd(), "gw0-collected")
if os.environ.get("PYTEST_XDIST_WORKER") == "gw1":     # start up only once gw0 has collected
    deadline = time.monotonic() + 120
    while not MARK.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def pytest_collection_finish(session):
    if os.environ.get("PYTEST_XDIST_WORKER") == "gw0":
        MARK.write_text("")
"""


def test_a_late_worker_start_up_does_not_erase_a_collected_workers_coverage_data(pytester, cache):
    """pytest-cov's start-up in each pytest-xdist worker erases every parallel data file
    of the directory.  A worker that collected first must have written none yet: the
    matrix probe runs at collection time, so it runs unmeasured there (it used to write
    the worker's data file, which the late worker erased: "no such table: context", an
    INTERNALERROR, the flake this reproduces every time)."""
    pytest.importorskip("xdist")
    pytest.importorskip("pytest_cov")
    pytester.makefile(".c", covdrv=C_DRIVER)
    pytester.makepyfile(test_cov=COV_TEST, slowstart=SLOW_SECOND_WORKER)
    r = pytester.run(sys.executable, "-m", "pytest", *INNER, "-p", "xdist.plugin", "-p", "pytest_cov",
                     "-p", "slowstart", "-n", "2", "--cov=.", "--pinfault-errpaths=covdrv")
    assert (pytester.path / "gw0-collected").exists()
    assert r.ret == 0, r.stdout.str()
    assert "no such table" not in r.stdout.str()
    enomem, goto_a, goto_b, label_a, free_b = _cov_lines()
    r.stdout.fnmatch_lines([f"  {enomem}, {goto_a}, {label_a}-{label_a + 2}: kmalloc",
                            "error-path lines reached / found: 4 / 6 (66.7%)"])


def test_c_lines_under_xdist_with_coverage_run_and_combine(pytester, cache):
    pytest.importorskip("xdist")
    pytester.makefile(".c", covdrv=C_DRIVER)
    pytester.makepyfile(test_cov=COV_TEST)
    (pytester.path / ".coveragerc").write_text("[run]\nparallel = true\npatch = subprocess\nsource = .\n")
    r = pytester.run(sys.executable, "-m", "coverage", "run", "-m", "pytest", *INNER, "-p", "xdist.plugin",
                     "-n", "2", "--pinfault-errpaths=covdrv")
    assert r.ret == 0, r.stdout.str()
    assert pytester.run(sys.executable, "-m", "coverage", "combine").ret == 0
    out = pytester.run(sys.executable, "-m", "pytest_pinfault.errpaths", "--packages", "covdrv")
    assert out.ret == 0, out.stderr.str()
    enomem, goto_a, goto_b, label_a, free_b = _cov_lines()
    out.stdout.fnmatch_lines([f"  {enomem}, {goto_a}, {label_a}-{label_a + 2}: kmalloc",
                              f"covdrv.c: error-path lines no run reached: {goto_b}, {free_b}"])


def test_the_error_path_report_covers_c_drivers(pytester, cache):
    pytester.makefile(".c", covdrv=C_DRIVER)
    pytester.makepyfile(test_cov="""
        import errno
        import pytest

        @pytest.mark.pinfault_matrix("kmalloc")
        def test_ioctl(load_c_driver, pinfault):
            drv = load_c_driver("covdrv.c", init=False)
            if pinfault.result(drv.init()) != 0:
                return
            assert pinfault.result(drv.open("cov").ioctl(1)) in (0, -errno.ENOMEM)
        """)
    r = pytester.run(sys.executable, "-m", "coverage", "run", "--source=.", "-m", "pytest", *INNER,
                     "--pinfault-errpaths=covdrv")
    assert r.ret == 0, r.stdout.str()
    src = C_DRIVER.lstrip("\n").splitlines()
    no = {text: i for i, text in enumerate(src, 1)}
    enomem, goto_a = no["\t\treturn -ENOMEM;"], no["\t\tgoto err_free_a;"]
    goto_b, label_a = no["\t\tgoto err_free_b;"], no["err_free_a:"]
    free_b = no["err_free_b:"] + 1
    # the first allocation's failure path and the second's (with the label it jumps to)
    # ran only under kmalloc faults; the arg == 77 path never ran
    r.stdout.fnmatch_lines(["covdrv.c: reached only under injected faults:",
                            f"  {enomem}, {goto_a}, {label_a}-{label_a + 2}: kmalloc",
                            f"covdrv.c: error-path lines no run reached: {goto_b}, {free_b}"])


@pytest.mark.parametrize("how", ["pytest-cov", "pytest-cov-xdist", "coverage-run"])
def test_c_lines_under_branch_coverage(pytester, cache, how):
    """Branch coverage (``--cov-branch``, ``coverage run --branch``): the data holds arcs
    and refuses lines, so the C lines go in as the self-arcs coverage records for an
    executed line in branch mode; the error-path report covers the C driver as in line
    mode (they used to vanish without a word)."""
    pytester.makefile(".c", covdrv=C_DRIVER)
    pytester.makepyfile(test_cov=COV_TEST)
    if how == "coverage-run":
        r = pytester.run(sys.executable, "-m", "coverage", "run", "--branch", "--source=.", "-m", "pytest",
                         *INNER, "--pinfault-errpaths=covdrv")
    else:
        pytest.importorskip("pytest_cov")
        xdist = []
        if how == "pytest-cov-xdist":
            pytest.importorskip("xdist")
            xdist = ["-p", "xdist.plugin", "-n", "2"]
        r = pytester.run(sys.executable, "-m", "pytest", *INNER, *xdist, "-p", "pytest_cov", "--cov=.",
                         "--cov-branch", "--pinfault-errpaths=covdrv")
    assert r.ret == 0, r.stdout.str()
    assert "PinfaultCoverageWarning" not in r.stdout.str() + r.stderr.str()
    enomem, goto_a, goto_b, label_a, free_b = _cov_lines()
    r.stdout.fnmatch_lines(["covdrv.c: reached only under injected faults:",
                            f"  {enomem}, {goto_a}, {label_a}-{label_a + 2}: kmalloc",
                            f"covdrv.c: error-path lines no run reached: {goto_b}, {free_b}",
                            "error-path lines reached / found: 4 / 6 (66.7%)"])
    import coverage
    data = coverage.CoverageData(basename=str(pytester.path / ".coverage"))
    data.read()
    c_file = next(p for p in data.measured_files() if p.endswith("covdrv.c"))
    assert data.has_arcs() and {enomem, goto_a, label_a} <= set(data.lines(c_file))
    assert goto_b not in data.lines(c_file)
    py_file = next(p for p in data.measured_files() if p.endswith("test_cov.py"))
    assert any(a != b for a, b in data.arcs(py_file))        # the Python arcs are all there


@pytest.mark.parametrize("branch,xdist", [(False, False), (True, False), (False, True)],
                         ids=["lines", "branch", "xdist"])
def test_coverage_reports_list_c_drivers_with_the_coverage_plugin(pytester, cache, branch, xdist):
    """With ``[run] plugins = pytest_pinfault.covplugin``, coverage.py's own reports (here
    pytest-cov's term-missing, and ``coverage html`` afterwards) list the C driver: its
    statements are the lines gcov lists, its missing lines the ones no test ran (the
    ``arg == 77`` path: its goto, label and kfree), in branch mode too, and under
    pytest-xdist (each worker writes its records, the controller's combined report reads
    them); no ``--pinfault-errpaths`` needed.  Without the plugin the C file is not in the
    report."""
    pytest.importorskip("pytest_cov")
    if xdist:
        pytest.importorskip("xdist")
    pytester.makefile(".c", covdrv=C_DRIVER)
    pytester.makepyfile(test_cov=COV_TEST)
    args = (sys.executable, "-m", "pytest", *INNER, "-p", "pytest_cov", "--cov=.", "--cov-report=term-missing",
            *(["--cov-branch"] if branch else []), *(["-p", "xdist.plugin", "-n", "2"] if xdist else []))
    r = pytester.run(*args)
    assert r.ret == 0, r.stdout.str()
    assert "covdrv.c" not in r.stdout.str()                 # coverage has no reporter for C
    (pytester.path / ".coveragerc").write_text("[run]\nplugins = pytest_pinfault.covplugin\n")
    r = pytester.run(*args)
    assert r.ret == 0, r.stdout.str()
    assert "Couldn't" not in r.stdout.str() + r.stderr.str()
    row = next(ln for ln in r.stdout.lines if ln.startswith("covdrv.c "))
    name, stmts, miss, *counts, pct, missing = row.split(None, 6 if branch else 4)
    missing_lines = {n for part in missing.split(", ") for n in _expand(part)}
    enomem, goto_a, goto_b, label_a, free_b = _cov_lines()
    assert {goto_b, free_b} <= missing_lines <= {goto_b, free_b - 1, free_b}     # + its label, as gcov lists it
    assert int(miss) == len(missing_lines)
    src = C_DRIVER.lstrip("\n").splitlines()
    code = [i for i, text in enumerate(src, 1) if text.strip() not in ("", "{", "}") and not text.startswith("#")]
    assert len(missing_lines) + 10 < int(stmts) <= len(code)  # gcov's statements: code lines, not braces
    if not branch:
        assert pct == f"{round(100 * (int(stmts) - int(miss)) / int(stmts))}%"
    html = pytester.run(sys.executable, "-m", "coverage", "html")
    assert html.ret == 0, html.stdout.str() + html.stderr.str()
    assert any("covdrv_c" in p.name for p in (pytester.path / "htmlcov").iterdir())
    drv = pytester.path / "covdrv.c"           # edited since the run: no record of it, left out
    drv.write_text(drv.read_text() + "\n")
    report = pytester.run(sys.executable, "-m", "coverage", "report")
    assert report.ret == 0 and "covdrv.c" not in report.stdout.str()
    report.stderr.fnmatch_lines(["*pytest-pinfault: no executable-line record of *covdrv.c as it reads now*"])


def _expand(part):
    lo, _, hi = part.partition("-")
    return range(int(lo), int(hi or lo) + 1)
