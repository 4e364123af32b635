"""The error-path report refuses to read ``0 / 0`` and pass: data that measured none of
the asked packages (coverage not measuring them, or pytest-xdist workers' files left
uncombined -- with coverage older than 7.10 ``[run] patch = subprocess`` is ignored
and no worker is measured) is an error, exit status 1 (issue 17)."""

import pytest

coverage = pytest.importorskip("coverage")

from pytest_pinfault import errpaths  # noqa: E402

pytest_plugins = ["pytester"]


def _data(tmp_path, files):
    data = coverage.CoverageData(basename=str(tmp_path / ".coverage"))
    data.set_context("tests/test_x.py::test_x|nofault")
    data.add_lines({str(tmp_path / name): {1: None} for name in files})
    data.write()
    return str(tmp_path / ".coverage")


def test_no_measured_file_of_the_package_is_an_error(tmp_path, capsys):
    path = _data(tmp_path, ["other.py"])
    assert errpaths.main([path, "--packages", "drv", "--root", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "error-path lines reached / found" not in out
    assert f"errpaths: error: {path} has no measured file of drv" in err
    assert "coverage >= 7.10" in err


def test_a_measured_package_still_reports(tmp_path, capsys):
    (tmp_path / "drv.py").write_text("def f(ret):\n    if ret < 0:\n        return ret\n    return 0\n")
    path = _data(tmp_path, ["drv.py"])
    assert errpaths.main([path, "--packages", "drv", "--root", str(tmp_path)]) == 0
    out, _ = capsys.readouterr()
    assert "error-path lines reached / found: 0 / 1 (0.0%)" in out


def test_missing_data_file(tmp_path, capsys):
    assert errpaths.main([str(tmp_path / "nope"), "--packages", "drv"]) == 2
    assert "no coverage data file" in capsys.readouterr().err


def test_terminal_report_without_the_package_measured(pytester, monkeypatch):
    """``--pinfault-errpaths`` of a package coverage does not measure: a red error line,
    not a 0 / 0 table."""
    pytest.importorskip("pytest_cov")
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("PINFAULT_FAULTS", raising=False)
    pytester.makepyfile(drv="def f():\n    return -12\n")
    pytester.makepyfile(test_drv="import drv\n\ndef test_x(fake_mm):\n    assert drv.f() == -12\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "pytest_pinfault.plugin",
                                           "-p", "pytest_cov", "--cov=drv", "--pinfault-errpaths=nodrv")
    result.stdout.fnmatch_lines(["error: the coverage data has no measured file of nodrv: no error-path report*"])
    assert "error-path lines reached / found" not in result.stdout.str()
