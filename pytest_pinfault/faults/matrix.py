"""Systematic fault enumeration (syzkaller's fail-nth, SQLite's do_faultsim_test).

A matrix case injects exactly one fault: the ``nth`` hit of ``site``, either once
(``transient``) or from that hit on (``persistent``, which exposes retry-exhaustion
bugs that transient-only loops miss).  Its id, ``folio_isolate_lru-2-persistent``, is
stable, selectable with ``pytest -k`` (only letters, digits, ``_``, ``.`` and ``-``) and
enough to replay the case (:func:`parse_case_id`).

A matrix is sized to the code: :func:`sized_cases` takes the hit counts of a fault-free
run (``reach``) and makes one case per occurrence each site reached, up to a cap; the
sites whose reach the cap cut short are returned too, so the cut is announced.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

from .spec import FaultSpecError, parse_spec

__all__ = ["MODES", "MatrixCase", "MatrixPlan", "parse_case_id", "matrix_cases", "sized_cases"]

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
        """``SITE-N-MODE``: every character is one ``pytest -k`` accepts."""
        return f"{self.site}-{self.nth}-{self.mode}"

    @property
    def label(self) -> str:
        """``SITE#N`` (the fault record's spelling), for messages."""
        return f"{self.site}#{self.nth}"

    @property
    def spec(self) -> str:
        """The fault spec of this case: fire once at hit nth, or from hit nth on."""
        count = "1*" if self.mode == "transient" else ""
        return f"{self.site}[nth={self.nth}]={count}return"

    def __str__(self) -> str:
        return self.id


def _bad(text: str, why: str = "") -> ValueError:
    return ValueError(f"bad matrix case id {text!r}: {why or 'expected SITE-N-MODE'} with N >= 1 and "
                      f"MODE one of {', '.join(MODES)} (e.g. folio_isolate_lru-2-persistent)")


def parse_case_id(text: str) -> MatrixCase:
    """``"folio_isolate_lru-2-persistent"`` -> MatrixCase; ValueError when malformed.
    The earlier spelling ``SITE#N-MODE`` is still read."""
    text = text.strip()
    site, sep, rest = text.rpartition("#")
    if sep:
        nth, dash, mode = rest.partition("-")
    else:
        site, nth, mode = (text.rsplit("-", 2) + ["", ""])[:3] if text.count("-") >= 2 else ("", "", "")
        dash = "-"
    if not site or not dash or not nth.isdigit() or int(nth) < 1 or mode not in MODES:
        raise _bad(text)
    try:
        if parse_spec(f"{site}=off").site != site:
            raise FaultSpecError(site, 1, "a site name", site)
    except FaultSpecError:
        raise ValueError(f"bad matrix case id {text!r}: {site!r} is not a fault site name") from None
    return MatrixCase(site, int(nth), mode)


def _check(max_nth: int, modes: tuple[str, ...]) -> None:
    for m in modes:
        if m not in MODES:
            raise ValueError(f"matrix mode must be one of {', '.join(MODES)}, got {m!r}")
    if isinstance(max_nth, bool) or not isinstance(max_nth, int) or max_nth < 1:
        raise ValueError(f"max_nth must be an integer >= 1, got {max_nth!r}")


def matrix_cases(sites: Iterable[str] | Mapping[str, object], max_nth: int,
                 modes: Iterable[str] = MODES) -> list[MatrixCase]:
    """Every (site, occurrence 1..max_nth, mode) case: site-major, occurrences ascending,
    modes in the order given."""
    modes = tuple(modes)
    _check(max_nth, modes)
    return [MatrixCase(site, n, m) for site in dict.fromkeys(sites)
            for n in range(1, max_nth + 1) for m in modes]


@dataclasses.dataclass(frozen=True)
class MatrixPlan:
    """The cases of one matrix test sized from a fault-free run.

    ``reach`` is site -> hits of the fault-free run for the sites the matrix covers;
    ``cases`` one per (site, occurrence up to ``min(reach, cap)``, mode); ``capped`` the
    sites reached more often than ``cap`` (site -> hits), whose later occurrences are not
    tested; ``unreached`` the covered sites the run never hit."""

    sites: tuple[str, ...]
    reach: dict[str, int]
    cap: int
    cases: tuple[MatrixCase, ...]
    capped: dict[str, int]
    unreached: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        """The plan as plain JSON types (the ``pinfault_matrix`` user property)."""
        return {"sites": list(self.sites), "reach": dict(self.reach), "cap": self.cap,
                "cases": len(self.cases), "capped": dict(self.capped), "unreached": list(self.unreached)}


def sized_cases(sites: Iterable[str], reach: Mapping[str, int], cap: int,
                modes: Iterable[str] = MODES) -> MatrixPlan:
    """Plan the cases of a matrix over *sites* from the fault-free hit counts *reach*:
    occurrences 1..min(reach[site], cap) of every reached site, site-major in the order
    given, modes in the order given."""
    modes = tuple(modes)
    _check(cap, modes)
    sites = tuple(dict.fromkeys(sites))
    cases = []
    capped = {}
    for site in sites:
        n = int(reach.get(site, 0))
        if n > cap:
            capped[site] = n
        cases += [MatrixCase(site, i, m) for i in range(1, min(n, cap) + 1) for m in modes]
    return MatrixPlan(sites, {s: int(reach.get(s, 0)) for s in sites}, cap, tuple(cases), capped,
                      tuple(s for s in sites if not reach.get(s, 0)))
