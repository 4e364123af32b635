"""A contract violation, frozen at the moment it was found, printed like a kernel splat."""

from __future__ import annotations

import dataclasses
from typing import Any, Hashable

from .rules import Rule

__all__ = ["Violation", "FolioSnapshot", "snapshot_folio"]


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
    report a persistent state violation once; not part of equality).
    """

    rule: Rule
    message: str
    folios: tuple[FolioSnapshot, ...] = ()
    call: str = ""
    caller: str = ""
    events: tuple[str, ...] = ()
    key: Hashable = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def rule_id(self) -> str:
        return self.rule.id

    def __str__(self) -> str:
        lines = [f"pin contract violation: [{self.rule.id}] {self.message}",
                 f"  {self.rule}"]
        for f in self.folios[:8]:
            lines.append(f"  {f}")
        if len(self.folios) > 8:
            lines.append(f"  ... and {len(self.folios) - 8} more folios")
        if self.call:
            where = f" (called from {self.caller})" if self.caller else ""
            lines.append(f"  call: {self.call}{where}")
        elif self.caller:
            lines.append(f"  caller: {self.caller}")
        if self.events:
            lines.append("  last events:")
            lines.extend(f"    {e}" for e in self.events)
        return "\n".join(lines)
