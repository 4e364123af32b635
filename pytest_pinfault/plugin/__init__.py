"""The pytest plugin (entry point ``pinfault``): the only module tree that imports pytest.

The hooks and fixtures live in the submodules and are re-exported here, where pytest
finds them: :mod:`.options` (command line and ini), :mod:`.fixtures` (``mm_config``,
``fake_mm``, ``pinfault``), :mod:`.machine` (``pinfault_machine``: a fresh judged machine
per Hypothesis example), :mod:`.markers` (registration and collection-time checks),
:mod:`.matrix` (``pinfault_matrix``), :mod:`.report` (header, summary, JSON) and
:mod:`.hookspecs` (the plugin's own hooks), :mod:`.cdriver` (``load_c_driver``) and :mod:`.covctx` (coverage dynamic contexts
per test, ``--pinfault-errpaths``).
"""

from __future__ import annotations

from typing import Any, Generator

import pytest

from . import hookspecs as _hookspecs
from .cdriver import load_c_driver  # noqa: F401  (the C-driver bridge is imported when used)
from .contract import ViolationFirst
from .controller import Armed, Pinfault
from .covctx import CallContext, PhaseContext, pytest_runtest_setup, pytest_runtest_teardown
from .faker_support import pinfault_faker  # noqa: F401  (opt-in Faker fixture; faker is imported lazily)
from .fixtures import fake_mm, mm_config, pinfault
from .machine import CurrentItem, MachineFactory, PinContractFailed, pinfault_machine
from .kernels import pinfault_kernel
from .markers import MarkerError, register_markers, validate_item
from .matrix import expand_matrices, pytest_generate_tests, pytest_runtest_call
from .options import pytest_addoption, resolve_settings
from .report import pytest_configure_node, pytest_report_header, pytest_report_teststatus, \
    pytest_sessionfinish, pytest_terminal_summary, install_summary
from .state import STATE_KEY, PinfaultState, get_state

__all__ = ["Pinfault", "Armed", "mm_config", "fake_mm", "pinfault", "pinfault_kernel", "pinfault_faker", "pinfault_machine", "MachineFactory",
           "PinContractFailed", "load_c_driver",
           "pytest_addhooks", "pytest_addoption", "pytest_configure", "pytest_collection_modifyitems",
           "pytest_generate_tests", "pytest_runtest_call", "pytest_runtest_setup", "pytest_runtest_teardown", "pytest_report_header",
           "pytest_terminal_summary", "pytest_sessionfinish", "pytest_configure_node",
           "pytest_report_teststatus"]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(_hookspecs)


def pytest_configure(config: pytest.Config) -> None:
    register_markers(config)
    state = PinfaultState(config, resolve_settings(config))
    config.stash[STATE_KEY] = state
    state.catalogue          # the ini's and the loaded conftests' declared sites, checked now
    state.validate_global_faults()
    install_summary(config)
    config.pluginmanager.register(CallContext(), "pinfault-coverage-context")
    config.pluginmanager.register(PhaseContext(), "pinfault-coverage-phase-context")
    config.pluginmanager.register(ViolationFirst(), "pinfault-violation-first")
    config.pluginmanager.register(CurrentItem(config), "pinfault-current-item")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[Any]) -> None:
    """Check every pinfault marker before anything runs, then size the matrices (both
    before -k/-m deselect, so case ids are selectable)."""
    state = get_state(config)
    if not hasattr(config, "workerinput"):     # workers: checked per collector, below
        state.catalogue      # declared sites (ini, every conftest's hook) are checked now
        for item in items:
            try:
                validate_item(item, state)
            except MarkerError as e:
                raise pytest.UsageError(f"{item.nodeid}: {e}") from None
    expand_matrices(config, items)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, Any]:
    """On a pytest-xdist worker, a bad marker or site declaration is a collection error
    of the module (a UsageError there would crash the worker and end the run in an
    INTERNALERROR on the controller); the controller reports it and stops the run."""
    report = yield
    config = collector.config
    if not hasattr(config, "workerinput") or report.outcome != "passed":
        return report
    state = get_state(config)
    try:
        state.catalogue
        for node in report.result or ():
            if isinstance(node, pytest.Item):
                try:
                    validate_item(node, state)
                except MarkerError as e:
                    raise pytest.UsageError(f"{node.nodeid}: {e}") from None
    except pytest.UsageError as e:
        report.outcome = "failed"
        report.longrepr = f"ERROR: {e}"
        report.result = []
    return report
