"""``pinfault_matrix``: a matrix sized to the code, its cases, and their judgement.

Collection (module docstring of :mod:`pytest_pinfault.faults.matrix` for the ids):

* ``pytest_generate_tests`` gives a matrix test one item, its **fault-free run**
  (``test_x[fault-free]``), plus any case named on the command line
  (``t.py::test_x[kmalloc-5-transient]``), so a case id replays on its own without the
  expansion below.
* ``expand_matrices`` (from ``pytest_collection_modifyitems``, before ``-k``/``-m``
  deselect) runs each fault-free item once, unreported, with every site hit counted (the
  *probe*; in a pytest-xdist worker whose coverage pytest-cov runs, with coverage paused:
  see :mod:`.covctx`), and adds one item per (site, occurrence 1..min(hits, cap), mode) after it.
  The probe is deterministic (the model and its seeds are), so every pytest-xdist worker
  collects the same items.  The cap is ``max_nth=`` (marker), else
  ``--pinfault-max-nth``/ini ``pinfault_max_nth``; a cut is announced in the terminal
  summary and the JSON report.

After the test body:

* a fault budget overrun fails the test with a ``livelock:`` message (rule 5);
* a kernel retry loop an injected fault keeps failing (:class:`~pytest_pinfault.mm.
  KernelOutcome`) is the kernel's outcome, not the driver's: the test reports as
  ``KERNEL`` and passes unless the driver mishandles what follows (-EINTR of a killed task
  is an accepted outcome; a call that never returns ends the test there);
* a fault-free run whose matrix got no case (no covered site reached) fails, saying so;
* a case whose fault never fired is skipped (a replayed id the code no longer reaches);
* with ``accept=``, every value passed to ``pinfault.result()`` must be a success
  (``>= 0``) or an accepted errno (or satisfy the predicate), else the case fails.
"""

from __future__ import annotations

import copy
import errno
import re
from typing import Any, Generator

import pytest

from ..faults.injector import FaultBudgetExceeded
from ..faults.matrix import MatrixCase, MatrixPlan, parse_case_id, sized_cases
from ..mm.gup import KernelHang
from .controller import Pinfault
from .contract import splat
from .fixtures import (CALL_PASSED_KEY, CASE_KEY, CONTROLLER_KEY, FAULT_FREE, KERNEL_PROP, PLAN_KEY,
                       REACH_KEY, end_killed_tasks, is_fault_free, kernel_outcomes_json)
from .kernels import parametrize_kernels
from .markers import MARKED_CONFIG_KEY, MarkerError, errno_text, matrix_args
from .state import get_state

__all__ = ["pytest_generate_tests", "pytest_runtest_call", "expand_matrices", "FAULT_FREE_ID"]

_TRACE_LAST = {"on": 50, "verbose": 500}
FAULT_FREE_ID = "fault-free"
_CASE_RE = re.compile(r"(?<![\w.])([A-Za-z_][\w.]*-\d+-(?:transient|persistent))(?![\w.])")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The matrix's fault-free run (and replayed cases), then the kernel versions
    (:mod:`.kernels`), so ids read ``fault-free-kernel-6.1``."""
    _generate_matrix(metafunc)
    parametrize_kernels(metafunc, get_state(metafunc.config).settings.kernels)


def _generate_matrix(metafunc: pytest.Metafunc) -> None:
    mark = metafunc.definition.get_closest_marker("pinfault_matrix")
    if mark is None or "fake_mm" not in metafunc.fixturenames:
        return   # no fake_mm: reported by the collection-time check
    try:
        args = matrix_args(mark, get_state(metafunc.config))
    except MarkerError:
        return   # reported, with the test's id, by the collection-time check
    replay = _replayed(metafunc, args)
    metafunc.parametrize("fake_mm", [FAULT_FREE, *replay], ids=[FAULT_FREE_ID, *(c.id for c in replay)],
                         indirect=True)


def _replayed(metafunc: pytest.Metafunc, args: Any) -> list[MatrixCase]:
    """The cases of this test named on the command line (``...::test_x[kmalloc-5-transient]``)."""
    name = metafunc.definition.name
    out: dict[MatrixCase, None] = {}
    for arg in metafunc.config.args:
        tail = str(arg).rpartition("::")[2]
        if not (tail.startswith(name + "[") and tail.endswith("]")):
            continue
        for m in _CASE_RE.finditer(tail[len(name) + 1:-1]):
            try:
                case = parse_case_id(m.group(1))
            except ValueError:
                continue
            if case.site in args.sites and case.mode in args.modes:
                out[case] = None
    return list(out)


# ------------------------------------------------------------------------- expansion
def _clone(item: Any, case: MatrixCase | None = None) -> Any:
    """Another item of the same test function and parameters; with *case*, its
    ``fault-free`` parameter (value and id) replaced by the case.  pytest builds ids and
    node ids from the item's callspec, so the copy gets the case there too (the callspec
    is frozen: its two fields are set on the copy directly)."""
    callspec = item.callspec
    if case is not None:
        callspec = copy.copy(callspec)
        idlist = [case.id if i == FAULT_FREE_ID else i for i in callspec._idlist]
        object.__setattr__(callspec, "_idlist", idlist)
        object.__setattr__(callspec, "params", {**callspec.params, "fake_mm": case})
    name = f"{item.originalname}[{callspec.id}]"
    clone = type(item).from_parent(item.parent, name=name, callspec=callspec,
                                   fixtureinfo=item._fixtureinfo, keywords={callspec.id: True},
                                   originalname=item.originalname)
    marked = item.stash.get(MARKED_CONFIG_KEY, None)
    if marked is not None:              # the machine config resolved at collection
        clone.stash[MARKED_CONFIG_KEY] = marked
    return clone


def _probe(items: list[Any]) -> list[dict[str, int]]:
    """Run each fault-free item once, unreported (and, in a pytest-xdist worker whose
    coverage pytest-cov runs, unmeasured: see :func:`.covctx.unmeasured`), and return its
    site hits."""
    from _pytest.runner import runtestprotocol

    from .covctx import unmeasured
    probes = [_clone(it) for it in items]
    with unmeasured(items[0].config):
        for i, probe in enumerate(probes):
            runtestprotocol(probe, log=False, nextitem=probes[i + 1] if i + 1 < len(probes) else None)
    return [p.stash.get(REACH_KEY, {}) for p in probes]


def _plan(item: Any, reach: dict[str, int]) -> MatrixPlan:
    state = get_state(item.config)
    mark = item.get_closest_marker("pinfault_matrix")
    args = matrix_args(mark, state)
    if mark.args:
        sites = args.sites
    else:      # every site: those the run reached, in catalogue order
        sites = tuple(s for s in args.sites if reach.get(s))
    return sized_cases(sites, reach, args.max_nth, args.modes)


def expand_matrices(config: pytest.Config, items: list[Any]) -> None:
    """Replace ``items`` with the same items plus, after each matrix test's fault-free
    run, one item per case its probe sized (see the module docstring)."""
    fault_free = [it for it in items if is_fault_free(it)]
    if not fault_free:
        return
    reaches = _probe(fault_free)
    seen = {it.nodeid for it in items}
    added: dict[int, list[Any]] = {}
    for item, reach in zip(fault_free, reaches):
        plan = _plan(item, reach)
        item.stash[PLAN_KEY] = plan
        new = []
        for case in plan.cases:
            clone = _clone(item, case)
            if clone.nodeid in seen:
                continue
            seen.add(clone.nodeid)
            clone.stash[CASE_KEY] = case
            new.append(clone)
        added[id(item)] = new
    out = []
    for item in items:
        out.append(item)
        out.extend(added.get(id(item), ()))
    # pytest counted the items as collected before this hook: count the cases too, so
    # "collected N items" tells what will run
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and isinstance(getattr(reporter, "_numcollected", None), int):
        reporter._numcollected += len(out) - len(items)
    items[:] = out


# ------------------------------------------------------------------------- judgement
@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    ctl = item.stash.get(CONTROLLER_KEY, None)
    if ctl is None:
        return (yield)
    try:
        result = yield
    except FaultBudgetExceeded as e:
        _note_kernel(item, ctl)
        _trace_section(item, ctl, failed=True)
        _contract_section(item, ctl)
        raise pytest.fail.Exception(f"livelock: {e}", pytrace=False) from None
    except KernelHang as e:
        # the task would never return from that call: nothing after it can be judged
        _note_kernel(item, ctl)
        item.add_report_section("call", "kernel outcome", f"{e.outcome}\nthe test body ended at that call")
        failure = ctl.contract.hang_failure() if ctl.contract is not None else None
        if failure is not None:
            _trace_section(item, ctl, failed=True)
            raise pytest.fail.Exception(failure, pytrace=False) from None
        _trace_section(item, ctl, failed=False)
        item.stash[CALL_PASSED_KEY] = True
        return None
    except BaseException:
        _note_kernel(item, ctl)
        _trace_section(item, ctl, failed=True)
        _contract_section(item, ctl)
        raise
    _note_kernel(item, ctl)
    _judge_contract(item, ctl)
    _trace_section(item, ctl, failed=False)
    if ctl.case is not None:
        _judge_case(item, ctl)
    elif is_fault_free(item):
        _judge_fault_free(item, ctl)
    item.stash[CALL_PASSED_KEY] = True
    return result


def _note_kernel(item: pytest.Item, ctl: Pinfault) -> None:
    """Attach the kernel outcomes to the item now, so the call report carries them; the
    tasks they killed have exited with the test body (:func:`.fixtures.end_killed_tasks`)."""
    end_killed_tasks(ctl.fake_mm)
    outcomes = getattr(ctl.fake_mm, "kernel_outcomes", None)
    if outcomes and not any(k == KERNEL_PROP for k, _ in item.user_properties):
        item.user_properties.append((KERNEL_PROP, kernel_outcomes_json(outcomes)))


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


def _judge_fault_free(item: pytest.Item, ctl: Pinfault) -> None:
    """A matrix with no case tests nothing: fail its fault-free run, saying why."""
    plan = item.stash.get(PLAN_KEY, None)
    if plan is None or plan.cases:
        return
    hits = {s: n for s, n in sorted(ctl.injector.hits.items()) if n}
    seen = ", ".join(f"{s}={n}" for s, n in hits.items()) or "no fault site at all"
    covered = ", ".join(plan.sites) if plan.sites else "any fault site"
    pytest.fail(f"pinfault_matrix: no case to run: the fault-free run never reached {covered} "
                f"(it hit {seen}), so no fault can be injected there. The test does not drive the "
                f"code to those failure sites as set up: e.g. nothing needed migration (put the "
                f"buffer in CMA or ZONE_MOVABLE: mm_config cma=/movablecore= and fake_mm.steer(...)), "
                f"or the code under test never calls them.", pytrace=False)


def _killed(ctl: Pinfault) -> bool:
    return any(o.kind == "killed" for o in getattr(ctl.fake_mm, "kernel_outcomes", ()))


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
    killed = _killed(ctl)
    for ret in ctl.results:
        if killed and ret == -errno.EINTR:
            continue      # the kernel's outcome: the task was killed out of a loop it never leaves
        if not _accepted(args.accept, ret):
            pytest.fail(f"{case.id}: with {case.site} failing at hit {case.nth} ({case.mode}), the "
                        f"call returned {errno_text(ret)}; acceptable: {_acceptable(args.accept)}",
                        pytrace=False)


def _skip(reason: str) -> BaseException:
    """A skip reported at the test's location, not this module's."""
    try:
        return pytest.skip.Exception(reason, _use_item_location=True)  # type: ignore[call-arg,unused-ignore]  # private keyword, absent from some pytest versions' stubs
    except TypeError:   # pragma: no cover - pytest < 7: no item-location skips
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
