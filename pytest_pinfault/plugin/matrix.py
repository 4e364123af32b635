"""``pinfault_matrix``: expansion into cases at collection, judgement after the body.

Each case is a separate item whose id is the case id (``folio_isolate_lru#2-persistent``),
so it is selectable with ``-k``, replayable by its node id and distributable by
pytest-xdist.  After the test body:

* a fault budget overrun fails the test with a ``livelock:`` message;
* a case whose fault never fired is skipped (the code never reached that occurrence);
* with ``accept=``, every value passed to ``pinfault.result()`` must be a success
  (``>= 0``) or an accepted errno (or satisfy the predicate), else the case fails.
"""

from __future__ import annotations

from typing import Any, Generator

import pytest

from ..faults.injector import FaultBudgetExceeded
from ..faults.matrix import matrix_cases
from .controller import Pinfault
from .contract import splat
from .fixtures import CALL_PASSED_KEY, CONTROLLER_KEY
from .markers import MarkerError, errno_text, matrix_args
from .state import get_state

__all__ = ["pytest_generate_tests", "pytest_runtest_call"]

_TRACE_LAST = {"on": 50, "verbose": 500}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    mark = metafunc.definition.get_closest_marker("pinfault_matrix")
    if mark is None or "fake_mm" not in metafunc.fixturenames:
        return   # no fake_mm: reported by the collection-time check
    try:
        args = matrix_args(mark, get_state(metafunc.config))
    except MarkerError:
        return   # reported, with the test's id, by the collection-time check
    cases = matrix_cases(args.sites, args.max_nth, args.modes)
    metafunc.parametrize("fake_mm", cases, ids=[c.id for c in cases], indirect=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    ctl = item.stash.get(CONTROLLER_KEY, None)
    if ctl is None:
        return (yield)
    try:
        result = yield
    except FaultBudgetExceeded as e:
        _trace_section(item, ctl, failed=True)
        _contract_section(item, ctl)
        raise pytest.fail.Exception(f"livelock: {e}", pytrace=False) from None
    except BaseException:
        _trace_section(item, ctl, failed=True)
        _contract_section(item, ctl)
        raise
    _judge_contract(item, ctl)
    _trace_section(item, ctl, failed=False)
    if ctl.case is not None:
        _judge_case(item, ctl)
    item.stash[CALL_PASSED_KEY] = True
    return result


def _judge_contract(item: pytest.Item, ctl: Pinfault) -> None:
    """Fail the call phase on the violations found during the test (at pin returns,
    entry points and by a check run now: the final one when no other fixture depends
    on fake_mm, else an on-demand one)."""
    contract = ctl.contract
    if contract is None:
        return
    failure = contract.judge(final=contract.final_in_call)
    if failure is not None:
        _trace_section(item, ctl, failed=True)
        raise pytest.fail.Exception(failure, pytrace=False)


def _contract_section(item: pytest.Item, ctl: Pinfault) -> None:
    """The test failed on its own: show the violations found so far next to it."""
    contract = ctl.contract
    if contract is None:
        return
    pending = contract.pending()
    if pending:
        contract.mark_reported(pending)
        item.add_report_section("call", "pin contract", splat(pending))


def _judge_case(item: pytest.Item, ctl: Pinfault) -> None:
    __tracebackhide__ = True
    case = ctl.case
    assert case is not None
    arming = ctl.case_arming
    if arming is None or not arming.fired:
        hits = ctl.injector.hits.get(case.site, 0)
        reason = (f"{case.site} reached only {hits} time(s), not {case.nth}" if hits < case.nth
                  else f"{case.id}: the fault never fired")
        raise _skip(reason)
    args = matrix_args(item.get_closest_marker("pinfault_matrix"), get_state(item.config))
    if args.accept is None:
        return
    if not ctl.results:
        pytest.fail(f"{case.id}: pinfault_matrix(accept=...) needs the outcome: pass the return value "
                    f"of the call under test to pinfault.result()", pytrace=False)
    for ret in ctl.results:
        if not _accepted(args.accept, ret):
            pytest.fail(f"{case.id}: with {case.site} failing at hit {case.nth} ({case.mode}), the "
                        f"call returned {errno_text(ret)}; acceptable: {_acceptable(args.accept)}",
                        pytrace=False)


def _skip(reason: str) -> BaseException:
    """A skip reported at the test's location, not this module's."""
    try:
        return pytest.skip.Exception(reason, _use_item_location=True)  # type: ignore[call-arg]
    except TypeError:   # pytest < 7: no item-location skips
        return pytest.skip.Exception(reason)


def _accepted(accept: Any, ret: Any) -> bool:
    if callable(accept):
        return bool(accept(ret))
    if isinstance(ret, int) and not isinstance(ret, bool):
        return ret >= 0 or ret in accept
    return True


def _acceptable(accept: Any) -> str:
    if callable(accept):
        return f"a value for which {getattr(accept, '__name__', repr(accept))}() is true"
    return "success (>= 0) or " + ", ".join(errno_text(e).split(" ")[0] for e in sorted(accept))


def _trace_section(item: pytest.Item, ctl: Pinfault, failed: bool) -> None:
    """With --pinfault-trace, attach what fired and the mm trace's tail to the report."""
    level = get_state(item.config).settings.trace
    if level == "off" or (level == "on" and not failed):
        return
    inj = ctl.injector
    lines = [f"hits: {dict(sorted(inj.hits.items()))}"]
    records = inj.log if level == "verbose" else inj.fired
    lines += [f"{r!r} at {r.caller}" for r in records]
    lines.append(f"-- mm trace (last {_TRACE_LAST[level]} events) --")
    lines.append(ctl.fake_mm.trace.format(last=_TRACE_LAST[level]) or "(no events)")
    item.add_report_section("call", "pinfault trace", "\n".join(lines))
