"""Judging the fake mm's named counters and probes (``fake_mm.counters``).

The model exposes every resource a driver must give back -- user ``locked_vm``, mm
references, DMA mappings, dma-buf references, open descriptors, scatterlist chunks, and
counters drivers register themselves -- through one registry
(:class:`~pytest_pinfault.mm.counters.CounterRegistry`).  This module applies the
contract rules to it:

* :func:`error_problems` -- rule 2: what grew across a call that returned an error;
* :func:`teardown_violations` -- rule 4 ("pin-balance") or 9 ("accounting"), per the
  counter: every value back at its baseline;
* :func:`probe_violations` -- on demand: each probe's breaches under its rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Hashable

from .rules import get_rule

if TYPE_CHECKING:  # pragma: no cover
    from .checker import Checker

__all__ = ["snapshot", "boot_snapshot", "error_problems", "teardown_violations", "probe_violations"]

Snap = dict[str, dict[Hashable, int]]


def snapshot(fake_mm: Any) -> Snap:
    """Every counter's values now."""
    snap: Snap = fake_mm.counters.snapshot()
    return snap


def boot_snapshot(fake_mm: Any) -> Snap:
    """Every counter's values at registration (machine construction for built-in ones):
    its ``initial`` mapping itself (nothing writes to either)."""
    return {c.name: c.initial for c in fake_mm.counters}


def _key(key: Hashable) -> str:
    return "" if key is None else f"[{key!r}]"


def error_problems(fake_mm: Any, before: Snap) -> list[str]:
    """Rule 2: "name[key] +n" for each error-path counter value above *before*."""
    out = []
    for c in fake_mm.counters:
        if not c.error_path:
            continue
        base = before.get(c.name, c.initial)
        for key, now in c.values().items():
            was = base.get(key, 0)
            if now > was:
                out.append(f"{c.name}{_key(key)} +{now - was}")
    return out


def teardown_violations(checker: "Checker", base: Snap) -> list[Any]:
    """Rules 4 and 9: each counter value that is not back at its baseline."""
    out = []
    for c in checker.fake_mm.counters:
        if not c.at_teardown:
            continue
        b = base.get(c.name, c.initial)
        now = c.values()
        if now == b:                    # the usual case: every value at its baseline
            continue
        rule = get_rule(c.rule)
        for key in list(now) + [x for x in b if x not in now]:
            n, was = now.get(key, 0), b.get(key, 0)
            if n != was:
                what = f" ({c.doc})" if c.doc else ""
                out.append(checker._v(rule, f"{c.name}{_key(key)} is {n}, baseline {was} "
                                            f"({n - was:+d} not returned){what}",
                                      key=("counter", c.name, repr(key), n)))
    return out


def probe_violations(checker: "Checker") -> list[Any]:
    """Each registered probe's current breaches."""
    out = []
    for p in checker.fake_mm.counters.probes:
        rule = get_rule(p.rule)
        for message, objs, key in p.check():
            folios = [getattr(o, "folio", o) for o in objs if o is not None]
            out.append(checker._v(rule, message, folios, key=("probe", p.name, key)))
    return out
