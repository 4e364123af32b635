"""pytest_pinfault.errpaths: the AST detector, the context names and the report built on
hand-made CoverageData (no coverage run)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pytest_pinfault import errpaths
from pytest_pinfault.errpaths import analyze, error_lines, format_table, never_lines, parse_context

coverage = pytest.importorskip("coverage")

DRIVER = textwrap.dedent('''\
    import errno


    def create(k, n):
        buf = k.kmalloc(n)
        if buf is None:
            return -errno.ENOMEM
        ret = k.register(buf)
        if ret < 0:
            k.kfree(buf)
            return ret
        if not k.ready:
            return -errno.EAGAIN              # pinfault: never
        try:
            k.go()
        except OSError:
            k.undo()
        if n > 3:
            n = 3
        return 0
    ''')


def test_detector_finds_the_error_handling_lines():
    lines = error_lines(DRIVER)
    assert lines == {7: "if", 10: "if", 11: "if", 13: "if", 17: "except"}
    assert 19 not in lines          # `if n > 3` is not a failure check


@pytest.mark.parametrize("test", ["ret != 4", "not ret", "ret", "ret == -5", "0 > ret", "x is None",
                                  "ret <= 0", "IS_ERR(ret)", "a and ret < 0"])
def test_detector_failure_checks(test):
    src = f"def f(k):\n    ret = k.call()\n    x = k.y\n    a = 1\n    if {test}:\n        k.fail()\n"
    assert 6 in error_lines(src)


@pytest.mark.parametrize("test", ["n > 3", "x", "a == 1", "x != 4"])
def test_detector_ignores_ordinary_conditions(test):
    src = f"def f(k):\n    x = k.y\n    a = 1\n    n = 2\n    if {test}:\n        k.ok()\n"
    assert 6 not in error_lines(src)


def test_detector_if_whose_body_returns_an_errno():
    src = "def f(k):\n    if k.flags & 3:\n        return -22\n"
    assert error_lines(src) == {3: "if"}


def test_never_mark_covers_the_line_or_the_body():
    assert never_lines(DRIVER) == {13}
    src = "def f(k):\n    if k.x is None:   # pinfault: never\n        k.a()\n        k.b()\n"
    assert never_lines(src) == {2, 3, 4}


def test_parse_context():
    assert parse_context("t.py::f[kmalloc#1-transient]|kmalloc#1/transient") == \
        ("t.py::f[kmalloc#1-transient]", "kmalloc#1/transient")
    assert parse_context("t.py::f|nofault") == ("t.py::f", None)
    assert parse_context("") is None
    assert parse_context("t.py::f|run") is None
    assert parse_context("t.py::f|x#1/sideways") is None


def _data(tmp_path, lines_by_context):
    path = tmp_path / "pkg" / "drv.py"
    path.parent.mkdir(exist_ok=True)
    (path.parent / "__init__.py").write_text("")
    path.write_text(DRIVER)
    data = coverage.CoverageData(basename=str(tmp_path / ".coverage"))
    for ctx, lines in lines_by_context.items():
        data.set_context(ctx)
        data.add_lines({str(path): lines})
    data.write()
    return str(path), data


NORMAL = [1, 4, 5, 6, 8, 9, 12, 14, 15, 18, 20]


def test_report_on_hand_made_data(tmp_path):
    path, data = _data(tmp_path, {"": [1, 4], "t.py::ok|nofault": NORMAL,
                                  "t.py::m[kmalloc#1-transient]|kmalloc#1/transient": [5, 6, 7],
                                  "t.py::m[kmalloc#1-persistent]|kmalloc#1/persistent": [5, 6, 7],
                                  "t.py::r[reg#1-transient]|reg#1/transient": [5, 6, 8, 9, 10, 11, 20]})
    report = analyze(data, ["pkg"], root=str(tmp_path))
    (f,) = report.files
    assert f.relpath == os.path.join("pkg", "drv.py")
    assert f.fault_only == {7: ["kmalloc"], 10: ["reg"], 11: ["reg"]}
    assert f.fault_cases[7] == ["kmalloc#1/persistent", "kmalloc#1/transient"]
    assert f.found == [7, 10, 11, 17] and f.never == [13]
    assert f.reached == [7, 10, 11] and f.unreached == [17]
    assert (report.reached, report.found) == (3, 4)
    text = "\n".join(format_table(report))
    assert "7: kmalloc" in text and "10-11: reg" in text
    assert "no run reached: 17" in text
    assert "error-path lines reached / found: 3 / 4 (75.0%)" in text
    js = report.as_json()
    assert js["files"][0]["fault_only"]["7"]["sites"] == ["kmalloc"]
    json.dumps(js)


def test_a_line_also_run_without_a_fault_is_not_fault_only(tmp_path):
    _, data = _data(tmp_path, {"t.py::ok|nofault": NORMAL + [7],
                               "t.py::m[kmalloc#1-transient]|kmalloc#1/transient": [5, 6, 7]})
    (f,) = analyze(data, ["pkg.drv"], root=str(tmp_path)).files
    assert 7 not in f.fault_only and 7 in f.reached


def test_packages_filter(tmp_path):
    _, data = _data(tmp_path, {"t.py::ok|nofault": NORMAL})
    assert analyze(data, ["other"], root=str(tmp_path)).files == []
    assert len(analyze(data, [str(tmp_path / "pkg")], root=str(tmp_path)).files) == 1


def test_command_line_json_and_html(tmp_path):
    _data(tmp_path, {"t.py::ok|nofault": NORMAL,
                     "t.py::m[kmalloc#1-transient]|kmalloc#1/transient": [5, 6, 7]})
    proc = subprocess.run([sys.executable, "-m", "pytest_pinfault.errpaths", ".coverage", "--packages", "pkg",
                           "--json", "ep.json", "--html", "html"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "7: kmalloc" in proc.stdout
    assert "error-path lines reached / found: 1 / 4" in proc.stdout
    js = json.loads((tmp_path / "ep.json").read_text())
    assert js["schema"] == errpaths.SCHEMA and js["found"] == 4
    pages = sorted(p.name for p in (tmp_path / "html").iterdir())
    assert "index.html" in pages and len(pages) == 2
    page = (tmp_path / "html" / [p for p in pages if p != "index.html"][0]).read_text()
    # each line: an anchor, its class, the sites and cases written beside it
    assert ('<tr id="L7" class="fault"><td class="n"><a href="#L7">7</a></td>' in page
            and '<td class="a"><b>kmalloc</b>: kmalloc#1/transient</td>' in page)
    assert '<tr id="L17" class="unreached">' in page and '<tr id="L13" class="never">' in page
    assert 'class="legend"' in page and 'href="index.html"' in page and '<a href="#L17">17</a>' in page
    assert '<span class="k">return</span> <span class="m">0</span>' in page          # highlighted
    assert '<span class="c"># pinfault: never</span>' in page
    index = (tmp_path / "html" / "index.html").read_text()
    assert 'class="legend"' in index and f'href="{[p for p in pages if p != "index.html"][0]}"' in index


def test_html_navigation_between_files_and_c_highlighting(tmp_path):
    (tmp_path / "a.py").write_text("def f(ret):\n    if ret < 0:\n        return ret\n    return 0\n")
    (tmp_path / "b.c").write_text("/* a\n * driver */\nint f(int ret)\n{\n\tif (ret < 0)\n\t\treturn -ENOMEM;"
                                  "\n\treturn 0; // ok\n}\n")
    data = coverage.CoverageData(basename=str(tmp_path / ".coverage"))
    data.set_context("t.py::t|nofault")
    data.add_lines({str(tmp_path / "a.py"): [1, 2, 4], str(tmp_path / "b.c"): [5, 7]})
    report = analyze(data, ["a", "b"], root=str(tmp_path))
    index = errpaths.write_html(report, str(tmp_path / "html"))
    a, b = (tmp_path / "html" / errpaths._page_name(i, f) for i, f in enumerate(report.files))
    assert f'href="{b.name}"' in a.read_text() and f'href="{a.name}"' in b.read_text()
    c = b.read_text()
    assert '<span class="c">/* a</span>' in c and '<span class="c"> * driver */</span>' in c
    assert '<span class="k">return</span>' in c and '<span class="c">// ok</span>' in c
    assert '<tr id="L6" class="unreached">' in c
    assert index.endswith("index.html")


def test_json_output_matches_the_shipped_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    from importlib.resources import files
    schema = json.loads(files("pytest_pinfault").joinpath("report", "errpaths-1.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == errpaths.SCHEMA
    _, data = _data(tmp_path, {"t.py::ok|nofault": NORMAL,
                               "t.py::m[kmalloc#1-transient]|kmalloc#1/transient": [5, 6, 7],
                               "t.py::a|reg#2/armed": [10, 11]})
    js = json.loads(json.dumps(analyze(data, ["pkg"], root=str(tmp_path)).as_json()))
    jsonschema.validate(js, schema)
    assert js["files"][0]["fault_only"]["10"] == {"sites": ["reg"], "cases": ["reg#2/armed"]}
    for bad in ({**js, "schema": "pytest-pinfault-errpaths/0"}, {**js, "found": -1},
                {**js, "files": [{**js["files"][0], "fault_only": {"x": {"sites": ["a"], "cases": ["a#1/armed"]}}}]},
                {**js, "files": [{**js["files"][0], "fault_only": {"7": {"sites": ["a"], "cases": ["a#1/sideways"]}}}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_the_main_report_schema_is_a_valid_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    from importlib.resources import files
    jsonschema.Draft202012Validator.check_schema(
        json.loads(files("pytest_pinfault").joinpath("report", "schema-3.json").read_text()))


def test_loop_filters_are_not_error_paths():
    src = textwrap.dedent("""\
        def f(k, items):
            for x in items:
                if x is None:
                    continue
                if not x.dirty:
                    continue
                if x.ret < 0:
                    continue
                ret = k.call(x)
                if ret:
                    break
                if ret is None:
                    k.undo()
                    continue
        """)
    lines = error_lines(src)
    assert 4 not in lines and 6 not in lines and 11 not in lines   # filters of the loop
    assert lines[8] == "if"                                           # `< 0` is a failure whatever follows
    assert lines[13] == "if" and lines[14] == "if"                    # handling, then continue


def test_import_time_lines_are_never_fault_only(tmp_path):
    """A module first imported inside a matrix case: its module-level lines ran under
    that case's context, but because of the import, not the fault."""
    _, data = _data(tmp_path, {"t.py::m[kmalloc#1-transient]|kmalloc#1/transient": [1, 4, 5, 6, 7]})
    (f,) = analyze(data, ["pkg"], root=str(tmp_path)).files
    assert f.fault_only == {5: ["kmalloc"], 6: ["kmalloc"], 7: ["kmalloc"]}      # not 1 (import), 4 (def)
    assert errpaths.import_time_lines(DRIVER) == {1, 4}
    src = "import os\n\n@dec\nclass A:\n    x = 1\n\n    def m(self):\n        return 1\n" \
          "try:\n    import y\nexcept ImportError:\n    y = None\n"
    assert errpaths.import_time_lines(src) == {1, 3, 4, 5, 7, 9, 10, 11, 12}


def test_armed_contexts_parse():
    assert parse_context("t.py::f|kmalloc#3/armed") == ("t.py::f", "kmalloc#3/armed")


def test_command_line_without_coverage_installed(tmp_path):
    """No traceback: a message naming the extra to install, exit status 2."""
    code = ("import sys; sys.modules['coverage'] = None; from pytest_pinfault.errpaths import main; "
            "sys.exit(main(['.coverage', '--packages', 'pkg']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "needs coverage.py, which is not installed" in proc.stderr
    assert "pip install 'pytest-pinfault[errpaths]'" in proc.stderr


def test_data_with_only_pytest_cov_test_contexts_is_explained(tmp_path):
    _, data = _data(tmp_path, {"t.py::ok|run": NORMAL, "t.py::ok|setup": [1]})
    proc = subprocess.run([sys.executable, "-m", "pytest_pinfault.errpaths", ".coverage", "--packages", "pkg"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "pytest-cov's --cov-context=test contexts" in proc.stderr


def test_console_script_is_declared():
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path
    meta = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["pinfault-errpaths"] == "pytest_pinfault.errpaths:main"
    assert any(d.startswith("coverage") for d in meta["project"]["optional-dependencies"]["errpaths"])


def test_command_line_missing_data(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest_pinfault.errpaths", "--packages", "pkg"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "no coverage data file" in proc.stderr


def test_importing_errpaths_does_not_import_coverage_or_pytest():
    code = ("import sys; import pytest_pinfault.errpaths; "
            "sys.exit(3 if {'coverage', 'pytest'} & set(sys.modules) else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_plugin_import_does_not_import_coverage():
    code = ("import sys; import pytest_pinfault.plugin; "
            "sys.exit(3 if 'coverage' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_file_stem_or_tail_matches_a_driver_outside_the_root(tmp_path):
    """A C driver of a fetched kernel tree lies outside the project: its stem, or the
    tail of its path, names it; a prefix of the stem does not."""
    path = str(tmp_path / "cache" / "linux-source-6.12" / "drivers" / "dma-buf" / "udmabuf.c")
    root = str(tmp_path / "project")
    assert errpaths._matches(path, ["udmabuf"], root)
    assert errpaths._matches(path, ["linux-source-6.12/drivers/dma-buf/udmabuf"], root)
    assert not errpaths._matches(path, ["udma"], root)
    assert not errpaths._matches(path, ["pinbuf"], root)
