"""Reporting: the header line, the per-site terminal summary and the JSON report.

Everything here is computed from the test reports' ``user_properties`` only
(``pinfault_hits``, ``pinfault_fired``, ``pinfault_case``, attached at teardown by the
``fake_mm`` fixture), so under pytest-xdist the controller sees exactly what a serial run
sees and the summaries agree.

JSON report schema ``pytest-pinfault/1`` (documented in docs/configuration.md)::

    {"schema": "pytest-pinfault/1", "version": "<pytest-pinfault>", "kernel": "6.17",
     "seed": 123, "faults": ["<global spec>", ...],
     "sites": {"<site>": {"hits": n, "injections": n, "tests": n, "failed": n,
                          "violations": n}, ...},
     "tests": [{"nodeid": "...", "outcome": "passed|failed|skipped", "case": "<id>|null",
                "hits": {"<site>": n}, "fired": [<FaultRecord.as_dict()>, ...],
                "violations": [{"rule": "<rule id>", "number": n, "message": "...",
                                "expected": bool}, ...]}, ...]}

A site's ``violations`` counts the tests that hit (or injected at) the site and had at
least one contract violation that failed them (``expected`` ones -- the rule of a
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
from .state import get_state

__all__ = ["SCHEMA", "Summary", "SUMMARY_KEY", "install_summary", "pytest_report_header",
           "pytest_terminal_summary", "pytest_sessionfinish", "pytest_configure_node"]

SCHEMA = "pytest-pinfault/1"
_PROPS = ("pinfault_hits", "pinfault_fired", "pinfault_case", VIOLATIONS_PROP)


class Summary:
    """Per-test fault data gathered from reports, and the per-site totals."""

    def __init__(self) -> None:
        self.tests: dict[str, dict[str, Any]] = {}
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
        if "pinfault_hits" not in props:
            return
        self.tests[nodeid] = {"nodeid": nodeid, "outcome": outcome, "case": props.get("pinfault_case"),
                              "hits": dict(props["pinfault_hits"]),
                              "fired": list(props.get("pinfault_fired", ())),
                              "violations": list(props.get(VIOLATIONS_PROP, ()))}

    def sites(self) -> dict[str, dict[str, int]]:
        rows: dict[str, dict[str, int]] = {}
        for test in self.tests.values():
            injections: dict[str, int] = {}
            for rec in test["fired"]:
                injections[rec["site"]] = injections.get(rec["site"], 0) + 1
            for site in set(test["hits"]) | set(injections):
                row = rows.setdefault(site, {"hits": 0, "injections": 0, "tests": 0, "failed": 0,
                                             "violations": 0})
                row["hits"] += test["hits"].get(site, 0)
                row["injections"] += injections.get(site, 0)
                row["tests"] += 1
                row["failed"] += test["outcome"] == "failed"
                row["violations"] += any(not v.get("expected") for v in test["violations"])
        return dict(sorted(rows.items()))

    def table(self) -> list[str]:
        rows = self.sites()
        width = max([len("site")] + [len(s) for s in rows])
        lines = [f"{'site':<{width}}  {'hits':>8}  {'injections':>10}  {'tests':>6}  {'failed':>6}  "
                 f"{'violations':>10}"]
        for site, r in rows.items():
            lines.append(f"{site:<{width}}  {r['hits']:>8}  {r['injections']:>10}  {r['tests']:>6}  "
                         f"{r['failed']:>6}  {r['violations']:>10}")
        return lines

    def as_json(self, seed: int, faults: list[str]) -> dict[str, Any]:
        return {"schema": SCHEMA, "version": __version__, "kernel": KERNEL_VERSION, "seed": seed,
                "faults": faults, "sites": self.sites(),
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
