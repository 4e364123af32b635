"""The ``load_c_driver`` fixture: C drivers loaded into the test's ``fake_mm``.

``drv = load_c_driver("drv.c", ...)`` (or ``load_c_driver(fake_mm, "drv.c", ...)``)
builds the source through the C-driver bridge (cached), loads it into the test's fake mm
and runs module_init; at teardown every driver the test loaded is unloaded (open files
closed, module_exit run, leaks reported as kernel warnings) before the fake mm's final
contract check.  A build failure (a kernel API the bridge lacks, a compile error) fails the
test with the bridge's short report; a module_init that fails raises ``OSError``.
Relative paths (the source, ``include_dirs``, ``uapi_headers``) are looked up next to the
test file first, then in the working directory.  Under ``--pinfault-errpaths`` with
coverage.py measuring, drivers are built with gcc line coverage and each test's C lines
are recorded under its dynamic context, so the error-path report covers the C source; the
same when coverage's configuration loads ``pytest_pinfault.covplugin``, whose file reporter
lists the C files in coverage's own reports.  The bridge module is imported only when the
fixture is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from .. import FakeMM

__all__ = ["load_c_driver"]


def _cache_dir(config: pytest.Config) -> Path | None:
    ini = str(config.getini("pinfault_cdriver_cache")).strip()
    if not ini:
        return None
    p = Path(os.path.expandvars(os.path.expanduser(ini)))
    return p if p.is_absolute() else Path(config.rootpath) / p


@pytest.fixture
def load_c_driver(fake_mm: FakeMM, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """A loader bound to this test's ``fake_mm``; see
    :func:`pytest_pinfault.cdriver.load_c_driver` for the keyword arguments."""
    loaded: list[Any] = []
    cache = _cache_dir(request.config)
    measure = False
    if request.config.getoption("pinfault_errpaths", None):
        from .covctx import measuring
        measure = measuring()             # C lines go to the error-path report too
    else:
        from .covctx import c_reported
        measure = c_reported()            # coverage.py's own reports list C files

    def load(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if args and isinstance(args[0], FakeMM):
            mm, args = args[0], args[1:]
        else:
            mm = fake_mm
        if len(args) != 1:
            raise pytest.UsageError(f"{request.node.nodeid}: load_c_driver([fake_mm,] source, **options): "
                                    f"expected one source path, got {args!r}")
        try:
            from .. import cdriver
        except ImportError as e:
            pytest.fail(f"the C-driver bridge needs cffi: pip install 'pytest-pinfault[c]' ({e})", pytrace=False)
        base = Path(request.node.path).parent

        def here(p: Any) -> Any:           # relative paths: the test file's directory first
            q = Path(p)
            return base / q if not q.is_absolute() and (base / q).exists() else p
        source = here(args[0])
        for key in ("include_dirs", "uapi_headers"):
            if key in kwargs:
                kwargs[key] = [here(p) for p in kwargs[key]]
        kwargs.setdefault("cache_dir", cache)
        if measure:
            kwargs.setdefault("coverage", True)
        init = kwargs.pop("init", True)
        try:
            drv = cdriver.load_c_driver(mm, source, init=False, **kwargs)
        except cdriver.CDriverBuildError as e:
            pytest.fail(str(e), pytrace=False)
        loaded.append(drv)
        if init:
            rc = drv.init()
            if rc != 0:
                raise OSError(-rc if rc < 0 else 22, f"module_init of {drv.source.name} failed: {rc}")
        return drv

    yield load
    errors: list[BaseException] = []
    for drv in reversed(loaded):
        try:
            drv.unload()
        except BaseException as e:     # the others are still unloaded, their lines recorded
            errors.append(e)
        finally:
            if measure:
                _add_c_lines(request.node, drv.coverage_lines(final=True), drv.executable_lines)
    if errors:
        raise errors[0]


def _add_c_lines(item: pytest.Item, lines: dict[str, set[int]], executable: dict[str, set[int]]) -> None:
    """Record the C lines a test ran for coverage.py, under the test's dynamic context
    (``nodeid|site#n/mode``), so the error-path report covers C drivers (and, with the
    coverage.py plugin configured, coverage's own reports: *executable* are the drivers'
    executable lines).  They are kept in memory and added when coverage reads or saves
    its data, never mid-run (see :mod:`.covctx`)."""
    from .covctx import record_c_lines
    record_c_lines(item, lines, executable)
