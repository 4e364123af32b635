"""CI beyond the main step (.ci/run runs these after the README's test command).

* ``tests-3.X``: the suite on every supported Python other than the one running nox
  (the main step's; on CI's 3.11: ``tests-3.10``, ``tests-3.12``, ``tests-3.13``) (the interpreter is looked up on PATH, then in
  ``$(pyenv root)/versions``; a missing one is skipped with a message saying where it was
  looked for).
* ``deps-floor``: the suite with pytest, pluggy, coverage, pytest-xdist and pytest-cov at
  the lowest versions pyproject.toml declares (read from it, so the floors stay true).
* ``deps-latest``: the same packages upgraded to their newest release.

Each session builds its own venv with the interpreter it names (no nox-managed venv, so
the lookup above decides) and runs ``pytest tests -n 2``.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

try:
    import nox
except ImportError:          # the helpers below are imported by tests/test_ci.py without nox
    nox = None

#: every Python pyproject.toml claims; the one running nox is the main step's (.ci/run)
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")
VERSIONS = tuple(v for v in SUPPORTED if v != "%d.%d" % sys.version_info[:2])
SESSIONS = [f"tests-{v}" for v in VERSIONS] + ["deps-floor", "deps-latest"]

ROOT = Path(__file__).parent
#: the packages whose floor and latest CI tests (their pyproject floors are installed)
FLOOR_PACKAGES = ("pytest", "pluggy", "coverage", "pytest-xdist", "pytest-cov")
PYTEST = ("-m", "pytest", "tests", "-q", "-n", "2", "-p", "no:cacheprovider")


def _runs(python: str, version: str) -> bool:
    """*python* starts and is *version* (a pyenv shim of a version not installed fails)."""
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and out.stdout.strip() == version


def find_python(version: str) -> tuple[str | None, list[str]]:
    """The interpreter of *version* (``"3.10"``) and the places looked in: ``python3.X``
    on PATH, then the newest ``$(pyenv root)/versions/3.X.*`` (also ``$PYENV_ROOT`` and
    ``~/.pyenv``); each candidate must run and report that version."""
    looked = [f"python{version} on PATH"]
    candidates = [shutil.which(f"python{version}")]
    roots = []
    if os.environ.get("PYENV_ROOT"):
        roots.append(os.environ["PYENV_ROOT"])
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            roots.append(subprocess.run([pyenv, "root"], capture_output=True, text=True, check=True,
                                        timeout=30).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    roots.append(os.path.expanduser("~/.pyenv"))
    for root in dict.fromkeys(r for r in roots if r):
        looked.append(f"{root}/versions/{version}.*/bin/python{version}")
        hits = glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}"))
        hits.sort(key=lambda p: [int(x) for x in re.findall(r"\d+", Path(p).parent.parent.name)], reverse=True)
        candidates += hits
    for c in candidates:
        if c and _runs(c, version):
            return c, looked
    return None, looked


def declared_floors() -> dict[str, str]:
    """``{"pytest": "7.4", ...}``: the ``>=`` floor pyproject.toml declares for each of
    FLOOR_PACKAGES (runtime dependencies and the test extra)."""
    text = (ROOT / "pyproject.toml").read_text()
    floors = {}
    for name in FLOOR_PACKAGES:
        m = re.search(rf'"{re.escape(name)}\s*>=\s*([0-9][0-9.]*)', text)
        if m is None:
            raise RuntimeError(f"pyproject.toml declares no floor for {name}")
        floors[name] = m.group(1)
    return floors


def _venv(session: Any, python: str, name: str) -> str:
    """A fresh venv with the project's test extra; returns its python."""
    path = ROOT / ".nox" / name
    if path.exists():
        shutil.rmtree(path)
    session.run(python, "-m", "venv", str(path), external=True)
    py = str(path / "bin" / "python")
    session.run(py, "-m", "pip", "install", "--quiet", "--upgrade", "pip", external=True)
    session.run(py, "-m", "pip", "install", "--quiet", "-e", ".[test]", external=True)
    return py


def _suite(session: Any, py: str) -> None:
    session.run(py, "-c", "import sys, pytest, pluggy, coverage, xdist; print(sys.version.split()[0], "
                "'pytest', pytest.__version__, 'pluggy', pluggy.__version__, 'coverage', coverage.__version__, "
                "'xdist', xdist.__version__)", external=True)
    session.run(py, *PYTEST, *session.posargs, external=True)


def _make_tests(version: str) -> Any:
    def tests(session: Any) -> None:
        python, looked = find_python(version)
        if python is None:
            session.skip(f"Python {version} not found (looked for {'; '.join(looked)})")
        _suite(session, _venv(session, python, f"tests-{version}"))
    tests.__doc__ = f"The suite on Python {version}."
    return tests


def deps_floor(session: Any) -> None:
    """The suite with pytest, pluggy, coverage, pytest-xdist and pytest-cov at their
    declared floors."""
    py = _venv(session, sys.executable, "deps-floor")
    pins = [f"{n}=={v}" for n, v in declared_floors().items()]
    session.run(py, "-m", "pip", "install", "--quiet", *pins, external=True)
    _suite(session, py)


def deps_latest(session: Any) -> None:
    """The suite with those packages at their newest release."""
    py = _venv(session, sys.executable, "deps-latest")
    session.run(py, "-m", "pip", "install", "--quiet", "--upgrade", *FLOOR_PACKAGES, external=True)
    _suite(session, py)


if nox is not None:
    nox.options.sessions = SESSIONS
    for _version in VERSIONS:
        nox.session(name=f"tests-{_version}", python=False)(_make_tests(_version))
    nox.session(name="deps-floor", python=False)(deps_floor)
    nox.session(name="deps-latest", python=False)(deps_latest)
