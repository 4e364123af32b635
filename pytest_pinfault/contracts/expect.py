"""``expect_violation``: assert that a block breaks a rule."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from .rules import Rule, get_rule
from .violation import Violation

__all__ = ["expect_violation"]


@contextlib.contextmanager
def expect_violation(checker: Any, rule: "int | str | Rule", *,
                     final: bool | None = None) -> Iterator[list[Violation]]:
    """Assert that the block violates *rule*: on exit the checker runs (with
    ``final=True`` by default for rules 4, 9 and 10, whose checks are teardown-only)
    and the block must have produced at least one violation of that rule, else
    ``AssertionError`` naming it.  Those violations are removed from
    ``checker.violations`` (and not reported again); any other violation stays.  The
    yielded list receives the caught violations."""
    r = get_rule(rule)
    if final is None:
        final = r.number in (4, 9, 10)
    start = len(checker.violations)
    caught: list[Violation] = []
    yield caught
    checker.check(final=final)
    new = checker.violations[start:]
    hits = [v for v in new if v.rule == r]
    if not hits:
        others = "; ".join(f"[{v.rule.id}] {v.message}" for v in new) or "none"
        raise AssertionError(f"expected a violation of rule {r.number} ({r.id}: {r.meaning}), "
                             f"but none happened (other violations: {others})")
    for v in hits:
        checker.violations.remove(v)
        checker._expected.add(v.key)
    caught.extend(hits)
