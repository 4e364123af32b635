"""Reporting: the header line, the per-site terminal summary and the JSON report.

Everything here is computed from the test reports' ``user_properties`` only
(``pinfault_hits``, ``pinfault_fired``, ``pinfault_case``, ``pinfault_matrix``,
``pinfault_kernel``, attached by the ``fake_mm`` fixture and the call-phase hook), so
under pytest-xdist the controller sees exactly what a serial run sees and the summaries
agree.

A test is attributed to the sites it **injected** at (its matrix case's site and every
site that fired): a site's ``failed``, ``violations`` and ``kernel`` count those tests
only.  A failing test that merely hit a site (its fault was injected elsewhere, or
nowhere) is counted in that site's ``hit_in_failed``, apart.

JSON report schema ``pytest-pinfault/2`` (documented in docs/configuration.md)::

    {"schema": "pytest-pinfault/2", "version": "<pytest-pinfault>", "kernel": "6.17",
     "seed": 123, "faults": ["<global spec>", ...],
     "sites": {"<site>": {"hits": n, "injections": n, "tests": n, "failed": n,
                          "violations": n, "kernel": n, "hit_in_failed": n}, ...},
     "matrices": {"<nodeid of the fault-free run>": {"sites": [...], "reach": {"<site>": n},
                  "cap": n, "cases": n, "capped": {"<site>": hits}, "unreached": [...]}},
     "tests": [{"nodeid": "...", "outcome": "passed|failed|skipped|kernel",
                "case": "<id>|null", "injected": ["<site>", ...],
                "hits": {"<site>": n}, "fired": [<FaultRecord.as_dict()>, ...],
                "kernel": [<KernelOutcome.as_dict()>, ...],
                "violations": [{"rule": "<rule id>", "number": n, "message": "...",
                                "expected": bool}, ...]}, ...]}

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
from .fixtures import KERNEL_PROP
from .state import get_state

__all__ = ["SCHEMA", "Summary", "SUMMARY_KEY", "install_summary", "pytest_report_header",
           "pytest_terminal_summary", "pytest_sessionfinish", "pytest_configure_node",
           "pytest_report_teststatus"]

SCHEMA = "pytest-pinfault/2"
_PROPS = ("pinfault_hits", "pinfault_fired", "pinfault_case", "pinfault_matrix", KERNEL_PROP,
          VIOLATIONS_PROP)
_COLUMNS = ("hits", "injections", "tests", "failed", "violations", "kernel", "hit_in_failed")


def _case_site(case: str | None) -> str | None:
    if not case:
        return None
    return case.rsplit("#", 1)[0] if "#" in case else case.rsplit("-", 2)[0]


class Summary:
    """Per-test fault data gathered from reports, and the per-site totals."""

    def __init__(self) -> None:
        self.tests: dict[str, dict[str, Any]] = {}
        self.matrices: dict[str, dict[str, Any]] = {}
        self._outcome: dict[str, str] = {}

    def add(self, report: pytest.TestReport) -> None:
        nodeid = report.nodeid
        if report.failed:
            self._outcome[nodeid] = "failed"
        elif report.skipped and self._outcome.get(nodeid) != "failed":
            self._outcome[nodeid] = "skipped"
        if report.when != "teardown":
            return
        outcome = self._outcome.pop(nodeid, "passed")
        props = {k: v for k, v in report.user_properties if k in _PROPS}
        if "pinfault_matrix" in props:
            self.matrices[nodeid] = dict(props["pinfault_matrix"])
        if "pinfault_hits" not in props:
            return
        kernel = list(props.get(KERNEL_PROP, ()))
        if outcome == "passed" and kernel:
            outcome = "kernel"
        fired = list(props.get("pinfault_fired", ()))
        injected = {rec["site"] for rec in fired}
        site = _case_site(props.get("pinfault_case"))
        if site is not None and fired:
            injected.add(site)
        self.tests[nodeid] = {"nodeid": nodeid, "outcome": outcome, "case": props.get("pinfault_case"),
                              "injected": sorted(injected),
                              "hits": dict(props["pinfault_hits"]), "fired": fired, "kernel": kernel,
                              "violations": list(props.get(VIOLATIONS_PROP, ()))}

    def sites(self) -> dict[str, dict[str, int]]:
        rows: dict[str, dict[str, int]] = {}
        for test in self.tests.values():
            injections: dict[str, int] = {}
            for rec in test["fired"]:
                injections[rec["site"]] = injections.get(rec["site"], 0) + 1
            failed = test["outcome"] == "failed"
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
            if t["outcome"] != "failed":
                continue
            recs = [r for r in t["fired"] if r.get("fired")]
            if recs:
                first = recs[0]
                what = f"injected {first['site']}#{first['occurrence']}"
                if first.get("errno_name"):
                    what += f" {first['errno_name']}"
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
        return {"schema": SCHEMA, "version": __version__, "kernel": KERNEL_VERSION, "seed": seed,
                "faults": faults, "sites": self.sites(),
                "matrices": {k: self.matrices[k] for k in sorted(self.matrices)},
                "tests": [self.tests[k] for k in sorted(self.tests)]}


SUMMARY_KEY = pytest.StashKey[Summary]()


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_report_header(config: pytest.Config) -> str:
    return f"pinfault: seed={get_state(config).settings.seed} kernel={KERNEL_VERSION} (pytest-pinfault {__version__})"


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

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.summary.add(report)


def install_summary(config: pytest.Config) -> None:
    if _is_worker(config):
        return
    summary = Summary()
    config.stash[SUMMARY_KEY] = summary
    config.pluginmanager.register(SummaryPlugin(summary), "pinfault-summary")
