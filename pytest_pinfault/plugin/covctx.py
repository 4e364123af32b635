"""Coverage dynamic contexts per test, and the ``--pinfault-errpaths`` terminal report.

While coverage.py measures the run (``coverage run -m pytest`` or pytest-cov's
``--cov``), every test phase (setup, call, teardown) starts under the dynamic context
``<nodeid>|nofault``; when a fault fires the context becomes
``<nodeid>|<site>#<n>/<mode>`` -- the matrix case's (``transient``/``persistent``) when it
is the case's fault, else ``armed`` (a ``pinfault`` marker, ``pinfault.arm()``, a global
spec) with the occurrence that fired first -- and stays so for the rest of the test (its
teardown included), so only what ran after an injected failure counts as reached under
it.  The context is reset to ``""`` after the teardown.  With pytest-cov's
``--cov-context=test`` both plugins switch the context at every phase; the plugin's switch
runs after pytest-cov's (a plain hook implementation registered before it), so these
contexts, which name the test too, replace pytest-cov's ``<nodeid>|setup/run/teardown``.  The plugin never starts a measurement
itself: it only switches the context of the running :class:`coverage.Coverage`
(``Coverage.current()``), so nothing is measured twice.  ``coverage`` is looked up in
``sys.modules`` -- never imported -- so a run without coverage pays nothing.

Under pytest-xdist every worker switches its own contexts; its data file is combined by
pytest-cov, or by ``coverage combine`` with ``coverage run --parallel-mode`` and
``[run] patch = subprocess`` (see docs/configuration.md, "Error-path coverage").

Under pytest-xdist with pytest-cov, nothing is written to a worker's coverage data at
collection time.  Every context switch makes coverage write what it collected, and
pytest-cov's start-up in each worker erases every parallel data file (``.coverage.*``) of
the directory, a running worker's included; a worker whose file is erased under it fails
at its next write ("no such table: context", an INTERNALERROR).  Tests run only once
every worker has collected, so only the matrix probe, which runs tests at collection
time, is concerned: there it runs with coverage paused (:func:`unmeasured`; the probe
repeats the fault-free run, which is measured when it runs as a test -- unless ``-k``
deselects it).  Serial runs and ``coverage run`` measure the probe as a test.

The lines a C driver ran (:func:`record_c_lines`) are kept in memory and added to the data
when coverage reads or saves it (``Coverage.get_data``, which ``save`` calls), each under
the context of the test that ran it, with the collector's own context put back after: the
data is never touched mid-run, and the Python lines coverage collects next are filed
under the context they ran in.  Under branch coverage (``--cov-branch``, ``[run] branch =
true``) the data holds arcs and refuses lines, so the C lines are added as the self-arcs
coverage itself records for an executed line in branch mode (:func:`c_arcs`); lines the
data still refuses raise a :class:`PinfaultCoverageWarning` naming the C file, never a
silent drop.

When coverage's configuration lists the plugin's coverage.py plugin (``[run] plugins =
pytest_pinfault.covplugin``, :func:`c_reported`), the C lines are recorded whenever
coverage measures, each recorded ``.c`` file is marked in the data as that plugin's
(``add_file_tracers``), and the driver's executable lines are written next to the data
file, so coverage's own reports list the C files (see :mod:`pytest_pinfault.covplugin`).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Any, Generator, Iterator

import pytest

from ..errpaths import context_name

__all__ = ["running_coverage", "measuring", "unmeasured", "record_c_lines", "c_reported", "PinfaultCoverageWarning", "c_arcs", "pytest_runtest_setup",
           "CallContext", "PhaseContext", "watch_faults", "clear_fault_context", "pytest_runtest_teardown",
           "errpaths_summary"]

#: The context a test switched to when its first fault fired (absent: ``nodeid|nofault``).
FAULT_CONTEXT_KEY = pytest.StashKey[str]()


#: How many :func:`unmeasured` blocks are open (coverage paused by the plugin).
_paused = 0


def running_coverage() -> Any:
    """The running coverage.Coverage, or None (coverage is not imported here; or the
    plugin paused it, see :func:`unmeasured`)."""
    if _paused:
        return None
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


def measuring() -> bool:
    """Is coverage measuring the run (running, or paused by :func:`unmeasured`)?"""
    return bool(_paused) or running_coverage() is not None


@contextlib.contextmanager
def unmeasured(config: pytest.Config) -> Iterator[None]:
    """In a pytest-xdist worker whose coverage pytest-cov runs: coverage paused while the
    block runs, so nothing is measured, no context switched and no data written (see the
    module docstring).  The coverage is paused through pytest-cov's controller, as its
    ``no_cover`` marker does, and pytest-cov's ``--cov-context=test`` switch is kept out of
    the block (older pytest-cov versions switch a paused coverage and fail).  Elsewhere
    coverage keeps measuring."""
    global _paused
    cov = running_coverage()
    plugin = config.pluginmanager.get_plugin("_cov")
    controller = getattr(plugin, "cov_controller", None)
    if (cov is None or not hasattr(config, "workerinput") or controller is None
            or getattr(controller, "cov", None) is not cov or not hasattr(controller, "pause")):
        yield
        return
    controller.pause()
    _paused += 1
    contexts = config.pluginmanager.get_plugin("_cov_contexts")
    try:
        if contexts is not None:
            config.pluginmanager.unregister(contexts)
        yield
    finally:
        if contexts is not None and config.pluginmanager.get_plugin("_cov_contexts") is None:
            config.pluginmanager.register(contexts, "_cov_contexts")
        _paused -= 1
        controller.resume()


class PinfaultCoverageWarning(pytest.PytestWarning):
    """C-driver lines could not be added to coverage.py's data (the warning names the C
    files and coverage's reason); the error-path report and coverage's reports miss them."""


def _branch_mode(cov: Any, data: Any) -> bool:
    """Does *data* hold (or will it hold) branch data?  Once it has measurements its own
    kind decides; an empty data follows the coverage's ``[run] branch`` setting, so the
    C lines never make it choose lines under a branch measurement (coverage would then
    refuse the Python arcs)."""
    if data.has_arcs():
        return True
    if data.measured_files():
        return False
    try:
        return bool(cov.get_option("run:branch"))
    except Exception:   # pragma: no cover - defensive: an old or odd Coverage
        return False


def c_arcs(lines: Any) -> list[tuple[int, int]]:
    """C lines in the form coverage.py records an executed line in branch mode: the
    self-arc ``(n, n)`` (its sys.monitoring tracer does so; ``CoverageData.lines()`` and
    ``contexts_by_lineno`` count both ends of an arc that are positive, and the analysis
    maps a self-arc to the line's single exit or drops it, so it never reads as a branch
    taken or missed)."""
    return [(n, n) for n in sorted(lines)]


class _CLinesOnRead:
    """``Coverage.get_data`` of a coverage that C lines were recorded for: the original,
    then the pending C lines added to the data it returns, each under its test's context
    (as lines, or as self-arcs when the data holds branch data: see :func:`c_arcs`), and
    the data's context (the collector's) put back, so the Python lines coverage collects
    next are filed where they ran.  Lines the data still refuses are not dropped
    silently: a :class:`PinfaultCoverageWarning` names the C files and the reason."""

    def __init__(self, cov: Any, get_data: Any) -> None:
        self.cov = cov
        self.get_data = get_data
        self.pending: dict[str, dict[str, set[int]]] = {}
        #: C path -> executable lines, for the coverage.py plugin's records
        self.executable: dict[str, set[int]] = {}

    def __call__(self) -> Any:
        data = self.get_data()
        if self.pending:
            pending, self.pending = self.pending, {}
            executable, self.executable = self.executable, {}
            before = getattr(data, "_current_context", None)   # no public getter: the collector's
            refused: dict[str, str] = {}
            try:
                branch = _branch_mode(self.cov, data)
                for context, lines in pending.items():
                    data.set_context(context)
                    try:
                        if branch:
                            data.add_arcs({path: c_arcs(ls) for path, ls in lines.items()})
                        else:
                            data.add_lines({path: sorted(ls) for path, ls in lines.items()})
                    except Exception as e:
                        for path in lines:
                            refused.setdefault(path, f"{type(e).__name__}: {e}")
            finally:
                data.set_context(before)
            if refused:
                _warn_refused(refused)
            if c_reported(self.cov):
                added = {path for lines in pending.values() for path in lines} - set(refused)
                _mark_c_files(self.cov, data, added, executable)
        return data


def c_reported(cov: Any = None) -> bool:
    """Does the configuration of *cov* (default: the running coverage) load the plugin's
    coverage.py plugin, so that coverage reports C files?"""
    cov = cov if cov is not None else running_coverage()
    if cov is None:
        return False
    try:
        plugins = cov.get_option("run:plugins") or ()
    except Exception:   # pragma: no cover - defensive: an odd Coverage
        return False
    from ..covplugin import PLUGIN_MODULE
    return PLUGIN_MODULE in plugins


def _mark_c_files(cov: Any, data: Any, paths: set[str], executable: dict[str, set[int]]) -> None:
    """The C files *paths* are the coverage.py plugin's (its file reporter reports them),
    and their executable lines are recorded next to the data file."""
    from ..covplugin import TRACER_NAME, write_executable_lines
    data_file = str(cov.get_option("run:data_file") or ".coverage")
    try:
        data.add_file_tracers({path: TRACER_NAME for path in sorted(paths)})
    except Exception as e:
        _warn_refused({path: f"{type(e).__name__}: {e}" for path in paths})
        return
    for path in sorted(paths):
        if path in executable:
            write_executable_lines(data_file, path, executable[path])


def _warn_refused(refused: dict[str, str]) -> None:
    """A :class:`PinfaultCoverageWarning` per reason, naming the C files it refused; when
    warnings are errors (coverage reads its data outside any test, where pytest does not
    catch warnings), the text goes to stderr instead of raising out of coverage."""
    by_reason: dict[str, list[str]] = {}
    for path, reason in refused.items():
        by_reason.setdefault(reason, []).append(path)
    for reason, paths in by_reason.items():
        text = (f"pytest-pinfault: coverage.py refused the C-driver lines of {', '.join(sorted(paths))} "
                f"({reason}); they are missing from the coverage data and the error-path report")
        try:
            warnings.warn(PinfaultCoverageWarning(text), stacklevel=2)
        except Exception:
            print(f"warning: {text}", file=sys.stderr)


def record_c_lines(item: pytest.Item, lines: dict[str, set[int]],
                   executable: dict[str, set[int]] | None = None) -> None:
    """Keep the C lines *item* ran, under its current context, until the running coverage
    reads or saves its data (see the module docstring); nothing when coverage is not
    running (or paused).  *executable*: the drivers' executable lines (path -> lines),
    recorded for the coverage.py plugin when it is configured."""
    cov = running_coverage()
    if cov is None or not lines:
        return
    hook = vars(cov).get("get_data")
    if not isinstance(hook, _CLinesOnRead):
        hook = _CLinesOnRead(cov, cov.get_data)
        cov.get_data = hook
    per_path = hook.pending.setdefault(_context(item), {})
    for path, ls in lines.items():
        per_path.setdefault(path, set()).update(ls)
    for path, ls in (executable or {}).items():
        hook.executable.setdefault(path, set()).update(ls)


def _context(item: pytest.Item) -> str:
    """The test's current context: its fault's once one fired, else ``nodeid|nofault``."""
    ctx = item.stash.get(FAULT_CONTEXT_KEY, None)
    return ctx if ctx is not None else context_name(item.nodeid, None)


def watch_faults(item: pytest.Item, injector: Any) -> None:
    """While coverage measures the run, switch *item*'s context when a fault fires on
    *injector* (see the module docstring); nothing is added otherwise."""
    if running_coverage() is None:
        return
    from .fixtures import case_of
    case = case_of(item)

    def fired(record: Any) -> None:
        current = item.stash.get(FAULT_CONTEXT_KEY, None)
        if case is not None and record.site == case.site:
            name = context_name(item.nodeid, case)
        elif current is not None and current.rpartition("|")[2].startswith(record.site + "#"):
            return                         # the same site again: keep its first occurrence
        else:
            name = f"{item.nodeid}|{record.site}#{record.occurrence}/armed"
        if name != current:
            item.stash[FAULT_CONTEXT_KEY] = name
            _switch(name)
    injector.on_fire.append(fired)


def clear_fault_context(item: pytest.Item) -> None:
    """Back to ``nodeid|nofault`` (a ``pinfault_machine`` block ended: the next example
    starts on a fresh machine with no fault fired)."""
    if item.stash.get(FAULT_CONTEXT_KEY, None) is not None:
        del item.stash[FAULT_CONTEXT_KEY]
        _switch_to(item)


def _switch(name: str) -> None:
    cov = running_coverage()
    if cov is None:
        return
    try:
        cov.switch_context(name)
    except Exception:   # coverage not started (e.g. stopped by the user): nothing to label
        pass


def _switch_to(item: pytest.Item) -> None:
    """``_switch(_context(item))``, the context named only while coverage runs."""
    cov = running_coverage()
    if cov is None:
        return
    name = _context(item)
    try:
        cov.switch_context(name)
    except Exception:   # coverage not started (e.g. stopped by the user): nothing to label
        pass


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    _switch_to(item)
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: Any) -> Generator[None, Any, Any]:
    _switch_to(item)
    try:
        return (yield)
    finally:
        _switch("")


class CallContext:
    """The call-phase switch (a separate object: pytest_runtest_call already has a
    wrapper in :mod:`.matrix`)."""

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, Any]:
        _switch_to(item)
        return (yield)


class PhaseContext:
    """The switch again as a plain implementation of each phase hook: registered at
    configure, before pytest-cov registers its ``--cov-context=test`` plugin at session
    start, it runs after that plugin's switch (pluggy calls later registrations first) and
    before pytest's own runner (registered before either), so the test's fixtures and
    body run under the plugin's context whatever ``--cov-context`` says."""

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        _switch_to(item)

    def pytest_runtest_call(self, item: pytest.Item) -> None:
        _switch_to(item)

    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        _switch_to(item)


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
    if getattr(config.option, "cov_context", None) == "test":
        terminalreporter.line("note: --cov-context=test: the plugin's contexts (<nodeid>|nofault, "
                              "<nodeid>|<site>#<n>/<mode>) replace pytest-cov's <nodeid>|setup/run/teardown "
                              "ones; they name the test too")
    for line in format_table(report):
        terminalreporter.line(line)
