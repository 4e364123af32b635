"""End to end: coverage dynamic contexts per test and ``--pinfault-errpaths``, in a
subprocess where coverage.py starts before the driver is imported (``python -m coverage
run -m pytest``), serially and under pytest-xdist."""

import importlib
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


def _validate(js):
    """The command's JSON against the JSON Schema shipped in the package."""
    jsonschema = pytest.importorskip("jsonschema")
    from importlib.resources import files
    jsonschema.validate(js, json.loads(files("pytest_pinfault").joinpath("report", "errpaths-1.json").read_text()))


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
    _validate(js)
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


def test_cov_context_test_keeps_the_fault_contexts(pytester):
    """pytest-cov's ``--cov-context=test`` switches the context at every phase too; the
    plugin's switch runs after it, so the report still finds the fault-only line."""
    pytest.importorskip("pytest_cov")
    _project(pytester)
    result = pytester.runpytest_subprocess(*INNER, "-p", "pytest_cov", "--cov=drv", "--cov-context=test",
                                           "--pinfault-errpaths=drv")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*note: --cov-context=test: the plugin's contexts*replace pytest-cov's*",
                                 "drv.py: reached only under injected faults:",
                                 f"  {ENOMEM_LINE}: kmalloc",
                                 "error-path lines reached / found: 1 / 2 (50.0%)"])
    import coverage
    data = coverage.CoverageData(basename=str(pytester.path / ".coverage"))
    data.read()
    assert not any(c.endswith(("|run", "|setup", "|teardown")) for c in data.measured_contexts())


ARMED_TEST = textwrap.dedent('''\
    import errno

    import pytest

    import drv


    @pytest.mark.pinfault("kmalloc=return")
    def test_marker(fake_mm):
        assert drv.create(fake_mm, 64) == -errno.ENOMEM


    def test_arm(fake_mm, pinfault):
        assert drv.create(fake_mm, 64) == 0
        with pinfault.arm("kmalloc=return"):
            assert drv.create(fake_mm, 64) == -errno.ENOMEM
    ''')


def test_faults_armed_by_the_marker_or_arm_count_as_faulted(pytester):
    pytester.makepyfile(drv=DRIVER, test_drv=ARMED_TEST)
    result = _coverage_run(pytester, "--pinfault-errpaths=drv")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["drv.py: reached only under injected faults:", f"  {ENOMEM_LINE}: kmalloc"])
    out = _errpaths(pytester, ".coverage", "--packages", "drv", "--json", "ep.json")
    assert out.ret == 0, out.stderr.str()
    js = json.loads((pytester.path / "ep.json").read_text())
    _validate(js)
    (f,) = js["files"]
    assert f["fault_only"][str(ENOMEM_LINE)] == {"sites": ["kmalloc"], "cases": ["kmalloc#1/armed"]}
    import coverage
    data = coverage.CoverageData(basename=str(pytester.path / ".coverage"))
    data.read()
    assert {"test_drv.py::test_marker|kmalloc#1/armed", "test_drv.py::test_arm|kmalloc#1/armed",
            "test_drv.py::test_arm|nofault"} <= set(data.measured_contexts())


HAPPY_DRIVER = textwrap.dedent('''\
    import errno

    from pytest_pinfault.mm import GFP_KERNEL


    def create(k, n):
        size = max(n, 1)
        size = (size + 7) & ~7
        buf = k.kmalloc(size, GFP_KERNEL)
        if buf is None:
            return -errno.ENOMEM
        return 0
    ''')


def test_happy_path_before_the_fault_is_not_fault_only_when_every_caller_is_a_case(pytester):
    """In a matrix case the lines before the fault fired ran without one: they are
    recorded under ``<case nodeid>|nofault``, so a happy path only cases run is not
    "reached only under faults"; the lines after the fault carry the case."""
    pytester.makepyfile(drv=HAPPY_DRIVER, test_drv=TEST.format(sites='"kmalloc"'))
    result = _coverage_run(pytester, "-k", "test_create and not fault-free", "--pinfault-errpaths=drv")
    assert result.ret == 0, result.stdout.str()
    import coverage
    data = coverage.CoverageData(basename=str(pytester.path / ".coverage"))
    data.read()
    (path,) = data.measured_files()
    by_line = data.contexts_by_lineno(path)
    case = "test_drv.py::test_create[kmalloc-1-transient]"
    for happy in (7, 8, 9):                          # before and at the kmalloc call
        assert f"{case}|nofault" in by_line[happy] and f"{case}|kmalloc#1/transient" not in by_line[happy]
    assert sorted(by_line[11]) == sorted([f"{case}|kmalloc#1/transient",
                                       "test_drv.py::test_create[kmalloc-1-persistent]|kmalloc#1/persistent"])
    out = _errpaths(pytester, ".coverage", "--packages", "drv", "--json", "ep.json")
    assert out.ret == 0, out.stderr.str()
    (f,) = json.loads((pytester.path / "ep.json").read_text())["files"]
    assert sorted(map(int, f["fault_only"])) == [11]


def test_a_module_first_imported_inside_a_case_is_not_fault_only(pytester):
    pytester.makepyfile(lazy=HAPPY_DRIVER)
    pytester.makepyfile(test_drv=textwrap.dedent('''\
        import pytest


        @pytest.mark.pinfault_matrix("kmalloc")
        def test_create(fake_mm, pinfault):
            fake_mm.kmalloc(8, 0)
            if pinfault.case is not None:     # not in the fault-free run that sizes the matrix
                import lazy                   # first imported after the fault fired
                assert lazy.create(fake_mm, 64) in (0, -12)
        '''))
    result = pytester.run(sys.executable, "-m", "coverage", "run", "--source=lazy", "-m", "pytest", *INNER,
                          "-k", "not fault-free")
    assert result.ret == 0, result.stdout.str()
    out = _errpaths(pytester, ".coverage", "--packages", "lazy", "--json", "ep.json")
    assert out.ret == 0, out.stderr.str()
    (f,) = json.loads((pytester.path / "ep.json").read_text())["files"]
    assert not {1, 3, 6} & set(map(int, f["fault_only"])), f["fault_only"]
    import coverage
    data = coverage.CoverageData(basename=str(pytester.path / ".coverage"))
    data.read()
    (path,) = data.measured_files()
    assert all(c.endswith("/transient") or c.endswith("/persistent") for c in data.contexts_by_lineno(path)[1])


class _Item:
    """What the context of a C line needs of a test item."""

    def __init__(self, nodeid):
        self.nodeid = nodeid
        self.stash = pytest.Stash()


@pytest.mark.parametrize("read_mid_run", [False, True], ids=["saved", "read-mid-run"])
def test_c_lines_wait_for_coverage_to_read_its_data_and_python_lines_keep_their_context(
        tmp_path, monkeypatch, read_mid_run):
    """C lines are kept in memory (the data file is not created or touched when they are
    recorded) and added when coverage reads or saves its data, under the test's context;
    the Python lines that run after, under another context, are filed under that one."""
    coverage = pytest.importorskip("coverage")
    from pytest_pinfault.plugin.covctx import record_c_lines
    name = f"pinfault_pymod_{read_mid_run}"
    (tmp_path / f"{name}.py").write_text("def f():\n    x = 1\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data_file = tmp_path / ".coverage"
    cov = coverage.Coverage(data_file=str(data_file), source=[str(tmp_path)])
    cov.start()
    try:
        mod = importlib.import_module(name)
        cov.switch_context("py-ctx")                        # writes the import's lines
        before = data_file.read_bytes()
        record_c_lines(_Item("t.py::t"), {str(tmp_path / "drv.c"): {3, 4}})
        record_c_lines(_Item("t.py::t"), {str(tmp_path / "drv.c"): {5}})
        assert data_file.read_bytes() == before             # nothing written when recorded
        if read_mid_run:
            assert cov.get_data().contexts_by_lineno(str(tmp_path / "drv.c")) == {
                3: ["t.py::t|nofault"], 4: ["t.py::t|nofault"], 5: ["t.py::t|nofault"]}
        mod.f()                                              # runs under "py-ctx", after the C lines
    finally:
        cov.stop()
        sys.modules.pop(name, None)
    cov.save()
    data = coverage.CoverageData(basename=str(data_file))
    data.read()
    assert data.contexts_by_lineno(str(tmp_path / "drv.c")) == {
        3: ["t.py::t|nofault"], 4: ["t.py::t|nofault"], 5: ["t.py::t|nofault"]}
    by_line = data.contexts_by_lineno(str(tmp_path / f"{name}.py"))
    assert by_line[2] == ["py-ctx"] and by_line[3] == ["py-ctx"]


def test_pinfault_machine_faults_reach_the_error_path_report(pytester):
    """A fault fired on a ``pinfault_machine`` machine switches the test's context as a
    ``fake_mm`` fault does (and the next block starts fault-free): the error path it
    reached is in the report, the one no machine reached is not."""
    pytester.makepyfile(drv=DRIVER, test_drv=textwrap.dedent('''\
        import errno

        import drv


        def test_machines(pinfault_machine):
            with pinfault_machine("kmalloc=return") as k:
                assert drv.create(k, 64) == -errno.ENOMEM
            with pinfault_machine() as k:
                assert drv.create(k, 64) == 0
        '''))
    result = _coverage_run(pytester, "--pinfault-errpaths=drv")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["drv.py: reached only under injected faults:",
                                 f"  {ENOMEM_LINE}: kmalloc",
                                 f"drv.py: error-path lines no run reached: {EINVAL_LINE}"])


@pytest.mark.filterwarnings("ignore:No data was collected")
def test_c_lines_recorded_before_any_python_line_keep_a_branch_measurement_in_branch_mode(tmp_path, monkeypatch):
    """Under branch coverage, C lines read into a data that holds nothing yet go in as
    arcs (the coverage's ``branch`` setting decides): as lines they would make the data
    refuse every Python arc measured after them."""
    coverage = pytest.importorskip("coverage")
    from pytest_pinfault.plugin.covctx import record_c_lines
    name = "pinfault_pymod_branch_first"
    (tmp_path / f"{name}.py").write_text("def f(x):\n    if x:\n        return 1\n    return 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data_file = tmp_path / ".coverage"
    cov = coverage.Coverage(data_file=str(data_file), include=[str(tmp_path / "*")], branch=True)
    cov.start()
    try:
        record_c_lines(_Item("t.py::t"), {str(tmp_path / "drv.c"): {3, 4}})
        assert cov.get_data().measured_files() == {str(tmp_path / "drv.c")}     # nothing else yet
        importlib.import_module(name).f(1)
    finally:
        cov.stop()
        sys.modules.pop(name, None)
    cov.save()
    data = coverage.CoverageData(basename=str(data_file))
    data.read()
    assert data.has_arcs()
    assert data.contexts_by_lineno(str(tmp_path / "drv.c")) == {3: ["t.py::t|nofault"], 4: ["t.py::t|nofault"]}
    assert (2, 3) in data.arcs(str(tmp_path / f"{name}.py"))


@pytest.mark.filterwarnings("ignore:No data was collected")
def test_c_lines_the_data_refuses_are_a_warning_naming_the_file(tmp_path):
    """Lines coverage.py's data still refuses are not dropped without a word: a
    PinfaultCoverageWarning names the C file and coverage's reason."""
    coverage = pytest.importorskip("coverage")
    from coverage.exceptions import DataError
    from pytest_pinfault.plugin.covctx import PinfaultCoverageWarning, record_c_lines

    cov = coverage.Coverage(data_file=str(tmp_path / ".coverage"), source=[str(tmp_path)])
    cov.start()
    try:
        record_c_lines(_Item("t.py::t"), {str(tmp_path / "drv.c"): {3}})
        data = cov.get_data.get_data()      # the data the reader adds to

        def refusing(add):
            def refuse(measured):
                if any(path.endswith(".c") for path in measured):
                    raise DataError("no room for C lines")
                return add(measured)
            return refuse
        data.add_lines, data.add_arcs = refusing(data.add_lines), refusing(data.add_arcs)
        with pytest.warns(PinfaultCoverageWarning,
                          match=r"refused the C-driver lines of .*drv\.c \(DataError: no room for C lines\)"):
            cov.get_data()
    finally:
        cov.stop()
