"""The fake mm against real kernels: every recorded outcome of every
``tests/conformance/linux-*.json``, replayed on the equivalent fake machine.

Nothing here knows what a kernel does: the expected values come from the recordings,
the scenario set from the recordings and docs/conformance.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .accepted import ACCEPTED
from .conftest import LOAD_ERROR, RECORDINGS, accepted_for, case_params
from .recordings import (LAYOUT, AcceptedDifference, RecordingError, compare, is_skip,
                         load_recordings, skip_reason)
from .replay import (ERRNO_CASES, MECHANISMS, THP_MECHANISMS, UDMABUF_DEVICES, fake_layout, new_machine,
                     real_layout, replay)

ROOT = Path(__file__).resolve().parents[2]
MEMS = ("anon", "shmem")
WHERES = ("movable", "cma")


def recorded_outcomes(series: str, scenario: str) -> dict:
    data = RECORDINGS[series]
    if scenario == LAYOUT:
        return real_layout(data["layout"])
    return data["scenarios"][scenario]


def test_model_matches_kernel(series, scenario, recording):
    real = recorded_outcomes(series, scenario)
    reason = skip_reason(series, scenario, real)
    if real and all(is_skip(v) for v in real.values()):
        pytest.skip(reason)
    if scenario == LAYOUT:
        fake = fake_layout(new_machine(series), recording["layout"])
    else:
        fake = replay(series, scenario)
    try:
        compare(series, scenario, real, fake, accepted_for(series, scenario))
    except AcceptedDifference:
        if reason:
            pytest.skip(reason)
        raise
    if reason:
        pytest.skip(reason)


# ----------------------------------------------------------------------------- the recordings

def expected_scenario_ids() -> set[str]:
    """The scenario ids of docs/conformance.md, as the replay knows them."""
    ids = {f"pin/{m}/{mem}/{w}" for m in MECHANISMS for mem in MEMS for w in WHERES}
    ids |= {f"pin/{m}/thp/{w}" for m in THP_MECHANISMS for w in WHERES}
    ids |= {f"udmabuf/{w}" for w in WHERES}
    ids |= {f"udmabuf-errno/{c}" for c in ERRNO_CASES}
    return ids


def test_recordings_load():
    assert LOAD_ERROR is None
    assert RECORDINGS, "no tests/conformance/linux-*.json recording"


@pytest.mark.parametrize("series", list(RECORDINGS))
def test_recording_covers_every_scenario(series):
    """A probe that could not run a scenario records ``skip:<reason>``, it does not drop it."""
    recorded = set(RECORDINGS[series]["scenarios"])
    assert sorted(expected_scenario_ids() - recorded) == [], f"{series}: scenarios missing"
    assert sorted(recorded - expected_scenario_ids()) == [], f"{series}: scenarios the replay does not know"


@pytest.mark.parametrize("series", list(RECORDINGS))
def test_udmabuf_model_chosen_for_series(series):
    assert series in UDMABUF_DEVICES


def test_errno_cases_match_the_doc():
    text = (ROOT / "docs" / "conformance.md").read_text()
    para = text[text.index("udmabuf errno cases"):]
    para = para[:para.index("\n\n")]
    doc_cases = {t for t in re.findall(r"`([^`]+)`", para) if re.fullmatch(r"[a-z][a-z-]*", t)}
    assert doc_cases == set(ERRNO_CASES)


def test_load_rejects_a_wrong_schema(tmp_path):
    (tmp_path / "linux-9.9.json").write_text('{"schema": "other", "kernel": {"series": "9.9"}}')
    with pytest.raises(RecordingError, match="schema"):
        load_recordings(tmp_path)


def test_load_rejects_a_misnamed_file(tmp_path):
    (tmp_path / "linux-9.9.json").write_text(
        '{"schema": "pytest-pinfault-conformance/1", "kernel": {"series": "9.8"}, "layout": {}, "scenarios": {}}')
    with pytest.raises(RecordingError, match="linux-9.8.json"):
        load_recordings(tmp_path)


# ----------------------------------------------------------------------------- accepted differences

def test_accepted_entries_name_recorded_keys():
    stale = []
    for (series, scenario, key), why in ACCEPTED.items():
        if not why.strip():
            stale.append(f"{series} {scenario} {key}: no reason given")
        elif series not in RECORDINGS:
            stale.append(f"{series} {scenario} {key}: no linux-{series}.json")
        elif scenario != LAYOUT and scenario not in RECORDINGS[series]["scenarios"]:
            stale.append(f"{series} {scenario} {key}: scenario not recorded")
        elif key not in recorded_outcomes(series, scenario):
            stale.append(f"{series} {scenario} {key}: key not recorded")
    assert stale == []


def conformance_section() -> str:
    text = (ROOT / "docs" / "kernel-map.md").read_text()
    start = text.index("## Conformance differences")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_kernel_map_lists_every_accepted_difference():
    section = conformance_section()
    missing = sorted({f"{s} {sid} {k}" for (s, sid, k) in ACCEPTED if f"`{sid}`" not in section})
    assert missing == [], "add these to 'Conformance differences' in docs/kernel-map.md"


def test_compare_message_names_kernel_scenario_and_both_outcomes():
    with pytest.raises(AssertionError) as exc:
        compare("6.1", "pin/vmsplice/anon/movable", {"pin": "ok", "offline_held": "EINTR"},
                {"pin": "ok", "offline_held": "EBUSY"}, {})
    assert str(exc.value) == "6.1 pin/vmsplice/anon/movable offline_held: real EINTR, fake EBUSY"
    assert not isinstance(exc.value, AcceptedDifference)


def test_compare_reports_a_missing_fake_outcome():
    with pytest.raises(AssertionError, match="real ok, fake \\(no such outcome\\)"):
        compare("6.1", "x", {"pin": "ok"}, {}, {})


def test_compare_skips_skip_values_only():
    assert compare("6.1", "x", {"pin": "skip:no io_uring", "moved": "all"}, {"moved": "all"}, {}) == ["moved"]
    assert skip_reason("6.1", "x", {"pin": "skip:no io_uring"}) == "6.1 x (pin): no io_uring"


def test_compare_accepted_difference_is_the_only_xfail_path():
    real, fake = {"a": "ok", "b": "EINTR"}, {"a": "ok", "b": "EBUSY"}
    with pytest.raises(AcceptedDifference, match="b: real EINTR, fake EBUSY"):
        compare("6.1", "x", real, fake, {"b": "why"})
    # another key differing too: an ordinary failure, the accepted one listed after it
    with pytest.raises(AssertionError) as exc:
        compare("6.1", "x", real, {"a": "EIO", "b": "EBUSY"}, {"b": "why"})
    assert not isinstance(exc.value, AcceptedDifference)
    assert str(exc.value).splitlines()[0] == "6.1 x a: real ok, fake EIO"
    # an accepted difference that went away: an ordinary failure asking to remove it
    with pytest.raises(AssertionError, match="remove it") as exc:
        compare("6.1", "x", real, {"a": "ok", "b": "EINTR"}, {"b": "why"})
    assert not isinstance(exc.value, AcceptedDifference)


def test_accepted_scenarios_are_strict_xfails(monkeypatch):
    from . import conftest
    series = next(iter(RECORDINGS))
    monkeypatch.setattr(conftest, "ACCEPTED",
                        {(series, "pin/vmsplice/anon/movable", "offline_held"): "because"})
    params = {p.id: p for p in case_params()}
    (mark,) = params[f"{series}:pin/vmsplice/anon/movable"].marks
    assert mark.name == "xfail"
    assert mark.kwargs == {"strict": True, "raises": AcceptedDifference, "reason": "offline_held: because"}
    assert params[f"{series}:layout"].marks == ()


# ----------------------------------------------------------------------------- the comparison has teeth
# Each test replays a recorded scenario on a deliberately wrong model and checks that the
# comparison against the real recording fails, naming both outcomes.

def _recorded(series: str, scenario: str) -> dict:
    if series not in RECORDINGS or scenario not in RECORDINGS[series]["scenarios"]:
        pytest.skip(f"no {series} recording of {scenario}")
    return RECORDINGS[series]["scenarios"][scenario]


def test_the_6_12_udmabuf_model_does_not_pass_for_6_1(monkeypatch):
    """6.1 keeps udmabuf pages in ZONE_MOVABLE; the v6.11+ driver model migrates them."""
    from . import replay as r
    real = _recorded("6.1", "udmabuf/movable")
    monkeypatch.setitem(r.UDMABUF_DEVICES, "6.1", r.UdmabufDevice)
    # on the 6.1 machine the v6.11+ driver cannot even run: no memfd_pin_folios there
    with pytest.raises(AttributeError, match="no memfd_pin_folios with kernel='6.1'"):
        r.replay("6.1", "udmabuf/movable")
    # on a machine that has it, it migrates, which 6.1 does not
    monkeypatch.setattr(r, "machine_for", lambda series: r.MACHINE.replace(kernel="6.12"))
    with pytest.raises(AssertionError) as exc:
        compare("6.1", "udmabuf/movable", real, r.replay("6.1", "udmabuf/movable"), {})
    assert f"6.1 udmabuf/movable moved: real {real['moved']}, fake all" in str(exc.value)


def test_a_model_whose_migration_fails_is_caught(monkeypatch):
    """A fake mm that cannot allocate migration targets (every alloc_migration_target
    fails) must disagree with the recorded long-term pin of CMA pages."""
    from . import replay as r
    real = _recorded("6.12", "pin/iouring/anon/cma")
    plain = r.new_machine

    def broken(series):
        k = plain(series)
        k.faults.arm_spec("alloc_migration_target=return(ENOMEM)")
        return k
    monkeypatch.setattr(r, "new_machine", broken)
    with pytest.raises(AssertionError) as exc:
        compare("6.12", "pin/iouring/anon/cma", real, r.replay("6.12", "pin/iouring/anon/cma"), {})
    assert f"6.12 pin/iouring/anon/cma pin: real {real['pin']}, fake ENOMEM" in str(exc.value)


def test_the_ideal_firmware_map_is_caught_by_the_layout(monkeypatch):
    import dataclasses

    from . import replay as r
    series = next(iter(RECORDINGS))
    monkeypatch.setattr(r, "MACHINE", dataclasses.replace(r.MACHINE, firmware="ideal"))
    real = real_layout(RECORDINGS[series]["layout"])
    with pytest.raises(AssertionError) as exc:
        compare(series, LAYOUT, real, fake_layout(r.new_machine(series), RECORDINGS[series]["layout"]), {})
    assert f"{series} layout zone.DMA.start_pfn: real 1, fake 0" in str(exc.value)


@pytest.mark.parametrize("series", list(RECORDINGS))
def test_each_recording_replays_at_its_own_version(series):
    """The replay machine of a recording follows that kernel version (6.1 -> kernel="6.1":
    no memfd_pin_folios there; 6.12 -> "6.12": the 6.12.y drain rule)."""
    from . import replay as r
    k = r.new_machine(series)
    assert k.config.kernel == series
    assert hasattr(k, "memfd_pin_folios") is k.config.kernel_at_least("6.11")
    assert k.config.has_quirk("gup_drain_on_unexpected_ref_only") is (series == "6.12")


def test_a_recording_of_an_unmodelled_series_is_refused():
    from . import replay as r
    with pytest.raises(LookupError, match=r"recording of kernel series '5.15': expected one of"):
        r.machine_for("5.15")
