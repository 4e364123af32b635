"""Systematic fault enumeration (syzkaller's fail-nth, SQLite's do_faultsim_test).

A matrix case injects exactly one fault: the ``nth`` hit of ``site``, either once
(``transient``) or from that hit on (``persistent``, which exposes retry-exhaustion
bugs that transient-only loops miss).  Its id, ``folio_isolate_lru#2-persistent``, is
stable and enough to replay the case (:func:`parse_case_id`).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

from .spec import FaultSpecError, parse_spec

__all__ = ["MODES", "MatrixCase", "parse_case_id", "matrix_cases"]

MODES = ("transient", "persistent")


@dataclasses.dataclass(frozen=True)
class MatrixCase:
    site: str
    nth: int
    mode: str

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"matrix mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if isinstance(self.nth, bool) or not isinstance(self.nth, int) or self.nth < 1:
            raise ValueError(f"matrix occurrence must be an integer >= 1, got {self.nth!r}")

    @property
    def id(self) -> str:
        return f"{self.site}#{self.nth}-{self.mode}"

    @property
    def spec(self) -> str:
        """The fault spec of this case: fire once at hit nth, or from hit nth on."""
        count = "1*" if self.mode == "transient" else ""
        return f"{self.site}[nth={self.nth}]={count}return"

    def __str__(self) -> str:
        return self.id


def parse_case_id(text: str) -> MatrixCase:
    """``"folio_isolate_lru#2-persistent"`` -> MatrixCase; ValueError when malformed."""
    site, sep, rest = text.strip().rpartition("#")
    nth, dash, mode = rest.partition("-")
    if not sep or not dash or not nth.isdigit() or int(nth) < 1 or mode not in MODES:
        raise ValueError(f"bad matrix case id {text!r}: expected SITE#N-MODE with N >= 1 and MODE one "
                         f"of {', '.join(MODES)} (e.g. folio_isolate_lru#2-persistent)")
    try:
        if parse_spec(f"{site}=off").site != site:
            raise FaultSpecError(site, 1, "a site name", site)
    except FaultSpecError:
        raise ValueError(f"bad matrix case id {text!r}: {site!r} is not a fault site name") from None
    return MatrixCase(site, int(nth), mode)


def matrix_cases(sites: Iterable[str] | Mapping[str, object], max_nth: int,
                 modes: Iterable[str] = MODES) -> list[MatrixCase]:
    """Every (site, occurrence 1..max_nth, mode) case: site-major, occurrences ascending,
    modes in the order given."""
    modes = tuple(modes)
    for m in modes:
        if m not in MODES:
            raise ValueError(f"matrix mode must be one of {', '.join(MODES)}, got {m!r}")
    if isinstance(max_nth, bool) or not isinstance(max_nth, int) or max_nth < 1:
        raise ValueError(f"max_nth must be an integer >= 1, got {max_nth!r}")
    return [MatrixCase(site, n, m) for site in dict.fromkeys(sites)
            for n in range(1, max_nth + 1) for m in modes]
