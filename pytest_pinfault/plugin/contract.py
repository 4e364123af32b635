"""The contract checker in the plugin: one :class:`~pytest_pinfault.contracts.Checker`
per ``fake_mm``, the ``pin_contract`` marker and the failure reports.

* The ``fake_mm`` fixture builds the checker right after the machine is armed (the
  baseline) and attaches it as ``fake_mm._checker``; the model and
  ``@pin_entry_point`` functions judge pin returns against it during the test.
* Violations found during the call phase fail the test's call phase (after the body),
  with the kernel-splat text and no traceback.
* The final check (``checker.check(final=True)``, rules 4, 9 and 10 too) runs right
  after the test body, in the call phase, when no other fixture depends on ``fake_mm``
  (nothing can release a hold later); otherwise it runs when the ``fake_mm`` fixture is
  torn down, after every fixture that depends on it, and a violation is reported as an
  error at teardown of the test.
* When the test fails on its own (an assert) while a violation is pending, the
  violation leads the failure and the test's own failure follows it
  (:class:`ViolationFirst`).
* ``@pytest.mark.pin_contract(expect=RULE)``: the test must violate RULE (those
  violations are swallowed); ``disable=[RULE, ...], reason="..."`` switches rules off.
"""

from __future__ import annotations

import dataclasses
import os
import traceback
from typing import Any, Generator, Iterable

import pytest

from ..contracts import Checker, Violation, get_rule
from ..contracts.rules import Rule

__all__ = ["ContractPolicy", "ContractState", "policy_for", "validate_pin_contract", "VIOLATIONS_PROP",
           "ViolationFirst"]

#: user property naming the test's violations (JSON-able, carried by pytest-xdist)
VIOLATIONS_PROP = "pinfault_violations"


@dataclasses.dataclass(frozen=True)
class ContractPolicy:
    """What the ``pin_contract`` markers of one test ask for."""

    expect: Rule | None = None
    disabled: frozenset[Rule] = frozenset()
    reason: str = ""


def _rules(value: Any) -> tuple[Any, ...]:
    if isinstance(value, (int, str, Rule)) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(value)
    raise ValueError(f"expected a list of rules (numbers or rule ids), got {value!r}")


def validate_pin_contract(mark: Any) -> ContractPolicy:
    """The policy of one ``pin_contract`` marker; raises ValueError (with the rule
    names listed) for an unknown rule or a ``disable=`` without a reason."""
    kw = mark.kwargs
    expect = get_rule(kw["expect"]) if "expect" in kw else None
    disabled: frozenset[Rule] = frozenset()
    reason = kw.get("reason") or ""
    if "disable" in kw:
        rules = _rules(kw["disable"])
        disabled = frozenset(get_rule(r) for r in rules)
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("disable: a reason is required: "
                             "@pytest.mark.pin_contract(disable=[...], reason=\"why\")")
    return ContractPolicy(expect, disabled, reason)


def policy_for(item: pytest.Item) -> ContractPolicy:
    """The merged policy of every ``pin_contract`` marker of *item*: disabled rules add
    up, the closest ``expect=`` wins."""
    expect = None
    disabled: set[Rule] = set()
    reasons = []
    for mark in item.iter_markers("pin_contract"):
        p = validate_pin_contract(mark)
        if p.expect is not None and expect is None:
            expect = p.expect
        disabled |= p.disabled
        if p.reason:
            reasons.append(p.reason)
    return ContractPolicy(expect, frozenset(disabled), "; ".join(reasons))


def _fake_mm_dependents(item: pytest.Item) -> set[str]:
    """The fixtures of *item*, other than the plugin's own, that depend on ``fake_mm``
    (directly or not), plus ``fake_mm`` itself when a user fixture overrides it: their
    teardown may release holds, so the final check must wait for it."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return set()
    defs = info.name2fixturedefs
    ours = __name__.rsplit(".", 1)[0]

    def foreign(name: str) -> bool:
        return any(not getattr(d.func, "__module__", "").startswith(ours) for d in defs.get(name, ()))

    deps = {"fake_mm"}
    changed = True
    while changed:
        changed = False
        for name, fdefs in defs.items():
            if name in deps:
                continue
            for d in fdefs:
                if not deps.isdisjoint(d.argnames):
                    deps.add(name)
                    changed = True
                    break
    return {n for n in deps if foreign(n)}


def splat(violations: Iterable[Violation]) -> str:
    return "\n\n".join(str(v) for v in violations)


class ContractState:
    """The checker of one test plus what has been reported so far."""

    def __init__(self, item: pytest.Item, fake_mm: Any, at_boot: bool = False) -> None:
        """*at_boot*: *fake_mm* is as ``FakeMM()`` construction left it (its fault
        injector armed, nothing else done to it: what the ``fake_mm`` fixture and
        ``pinfault_machine`` hand over), so the checker takes the baseline construction
        recorded (:meth:`~pytest_pinfault.contracts.Checker.boot_baseline`, the same
        values) instead of reading the machine again."""
        self.item = item
        self.policy: ContractPolicy = policy_for(item)
        hook = item.config.hook.pytest_pinfault_violation
        self._hook = hook if hook.get_hookimpls() else None
        self.checker: Checker = Checker(fake_mm, on_violation=self._on_violation, at_boot=at_boot)
        self._reported: set[int] = set()   # id() of violations already reported
        self.expected_hits: list[Violation] = []
        self.final_done: bool = False
        self.final_in_call: bool = not _fake_mm_dependents(item)

    def _on_violation(self, v: Violation) -> None:
        if v.rule in self.policy.disabled:
            return
        if self._hook is not None:
            self._hook(violation=v, item=self.item)

    def pending(self) -> list[Violation]:
        """Violations that fail the test and were not reported yet (expected and
        disabled rules, and those swallowed by ``expect_violation``, left out)."""
        out = []
        for v in self.checker.violations:
            if v.rule in self.policy.disabled or id(v) in self._reported:
                continue
            if self.policy.expect is not None and v.rule == self.policy.expect:
                if not any(x is v for x in self.expected_hits):
                    self.expected_hits.append(v)
                continue
            out.append(v)
        return out

    def mark_reported(self, violations: Iterable[Violation]) -> None:
        self._reported.update(id(v) for v in violations)

    def failing(self) -> list[Violation]:
        """Every violation that fails the test (reported or not)."""
        self.pending()
        return [v for v in self.checker.violations
                if v.rule not in self.policy.disabled
                and not (self.policy.expect is not None and v.rule == self.policy.expect)]

    def as_json(self) -> list[dict[str, Any]]:
        failing = {id(v) for v in self.failing()}
        out = []
        for v in self.checker.violations:
            if v.rule in self.policy.disabled:
                continue
            out.append({"rule": v.rule.id, "number": v.rule.number, "message": v.message,
                        "expected": id(v) not in failing})
        return out

    def judge(self, final: bool) -> str | None:
        """Run the checker (final or on demand) and return the failure text for the
        violations not reported yet (and, after a final check, a missing expected
        violation), or None."""
        if self.final_done:
            return None
        self.checker.check(final=final)
        if final:
            self.final_done = True
        pending = self.pending()
        missing = self.missing_expectation() if final else None
        parts = ([splat(pending)] if pending else []) + ([missing] if missing else [])
        self.mark_reported(pending)
        return "\n\n".join(parts) if parts else None

    def hang_failure(self) -> str | None:
        """A kernel call that never returns (:class:`~pytest_pinfault.mm.KernelHang`)
        ended the code under test: nothing after it is judged, no final check runs (the
        hung task still holds what it pinned).  The failure text of the violations found
        before it and not reported yet, or None."""
        self.final_done = True
        pending = self.pending()
        self.mark_reported(pending)
        return splat(pending) if pending else None

    def missing_expectation(self) -> str | None:
        r = self.policy.expect
        if r is None:
            return None
        self.pending()
        if self.expected_hits:
            return None
        return (f"pin contract: expected a {r.id} violation, none happened "
                f"(@pytest.mark.pin_contract(expect={r.id!r}): {r})")


def _own_failure(item: pytest.Item, exc: BaseException) -> str:
    """``test_x.py:12: assert ret == 0`` + the exception line, for the test's own failure."""
    tb = traceback.extract_tb(exc.__traceback__)
    path = str(getattr(item, "path", "") or getattr(item, "fspath", ""))
    loc = next((f for f in reversed(tb) if f.filename == path), tb[-1] if tb else None)
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if loc is None:
        return text
    return f"{os.path.basename(loc.filename)}:{loc.lineno}: {(loc.line or '').strip()}\n{text}"


class ViolationFirst:
    """When a test fails on its own (its assert, an exception) and the checker found a
    contract violation, the violation leads the failure: the test fails with the splat,
    followed by the test's own failure.  Innermost call-phase wrapper (``trylast``), so
    it sees the test's exception before the plugin's other wrappers."""

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, Any]:
        from ..faults.injector import FaultBudgetExceeded
        from .fixtures import CONTROLLER_KEY
        ctl = item.stash.get(CONTROLLER_KEY, None)
        if ctl is None or ctl.contract is None:
            return (yield)
        try:
            return (yield)
        except FaultBudgetExceeded:
            raise
        except Exception as exc:          # not pytest's skip/fail/xfail outcomes
            if item.get_closest_marker("xfail") is not None:
                raise
            failure = ctl.contract.judge(final=False)
            if failure is None:
                raise
            raise pytest.fail.Exception(
                f"{failure}\n\nThe test's own check failed too:\n{_own_failure(item, exc)}",
                pytrace=False) from exc
