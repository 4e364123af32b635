"""The model side of the conformance suite: one test per (kernel series, scenario id)
of every ``linux-*.json`` recording in this directory (docs/conformance.md).

Ids look like ``6.1:pin/vmsplice/anon/movable`` and ``6.12:layout``.  Scenarios with an
entry in :data:`accepted.ACCEPTED` carry ``xfail(strict=True)``, raising only on
:class:`recordings.AcceptedDifference`, so any other mismatch still fails.
"""

from __future__ import annotations

import pytest

from .accepted import ACCEPTED
from .recordings import AcceptedDifference, RecordingError, case_id, cases, load_recordings

try:
    RECORDINGS = load_recordings()
    LOAD_ERROR = None
except RecordingError as e:         # reported by test_recordings_load, not a collection error
    RECORDINGS, LOAD_ERROR = {}, str(e)


def accepted_for(series: str, scenario: str) -> dict[str, str]:
    """``{key: reason}`` of the accepted differences of one scenario."""
    return {k: why for (s, sid, k), why in ACCEPTED.items() if s == series and sid == scenario}


def case_params(recordings=RECORDINGS) -> list:
    params = []
    for series, scenario in cases(recordings):
        acc = accepted_for(series, scenario)
        marks = ()
        if acc:
            reason = "; ".join(f"{k}: {why}" for k, why in sorted(acc.items()))
            marks = (pytest.mark.xfail(strict=True, raises=AcceptedDifference, reason=reason),)
        params.append(pytest.param(series, scenario, marks=marks, id=case_id(series, scenario)))
    return params


def pytest_generate_tests(metafunc):
    if {"series", "scenario"} <= set(metafunc.fixturenames):
        metafunc.parametrize(("series", "scenario"), case_params())


def pytest_report_header(config, start_path=None):
    if not RECORDINGS:
        return None
    kinds = [f"{s}{' (draft)' if d.get('draft') else ''}" for s, d in RECORDINGS.items()]
    return f"conformance recordings: {', '.join(kinds)}"


@pytest.fixture
def recording(series):
    """The result file of the case's kernel series."""
    return RECORDINGS[series]
