"""The eleven rules of the long-term pinning contract (design §6), with stable ids.

A rule is looked up by number (``1``..``11``), by id (``"pin-balance"``) or passed
through as a :class:`Rule`; anything else is a ``ValueError`` that lists the valid ones.
Ids are part of the public interface (markers, ``expect_violation``, messages): never
rename one.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Rule", "RULES", "get_rule",
           "LONGTERM_PLACEMENT", "ERROR_NOTHING_HELD", "COUNT_HONESTY", "PIN_BALANCE",
           "TERMINATION", "COHERENCE", "ISOLATION_HYGIENE", "SCOPE_HYGIENE", "ACCOUNTING",
           "CONTIGUITY", "KERNEL_WARNINGS"]


@dataclasses.dataclass(frozen=True)
class Rule:
    """One contract rule: ``number`` (1..11), stable ``id``, short ``title`` and a
    one-line ``meaning``; ``when`` says when the checker judges it."""

    number: int
    id: str
    title: str
    meaning: str
    when: str

    def __str__(self) -> str:
        return f"rule {self.number} ({self.id}): {self.meaning}"


LONGTERM_PLACEMENT = Rule(
    1, "longterm-placement", "Long-term placement",
    "no folio with a long-term hold is in ZONE_MOVABLE, a CMA or an isolated pageblock",
    "at pin return, on demand, at teardown")
ERROR_NOTHING_HELD = Rule(
    2, "error-nothing-held", "Error => nothing held",
    "a negative return from a pinning call leaves no new pin, reference, locked_vm or isolated folio",
    "at pin return")
COUNT_HONESTY = Rule(
    3, "count-honesty", "Count honesty",
    "a non-negative return means exactly that many entries are held",
    "at pin return")
PIN_BALANCE = Rule(
    4, "pin-balance", "Pin and reference balance",
    "pins acquired == released and no folio keeps a reference the model does not account for",
    "at teardown")
TERMINATION = Rule(
    5, "termination", "Termination",
    "every retry loop finishes within its bound (no livelock)",
    "on demand, at teardown")
COHERENCE = Rule(
    6, "coherence", "Coherence",
    "a held page is the one the page cache / page table maps",
    "on demand, at teardown")
ISOLATION_HYGIENE = Rule(
    7, "isolation-hygiene", "Isolation & LRU hygiene",
    "no folio or pageblock left isolated, NR_ISOLATED back to its baseline",
    "on demand, at teardown")
SCOPE_HYGIENE = Rule(
    8, "scope-hygiene", "Scope hygiene",
    "PF_MEMALLOC_PIN is restored on every exit path",
    "on demand, at teardown")
ACCOUNTING = Rule(
    9, "accounting", "Accounting",
    "locked_vm / pinned_vm / hugetlb pool counters return to their baseline",
    "at teardown")
CONTIGUITY = Rule(
    10, "contiguity", "Contiguity",
    "once every holder is released, cma_alloc / offline_pages over the touched range succeed",
    "at teardown")
KERNEL_WARNINGS = Rule(
    11, "kernel-warnings", "Kernel warnings",
    "no WARN_ON-class misuse was recorded (double unpin, refcount underflow, ...)",
    "on demand, at teardown")

RULES: tuple[Rule, ...] = (LONGTERM_PLACEMENT, ERROR_NOTHING_HELD, COUNT_HONESTY, PIN_BALANCE,
                           TERMINATION, COHERENCE, ISOLATION_HYGIENE, SCOPE_HYGIENE, ACCOUNTING,
                           CONTIGUITY, KERNEL_WARNINGS)

_BY_ID = {r.id: r for r in RULES}
_BY_NUMBER = {r.number: r for r in RULES}


def get_rule(rule: "int | str | Rule") -> Rule:
    """The :class:`Rule` for a number, an id (``"pin-balance"``, also ``"4"``) or a Rule."""
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, bool):
        pass
    elif isinstance(rule, int):
        r = _BY_NUMBER.get(rule)
        if r is not None:
            return r
    elif isinstance(rule, str):
        key = rule.strip().lower()
        r = _BY_ID.get(key)
        if r is not None:
            return r
        if key.isdigit() and int(key) in _BY_NUMBER:
            return _BY_NUMBER[int(key)]
    valid = ", ".join(f"{r.number}={r.id}" for r in RULES)
    raise ValueError(f"unknown contract rule {rule!r}; valid rules: {valid}")
