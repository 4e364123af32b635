"""The model's event trace: a ring buffer of what happened, in order.

It stands in for the kernel's tracepoints (mm_migrate_pages, mm_page_alloc, ...) and
printk lines.  Events are plain tuples ``(seq, kind, fields)`` so that recording costs one
``deque.append``; call sites check :attr:`Trace.on` first, so a disabled trace costs one
attribute read.  The one event recorded for every migrated folio is kept as
``(seq, "migrate", folio, to)`` (:data:`MIGRATE_FIELDS` names the last two): one tuple
fewer to allocate, free and scan per migration; readers get a dict either way.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Iterator

__all__ = ["Trace", "TraceEvent"]

#: the names of a "migrate" event's fields when they are kept as a tuple
MIGRATE_FIELDS = ("folio", "to")


def _event(ev: tuple[Any, ...]) -> tuple[int, str, dict[str, Any]]:
    """``(seq, kind, fields)`` of a kept event, whichever of the two forms it has."""
    if len(ev) == 3:
        return ev
    return ev[0], ev[1], dict(zip(MIGRATE_FIELDS, ev[2:]))


@dataclasses.dataclass(frozen=True)
class TraceEvent:
    seq: int
    kind: str
    fields: dict[str, Any]

    def __str__(self) -> str:
        parts = []
        for k, v in self.fields.items():
            if k == "message":
                continue
            parts.append(f"{k}={_short(v)}")
        msg = self.fields.get("message")
        tail = f" : {msg}" if msg else ""
        return f"[{self.seq:6d}] {self.kind}: {' '.join(parts)}{tail}"


def _short(v: Any) -> str:
    pfn = getattr(v, "pfn", None)
    if pfn is not None and hasattr(v, "order"):
        return f"folio@{pfn:#x}/{getattr(v, 'zone', '?')}"
    return repr(v) if isinstance(v, str) else str(v)


class Trace:
    """Ring buffer of :class:`TraceEvent` (``maxlen`` newest kept).

    ``on`` switches recording of the events that explain outcomes (migrations and
    migration retries, failures, warnings, fault firings); ``verbose`` adds the routine
    per-folio events: allocation, free, successful isolation and putback.  :meth:`filter` selects events by kind or by the folio
    they concern.  ``len(trace)`` counts the events kept.
    """

    def __init__(self, maxlen: int = 8192, on: bool = True, verbose: bool = False) -> None:
        self.on = on
        self.verbose: bool = verbose and on
        self._buf: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=maxlen)
        self._seq = 0

    def emit(self, kind: str, fields: dict[str, Any]) -> None:
        self._seq += 1
        self._buf.append((self._seq, kind, fields))

    def clear(self) -> None:
        self._buf.clear()

    def __len__(self) -> int:
        return len(self._buf)

    def __iter__(self) -> Iterator[TraceEvent]:
        for ev in self._buf:
            yield TraceEvent(*_event(ev))

    @property
    def seq(self) -> int:
        """Sequence number of the newest event (0 before any)."""
        return self._seq

    def since(self, seq: int) -> list[TraceEvent]:
        return [TraceEvent(*_event(ev)) for ev in self._buf if ev[0] > seq]

    def filter(self, kind: str | None = None, folio: Any = None, last: int | None = None) -> list[TraceEvent]:
        out = []
        for ev in self._buf:
            if kind is not None and ev[1] != kind:
                continue
            seq, k, f = _event(ev)
            if folio is not None and not any(v is folio for v in f.values()):
                continue
            out.append(TraceEvent(seq, k, f))
        return out[-last:] if last else out

    def format(self, last: int = 20) -> str:
        return "\n".join(str(e) for e in list(self)[-last:])
