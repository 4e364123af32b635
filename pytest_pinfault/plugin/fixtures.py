"""The fixtures: ``mm_config``, ``fake_mm`` and ``pinfault``.

Everything is function scoped: each test gets a fresh :class:`FakeMM` whose injector
carries the declared user sites, the global fault specs, the test's ``pinfault`` marker
specs and its matrix case.  Nothing is shared between tests.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from .. import FakeMM, MMConfig
from ..faults.matrix import MatrixCase, MatrixPlan
from ..mm.config import ConfigError
from .contract import VIOLATIONS_PROP, ContractState
from .controller import Pinfault
from .covctx import watch_faults
from .kernels import with_test_kernel
from .markers import MARKED_CONFIG_KEY, MarkerError, apply_mm_config, mm_config_fields, pinfault_specs
from .state import get_state

__all__ = ["mm_config", "fake_mm", "pinfault", "CONTROLLER_KEY", "CALL_PASSED_KEY", "CASE_KEY",
           "PLAN_KEY", "REACH_KEY", "FAULT_FREE", "KERNEL_PROP", "KERNEL_VERSION_PROP", "KERNEL_VERSIONS_PROP",
           "MACHINES_PROP", "case_of", "is_fault_free", "kernel_outcomes_json", "end_killed_tasks"]

#: The test's :class:`Pinfault` controller, set while its fake_mm exists.
CONTROLLER_KEY = pytest.StashKey[Pinfault]()
#: Set (by the call-phase hook wrapper) when the test's call phase passed.
CALL_PASSED_KEY = pytest.StashKey[bool]()
#: user property listing the kernel outcomes of a test (KernelOutcome.as_dict())
KERNEL_PROP = "pinfault_kernel"
#: user property naming the kernel version the test's ``fake_mm`` followed (``"6.12"``)
KERNEL_VERSION_PROP = "pinfault_kernel_version"
#: user property: how many ``pinfault_machine`` blocks the test ended (only in tests that used it)
MACHINES_PROP = "pinfault_machines"
#: user property listing the versions a test's machines followed, when they differ
KERNEL_VERSIONS_PROP = "pinfault_kernel_versions"
#: The matrix case of a case item (set by the matrix expansion, see .matrix).
CASE_KEY = pytest.StashKey[MatrixCase]()
#: The plan (reach, cap, cases) of a matrix test, on its fault-free item.
PLAN_KEY = pytest.StashKey[MatrixPlan]()
#: Site -> hits of a fault-free matrix run, written when its fake_mm is torn down.
REACH_KEY = pytest.StashKey["dict[str, int]"]()


class _FaultFree:
    """The ``fake_mm`` parameter of a matrix test's fault-free run (id ``fault-free``)."""

    def __repr__(self) -> str:
        return "fault-free"


FAULT_FREE = _FaultFree()


def case_of(item: Any) -> MatrixCase | None:
    """The matrix case *item* injects, or None."""
    case = item.stash.get(CASE_KEY, None) if hasattr(item, "stash") else None
    if case is None:
        callspec = getattr(item, "callspec", None)
        param = callspec.params.get("fake_mm") if callspec is not None else None
        if isinstance(param, MatrixCase):
            case = param
    return case


def is_fault_free(item: Any) -> bool:
    """*item* is the fault-free run of a matrix test."""
    callspec = getattr(item, "callspec", None)
    return (callspec is not None and callspec.params.get("fake_mm") is FAULT_FREE
            and item.stash.get(CASE_KEY, None) is None)


@pytest.fixture
def mm_config(request: pytest.FixtureRequest) -> MMConfig:
    """The machine a test's ``fake_mm`` is built from: the ``pinfault_mm_config`` ini
    key, else the defaults.  Override it (in a conftest or a test module) to change the
    default; ``@pytest.mark.mm_config(...)`` fields win over both."""
    return get_state(request.config).settings.base_config


def _build_mm(request: pytest.FixtureRequest, base: MMConfig) -> FakeMM:
    """The test's FakeMM; a machine that cannot be built is a UsageError naming the test
    and where the bad value came from."""
    __tracebackhide__ = True
    node = request.node
    if not isinstance(base, MMConfig):
        raise pytest.UsageError(f"{node.nodeid}: the mm_config fixture: expected an MMConfig, "
                                f"got {base!r}")
    try:
        fields = mm_config_fields(node)
        marked = node.stash.get(MARKED_CONFIG_KEY, None)
        if marked is not None and base is get_state(request.config).settings.base_config:
            config = marked                     # resolved (and frozen) at collection
        else:
            config = apply_mm_config(base, fields)
    except MarkerError as e:
        raise pytest.UsageError(f"{node.nodeid}: {e}") from None
    config = with_test_kernel(node, config)
    if config.seed == 0:   # not chosen by the test: derive it from the run's seed
        config = config.with_seed(get_state(request.config).test_seed(node.nodeid))
    try:
        return FakeMM(config)
    except ConfigError as e:
        where = "@pytest.mark.mm_config" if fields else "the mm_config fixture"
        raise pytest.UsageError(f"{node.nodeid}: {where}: {e}") from None


def _arm(request: pytest.FixtureRequest, ctl: Pinfault) -> None:
    __tracebackhide__ = True
    state = get_state(request.config)
    inj = ctl.injector
    for site in state.user_sites:
        inj.declare(site)
    settings = state.settings
    if settings.budget is not None:
        inj.budget = settings.budget
    if is_fault_free(request.node):
        inj.count_hits(True)      # the matrix's reach: every hit of every site
    if settings.trace != "off":
        inj.record(True)
        if settings.trace == "verbose":
            ctl.fake_mm.trace.verbose = True
    for spec in settings.faults:
        inj.arm_spec(spec)
    try:
        marked = pinfault_specs(request.node, state)
    except MarkerError as e:
        raise pytest.UsageError(f"{request.node.nodeid}: {e}") from None
    for spec, callbacks in marked:
        inj.arm_spec(spec, callbacks)
    if ctl.case is not None:
        ctl.case_arming = inj.arm_spec(ctl.case.spec)
    hook = request.config.hook.pytest_pinfault_fault_fired
    if hook.get_hookimpls():
        item = request.node
        inj.on_fire.append(lambda record: hook(record=record, item=item))
    watch_faults(request.node, inj)         # coverage contexts: faulted once a fault fires


@pytest.fixture
def fake_mm(request: pytest.FixtureRequest, mm_config: MMConfig) -> Iterator[FakeMM]:
    """A fresh fake mm per test, built from ``@pytest.mark.mm_config(...)`` >
    the ``mm_config`` fixture > the ``pinfault_mm_config`` ini key > the defaults, with
    its own fault injector (global, marker and matrix specs armed) and its own contract
    checker (``fake_mm._checker``, baseline taken once the machine is armed and the
    ``pytest_pinfault_configure`` hooks ran; see :mod:`.contract`).

    ``pinfault_matrix`` parametrizes this fixture (indirectly) with the item's
    :class:`~pytest_pinfault.faults.matrix.MatrixCase`."""
    __tracebackhide__ = True
    mm = _build_mm(request, mm_config)
    ctl = Pinfault(mm, case_of(request.node))
    _arm(request, ctl)
    item = request.node
    try:
        # the baseline: after arming, before the test; the machine is as construction
        # left it (arming touches the injector only), so its boot baseline is the baseline
        contract = ContractState(item, mm, at_boot=True)
    except ValueError as e:                    # pragma: no cover - checked at collection
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.pin_contract: {e}") from None
    mm._checker = contract.checker
    ctl.contract = contract
    item.stash[CONTROLLER_KEY] = ctl
    hook = request.config.hook.pytest_pinfault_configure
    if hook.get_hookimpls():
        hook(fake_mm=mm, request=request)
        contract.checker.baseline()      # what the hook prepared is part of the baseline
    yield mm
    _finish(item, ctl)


def _finish(item: pytest.Item, ctl: Pinfault) -> None:
    """Drop leftover short-term holds; run the final contract check; attach the fault
    log and the violations to the test's reports; fail the test on a new violation (or
    a missing expected one)."""
    __tracebackhide__ = True
    inj = ctl.injector
    if inj.holds:
        inj.release_holds()
    contract = ctl.contract
    failure = contract.judge(final=True) if contract is not None else None
    props: list[tuple[str, Any]] = item.user_properties
    if ctl.case is not None:
        props.append(("pinfault_case", ctl.case.id))
    if is_fault_free(item):
        item.stash[REACH_KEY] = dict(inj.hits)
        plan = item.stash.get(PLAN_KEY, None)
        if plan is not None:
            props.append(("pinfault_matrix", plan.as_dict()))
    outcomes = getattr(ctl.fake_mm, "kernel_outcomes", None)
    if outcomes and not any(k == KERNEL_PROP for k, _ in props):
        props.append((KERNEL_PROP, kernel_outcomes_json(outcomes)))
    props.append((KERNEL_VERSION_PROP, ctl.fake_mm.config.kernel))
    props.append(("pinfault_hits", dict(inj.hits)))
    props.append(("pinfault_fired", [_jsonable(r.as_dict()) for r in inj.fired]))
    if contract is not None:
        props.append((VIOLATIONS_PROP, contract.as_json()))
    del item.stash[CONTROLLER_KEY]
    if failure is not None:
        if not item.stash.get(CALL_PASSED_KEY, False):
            # the test already failed (or was skipped): show the violations without a
            # second failure
            item.add_report_section("teardown", "pin contract", failure)
        else:
            raise pytest.fail.Exception(failure, pytrace=False)


def end_killed_tasks(fake_mm: Any) -> None:
    """The tasks a kernel outcome killed (``fake_mm.killed_tasks``) have exited once the
    code under test is over (a test body, a ``pinfault_machine`` block): their pending
    signal goes with them, so the contract checker's probes (which run as the current
    task: rule 10's ``cma_alloc``/``offline_pages`` would return -EINTR) and the teardown
    are not interrupted by it."""
    for task in getattr(fake_mm, "killed_tasks", ()):
        task.signal_pending = False


def kernel_outcomes_json(outcomes: Any) -> list[Any]:
    return [_jsonable(o.as_dict()) for o in outcomes]


def _jsonable(value: Any) -> Any:
    """Plain JSON types only, so pytest-xdist and junit-xml carry the value as is."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)


@pytest.fixture
def pinfault(fake_mm: FakeMM, request: pytest.FixtureRequest) -> Pinfault:
    """The fault controller of this test's ``fake_mm``: ``arm(*specs)`` (also a context
    manager), ``fired``, ``hits``, ``declare_site``, ``hold``, ``result`` and ``case``."""
    ctl = request.node.stash.get(CONTROLLER_KEY, None)
    return ctl if ctl is not None else Pinfault(fake_mm)   # fake_mm overridden by the user
