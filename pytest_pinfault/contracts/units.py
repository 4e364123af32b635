"""Hold units: how much of a user folio's refcount somebody holds, and the small
formatting helpers the rules share.

For a user folio (anon, shmem, file, hugetlb) the checker splits the refcount into
what the model itself accounts for -- ``folio_expected_ref_count()`` (page cache,
PG_private, one per mapping), one for an ``lru_add`` batch, one for LRU/hugetlb
isolation, one per live fault-injector hold -- and the rest, which is held by somebody:
``pins`` (``_pincount`` for large folios, ``refcount // 1024`` for small ones) and
``refs`` (the plain references left over).  ``pins + refs`` is the folio's *hold units*.
Kernel-owned folios (``alloc_pages``, slab, balloon, cma/contig blocks) are never judged
by hold units.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Any, Iterable

from ..mm.folio import GUP_PIN_COUNTING_BIAS, PG_isolated, PG_private
from ..mm.gfp import MIGRATE_CMA, MIGRATE_ISOLATE, ZONE_MOVABLE

__all__ = ["USER_KINDS", "pins_of", "split_units", "fill_units", "injector_holds", "where", "errname",
           "short_caller", "compact_folios", "fault_lines", "placement_bad"]

#: Folio kinds whose references belong to user memory and are judged by hold units.
USER_KINDS = frozenset({"anon", "shmem", "file", "hugetlb"})


def pins_of(f: Any) -> int:
    n: int = f._pincount if f.order else f._refcount // GUP_PIN_COUNTING_BIAS
    return n


def injector_holds(k: Any) -> dict[int, int]:
    """``id(folio) -> number`` of live fault-injector holds (short-term pins it keeps)."""
    hs = k.faults.holds
    if not hs:
        return _NO_HOLDS
    out: dict[int, int] = {}
    for h in hs:
        if not h.released:
            out[id(h.folio)] = out.get(id(h.folio), 0) + 1
    return out


_NO_HOLDS: dict[int, int] = {}


def split_units(k: Any, f: Any, inj_holds: dict[int, int]) -> tuple[int, int]:
    """(pins, refs) held on user folio *f* beyond what the model accounts for."""
    rc = f._rc
    if rc <= 0 or f.freed:
        return 0, 0
    # k.folio_expected_ref_count(f), written out on the folio's fields (the final check
    # runs this for every folio a test touched)
    flags = f._flags
    if f.kind == "anon":
        acc = f._mc
    else:
        acc = (f.nr_pages if f._mapping is not None else 0) + (1 if flags & PG_private else 0) + f._mc
    if f._lru != -1:
        acc += 1
    if flags & PG_isolated:
        acc += 1
    if inj_holds:
        acc += inj_holds.get(id(f), 0)
    if f.order:
        pins = f._pincount
        left = rc - acc - pins
    else:
        pins = rc // GUP_PIN_COUNTING_BIAS
        left = rc - acc - pins * GUP_PIN_COUNTING_BIAS
    return pins, left if left > 0 else 0


def fill_units(k: Any, folios: Iterable[Any], inj_holds: dict[int, int],
               cache: dict[int, tuple[int, int]]) -> None:
    """``cache[id(f)] = split_units(k, f, inj_holds)`` for every folio of *folios* not
    in *cache* yet: the same arithmetic written out in one loop, for the final check
    over every folio a test touched (a 1 GiB buffer: 262,144)."""
    bias = GUP_PIN_COUNTING_BIAS
    for f in folios:
        key = id(f)
        if key in cache:
            continue
        rc = f._rc
        if rc <= 0 or f.freed:
            cache[key] = (0, 0)
            continue
        flags = f._flags
        if f.kind == "anon":
            acc = f._mc
        else:
            acc = f._mc
            if f._mapping is not None:
                acc += f.nr_pages
            if flags & PG_private:
                acc += 1
        if f._lru != -1:
            acc += 1
        if flags & PG_isolated:
            acc += 1
        if inj_holds:
            acc += inj_holds.get(key, 0)
        if f.order:
            pins = f._pincount
            left = rc - acc - pins
        else:
            pins = rc // bias
            left = rc - acc - pins * bias
        cache[key] = (pins, left if left > 0 else 0)


def where(k: Any, f: Any) -> str:
    """Why *f* is not long-term pinnable, as a place."""
    mt = k.get_pageblock_migratetype(f.pfn)
    if mt == MIGRATE_CMA or f.is_cma:
        return "CMA"
    if f._zone.idx == ZONE_MOVABLE:
        return "ZONE_MOVABLE"
    if mt == MIGRATE_ISOLATE:
        return "an isolated pageblock"
    return "a pageblock that is not long-term pinnable"


def placement_bad(k: Any, f: Any, isolated_counts: bool = True) -> bool:
    """Not long-term pinnable; with *isolated_counts* false only the zone and CMA count
    (a late judgement must not blame a pageblock isolated by a later call)."""
    if isolated_counts:
        return not k.folio_is_longterm_pinnable(f)
    return bool(f.is_cma or f._zone.idx == ZONE_MOVABLE) and not k.folio_is_longterm_pinnable(f)


def errname(ret: int) -> str:
    name = _errno.errorcode.get(-ret)
    return f"-{name}" if name else str(ret)


def short_caller(frame: Any) -> str:
    if frame is None:
        return ""
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} {frame.f_code.co_name}"


def compact_folios(folios: Iterable[Any]) -> str:
    """``"3 folios (12 pages): pfn 0x1000-0x1001, 0x2000"`` -- pfn runs of the given
    folios (or pages), for a splat that lists many folios on one line."""
    fs = sorted({getattr(f, "folio", f).pfn: getattr(f, "folio", f) for f in folios if f is not None}.items())
    if not fs:
        return ""
    runs: list[list[int]] = []
    pages = 0
    for pfn, f in fs:
        pages += f.nr_pages
        if runs and runs[-1][1] == pfn:
            runs[-1][1] = pfn + f.nr_pages
        else:
            runs.append([pfn, pfn + f.nr_pages])
    shown = ", ".join(f"{lo:#x}" if hi - lo == 1 else f"{lo:#x}-{hi - 1:#x}" for lo, hi in runs[:6])
    if len(runs) > 6:
        shown += f", ... ({len(runs) - 6} more runs)"
    n = len(fs)
    return f"{n} folio{'s' if n != 1 else ''} ({pages} page{'s' if pages != 1 else ''}): pfn {shown}"


def fault_lines(records: Iterable[Any]) -> tuple[str, ...]:
    """``"kmalloc#2 -ENOMEM at driver.py:97 create"`` per fired fault; consecutive
    occurrences of one site with the same errno and caller are one line
    (``"folio_isolate_lru#1-#4 -EBUSY at ..."``)."""
    runs: list[list[Any]] = []
    for r in records:
        if not getattr(r, "fired", False):
            continue
        what = errname(r.errno) if r.errno is not None else "fired"
        at = f" at {_short_path(r.caller)}" if r.caller else ""
        last = runs[-1] if runs else None
        if last is not None and last[0] == r.site and last[3] == what + at and last[2] + 1 == r.occurrence:
            last[2] = r.occurrence
        else:
            runs.append([r.site, r.occurrence, r.occurrence, what + at])
    return tuple(f"{site}#{a}{'' if a == b else f'-#{b}'} {rest}" for site, a, b, rest in runs)


def _short_path(caller: str) -> str:
    """``/abs/path/driver.py:97 create`` -> ``driver.py:97 create``."""
    head, sep, rest = caller.partition(":")
    return os.path.basename(head) + sep + rest if sep else caller
