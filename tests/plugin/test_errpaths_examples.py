"""End to end on the udmabuf example: its matrices reach every error path of the driver,
and leaving one site out of the matrix (``-k "not kmalloc"``) makes the report name
exactly the lines only that site reached.  Runs in a subprocess so that coverage.py
starts before the driver is imported."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from .conftest import INNER

pytest.importorskip("coverage")

ROOT = pathlib.Path(__file__).resolve().parents[2]
DRIVER = "examples/udmabuf/driver.py"


def _errpaths_json(tmp_path, name, *pytest_args):
    """``coverage run -m pytest examples/udmabuf ...`` then the errpaths JSON report."""
    env = dict(os.environ, COVERAGE_FILE=str(tmp_path / f"{name}.coverage"))
    run = subprocess.run([sys.executable, "-m", "coverage", "run", "--source=examples/udmabuf", "-m", "pytest",
                          *INNER, "-q", "examples/udmabuf", *pytest_args],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp_path / f"{name}.json"
    rep = subprocess.run([sys.executable, "-m", "pytest_pinfault.errpaths", env["COVERAGE_FILE"],
                          "--packages", "examples.udmabuf.driver", "--json", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    js = json.loads(out.read_text())
    (f,) = [f for f in js["files"] if f["path"].replace(os.sep, "/").endswith(DRIVER)]
    return f, rep.stdout


def test_udmabuf_matrix_reaches_every_error_path_and_removing_a_site_unreaches_its_lines(tmp_path):
    full, _ = _errpaths_json(tmp_path, "full")
    assert full["found"] > 0 and full["reached"] == full["found"] and full["unreached"] == [], full
    # lines only kmalloc matrix cases reached (a test's marker-armed kmalloc fault counts as
    # a faulted context too, "kmalloc#n/armed", and that test is not deselected below)
    armed = {int(line) for line, v in full["fault_only"].items() if any(c.endswith("/armed") for c in v["cases"])}
    assert armed, full["fault_only"]
    only_kmalloc = sorted(int(line) for line, v in full["fault_only"].items()
                          if v["sites"] == ["kmalloc"] and int(line) not in armed)
    assert len(only_kmalloc) >= 5, full["fault_only"]          # the allocations of create/vmap/sg
    shared = [int(line) for line, v in full["fault_only"].items() if len(v["sites"]) > 1]

    without, text = _errpaths_json(tmp_path, "no-kmalloc", "-k", "not kmalloc")
    assert without["found"] == full["found"]
    assert without["unreached"] == only_kmalloc                # exactly the lines only kmalloc reached
    assert not set(shared) & set(without["unreached"])         # still reached by another site
    assert all("kmalloc" not in v["sites"] for v in without["fault_only"].values())
    assert f"error-path lines no run reached: {only_kmalloc[0]}" in text


C_DRIVER = "examples/cdriver/pinbuf.c"


def _c_errpaths(tmp_path, name, *pytest_args):
    """``coverage run -m pytest examples/cdriver --pinfault-errpaths=pinbuf ...``: the
    terminal output, then the errpaths JSON (and HTML) of the combined data."""
    pytest.importorskip("cffi")
    env = dict(os.environ, COVERAGE_FILE=str(tmp_path / f"{name}.coverage"))
    run = subprocess.run([sys.executable, "-m", "coverage", "run", "--source=examples/cdriver", "-m", "pytest",
                          *INNER, "-q", "examples/cdriver", "--pinfault-errpaths=pinbuf", *pytest_args],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out, html_dir = tmp_path / f"{name}.json", tmp_path / f"{name}-html"
    rep = subprocess.run([sys.executable, "-m", "pytest_pinfault.errpaths", env["COVERAGE_FILE"],
                          "--packages", "pinbuf", "--json", str(out), "--html", str(html_dir)],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    (f,) = json.loads(out.read_text())["files"]                # the driver alone: no header, no runtime
    assert f["path"].replace(os.sep, "/") == C_DRIVER, f
    return f, run.stdout, html_dir


def test_pinbuf_reaches_every_c_error_path_and_removing_a_site_unreaches_its_lines(tmp_path):
    full, text, html_dir = _c_errpaths(tmp_path, "full")
    assert full["found"] >= 25 and full["reached"] == full["found"] and full["unreached"] == [], full
    assert full["never"], full                                  # the two defensive checks, marked
    src = (ROOT / C_DRIVER).read_text().splitlines()
    ctx_line = next(i for i, ln in enumerate(src, 1) if "struct pinbuf_ctx *ctx = kzalloc" in ln)
    assert full["fault_only"][str(ctx_line + 3)]["sites"] == ["kmalloc"]       # open's `return -ENOMEM`
    assert all("|" not in c and "#" in c for v in full["fault_only"].values() for c in v["cases"])
    # lines only kmalloc matrix cases reached (a test's marker-armed kmalloc fault counts as
    # a faulted context too, "kmalloc#n/armed", and that test is not deselected below)
    armed = {int(line) for line, v in full["fault_only"].items() if any(c.endswith("/armed") for c in v["cases"])}
    assert armed, full["fault_only"]
    only_kmalloc = sorted(int(line) for line, v in full["fault_only"].items()
                          if v["sites"] == ["kmalloc"] and int(line) not in armed)
    assert len(only_kmalloc) >= 5, full["fault_only"]
    shared = [int(line) for line, v in full["fault_only"].items() if v["sites"] != ["kmalloc"]]
    assert shared                                               # the DMA mapping's unwind
    assert f"error-path lines reached / found: {full['found']} / {full['found']} (100.0%)" in text
    page = next(p for p in html_dir.iterdir() if "pinbuf" in p.name).read_text()
    assert 'class="fault"><td class="n">' in page and '<td class="a"><b>kmalloc</b>: kmalloc#' in page
    assert 'class="never"' in page

    without, text, _ = _c_errpaths(tmp_path, "no-kmalloc", "-k", "not kmalloc")
    assert without["found"] == full["found"]
    assert without["unreached"] == only_kmalloc                 # exactly the lines only kmalloc reached
    assert not set(shared) & set(without["unreached"])
    assert f"pinbuf.c: error-path lines no run reached: {only_kmalloc[0]}" in text
