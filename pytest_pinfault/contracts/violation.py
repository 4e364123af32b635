"""A contract violation, frozen at the moment it was found, printed like a kernel splat."""

from __future__ import annotations

import dataclasses
from typing import Any, Hashable

from .rules import Rule

__all__ = ["Violation", "FolioSnapshot", "snapshot_folio", "compact"]


@dataclasses.dataclass(frozen=True)
class FolioSnapshot:
    """What a folio looked like when the violation was found."""

    pfn: int
    order: int
    zone: str
    migratetype: str
    refcount: int
    pincount: int
    kind: str
    mapcount: int = 0
    freed: bool = False

    def __str__(self) -> str:
        order = f" order={self.order}" if self.order else ""
        freed = " freed" if self.freed else ""
        return (f"folio pfn={self.pfn:#x}{order} zone={self.zone} mt={self.migratetype} "
                f"ref={self.refcount} pin={self.pincount} map={self.mapcount} {self.kind}{freed}")


def snapshot_folio(folio: Any) -> FolioSnapshot:
    """Freeze a model folio (or page) into a :class:`FolioSnapshot`."""
    folio = getattr(folio, "folio", folio)
    try:
        mt = folio.migratetype_name
    except Exception:                                    # pragma: no cover - defensive
        mt = "?"
    return FolioSnapshot(pfn=folio.pfn, order=folio.order, zone=folio.zone, migratetype=mt,
                         refcount=folio.refcount, pincount=folio.pincount, kind=folio.kind,
                         mapcount=folio.mapcount, freed=bool(folio.freed))


@dataclasses.dataclass(frozen=True)
class Violation:
    """One broken rule.

    ``rule`` (:class:`Rule`), ``message`` (what is wrong, one line), ``folios``
    (:class:`FolioSnapshot` tuple), ``call`` (the pinning call or entry point that broke
    it, "" when judged from state), ``caller`` (``file:line function`` of whoever made
    that call), ``events`` (the last relevant trace lines), ``key`` (identity used to
    report a persistent state violation once; not part of equality), ``faults`` (the
    injected faults that fired during the call or, for a state violation, since the
    test started: ``"site#occurrence -ERRNO at file:line function"``, the line that called
    the failing function) and ``hint`` (the likely fix, "" when there is no single one).
    """

    rule: Rule
    message: str
    folios: tuple[FolioSnapshot, ...] = ()
    call: str = ""
    caller: str = ""
    events: tuple[str, ...] = ()
    key: Hashable = dataclasses.field(default=None, compare=False, repr=False)
    faults: tuple[str, ...] = ()
    hint: str = ""

    @property
    def rule_id(self) -> str:
        """The violated rule's id (``"pin-balance"`` ...)."""
        return self.rule.id

    def __str__(self) -> str:
        lines = [f"pin contract violation: [{self.rule.id}] {self.message}",
                 f"  {self.rule}"]
        if self.faults:
            lines.append("  injected fault(s) that fired: " + "; ".join(self.faults[:8])
                         + (f"; ... and {len(self.faults) - 8} more" if len(self.faults) > 8 else ""))
        n = len(self.folios)
        if n > _SHOWN:
            lines.append(f"  {compact(self.folios)}; the first {_SHOWN - 1}:")
            shown = self.folios[:_SHOWN - 1]
        else:
            shown = self.folios
        for f in shown:
            lines.append(f"  {f}")
        if self.call:
            where = f" (called from {self.caller})" if self.caller else ""
            lines.append(f"  call: {self.call}{where}")
        elif self.caller:
            lines.append(f"  caller: {self.caller}")
        if self.hint:
            lines.append(f"  likely fix: {self.hint}")
        if self.events:
            lines.append("  last events:")
            lines.extend(f"    {e}" for e in self.events)
        return "\n".join(lines)


_SHOWN = 4


def compact(folios: "tuple[FolioSnapshot, ...]") -> str:
    """``"1024 folios (1024 pages) in zone=Movable mt=Movable: pfn 0x40000-0x403ff"``."""
    fs = sorted(folios, key=lambda f: f.pfn)
    runs: list[list[int]] = []
    pages = 0
    seen = set()
    for f in fs:
        if f.pfn in seen:
            continue
        seen.add(f.pfn)
        pages += 1 << f.order
        if runs and runs[-1][1] == f.pfn:
            runs[-1][1] = f.pfn + (1 << f.order)
        else:
            runs.append([f.pfn, f.pfn + (1 << f.order)])
    shown = ", ".join(f"{lo:#x}" if hi - lo == 1 else f"{lo:#x}-{hi - 1:#x}" for lo, hi in runs[:6])
    if len(runs) > 6:
        shown += f", ... ({len(runs) - 6} more runs)"
    zones = sorted({f"zone={f.zone} mt={f.migratetype}" for f in fs})
    place = zones[0] if len(zones) == 1 else f"{len(zones)} zone/migratetype pairs"
    return f"{len(seen)} folios ({pages} pages) in {place}: pfn {shown}"
