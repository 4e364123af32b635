"""The ``pinfault`` fixture's object: the fault controller bound to one test's fake mm."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator

import pytest

from ..contracts import Checker, Violation, checker_for
from ..contracts import expect_violation as _expect_violation

from ..faults.injector import Arming, FaultRecord, Injector
from ..faults.matrix import MatrixCase
from ..faults.spec import FaultSpec, FaultSpecError

__all__ = ["Pinfault", "Armed"]


class Armed:
    """The armings of one :meth:`Pinfault.arm` call.  Armed as soon as it is made; as a
    context manager it disarms them on exit."""

    def __init__(self, injector: Injector, armings: list[Arming]) -> None:
        self.injector = injector
        self.armings = armings

    def disarm(self) -> None:
        """Disarm these armings now (what leaving the ``with`` block does)."""
        for a in self.armings:
            self.injector.disarm(a)

    @property
    def fired(self) -> int:
        """How many times these armings fired."""
        return sum(a.fired for a in self.armings)

    def __enter__(self) -> "Armed":
        return self

    def __exit__(self, *exc: object) -> None:
        self.disarm()

    def __repr__(self) -> str:
        return f"<Armed {[a.spec.text if a.spec else a.site for a in self.armings]}>"


class Pinfault:
    """Fault control for one test: arm specs, read what fired, declare sites, hold
    folios, and record call outcomes for a ``pinfault_matrix(accept=...)`` check.

    ``case`` is the :class:`~pytest_pinfault.faults.matrix.MatrixCase` of a matrix
    test (None otherwise); ``injector`` is ``fake_mm.faults``.
    """

    def __init__(self, fake_mm: Any, case: MatrixCase | None = None) -> None:
        self.fake_mm = fake_mm
        self.injector: Injector = fake_mm.faults
        self.case = case
        self.results: list[Any] = []
        self.case_arming: Arming | None = None
        self.contract: Any = None            # the plugin's ContractState (fake_mm fixture)

    # ------------------------------------------------------------------ contract
    @property
    def checker(self) -> Checker:
        """The contract :class:`~pytest_pinfault.contracts.Checker` watching this
        test's fake mm (one is made now if the ``fake_mm`` fixture was overridden)."""
        if self.contract is not None:
            held: Checker = self.contract.checker
            return held
        ck = checker_for(self.fake_mm)
        if ck is None:
            ck = Checker(self.fake_mm)
            self.fake_mm._checker = ck
        return ck

    def check(self, final: bool = False) -> list[Violation]:
        """Run the contract checker now (rules 1, 5, 6, 7, 8, 11; with *final* also
        4, 9 and 10, whose probes migrate folios) and return the violations this check
        found.  They still fail the test unless a ``pin_contract`` marker expects or
        disables their rule; use :meth:`expect_violation` to assert one."""
        found = self.checker.check(final=final)
        if self.contract is not None:
            disabled = self.contract.policy.disabled
            found = [v for v in found if v.rule not in disabled]
        return found

    @contextlib.contextmanager
    def expect_violation(self, rule: Any, *, final: bool | None = None) -> Iterator[list[Violation]]:
        """``with pinfault.expect_violation("pin-balance") as caught:`` -- the block
        must break *rule* (a number, an id or a Rule), else AssertionError; those
        violations are swallowed (they do not fail the test) and appended to *caught*.
        See :func:`pytest_pinfault.contracts.expect_violation`."""
        __tracebackhide__ = True
        with _expect_violation(self.checker, rule, final=final) as caught:
            yield caught

    def arm(self, *specs: str | FaultSpec, **callbacks: Callable[[dict[str, Any]], Any]) -> Armed:
        """Arm *specs* now; ``with pinfault.arm(...):`` disarms them at the end of the
        block.  Keyword arguments are the callables ``call(name)`` actions run.  A bad
        spec or an unknown site is a :class:`pytest.UsageError`."""
        __tracebackhide__ = True
        inj = self.injector
        armings: list[Arming] = []
        for spec in specs:
            try:
                armings.append(inj.arm_spec(spec, callbacks))   # parses and validates
            except FaultSpecError as e:
                for a in armings:                                  # all or nothing
                    inj.disarm(a)
                raise pytest.UsageError(f"pinfault.arm: {e}") from None
        return Armed(inj, armings)

    def disarm(self) -> None:
        """Disarm everything armed on this test's fake mm (holds stay)."""
        self.injector.disarm()

    @property
    def fired(self) -> list[FaultRecord]:
        """Every firing so far, in order, with its context."""
        return self.injector.fired

    @property
    def log(self) -> list[FaultRecord]:
        """Every logged hit (all hits while recording, else the firings)."""
        return self.injector.log

    @property
    def hits(self) -> dict[str, int]:
        """Site -> hits so far (counted while anything is armed or recording)."""
        return self.injector.hits

    def record(self, on: bool = True) -> None:
        """Count and log every site hit even with nothing armed."""
        self.injector.record(on)

    def declare_site(self, name: str, errnos: Iterable[int | str] | int | str, kernel: str = "driver",
                     meaning: str = "") -> Any:
        """Declare a user fault site on this test's fake mm (see also the
        ``pinfault_sites`` ini key and the ``pytest_pinfault_declare_sites`` hook, which
        declare sites for every test and for marker validation)."""
        return self.injector.declare_site(name, errnos, kernel=kernel, meaning=meaning)

    def hold(self, folio: Any, attempts: int | None = None) -> Any:
        """Take a short-term reference on *folio* now (a concurrent GUP): its next
        *attempts* migration checks fail (None: until released)."""
        return self.injector.hold(folio, attempts)

    def result(self, ret: Any) -> Any:
        """Record the outcome of a call under test for ``pinfault_matrix(accept=...)``;
        returns *ret* unchanged."""
        self.results.append(ret)
        return ret

    def __repr__(self) -> str:
        case = f" case={self.case.id}" if self.case else ""
        return f"<pinfault{case} fired={len(self.fired)}>"
