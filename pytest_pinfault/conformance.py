"""Result files of the real-kernel conformance recordings (see docs/conformance.md).

Pure standard library; never imports pytest.  The recorder (``conformance/record.py``)
turns a guest's serial console into a result dict with :func:`parse_console`, and the
tests compare recordings through :func:`qualitative` / :func:`diff_results`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

SCHEMA = "pytest-pinfault-conformance/1"

__all__ = ["SCHEMA", "ConformanceError", "parse_console", "qualitative", "diff_results",
           "load_result", "dump_result"]


class ConformanceError(ValueError):
    """A serial log or result file that does not follow docs/conformance.md."""


def _words(lineno: int, line: str, words: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key or not value:
            raise ConformanceError(f"line {lineno}: malformed PF line (word {word!r} is not key=value): {line!r}")
        if key in out:
            raise ConformanceError(f"line {lineno}: malformed PF line (key {key!r} twice): {line!r}")
        out[key] = value
    return out


def _fields(lineno: int, line: str, kv: dict[str, str], keys: str, ints: str) -> dict[Any, Any]:
    """Check ``kv`` has exactly ``keys`` (space-separated); convert ``ints`` to int."""
    if set(kv) != set(keys.split()):
        raise ConformanceError(f"line {lineno}: malformed PF line (expected keys {keys.split()}, "
                               f"got {list(kv)}): {line!r}")
    try:
        return {k: (int(v) if k in ints.split() else v) for k, v in kv.items()}
    except ValueError:
        raise ConformanceError(f"line {lineno}: malformed PF line (not an integer): {line!r}") from None


def parse_console(text: str) -> dict[Any, Any]:
    """Parse the ``"PF "`` lines of a serial log into a partial result dict.

    Returns ``{"schema", "layout": {"zones", "cma", "block_pages", "baseline"},
    "scenarios"}`` as described in docs/conformance.md (``kernel`` and ``machine`` are the
    recorder's to add).  Lines not starting with ``"PF "`` (``\\r`` stripped) are ignored, as
    is everything after the first ``PF done``.  Raises :class:`ConformanceError` naming the
    1-based line number and the line for a malformed PF line, a duplicate zone / CMA area /
    baseline block / scenario id, and for a log without ``PF done``.
    """
    layout: dict[Any, Any] = {"zones": {}, "cma": {}, "block_pages": None, "baseline": {}}
    scenarios: dict[str, dict[str, str]] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.startswith("PF "):
            continue
        words = line.split()[1:]
        kind, rest = (words[0], words[1:]) if words else ("", [])
        if kind == "done" and not rest:
            break
        if kind == "layout" and rest:
            kv = _words(lineno, line, rest)
            if "zone" in kv:
                name, table = kv.pop("zone"), layout["zones"]
                vals = _fields(lineno, line, kv, "start_pfn spanned present", "start_pfn spanned present")
            elif "cma" in kv:
                name, table = kv.pop("cma"), layout["cma"]
                vals = _fields(lineno, line, kv, "base_pfn count", "base_pfn count")
            elif "block_pages" in kv:
                if layout["block_pages"] is not None:
                    raise ConformanceError(f"line {lineno}: duplicate block_pages: {line!r}")
                layout["block_pages"] = _fields(lineno, line, kv, "block_pages", "block_pages")["block_pages"]
                continue
            else:
                raise ConformanceError(f"line {lineno}: malformed PF line (unknown layout record): {line!r}")
            if name in table:
                raise ConformanceError(f"line {lineno}: duplicate layout entry {name!r}: {line!r}")
            table[name] = vals
        elif kind == "baseline":
            vals = _fields(lineno, line, _words(lineno, line, rest), "block first_pfn offline", "block first_pfn")
            key = str(vals["first_pfn"])
            if key in layout["baseline"]:
                raise ConformanceError(f"line {lineno}: duplicate baseline block first_pfn={key}: {line!r}")
            layout["baseline"][key] = vals["offline"]
        elif kind == "scenario":
            kv = _words(lineno, line, rest)
            sid = kv.pop("id", None)
            if sid is None:
                raise ConformanceError(f"line {lineno}: malformed PF line (scenario without id=): {line!r}")
            if sid in scenarios:
                raise ConformanceError(f"line {lineno}: duplicate scenario id {sid!r}: {line!r}")
            scenarios[sid] = kv
        else:
            raise ConformanceError(f"line {lineno}: malformed PF line (unknown record {kind!r}): {line!r}")
    else:
        raise ConformanceError("missing 'PF done': the probe did not finish (failed recording)")
    return {"schema": SCHEMA, "layout": layout, "scenarios": scenarios}


def qualitative(result: dict[Any, Any]) -> dict[Any, Any]:
    """The part of a result that must not change between point releases of a series.

    Keeps every scenario's outcomes, the zone names (with ``start_pfn``/``spanned`` for
    ``Movable`` only), each CMA area's page ``count``, ``block_pages``, and the baseline
    outcome of the top ZONE_MOVABLE memory block only (key ``top_movable_baseline``,
    ``None`` when there is none): which other blocks fail the baseline varies run to run.
    """
    layout = result.get("layout", {})
    zones = {name: ({"start_pfn": z["start_pfn"], "spanned": z["spanned"]} if name == "Movable" else {})
             for name, z in layout.get("zones", {}).items()}
    top = None
    movable = layout.get("zones", {}).get("Movable")
    if movable:
        lo, hi = movable["start_pfn"], movable["start_pfn"] + movable["spanned"]
        inside = [int(pfn) for pfn in layout.get("baseline", {}) if lo <= int(pfn) < hi]
        if inside:
            top = layout["baseline"][str(max(inside))]
    return {"zones": zones,
            "cma": {name: area["count"] for name, area in layout.get("cma", {}).items()},
            "block_pages": layout.get("block_pages"),
            "top_movable_baseline": top,
            "scenarios": result.get("scenarios", {})}


def _keyed(prefix: str, old: dict[Any, Any], new: dict[Any, Any], what: str,
           changed: Callable[[Any, Any, Any], list[str]]) -> list[str]:
    lines = [f"{prefix}+ {what} {k}" for k in sorted(new.keys() - old.keys())]
    lines += [f"{prefix}- {what} {k}" for k in sorted(old.keys() - new.keys())]
    for k in sorted(old.keys() & new.keys()):
        lines += changed(k, old[k], new[k])
    return lines


def diff_results(old: dict[Any, Any], new: dict[Any, Any]) -> list[str]:
    """Readable differences between the qualitative parts of two results, sorted by area.

    Lines look like ``+ scenario X`` / ``- scenario X``, ``X: key old -> new`` (``(absent)``
    for a key only one side has), ``layout: Movable spanned 131072 -> 131000``, ``layout: +
    zone Z``, ``layout: cma reserved count 32768 -> 16384``, ``layout: block_pages a -> b``,
    ``layout: top movable block baseline EBUSY -> ok``.  An empty list means the two are
    qualitatively the same.
    """
    a, b = qualitative(old), qualitative(new)

    def zone(name: str, za: dict[str, Any], zb: dict[str, Any]) -> list[str]:
        return [f"layout: {name} {k} {za.get(k, '(absent)')} -> {zb.get(k, '(absent)')}"
                for k in sorted(za.keys() | zb.keys()) if za.get(k) != zb.get(k)]

    def cma(name: str, ca: int, cb: int) -> list[str]:
        return [f"layout: cma {name} count {ca} -> {cb}"] if ca != cb else []

    def scenario(sid: str, sa: dict[str, Any], sb: dict[str, Any]) -> list[str]:
        return [f"{sid}: {k} {sa.get(k, '(absent)')} -> {sb.get(k, '(absent)')}"
                for k in sorted(sa.keys() | sb.keys()) if sa.get(k) != sb.get(k)]

    lines = _keyed("layout: ", a["zones"], b["zones"], "zone", zone)
    lines += _keyed("layout: ", a["cma"], b["cma"], "cma", cma)
    if a["block_pages"] != b["block_pages"]:
        lines.append(f"layout: block_pages {a['block_pages']} -> {b['block_pages']}")
    if a["top_movable_baseline"] != b["top_movable_baseline"]:
        lines.append(f"layout: top movable block baseline {a['top_movable_baseline']} -> "
                     f"{b['top_movable_baseline']}")
    return lines + _keyed("", a["scenarios"], b["scenarios"], "scenario", scenario)


def _check_schema(result: Any, where: str) -> None:
    if not isinstance(result, dict) or result.get("schema") != SCHEMA:
        got = result.get("schema") if isinstance(result, dict) else type(result).__name__
        raise ConformanceError(f"{where}: schema is {got!r}, expected {SCHEMA!r}")
    for key in ("layout", "scenarios"):
        if not isinstance(result.get(key), dict):
            raise ConformanceError(f"{where}: missing {key!r} mapping")


def load_result(path: str | os.PathLike[str]) -> dict[Any, Any]:
    """Read a result file; raises :class:`ConformanceError` unless its schema is :data:`SCHEMA`."""
    try:
        result: dict[Any, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConformanceError(f"{path}: not JSON: {exc}") from None
    _check_schema(result, str(path))
    return result


def dump_result(result: dict[Any, Any], path: str | os.PathLike[str]) -> None:
    """Write a result file (sorted keys, indent 2, trailing newline) after checking its schema."""
    _check_schema(result, str(path))
    Path(path).write_text(json.dumps(result, sort_keys=True, indent=2) + "\n", encoding="utf-8")
