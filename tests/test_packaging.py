"""Packaging metadata stays honest (issue 17): the MIT LICENSE file that pyproject's
PEP 639 metadata names, classifiers for every supported Python, a build backend new
enough for license expressions, and an sdist manifest carrying what the tests need."""

import os
import re

import pytest

tomllib = pytest.importorskip("tomllib")   # Python 3.11+; the data is the same on 3.10

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pyproject():
    path = os.path.join(ROOT, "pyproject.toml")
    if not os.path.exists(path):
        pytest.skip("no pyproject.toml next to the tests")
    with open(path, "rb") as f:
        return tomllib.load(f)


def test_license_expression_and_file(pyproject):
    project = pyproject["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("MIT License")
    assert "Permission is hereby granted, free of charge" in text
    # PEP 639: a License-Expression replaces the license classifiers (setuptools refuses both)
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]


def test_build_backend_supports_pep_639(pyproject):
    (req,) = [r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    floor = int(re.search(r">=\s*(\d+)", req).group(1))
    assert floor >= 77        # license = "MIT" and license-files need setuptools 77


def test_classifiers_name_every_supported_python(pyproject):
    project = pyproject["project"]
    lo = int(re.fullmatch(r">=\s*3\.(\d+)", project["requires-python"]).group(1))
    versions = sorted(int(c.rsplit(".", 1)[1]) for c in project["classifiers"]
                      if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
    assert versions[0] == lo
    assert versions == list(range(lo, versions[-1] + 1))
    assert any(c.startswith("Development Status ::") for c in project["classifiers"])


def test_sdist_manifest_carries_what_the_tests_read():
    path = os.path.join(ROOT, "MANIFEST.in")
    if not os.path.exists(path):
        pytest.skip("no MANIFEST.in (running from an installed copy)")
    with open(path, encoding="utf-8") as f:
        lines = [ln.split() for ln in f if ln.strip() and not ln.startswith("#")]
    grafted = {ln[1] for ln in lines if ln[0] == "graft"}
    included = {name for ln in lines if ln[0] == "include" for name in ln[1:]}
    assert {"tests", "docs", "examples", "benchmarks", "conformance"} <= grafted
    assert {"LICENSE", "README.md", "CHANGELOG.md", "CONTRIBUTING.md", ".ci/run"} <= included
    for name in included:
        assert os.path.exists(os.path.join(ROOT, name)), name


def test_changelog_follows_keep_a_changelog():
    with open(os.path.join(ROOT, "CHANGELOG.md"), encoding="utf-8") as f:
        text = f.read()
    assert "## [Unreleased]" in text
    assert "keepachangelog.com" in text


def test_package_data_ships_the_report_schemas_and_the_bridge_headers(pyproject):
    """The JSON Schemas of the reports and every bridge header (the uapi ioctl encoding
    included) match a package-data pattern, so wheels carry them."""
    import glob
    patterns = pyproject["tool"]["setuptools"]["package-data"]["pytest_pinfault"]
    pkg = os.path.join(ROOT, "pytest_pinfault")
    shipped = {os.path.relpath(p, pkg) for pat in patterns
               for p in glob.glob(os.path.join(pkg, pat), recursive=True)}
    for need in ("report/schema-3.json", "report/errpaths-1.json",
                 "cdriver/include/uapi/asm-generic/ioctl.h", "cdriver/include/uapi/linux/ioctl.h",
                 "cdriver/include/pinfault/kapi.h"):
        assert need in shipped, need
    headers = {os.path.relpath(p, pkg) for p in glob.glob(os.path.join(pkg, "cdriver", "include", "**", "*.h"),
                                                          recursive=True)}
    assert headers <= shipped
