"""Coverage dynamic contexts per test, and the ``--pinfault-errpaths`` terminal report.

While coverage.py measures the run (``coverage run -m pytest`` or pytest-cov's
``--cov``), every test phase (setup, call, teardown) runs under the dynamic context
``<nodeid>|<site>#<n>/<mode>`` (a ``pinfault_matrix`` case) or ``<nodeid>|nofault``; the
context is reset to ``""`` after the teardown.  The plugin never starts a measurement
itself: it only switches the context of the running :class:`coverage.Coverage`
(``Coverage.current()``), so nothing is measured twice.  ``coverage`` is looked up in
``sys.modules`` -- never imported -- so a run without coverage pays nothing.

Under pytest-xdist every worker switches its own contexts; its data file is combined by
pytest-cov, or by ``coverage combine`` with ``coverage run --parallel-mode`` and
``[run] patch = subprocess`` (see docs/configuration.md, "Error-path coverage").
"""

from __future__ import annotations

import sys
from typing import Any, Generator

import pytest

from ..errpaths import context_name

__all__ = ["running_coverage", "pytest_runtest_setup", "CallContext",
           "pytest_runtest_teardown", "errpaths_summary"]


def running_coverage() -> Any:
    """The running coverage.Coverage, or None (coverage is not imported here)."""
    mod = sys.modules.get("coverage")
    if mod is None:
        return None
    cov_cls = getattr(mod, "Coverage", None)
    current = getattr(cov_cls, "current", None)
    if current is None:
        return None
    try:
        return current()
    except Exception:   # pragma: no cover - defensive
        return None


def _context(item: pytest.Item) -> str:
    from .fixtures import case_of
    return context_name(item.nodeid, case_of(item))


def _switch(name: str) -> None:
    cov = running_coverage()
    if cov is None:
        return
    try:
        cov.switch_context(name)
    except Exception:   # coverage not started (e.g. stopped by the user): nothing to label
        pass


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    _switch(_context(item))
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: Any) -> Generator[None, Any, Any]:
    _switch(_context(item))
    try:
        return (yield)
    finally:
        _switch("")


class CallContext:
    """The call-phase switch (a separate object: pytest_runtest_call already has a
    wrapper in :mod:`.matrix`)."""

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, Any]:
        _switch(_context(item))
        return (yield)


def _final_coverage(config: pytest.Config) -> Any:
    """The run's Coverage at the end: the running one (coverage run), else pytest-cov's
    (stopped, and combined with the xdist workers' data, by then)."""
    cov = running_coverage()
    if cov is not None:
        return cov
    plugin = config.pluginmanager.getplugin("_cov")
    controller = getattr(plugin, "cov_controller", None)
    return getattr(controller, "cov", None)


def errpaths_summary(config: pytest.Config, terminalreporter: Any, packages: list[str]) -> None:
    """``--pinfault-errpaths``: the error-path report of this run's coverage data."""
    terminalreporter.section("pinfault: error paths")
    cov = _final_coverage(config)
    if cov is None:
        terminalreporter.line("warning: --pinfault-errpaths needs coverage.py measuring the run "
                              "(coverage run -m pytest ..., or pytest --cov=...); no report", yellow=True)
        return
    if hasattr(config, "workerinput"):
        return
    from ..errpaths import analyze, format_table

    try:
        data = cov.get_data()     # flushes the collector; pytest-xdist workers' data is not in it
    except Exception as e:       # pragma: no cover - defensive
        terminalreporter.line(f"warning: cannot read the coverage data: {e}", yellow=True)
        return
    if "xdist" in sys.modules and getattr(config.option, "numprocesses", None) \
            and not config.pluginmanager.hasplugin("_cov"):
        terminalreporter.line("note: under pytest-xdist without pytest-cov the workers' data is in "
                              "separate files: run `coverage combine` then `python -m "
                              "pytest_pinfault.errpaths --packages ...`")
    report = analyze(data, packages, root=str(config.invocation_params.dir))
    if not report.files:      # not a "0 / 0" that reads like nothing to do
        terminalreporter.line(f"error: the coverage data has no measured file of {','.join(packages)}: no "
                              f"error-path report (is coverage measuring it? --cov=PKG, or coverage run "
                              f"--source=PKG)", red=True)
        return
    for line in format_table(report):
        terminalreporter.line(line)
