"""CI over every supported Python and the dependency floors (issue 17): .ci/run runs the
README's test command, then the nox sessions; the floors the floor session installs are
the ones pyproject.toml declares; a missing interpreter is skipped with a message."""

import importlib.util
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def noxfile():
    path = os.path.join(ROOT, "noxfile.py")
    if not os.path.exists(path):
        pytest.skip("no noxfile.py next to the tests (running from an installed copy)")
    spec = importlib.util.spec_from_file_location("pinfault_noxfile", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ci_runs_the_readme_command_first_then_nox():
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    main = lines.index("python -m pytest tests")
    assert "python -m nox" in lines[main + 1:]


def test_floor_session_installs_the_declared_floors(noxfile):
    floors = noxfile.declared_floors()
    assert set(floors) == {"pytest", "pluggy", "coverage", "pytest-xdist", "pytest-cov"}
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    for name, version in floors.items():
        assert re.search(rf'"{re.escape(name)}>={re.escape(version)}"', text), name


def test_sessions_cover_every_supported_python(noxfile):
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        classifiers = re.findall(r"Programming Language :: Python :: (3\.\d+)", f.read())
    main = "%d.%d" % sys.version_info[:2]          # the main step's interpreter runs nox
    assert main not in noxfile.VERSIONS
    assert sorted(set(noxfile.VERSIONS) | {main}, key=lambda v: int(v.split(".")[1])) == classifiers
    assert {f"tests-{v}" for v in noxfile.VERSIONS} | {"deps-floor", "deps-latest"} == set(noxfile.SESSIONS)


def test_find_python_checks_the_version_and_says_where_it_looked(noxfile):
    here = "%d.%d" % sys.version_info[:2]
    assert noxfile._runs(sys.executable, here)
    assert not noxfile._runs(sys.executable, "2.1")
    found, looked = noxfile.find_python("3.99")
    assert found is None and looked[0] == "python3.99 on PATH"


def test_a_missing_interpreter_skips_with_the_places_looked(noxfile, monkeypatch):
    monkeypatch.setattr(noxfile, "find_python", lambda v: (None, ["python3.10 on PATH", "/x/versions/3.10.*"]))

    class Skipped(Exception):
        pass

    class Session:
        def skip(self, msg):
            raise Skipped(msg)

    with pytest.raises(Skipped, match=r"Python 3\.10 not found \(looked for python3\.10 on PATH; /x/versions"):
        noxfile._make_tests("3.10")(Session())
