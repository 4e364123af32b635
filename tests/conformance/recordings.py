"""Loading the kernel recordings (``linux-<series>.json``) and judging the fake against
them.  The schema is docs/conformance.md's "Result file"."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

from pytest_pinfault.conformance import ConformanceError, load_result

HERE = Path(__file__).parent
LAYOUT = "layout"                 # the pseudo scenario id of the layout comparison
_MISSING = "(no such outcome)"


class RecordingError(ValueError):
    """A result file that does not follow the schema."""


class AcceptedDifference(AssertionError):
    """The fake differs from the kernel on exactly the keys accepted for the scenario."""


def series_key(series: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in series.split("."))


def load_recordings(directory: Path = HERE) -> dict[str, dict]:
    """``{series: result file}`` for every ``linux-*.json`` in *directory*, oldest
    series first."""
    out: dict[str, dict] = {}
    for path in sorted(directory.glob("linux-*.json")):
        try:
            data = load_result(path)          # JSON, schema, layout and scenarios mappings
        except ConformanceError as e:
            raise RecordingError(f"{path.name}: {e}") from None
        series = str(data.get("kernel", {}).get("series", ""))
        if path.name != f"linux-{series}.json":
            raise RecordingError(f"{path.name}: kernel.series is {series!r}; expected the file to be "
                                 f"linux-{series}.json")
        for sid, outcomes in data["scenarios"].items():
            if not isinstance(outcomes, dict) or not all(isinstance(v, str) for v in outcomes.values()):
                raise RecordingError(f"{path.name}: scenario {sid!r}: expected a flat mapping of key to string")
        out[series] = data
    return dict(sorted(out.items(), key=lambda kv: series_key(kv[0])))


def cases(recordings: Mapping[str, dict]) -> Iterator[tuple[str, str]]:
    """``(series, scenario id)`` for the layout and every recorded scenario."""
    for series, data in recordings.items():
        yield series, LAYOUT
        for sid in data["scenarios"]:
            yield series, sid


def case_id(series: str, scenario: str) -> str:
    return f"{series}:{scenario}"


def is_skip(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("skip:")


def skip_reason(series: str, scenario: str, outcomes: Mapping[str, Any]) -> str | None:
    """The reason to skip (part of) a scenario: the recording's ``skip:<reason>``
    values, or None when nothing was skipped."""
    reasons = sorted({v[len("skip:"):] for v in outcomes.values() if is_skip(v)})
    if not reasons:
        return None
    keys = sorted(k for k, v in outcomes.items() if is_skip(v))
    return f"{series} {scenario} ({', '.join(keys)}): {'; '.join(reasons)}"


def compare(series: str, scenario: str, real: Mapping[str, Any], fake: Mapping[str, Any],
            accepted: Mapping[str, str]) -> list[str]:
    """Compare every recorded key (``skip:`` values aside).

    Raises ``AssertionError`` listing each mismatch that is not accepted
    (``6.1 pin/vmsplice/anon/movable offline_held: real EINTR, fake EBUSY``) and each
    accepted key that now agrees; else :class:`AcceptedDifference` when the accepted
    keys (all of them) differ.  Returns the keys that were compared.
    """
    bad: list[str] = []
    hits: list[str] = []
    compared = []
    for key, rv in real.items():
        if is_skip(rv):
            continue
        compared.append(key)
        fv = fake.get(key, _MISSING)
        line = f"{series} {scenario} {key}: real {rv}, fake {fv}"
        if rv != fv:
            (hits if key in accepted else bad).append(line)
        elif key in accepted:
            bad.append(f"{series} {scenario} {key}: real and fake agree ({rv}), but it is an accepted "
                       f"difference ({accepted[key]}): remove it from tests/conformance/accepted.py "
                       f"and docs/kernel-map.md")
    for key in accepted:
        if key not in real:
            bad.append(f"{series} {scenario} {key}: accepted difference for a key that is not recorded")
    if bad:
        raise AssertionError("\n".join(bad + [f"(accepted) {h}" for h in hits]))
    if hits:
        raise AcceptedDifference("\n".join(hits))
    return compared
