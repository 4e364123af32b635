"""Named counters with baseline semantics: what the contract checker reads beyond folios.

Model only (no kernel counterpart).  Every resource the model hands out that a driver must
give back -- a user's ``locked_vm``, mm references, DMA mappings, dma-buf references, open
file descriptors, scatterlist chunks -- is a :class:`Counter` in ``fake_mm.counters``.  A
counter reads its current values as a mapping ``key -> int`` (the key says whose: a
``user_struct``, an ``mm``, a device, a task; a plain int is one unnamed value).  The
checker (the ``contracts`` package) judges every counter the same way:

* **error path** (rule 2): a driver entry point or core pinning call that returns a
  negative errno must leave no value higher than just before the call
  (``error_path=False`` exempts a counter);
* **teardown** (rule 4 for ``rule="pin-balance"``, rule 9 for ``rule="accounting"``):
  every value is back at its baseline (the value when the checker took its baseline, or
  the value when the counter was registered if that came later; a key that did not exist
  counts as 0); ``at_teardown=False`` leaves a counter to the error-path rule only.

Drivers register counters of their own (``fake_mm.counters.register("mydrv.buffers",
lambda: drv.nr_buffers)``) and get the same judgement.  *Probes* are the on-demand
counterpart for invariants that are not a number: ``register_probe(name, fn, rule)``;
``fn()`` yields ``(message, objects, key)`` for each breach it sees now.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable, Iterator, Mapping

__all__ = ["Counter", "Probe", "CounterRegistry", "COUNTER_RULES", "PROBE_RULES"]

#: The rules a counter can be judged by at teardown (rule ids of contracts.rules).
COUNTER_RULES = ("pin-balance", "accounting")
#: The rules a probe can report under.
PROBE_RULES = ("coherence", "pin-balance", "accounting", "kernel-warnings")

Values = Mapping[Hashable, int]


def _as_values(v: Any, name: str) -> dict[Hashable, int]:
    """*v* (what a counter's read() returned) as its non-zero values; a TypeError for
    anything but an int or a mapping key -> int."""
    if type(v) is dict:                 # the usual reading: a plain dict (often empty)
        return {k: n for k, n in v.items() if n} if v else {}
    if isinstance(v, bool) or v is None:
        raise TypeError(f"counter {name!r}: read() returned {v!r}; expected an int or a mapping key -> int")
    if isinstance(v, int):
        return {None: v} if v else {}
    try:
        items = dict(v)
    except (TypeError, ValueError):
        raise TypeError(f"counter {name!r}: read() returned {type(v).__name__}; "
                        f"expected an int or a mapping key -> int") from None
    return {k: n for k, n in items.items() if n}


class Counter:
    """One named counter: ``name``, ``read()`` (an int or a mapping key -> int), the
    teardown ``rule`` ("pin-balance" = rule 4, "accounting" = rule 9), whether the error
    path rule applies (``error_path``), whether teardown judges it (``at_teardown``), a
    one-line ``doc`` and the values at
    registration (``initial``)."""

    __slots__ = ("name", "read", "rule", "error_path", "at_teardown", "doc", "initial")

    def __init__(self, name: str, read: Callable[[], Any], rule: str, error_path: bool,
                 at_teardown: bool, doc: str) -> None:
        self.name: str = name
        self.read: Callable[[], Any] = read
        self.rule: str = rule
        self.error_path: bool = error_path
        self.at_teardown: bool = at_teardown
        self.doc: str = doc
        self.initial: dict[Hashable, int] = {}

    def values(self) -> dict[Hashable, int]:
        """The current non-zero values, key -> int."""
        return _as_values(self.read(), self.name)

    def __repr__(self) -> str:
        return f"<counter {self.name} [{self.rule}] {self.values()}>"


class Probe:
    """An on-demand invariant: ``check()`` yields ``(message, objects, key)`` per breach;
    reported under ``rule``."""

    __slots__ = ("name", "check", "rule")

    def __init__(self, name: str, check: Callable[[], Iterable[tuple[str, Iterable[Any], Hashable]]],
                 rule: str) -> None:
        self.name: str = name
        self.check: Callable[[], Iterable[tuple[str, Iterable[Any], Hashable]]] = check
        self.rule: str = rule


class CounterRegistry:
    """The counters and probes of one fake machine (``fake_mm.counters``)."""

    def __init__(self) -> None:
        self._counters: dict[str, Counter] = {}
        self._probes: dict[str, Probe] = {}

    def register(self, name: str, read: Callable[[], Any], *, rule: str = "pin-balance",
                 error_path: bool = True, at_teardown: bool = True, doc: str = "") -> Counter:
        """Add a counter (see the module docstring); its current values become its
        baseline for a checker whose baseline is older.  A name already taken, a rule not
        in :data:`COUNTER_RULES` or a *read* that is not callable is a ``ValueError`` /
        ``TypeError``."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"counter name must be a non-empty str, got {name!r}")
        if name in self._counters:
            raise ValueError(f"counter {name!r} is already registered")
        if rule not in COUNTER_RULES:
            raise ValueError(f"counter {name!r}: rule {rule!r} is not one of {', '.join(COUNTER_RULES)}")
        if not callable(read):
            raise TypeError(f"counter {name!r}: read must be callable, got {type(read).__name__}")
        c = Counter(name, read, rule, bool(error_path), bool(at_teardown), doc)
        c.initial = c.values()
        self._counters[name] = c
        return c

    def unregister(self, name: str) -> None:
        """Remove a counter (a driver unloading); unknown names are a ``KeyError``."""
        del self._counters[name]

    def register_probe(self, name: str, check: Callable[[], Iterable[tuple[str, Iterable[Any], Hashable]]],
                       rule: str = "coherence") -> Probe:
        """Add an on-demand invariant (judged by every ``check()``)."""
        if name in self._probes:
            raise ValueError(f"probe {name!r} is already registered")
        if rule not in PROBE_RULES:
            raise ValueError(f"probe {name!r}: rule {rule!r} is not one of {', '.join(PROBE_RULES)}")
        p = self._probes[name] = Probe(name, check, rule)
        return p

    def unregister_probe(self, name: str) -> None:
        del self._probes[name]

    def snapshot(self) -> dict[str, dict[Hashable, int]]:
        """Every counter's current values: name -> {key: value}."""
        return {name: c.values() for name, c in self._counters.items()}

    def get(self, name: str) -> Counter | None:
        return self._counters.get(name)

    @property
    def probes(self) -> list[Probe]:
        return list(self._probes.values())

    def __iter__(self) -> Iterator[Counter]:
        return iter(list(self._counters.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._counters

    def __len__(self) -> int:
        return len(self._counters)

    def __repr__(self) -> str:
        return f"<counters {', '.join(self._counters)}>"
