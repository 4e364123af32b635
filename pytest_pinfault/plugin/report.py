"""Reporting: the header line, the per-site terminal summary and the JSON report.

Everything here is computed from the test reports' ``user_properties`` only
(``pinfault_hits``, ``pinfault_fired``, ``pinfault_case``, ``pinfault_matrix``,
``pinfault_kernel``, ``pinfault_kernel_version``, attached by the ``fake_mm`` fixture and the call-phase hook;
``pinfault_machines`` and ``pinfault_kernel_versions`` too for a test that used
``pinfault_machine``, whose blocks' data is gathered by :func:`.machine.attach_machines`), so
under pytest-xdist the controller sees exactly what a serial run sees and the summaries
agree.

A test is attributed to the sites it **injected** at (its matrix case's site and every
site that fired): a site's ``failed``, ``violations`` and ``kernel`` count those tests
only.  A failing test that merely hit a site (its fault was injected elsewhere, or
nowhere) is counted in that site's ``hit_in_failed``, apart.

JSON report schema ``pytest-pinfault/3`` (documented in docs/configuration.md, JSON
Schema in ``pytest_pinfault/report/schema-3.json``)::

    {"schema": "pytest-pinfault/3", "version": "<pytest-pinfault>", "kernel": "6.17",
     "kernels": ["6.1", "6.17"], "seed": 123, "faults": ["<global spec>", ...],
     "sites": {"<site>": {"hits": n, "injections": n, "tests": n, "failed": n,
                          "violations": n, "kernel": n, "hit_in_failed": n}, ...},
     "matrices": {"<nodeid of the fault-free run>": {"sites": [...], "reach": {"<site>": n},
                  "cap": n, "cases": n, "capped": {"<site>": hits}, "unreached": [...]}},
     "tests": [{"nodeid": "...", "kernel_version": "6.1",
                "outcome": "passed|failed|error|skipped|xfailed|xpassed|kernel",
                "case": "<id>|null", "injected": ["<site>", ...],
                "hits": {"<site>": n}, "fired_total": n,
                "fired": [<FaultRecord.as_dict()>, ...],     # the first FIRED_CAP
                "kernel": [<KernelOutcome.as_dict()>, ...],
                "violations_total": n,
                "violations": [{"rule": "<rule id>", "number": n, "message": "...",
                                "expected": bool}, ...],      # the first VIOLATIONS_CAP
                "machines": n, "kernel_versions": [...]}, ...]}   # optional, see below

Top-level ``kernel`` is the default version (:data:`~pytest_pinfault.KERNEL_VERSION`, what
``MMConfig()`` follows), whatever the tests ran on; ``kernels`` lists the versions the
reported tests' machines followed, oldest first, and a test's ``kernel_version`` is its
``fake_mm``'s ``config.kernel`` (the ``mm_config``/``pinfault_kernels``/``--pinfault-kernel``
choice; null in a report merged from a worker that did not record it).  The test entry's
``kernel`` is its list of kernel outcomes, not a version.  New keys do not bump the
schema number (docs/configuration.md), so ``kernels`` and ``kernel_version`` are optional
in ``schema-3.json``.

A test that used ``pinfault_machine`` has ``machines`` (how many machine blocks ended);
its ``hits`` are summed over them and every ``fired``, ``kernel`` and ``violations`` record
that came from a machine names its 1-based block as ``machine``; ``case`` is null (a
matrix parametrizes ``fake_mm`` only).  ``kernel_versions`` lists the versions when the
test's machines (and ``fake_mm``) followed several; ``kernel_version`` is null then.

``outcome``: ``error`` -- the setup failed; ``xfailed`` / ``xpassed`` -- an ``xfail`` test
that failed / passed (a strict xpass is ``failed``); a failing teardown (the final
contract check) makes a passed test ``failed``.  ``caller`` paths are relative to the
rootdir when inside it; strings are capped at :data:`VALUE_CAP` characters and ``fired`` at
:data:`FIRED_CAP` records (``fired_total`` counts them all).

``outcome`` ``kernel``: the test passed, and a kernel retry loop that an injected fault
kept failing was the kernel's own outcome (the task killed out of it, or never
returning).  A site's ``violations`` counts the tests that injected at the site and had
at least one contract violation that failed them (``expected`` ones -- the rule of a
``pin_contract(expect=...)`` marker -- are listed in the test but not counted).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest

from .. import KERNEL_VERSION, __version__
from .contract import VIOLATIONS_PROP
from ..mm.config import kernel_key
from .fixtures import KERNEL_PROP, KERNEL_VERSION_PROP, KERNEL_VERSIONS_PROP, MACHINES_PROP
from .state import get_state

__all__ = ["SCHEMA", "VALUE_CAP", "FIRED_CAP", "VIOLATIONS_CAP", "cap_text", "junit_text", "Summary", "SUMMARY_KEY", "install_summary", "pytest_report_header",
           "pytest_terminal_summary", "pytest_sessionfinish", "pytest_configure_node",
           "pytest_report_teststatus"]

SCHEMA = "pytest-pinfault/3"
#: the most characters of one junit-xml property value, or of one string in the JSON report
VALUE_CAP = 1024
#: the most fired records listed per test in the JSON report (``fired_total`` counts all)
FIRED_CAP = 50
#: the most violations listed per test in the JSON report (``violations_total`` counts all;
#: a Hypothesis test's machines can find one per example while it shrinks)
VIOLATIONS_CAP = 50
_PROPS = ("pinfault_hits", "pinfault_fired", "pinfault_case", "pinfault_matrix", KERNEL_PROP,
          KERNEL_VERSION_PROP, KERNEL_VERSIONS_PROP, MACHINES_PROP, VIOLATIONS_PROP)
_COLUMNS = ("hits", "injections", "tests", "failed", "violations", "kernel", "hit_in_failed")


def _case_site(case: str | None) -> str | None:
    if not case:
        return None
    return case.rsplit("#", 1)[0] if "#" in case else case.rsplit("-", 2)[0]


def cap_text(text: str, cap: int = VALUE_CAP) -> str:
    """``text`` if it has at most ``cap`` characters, else its head and a marker saying how
    many characters were cut; the result never exceeds ``cap``."""
    if len(text) <= cap:
        return text
    cut = len(text) - cap
    while True:
        marker = f" ...[{cut} more chars cut]"
        if len(text) - (cap - len(marker)) == cut:
            return text[:cap - len(marker)] + marker
        cut = len(text) - (cap - len(marker))


def _rel(path_text: str, root: str) -> str:
    """A ``file:line function`` caller (or a path) relative to ``root`` when inside it."""
    prefix = root.rstrip(os.sep) + os.sep
    return path_text[len(prefix):] if root and path_text.startswith(prefix) else path_text


def _rel_record(rec: Any, root: str) -> Any:
    """``rec`` with its ``caller`` relative to ``root``, and ``root`` taken out of the
    paths its ``message`` names."""
    if not isinstance(rec, dict) or not root:
        return rec
    out = dict(rec)
    if isinstance(out.get("caller"), str):
        out["caller"] = _rel(out["caller"], root)
    if isinstance(out.get("message"), str):
        out["message"] = out["message"].replace(root.rstrip(os.sep) + os.sep, "")
    return out


def _capped(value: Any) -> Any:
    """Every string inside ``value`` capped at :data:`VALUE_CAP` characters."""
    if isinstance(value, str):
        return cap_text(value)
    if isinstance(value, dict):
        return {k: _capped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_capped(v) for v in value]
    return value


def _short(rec: dict[str, Any]) -> str:
    text = f"{rec.get('site')}#{rec.get('occurrence')}"
    if rec.get("errno_name"):
        text += f" {rec['errno_name']}"
    if rec.get("caller"):
        text += f" at {rec['caller']}"
    if rec.get("machine"):
        text += f" (machine {rec['machine']})"
    return text


def junit_text(name: str, value: Any, root: str = "") -> str:
    """The readable, capped text a junit-xml property shows for a pinfault value:
    ``site=n, ...`` for hits, ``site#N -ERRNO at file:line function; ...`` for fired
    records, ``rule: message; ...`` for violations, ``message; ...`` for kernel
    outcomes, compact JSON otherwise."""
    if isinstance(value, str):
        text = value
    elif name == "pinfault_hits" and isinstance(value, dict):
        text = ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    elif name == "pinfault_fired" and isinstance(value, list):
        text = "; ".join(_short(_rel_record(r, root)) if isinstance(r, dict) else str(r)
                         for r in value) or "none"
    elif name == VIOLATIONS_PROP and isinstance(value, list):
        text = "; ".join(f"{v.get('rule')}{' (expected)' if v.get('expected') else ''}: "
                         f"{_rel_record(v, root).get('message')}" if isinstance(v, dict) else str(v)
                         for v in value) or "none"
    elif name == KERNEL_PROP and isinstance(value, list):
        text = "; ".join(str(_rel_record(o, root).get("message")) if isinstance(o, dict) else str(o)
                         for o in value) or "none"
    else:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return cap_text(text)


class _JunitDict(dict):   # type: ignore[type-arg]
    """A property value that stays the plain data for Python readers but shows
    :func:`junit_text` to ``str()`` (what junit-xml writes)."""
    text = ""

    def __str__(self) -> str:
        return self.text


class _JunitList(list):   # type: ignore[type-arg]
    text = ""

    def __str__(self) -> str:
        return self.text


def readable_properties(report: pytest.TestReport, root: str) -> None:
    """Give the pinfault values in ``report.user_properties`` a readable, capped ``str``
    (junit-xml writes ``str(value)``); they stay equal to the plain data."""
    props = getattr(report, "user_properties", None)
    if not props:
        return
    for i, (name, value) in enumerate(props):
        if name not in _PROPS or type(value) not in (dict, list):
            continue
        wrapped: Any = _JunitDict(value) if isinstance(value, dict) else _JunitList(value)
        wrapped.text = junit_text(name, value, root)
        props[i] = (name, wrapped)


class Summary:
    """Per-test fault data gathered from reports, and the per-site totals."""

    def __init__(self, root: str = "") -> None:
        self.tests: dict[str, dict[str, Any]] = {}
        self.matrices: dict[str, dict[str, Any]] = {}
        self._outcome: dict[str, str] = {}
        self.root = root

    def add(self, report: pytest.TestReport) -> None:
        nodeid = report.nodeid
        xfail = hasattr(report, "wasxfail")
        if report.failed:
            if report.when == "setup":
                self._outcome[nodeid] = "error"
            elif self._outcome.get(nodeid) != "error":
                self._outcome[nodeid] = "failed"
        elif report.skipped and self._outcome.get(nodeid) not in ("failed", "error"):
            self._outcome[nodeid] = "xfailed" if xfail else "skipped"
        elif report.passed and report.when == "call" and xfail:
            self._outcome[nodeid] = "xpassed"
        if report.when != "teardown":
            return
        outcome = self._outcome.pop(nodeid, "passed")
        props: dict[str, Any] = {k: v for k, v in report.user_properties if k in _PROPS}
        if "pinfault_matrix" in props:
            self.matrices[nodeid] = dict(props["pinfault_matrix"])
        if "pinfault_hits" not in props:
            return
        kernel = [_rel_record(o, self.root) for o in props.get(KERNEL_PROP, ())]
        if outcome == "passed" and kernel:
            outcome = "kernel"
        fired = [_rel_record(r, self.root) for r in props.get("pinfault_fired", ())]
        injected = {rec["site"] for rec in fired}
        site = _case_site(props.get("pinfault_case"))
        if site is not None and fired:
            injected.add(site)
        test = {"nodeid": nodeid, "kernel_version": props.get(KERNEL_VERSION_PROP),
                "outcome": outcome, "case": props.get("pinfault_case"),
                "injected": sorted(injected),
                "hits": dict(props["pinfault_hits"]), "fired": fired, "kernel": kernel,
                "violations": [_rel_record(v, self.root) for v in props.get(VIOLATIONS_PROP, ())]}
        if MACHINES_PROP in props:                 # the test used pinfault_machine
            test["machines"] = props[MACHINES_PROP]
        if props.get(KERNEL_VERSIONS_PROP):        # its machines followed several versions
            test["kernel_versions"] = list(props[KERNEL_VERSIONS_PROP])
        self.tests[nodeid] = test

    def sites(self) -> dict[str, dict[str, int]]:
        rows: dict[str, dict[str, int]] = {}
        for test in self.tests.values():
            injections: dict[str, int] = {}
            for rec in test["fired"]:
                injections[rec["site"]] = injections.get(rec["site"], 0) + 1
            failed = test["outcome"] in ("failed", "error")
            violated = any(not v.get("expected") for v in test["violations"])
            for site in set(test["hits"]) | set(injections):
                row = rows.setdefault(site, dict.fromkeys(_COLUMNS, 0))
                row["hits"] += test["hits"].get(site, 0)
                row["injections"] += injections.get(site, 0)
                row["tests"] += 1
                if site in test["injected"]:
                    row["failed"] += failed
                    row["violations"] += violated
                    row["kernel"] += test["outcome"] == "kernel"
                else:
                    row["hit_in_failed"] += failed
        return dict(sorted(rows.items()))

    def table(self) -> list[str]:
        rows = self.sites()
        width = max([len("site")] + [len(s) for s in rows])
        heads = ("hits", "injections", "tests", "failed", "violations", "kernel", "hit-in-failed")
        lines = [f"{'site':<{width}}  " + "  ".join(f"{h:>{max(6, len(h))}}" for h in heads)]
        for site, r in rows.items():
            lines.append(f"{site:<{width}}  " + "  ".join(f"{r[c]:>{max(6, len(h))}}"
                                                         for c, h in zip(_COLUMNS, heads)))
        return lines

    def failing(self) -> list[str]:
        """One line per failing test: the fault it injected (or none) and its rules."""
        lines = []
        for nodeid in sorted(self.tests):
            t = self.tests[nodeid]
            if t["outcome"] not in ("failed", "error"):
                continue
            recs = [r for r in t["fired"] if r.get("fired")]
            if recs:
                first = recs[0]
                what = f"injected {first['site']}#{first['occurrence']}"
                if first.get("errno_name"):
                    what += f" {first['errno_name']}"
                if first.get("machine"):
                    what += f" in machine {first['machine']}"
                if len(recs) > 1:
                    what += f" (+{len(recs) - 1} more firing{'s' if len(recs) > 2 else ''})"
            else:
                what = "no fault injected"
            rules = sorted({v["rule"] for v in t["violations"] if not v.get("expected")})
            lines.append(f"{nodeid}: {what}" + (f"; violated {', '.join(rules)}" if rules else ""))
        return lines

    def kernel_lines(self) -> list[str]:
        lines = []
        for nodeid in sorted(self.tests):
            t = self.tests[nodeid]
            after = " -- and the test failed on what the driver did next" if t["outcome"] == "failed" else ""
            lines += [f"{nodeid}: {o['message']}{after}" for o in t["kernel"]]
        return lines

    def matrix_lines(self) -> list[str]:
        lines = []
        for nodeid in sorted(self.matrices):
            m = self.matrices[nodeid]
            base = nodeid.rsplit("[", 1)[0]
            for site, hits in sorted(m.get("capped", {}).items()):
                lines.append(f"cap: {base}: {site} reached {hits} times, occurrences 1-{m['cap']} tested "
                             f"(raise max_nth= or --pinfault-max-nth to test the other {hits - m['cap']})")
            unreached = m.get("unreached", [])
            if unreached and m.get("cases"):
                lines.append(f"not reached: {base}: {', '.join(unreached)} (the fault-free run never hit "
                             f"{'it' if len(unreached) == 1 else 'them'}: no case)")
        return lines

    def as_json(self, seed: int, faults: list[str]) -> dict[str, Any]:
        kernels = sorted({v for t in self.tests.values()
                          for v in [t["kernel_version"], *t.get("kernel_versions", ())] if v},
                         key=kernel_key)
        return {"schema": SCHEMA, "version": __version__, "kernel": KERNEL_VERSION, "kernels": kernels,
                "seed": seed, "faults": faults, "sites": self.sites(),
                "matrices": {k: self.matrices[k] for k in sorted(self.matrices)},
                "tests": [self._test_json(self.tests[k]) for k in sorted(self.tests)]}

    @staticmethod
    def _test_json(test: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = _capped(test)
        out["fired_total"] = len(test["fired"])
        out["fired"] = out["fired"][:FIRED_CAP]
        out["violations_total"] = len(test["violations"])
        out["violations"] = out["violations"][:VIOLATIONS_CAP]
        return out


SUMMARY_KEY = pytest.StashKey[Summary]()


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_report_header(config: pytest.Config) -> str:
    settings = get_state(config).settings
    kernel = ",".join(settings.kernels) if settings.kernels else settings.base_config.kernel
    return f"pinfault: seed={settings.seed} kernel={kernel} (pytest-pinfault {__version__})"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: hand the controller's seed to every worker."""
    node.workerinput["pinfault_seed"] = get_state(node.config).settings.seed


def pytest_report_teststatus(report: Any, config: pytest.Config) -> Any:
    """A passing test whose outcome was the kernel's (a loop it never leaves) shows as
    ``K`` / ``KERNEL`` and is counted apart in pytest's final line."""
    if report.when == "call" and report.passed and any(k == KERNEL_PROP for k, _ in
                                                       getattr(report, "user_properties", ())):
        return "kernel", "K", ("KERNEL", {"yellow": True})
    return None


def _summary(config: pytest.Config) -> Summary | None:
    return config.stash.get(SUMMARY_KEY, None)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    packages = config.getoption("pinfault_errpaths", None)
    if packages and not _is_worker(config):
        from .covctx import errpaths_summary
        errpaths_summary(config, terminalreporter, [p for p in packages.split(",") if p.strip()])
    summary = _summary(config)
    if summary is None or not summary.tests:
        return
    terminalreporter.section("pinfault: fault sites")
    if not summary.sites():
        terminalreporter.line("no fault site was hit (hits are counted in tests that arm a fault, "
                              "or in every test with --pinfault-trace=on)")
    for line in summary.table():
        terminalreporter.line(line)
    for title, lines in (("failing tests by the fault they injected:", summary.failing()),
                         ("kernel outcomes (the kernel itself never leaves the loop; not a driver "
                          "fault):", summary.kernel_lines()),
                         ("pinfault_matrix:", summary.matrix_lines())):
        if lines:
            terminalreporter.line(title)
            for line in lines:
                terminalreporter.line(f"  {line}")
    path = get_state(config).settings.json_path
    if path:
        terminalreporter.line(f"pinfault JSON report: {path}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    state = get_state(config)
    path = state.settings.json_path
    summary = _summary(config)
    if not path or summary is None:
        return
    data = summary.as_json(state.settings.seed, [s.text for s in state.settings.faults])
    full = os.path.join(str(config.invocation_params.dir), path)
    try:
        os.makedirs(os.path.dirname(full) or ".", exist_ok=True)
        with open(full, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
    except OSError as e:   # checked at start-up; the disk filled or a directory went away
        tr = config.pluginmanager.get_plugin("terminalreporter")
        msg = f"ERROR: --pinfault-json: cannot write the report to {path!r}: {e.strerror or e}"
        if tr is not None:
            tr.write_line(msg, red=True, bold=True)
        else:
            print(msg, file=sys.stderr)
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR


class SummaryPlugin:
    """Registered on the controlling process only (not on pytest-xdist workers)."""

    def __init__(self, summary: Summary) -> None:
        self.summary = summary

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.summary.add(report)
        readable_properties(report, self.summary.root)


def install_summary(config: pytest.Config) -> None:
    if _is_worker(config):
        return
    summary = Summary(str(config.rootpath))
    config.stash[SUMMARY_KEY] = summary
    config.pluginmanager.register(SummaryPlugin(summary), "pinfault-summary")
