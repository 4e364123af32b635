"""``pinfault_machine``: a fresh, armed and judged fake mm per Hypothesis example.

``fake_mm`` is one machine per *test*; under ``@given`` a test runs many examples, and a
function-scoped fixture is shared by all of them (Hypothesis' ``function_scoped_fixture``
health check refuses it for that reason).  ``pinfault_machine`` is a session-scoped
factory instead -- Hypothesis accepts it as is -- whose call builds one machine, inside
the test, for one example::

    @given(st.integers(1, 64))
    def test_pin(pinfault_machine, npages):
        with pinfault_machine() as k:          # a fresh FakeMM for this example
            ...                                # drive the code under test

The machine is built like the test's ``fake_mm`` would be (``mm_config`` marker > the
``pinfault_mm_config`` ini key > the defaults, or the ``config=`` given, with the test's
kernel version when it runs per version -- ``pinfault_kernels`` marker,
``--pinfault-kernel``, ini ``pinfault_kernel``, as for ``fake_mm``; the run's global
fault specs, the test's ``pinfault`` marker specs and the *faults* given are armed; the
``pytest_pinfault_configure`` hooks run) and gets its own contract checker, honouring the
test's ``pin_contract`` marker.  When the block ends the leftover holds are dropped and
the final contract check runs; a violation (or a missing ``expect=`` violation) raises
:class:`PinContractFailed`, an :class:`AssertionError` whose text names the rule, so
Hypothesis shrinks the example to a minimal one that still breaks the contract.  When the
block raises on its own while a violation is pending, the violation leads (as with
``fake_mm``).  The injector's seed is the test's seed for every example, so an example
replays exactly while Hypothesis shrinks.
"""

from __future__ import annotations

from typing import Any, Generator

import pytest

from .. import FakeMM, MMConfig
from ..faults.spec import FaultSpec, FaultSpecError
from ..mm.gup import KernelHang
from .contract import ContractState, _own_failure
from .controller import Pinfault
from .covctx import clear_fault_context
from .fixtures import end_killed_tasks
from .state import get_state

__all__ = ["PinContractFailed", "MachineFactory", "Machine", "CurrentItem", "pinfault_machine", "MACHINES_KEY",
           "attach_machines", "note_machine_kernel"]

_CURRENT_KEY = pytest.StashKey["pytest.Item | None"]()
#: What each ended ``pinfault_machine`` block of the running test saw (see :func:`_record`).
MACHINES_KEY = pytest.StashKey["list[dict[str, Any]]"]()


class PinContractFailed(AssertionError):
    """A machine built by ``pinfault_machine`` broke the pin contract.  ``violations``
    lists the :class:`~pytest_pinfault.contracts.Violation` objects that fail it (empty
    when only an ``expect=`` violation was missing); the text is the kernel-style splat
    naming each rule."""

    def __init__(self, text: str, violations: list[Any]) -> None:
        super().__init__(text)
        self.violations = violations


class CurrentItem:
    """Remembers the item being run, for the session-scoped factory."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        config.stash[_CURRENT_KEY] = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: Any) -> Generator[None, Any, Any]:
        self.config.stash[_CURRENT_KEY] = item
        try:
            return (yield)
        finally:
            self.config.stash[_CURRENT_KEY] = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, Any]:
        """The machines' kernel outcomes go on the item when the body ends, so the call
        report carries them (the test shows ``K`` / ``KERNEL``, as a ``fake_mm`` test does)."""
        try:
            return (yield)
        finally:
            note_machine_kernel(item)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: Any) -> Generator[None, Any, Any]:
        """After the fixtures are torn down (``fake_mm``'s properties attached), before
        the teardown report is made: the machines' data joins the test's properties."""
        try:
            return (yield)
        finally:
            attach_machines(item)


class _Request:
    """What the ``fake_mm`` fixture's builders read of a request: the node and config."""

    def __init__(self, item: pytest.Item) -> None:
        self.node = item
        self.config = item.config


class MachineFactory:
    """The ``pinfault_machine`` fixture's object; call it for a fresh machine."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        #: how many machines this run's factory built (for the curious and the tests)
        self.built = 0

    def __repr__(self) -> str:
        return f"<pinfault_machine: {self.built} built>"

    def _item(self) -> pytest.Item:
        item = self._config.stash.get(_CURRENT_KEY, None)
        if item is None:
            raise pytest.UsageError("pinfault_machine(): call it inside a test (its body, or a "
                                    "function-scoped fixture), not at import or collection time")
        return item

    def __call__(self, *faults: str | FaultSpec, config: MMConfig | None = None) -> "Machine":
        """``with pinfault_machine(*faults, config=None) as k:`` -- a fresh
        :class:`~pytest_pinfault.FakeMM` for the block, judged by its own contract checker
        when the block ends (see the module docstring).  *faults* are fault specs armed on
        top of the test's; *config* replaces the ``mm_config`` marker and ini machine, and
        a test run per kernel version replaces its ``kernel`` with the version of the run
        (as ``fake_mm`` does with the ``mm_config`` machine).  A bad spec or config is a
        :class:`pytest.UsageError`."""
        __tracebackhide__ = True
        from .fixtures import _arm, _build_mm
        item = self._item()
        request: Any = _Request(item)
        if config is not None and not isinstance(config, MMConfig):
            raise pytest.UsageError(f"{item.nodeid}: pinfault_machine(config=...): expected an MMConfig, "
                                    f"got {config!r}")
        if config is not None:
            mm = _build_mm_from(item, config)
        else:
            mm = _build_mm(request, get_state(self._config).settings.base_config)
        ctl = Pinfault(mm)
        _arm(request, ctl)
        for spec in faults:
            try:
                ctl.injector.arm_spec(spec)
            except FaultSpecError as e:
                raise pytest.UsageError(f"{item.nodeid}: pinfault_machine: {e}") from None
        try:
            contract = ContractState(item, mm, at_boot=True)   # a fresh machine: see fake_mm
        except ValueError as e:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.pin_contract: {e}") from None
        mm._checker = contract.checker
        ctl.contract = contract
        hook = self._config.hook.pytest_pinfault_configure
        real_request = getattr(item, "_request", None)
        if hook.get_hookimpls() and real_request is not None:
            hook(fake_mm=mm, request=real_request)
            contract.checker.baseline()
        self.built += 1
        return Machine(item, ctl)


class Machine:
    """One ``pinfault_machine()`` block: entering yields the FakeMM; leaving judges it.
    ``pinfault`` is the machine's fault controller (``fired``, ``hits``, ``arm``...)."""

    def __init__(self, item: pytest.Item, ctl: Pinfault) -> None:
        self._item = item
        self.pinfault = ctl
        self.fake_mm: FakeMM = ctl.fake_mm

    def __enter__(self) -> FakeMM:
        return self.fake_mm

    def __exit__(self, typ: Any, exc: BaseException | None, tb: Any) -> bool:
        __tracebackhide__ = True
        clear_fault_context(self._item)     # the next example's machine starts fault-free
        end_killed_tasks(self.fake_mm)      # as a fake_mm test's body: before any check
        try:
            return self._judge(exc)
        finally:
            _record(self._item, self.pinfault)

    def _judge(self, exc: BaseException | None) -> bool:
        """Judge the ended block; True when it ended at a kernel call of this machine
        that never returns (the :class:`KernelHang` is swallowed: the kernel's outcome,
        recorded, not the example's failure)."""
        __tracebackhide__ = True
        ctl = self.pinfault
        contract = ctl.contract
        if isinstance(exc, KernelHang) and any(o is exc.outcome for o in self.fake_mm.kernel_outcomes):
            failure = contract.hang_failure()
            if failure is not None:
                raise PinContractFailed(f"{failure}\n\nThe block then ended at a kernel call that never "
                                        f"returns:\n{exc.outcome}", contract.failing()) from None
            return True
        if exc is not None:
            if not isinstance(exc, Exception):
                return False                # pytest's skip/fail, KeyboardInterrupt: as is
            failure = contract.judge(final=False)
            if failure is None:
                return False
            raise PinContractFailed(f"{failure}\n\nThe example's own check failed too:\n"
                                    f"{_own_failure(self._item, exc)}", contract.failing()) from exc
        if ctl.injector.holds:
            ctl.injector.release_holds()
        failure = contract.judge(final=True)
        if failure is not None:
            raise PinContractFailed(failure, contract.failing())
        return False


def _record(item: pytest.Item, ctl: Pinfault) -> None:
    """Keep what one ended machine block saw (hits, fired records, kernel outcomes,
    violations, kernel version) for the test's reports (:func:`attach_machines`)."""
    from .fixtures import _jsonable, kernel_outcomes_json
    runs = item.stash.setdefault(MACHINES_KEY, [])
    number = len(runs) + 1
    inj = ctl.injector
    outcomes = getattr(ctl.fake_mm, "kernel_outcomes", None) or ()
    runs.append({"kernel_version": ctl.fake_mm.config.kernel, "hits": dict(inj.hits),
                 "fired": [{**_jsonable(r.as_dict()), "machine": number} for r in inj.fired],
                 "kernel": [{**o, "machine": number} for o in kernel_outcomes_json(outcomes)],
                 "violations": ([{**v, "machine": number} for v in ctl.contract.as_json()]
                                if ctl.contract is not None else [])})


def note_machine_kernel(item: pytest.Item) -> None:
    """The kernel outcomes of the machine blocks that ended so far, added to the item's
    ``pinfault_kernel`` property (after the ``fake_mm`` ones, which carry no ``machine``)."""
    from .fixtures import KERNEL_PROP
    kernel = [rec for run in item.stash.get(MACHINES_KEY, ()) for rec in run["kernel"]]
    if not kernel:
        return
    props: list[tuple[str, Any]] = item.user_properties
    for i, (name, value) in enumerate(props):
        if name == KERNEL_PROP:
            props[i] = (name, [r for r in value if "machine" not in r] + kernel)
            return
    props.append((KERNEL_PROP, kernel))


def attach_machines(item: pytest.Item) -> None:
    """Put what the test's ``pinfault_machine`` blocks saw into its user properties (the
    ones ``fake_mm`` attaches, read by the terminal summary, the JSON report and
    junit-xml): hits summed over the machines, fired records, kernel outcomes and
    violations in block order, each with the 1-based ``machine`` block it came from, and
    ``pinfault_machines`` (how many blocks ended).  Merged into the test's ``fake_mm``
    properties when it has those too; the kernel version is the machines' one when they
    (and the ``fake_mm``) agree, else null with ``pinfault_kernel_versions`` listing them."""
    runs = item.stash.get(MACHINES_KEY, None)
    if not runs:
        return
    from .contract import VIOLATIONS_PROP
    from .fixtures import KERNEL_PROP, KERNEL_VERSION_PROP, KERNEL_VERSIONS_PROP, MACHINES_PROP
    del item.stash[MACHINES_KEY]
    props: list[tuple[str, Any]] = item.user_properties
    have = {name: i for i, (name, _) in enumerate(props)}
    hits: dict[str, int] = {}
    versions: list[str] = []
    lists: dict[str, list[Any]] = {KERNEL_PROP: [], "pinfault_fired": [], VIOLATIONS_PROP: []}
    for name in lists:                             # fake_mm's records (no machine) come first
        if name in have:
            lists[name].extend(r for r in props[have[name]][1] if "machine" not in r)
    if "pinfault_hits" in have:                    # the test's fake_mm came first
        hits.update(props[have["pinfault_hits"]][1])
        version = props[have[KERNEL_VERSION_PROP]][1] if KERNEL_VERSION_PROP in have else None
        if version is not None:
            versions.append(version)
    for run in runs:
        for site, n in run["hits"].items():
            hits[site] = hits.get(site, 0) + n
        lists["pinfault_fired"].extend(run["fired"])
        lists[KERNEL_PROP].extend(run["kernel"])
        lists[VIOLATIONS_PROP].extend(run["violations"])
        if run["kernel_version"] not in versions:
            versions.append(run["kernel_version"])
    values: dict[str, Any] = {"pinfault_hits": hits, **lists, MACHINES_PROP: len(runs),
                              KERNEL_VERSION_PROP: versions[0] if len(versions) == 1 else None}
    if not values[KERNEL_PROP]:
        del values[KERNEL_PROP]                    # as fake_mm: only when there are some
    if len(versions) > 1:
        values[KERNEL_VERSIONS_PROP] = versions
    for name, value in values.items():
        if name in have:
            props[have[name]] = (name, value)
        else:
            props.append((name, value))


def _build_mm_from(item: pytest.Item, config: MMConfig) -> FakeMM:
    """A machine from an explicit config (the test's seed when the config leaves it 0,
    the test's kernel version when it runs per version)."""
    __tracebackhide__ = True
    from ..mm.config import ConfigError
    from .kernels import with_test_kernel
    config = with_test_kernel(item, config, "pinfault_machine(config=...) with ")
    if config.seed == 0:
        config = config.with_seed(get_state(item.config).test_seed(item.nodeid))
    try:
        return FakeMM(config)
    except ConfigError as e:
        raise pytest.UsageError(f"{item.nodeid}: pinfault_machine(config=...): {e}") from None


@pytest.fixture(scope="session")
def pinfault_machine(pytestconfig: pytest.Config) -> MachineFactory:
    """A factory of fresh machines, one per ``with pinfault_machine(*faults, config=None) as
    k:`` block, each armed like ``fake_mm`` and judged by its own contract checker when the
    block ends (a violation raises :class:`PinContractFailed`).  Session scoped, so
    ``@given`` tests use it without suppressing Hypothesis' ``function_scoped_fixture``
    health check; meant for property tests (docs/fuzzing.md)."""
    return MachineFactory(pytestconfig)
