"""The per-FakeMM fault injector that the model's fault sites call.

A site line in the model reads::

    fi = self.faults
    if fi.active and fi.hit("folio_isolate_lru", folio=folio) is not None:
        return False

``active`` is False while nothing is armed, nothing records hits and no short-term
reference is held, so an idle site costs one attribute read.  Sites are armed with a
spec (:meth:`Injector.arm_spec`, grammar in :mod:`pytest_pinfault.faults.spec`) or
programmatically (:meth:`Injector.arm`).  All state is per injector, i.e. per FakeMM and
so per test: armings, hit counts, the log, holds, the seeded random generator and the
hit budget.
"""

from __future__ import annotations

import errno as _errno
import os
import random
import sys
from types import FrameType
import weakref
from typing import Any, Callable, ClassVar, Iterable, Mapping

from .sites import BUILTIN_SITES, Site
from .spec import MAX_INT, FaultSpec, FaultSpecError, Term, errno_name, parse_errno, parse_spec, validate_spec

__all__ = ["Injector", "Arming", "FaultRecord", "UnknownSite", "FaultBudgetExceeded", "Hold",
           "DEFAULT_BUDGET"]

#: Default per-test budget of site hits (see :attr:`Injector.budget`).
DEFAULT_BUDGET = 1_000_000

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_ANONYMOUS = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>", "<lambda>"})


_inside: dict[Any, bool] = {}       # code object -> is it pytest_pinfault's (or anonymous)?


def _external_caller() -> str:
    """The nearest frame outside pytest_pinfault (comprehensions and lambdas skipped),
    as ``file:line function``."""
    f: FrameType | None = sys._getframe(2)
    inside = _inside
    while f is not None:
        code = f.f_code
        skip = inside.get(code)
        if skip is None:
            skip = inside[code] = code.co_filename.startswith(_PKG_DIR) or code.co_name in _ANONYMOUS
        if not skip:
            return f"{code.co_filename}:{f.f_lineno} {code.co_name}"
        f = f.f_back
    return ""


class UnknownSite(KeyError):
    """A site name that is neither built in nor declared."""

    def __str__(self) -> str:
        return f"unknown fault site {self.args[0]!r}; known sites: {', '.join(sorted(self.args[1]))}"


class FaultBudgetExceeded(RuntimeError):
    """More site hits in one test than :attr:`Injector.budget`: a retry loop that never
    ends.  ``site`` is the site hit last, ``caller`` the code outside the package that
    hit it (``file:line function``)."""

    def __init__(self, site: str, hits: int, caller: str, what: str = "") -> None:
        self.site = site
        self.hits = hits
        self.caller = caller
        what = what or f"fault budget exceeded: {hits} fault-site hits in one test"
        super().__init__(f"{what}, the last at {site!r} called from {caller or '<unknown>'} "
                         f"(a retry loop that never gives up?)")


class FaultRecord:
    """One logged hit of a site: ``occurrence`` is the 1-based hit count of that site;
    ``fired`` tells whether an action ran (``errno`` is the negative errno the site
    failed with, or None for ``hold``/``call``); ``caller`` is the nearest code outside
    pytest_pinfault (``file:line function``) for a firing, "" for a hit that only was
    recorded (walking the stack on every recorded hit would triple the cost of
    ``record(True)``)."""

    __slots__ = ("site", "occurrence", "fired", "errno", "context", "caller")

    def __init__(self, site: str, occurrence: int, fired: bool, errno: int | None,
                 context: dict[str, Any], caller: str = "") -> None:
        self.site: str = site
        self.occurrence: int = occurrence
        self.fired: bool = fired
        self.errno: int | None = errno
        self.context: dict[str, Any] = context
        self.caller: str = caller

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FaultRecord):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__: ClassVar[None] = None  # type: ignore[assignment]  # unhashable: compares by value

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (folios become pfn/zone/migratetype/order/kind)."""
        return {"site": self.site, "occurrence": self.occurrence, "fired": self.fired,
                "errno": self.errno,
                "errno_name": None if self.errno is None else "-" + errno_name(self.errno),
                "context": {k: _summary(v) for k, v in self.context.items()},
                "caller": self.caller}

    def __repr__(self) -> str:
        what = ("-" + errno_name(self.errno) if self.errno is not None
                else "fired" if self.fired else "hit")
        return f"<FaultRecord {self.site}#{self.occurrence} {what}>"


def _summary(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    folio = getattr(v, "folio", v)          # a Page stands for its folio
    if hasattr(folio, "pfn") and hasattr(folio, "order") and hasattr(folio, "kind"):
        try:
            mt = folio.migratetype_name
        except Exception:   # a freed or foreign folio
            mt = None
        return {"pfn": folio.pfn, "zone": getattr(folio, "zone", None), "migratetype": mt,
                "order": folio.order, "kind": folio.kind}
    if isinstance(v, (list, tuple)):
        return [_summary(x) for x in v]
    return repr(v)


class Hold:
    """A short-term reference on ``folio`` (a concurrent GUP): it makes every
    ``migrate_folio`` check of the folio fail until it is dropped, after ``attempts``
    such checks (None: until released)."""

    __slots__ = ("folio", "attempts", "seen", "released", "_inj")

    def __init__(self, inj: "Injector", folio: Any, attempts: int | None, seen: int = 0) -> None:
        self._inj = inj
        self.folio: Any = folio
        self.attempts: int | None = attempts
        self.seen: int = seen
        self.released: bool = False

    def release(self) -> None:
        """Drop the reference (idempotent)."""
        if self.released:
            return
        self.released = True
        inj = self._inj
        if self in inj.holds:
            inj.holds.remove(self)
        mm = inj.mm if inj.mm is not None else getattr(self.folio, "_mm", None)
        assert mm is not None               # a held folio belongs to a machine
        mm.folio_put(self.folio)
        inj._update()

    def __repr__(self) -> str:
        left = "until released" if self.attempts is None else f"{self.seen}/{self.attempts} attempts"
        return f"<Hold pfn={self.folio.pfn:#x} {left}{' released' if self.released else ''}>"


# ---------------------------------------------------------------------------- filters
_gfp_mod: Any = None


def _gfp() -> Any:
    global _gfp_mod
    if _gfp_mod is None:
        from ..mm import gfp as _g
        _gfp_mod = _g
    return _gfp_mod


def _ctx_folio(ctx: dict[str, Any]) -> Any:
    """The hit's folio (``folio=`` may also be a Page, as driver code holds them)."""
    folio = ctx.get("folio")
    return getattr(folio, "folio", folio)


def _ctx_gfp_attr(key: str, folio_attr: str, names: str, of_gfp: str) -> Callable[[dict[str, Any]], Any]:
    """Zone / migratetype of a hit: the folio's, else ``ctx[key]``, else from ``ctx["gfp"]``."""
    def get(ctx: dict[str, Any]) -> Any:
        folio = _ctx_folio(ctx)
        if folio is not None:
            return getattr(folio, folio_attr)
        v = ctx.get(key)
        if v is not None:
            return getattr(v, "name", v)
        gfp = ctx.get("gfp")
        if gfp is not None:
            g = _gfp()
            return getattr(g, names)[getattr(g, of_gfp)(gfp)]
        return None
    return get


def _ctx_attr(name: str) -> Callable[[dict[str, Any]], Any]:
    def get(ctx: dict[str, Any]) -> Any:
        folio = _ctx_folio(ctx)
        if folio is not None:
            return getattr(folio, name, None)
        return ctx.get(name)
    return get


def _qualname(frame: Any) -> str:
    """The qualified name of the function running in *frame* (``Class.method``).

    ``code.co_qualname`` exists from Python 3.11; on 3.10 the function is found through
    the frame's first argument (``self`` or ``cls``: the method in its class's MRO whose
    code is this frame's) or the module globals, else the plain ``co_name``."""
    q: str | None = getattr(frame.f_code, "co_qualname", None)
    return q if q is not None else _qualname_from_frame(frame)


def _qualname_from_frame(frame: Any) -> str:
    """:func:`_qualname` without ``co_qualname`` (Python 3.10)."""
    code = frame.f_code
    name: str = code.co_name
    if code.co_argcount:
        first = frame.f_locals.get(code.co_varnames[0])
        cls = first if isinstance(first, type) else type(first)
        for klass in getattr(cls, "__mro__", ()):
            attr = klass.__dict__.get(name)
            fn = getattr(attr, "__func__", attr)           # classmethod, staticmethod
            if getattr(fn, "__code__", None) is code:
                return str(fn.__qualname__)
    fn = frame.f_globals.get(name)
    if getattr(fn, "__code__", None) is code:
        return str(fn.__qualname__)
    return name


def _on_stack(name: str) -> Callable[[dict[str, Any]], bool]:
    """``caller=name``: a frame on the stack runs a function called *name*, or, for a
    dotted *name* (``Class.method``), whose qualified name is *name*."""
    dotted = "." in name

    def check(ctx: dict[str, Any]) -> bool:
        f: FrameType | None = sys._getframe(1)
        while f is not None:
            if f.f_code.co_name == name or (dotted and _qualname(f) == name):
                return True
            f = f.f_back
        return False
    return check


def _compile_filter(key: str, value: str) -> Callable[[dict[str, Any]], bool]:
    if key == "caller":
        return _on_stack(value)
    if key == "order":
        want: Any = int(value)
        get = _ctx_attr("order")
    elif key == "zone":
        want, get = value, _ctx_gfp_attr("zone", "zone", "ZONE_NAMES", "gfp_zone")
    elif key == "migratetype":
        want, get = value, _ctx_gfp_attr("migratetype", "migratetype_name", "MIGRATETYPE_NAMES",
                                         "gfp_migratetype")
    else:
        want, get = value, _ctx_attr(key)
    return lambda ctx: get(ctx) == want


# ---------------------------------------------------------------------------- armings
_NO = (False, None)


class Arming:
    """One armed spec (or :meth:`Injector.arm` call) on one site, with its counters:
    ``eligible`` (hits that passed the filters), ``fired`` (firings), ``spec`` (the
    :class:`FaultSpec`, None for :meth:`Injector.arm`)."""

    __slots__ = ("site", "spec", "errno", "nth", "times", "every", "predicate", "callback", "fail",
                 "eligible", "fired", "_checks", "_terms", "_ti", "_left", "_held",
                 "_callbacks", "_default_errno")

    def __init__(self, site: str, *, spec: FaultSpec | None = None, errno: int | None = None,
                 nth: int = 1, times: int = -1, every: int = 1,
                 predicate: Callable[[dict[str, Any]], bool] | None = None,
                 callback: Callable[[dict[str, Any]], Any] | None = None, fail: bool = True,
                 terms: list[Term] | None = None,
                 callbacks: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None,
                 default_errno: int = _errno.EIO) -> None:
        self.site: str = site
        self.spec: FaultSpec | None = spec
        self.errno: int | None = errno              # positive; the default errno of `arm()`
        self.nth: int = nth
        self.times: int = times              # remaining firings, -1 unlimited
        self.every: int = every
        self.predicate: Callable[[dict[str, Any]], bool] | None = predicate
        self.callback: Callable[[dict[str, Any]], Any] | None = callback
        self.fail: bool = fail
        self.eligible: int = 0
        self.fired: int = 0
        self._checks = tuple(_compile_filter(k, v) for k, v in spec.filters) if spec else ()
        self._terms = list(terms or ())
        self._ti = 0
        self._left = self._terms[0].count if self._terms else None
        self._held: weakref.WeakSet[Any] | None = None
        self._callbacks = dict(callbacks or {})
        self._default_errno = default_errno

    def __repr__(self) -> str:
        what = self.spec.text if self.spec is not None else f"{self.site} (arm)"
        return f"<Arming {what!r} eligible={self.eligible} fired={self.fired}>"

    @property
    def exhausted(self) -> bool:
        """No further hit can fire it (times used up or the chain ran out)."""
        return self.times == 0 or (bool(self._terms) and self._ti >= len(self._terms))

    def should_fire(self, ctx: dict[str, Any]) -> bool:
        """The old `arm()` test (kept for compatibility): filters, nth, every, times."""
        if self.predicate is not None and not self.predicate(ctx):
            return False
        self.eligible += 1
        if self.eligible < self.nth or self.times == 0:
            return False
        if (self.eligible - self.nth) % self.every:
            return False
        if self.times > 0:
            self.times -= 1
        self.fired += 1
        return True

    def fire(self, inj: "Injector", ctx: dict[str, Any]) -> tuple[bool, int | None]:
        """Evaluate one hit: (fired, negative errno or None)."""
        if not self._terms:                       # an `arm()` arming
            if not self.should_fire(ctx):
                return _NO
            if self.callback is not None:
                self.callback(ctx)
            if not self.fail:
                return (True, None)
            assert self.errno is not None   # an arming that fails has its errno
            return (True, -self.errno)
        for check in self._checks:
            if not check(ctx):
                return _NO
        ti = self._ti
        terms = self._terms
        if ti >= len(terms):
            return _NO
        term = terms[ti]
        if term.action == "hold":                 # one hold per folio per arming
            folio = _ctx_folio(ctx)
            if folio is None or getattr(folio, "freed", False) or (self._held is not None and folio in self._held):
                return _NO
        e = self.eligible = self.eligible + 1
        if e < self.nth or self.times == 0 or (self.every > 1 and e % self.every):
            return _NO
        if term.prob is not None and inj.random.random() * 100.0 >= term.prob:
            return _NO
        if term.count is not None:
            assert self._left is not None   # set from the counted term
            self._left -= 1
            if self._left <= 0:
                self._ti = ti + 1
                if ti + 1 < len(terms):
                    self._left = terms[ti + 1].count
        action = term.action
        if action == "off":
            return _NO
        if self.times > 0:
            self.times -= 1
        self.fired += 1
        if action == "return":
            return True, -(term.arg if term.arg is not None else self._default_errno)  # type: ignore[operator]
        if action == "call":
            self._callbacks[term.arg](ctx)  # type: ignore[index]
            return True, None
        folio = _ctx_folio(ctx)                   # hold
        if self._held is None:
            self._held = weakref.WeakSet()
        self._held.add(folio)
        inj.hold(folio, term.arg)  # type: ignore[arg-type]
        return True, None


def _errno_value(e: int | str) -> int:
    if isinstance(e, str):
        n = parse_errno(e)
        if n is None:
            raise ValueError(f"not an errno: {e!r}")
        return n
    if isinstance(e, bool) or not isinstance(e, int):
        raise TypeError(f"not an errno: {e!r} (expected a name like 'ENOMEM' or an int)")
    if not 0 < abs(e) < 4096:
        raise ValueError(f"not an errno: {e!r} (expected 1 to 4095, or its negative)")
    return abs(e)


def _check_arm_args(site: Any, errno: Any, nth: Any, times: Any, every: Any,
                    predicate: Any, callback: Any) -> None:
    """:meth:`Injector.arm`'s argument checks (``every=0`` used to divide by zero at
    the next hit)."""
    if not isinstance(site, str):
        raise TypeError(f"arm: site: expected a fault site name (str), got {site!r}")
    if errno is not None and (isinstance(errno, bool) or not isinstance(errno, int)):
        raise TypeError(f"arm: errno: expected None or an errno (int), got {errno!r}")
    for name, value, lo in (("nth", nth, 1), ("every", every, 1), ("times", times, -1)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"arm: {name}: expected an integer, got {value!r}")
        if value > MAX_INT or value < lo or (name == "times" and value == 0):
            want = ("-1 (unlimited) or an integer from 1" if name == "times"
                    else "an integer from 1")
            raise ValueError(f"arm: {name}: expected {want} to {MAX_INT}, got {value!r}")
    for name, fn in (("predicate", predicate), ("callback", callback)):
        if fn is not None and not callable(fn):
            raise TypeError(f"arm: {name}: expected None or a callable, got {fn!r}")


# ---------------------------------------------------------------------------- injector
class Injector:
    """Fault state of one FakeMM: armed sites, per-site hit counts, the log, holds.

    ``mm`` is the owning FakeMM (holds take references with its ``folio_get``);
    ``seed`` seeds :attr:`random`, used by ``p%`` terms.
    """

    def __init__(self, sites: Mapping[str, Site] | None = None, seed: int = 0, mm: Any = None) -> None:
        self.sites: dict[str, Site] = dict(BUILTIN_SITES if sites is None else sites)
        self.mm = mm
        self.seed = seed
        self.random: random.Random = random.Random(seed)
        self.armed: dict[str, list[Arming]] = {}
        self.hits: dict[str, int] = {}
        self.log: list[FaultRecord] = []
        self.holds: list[Hold] = []
        self.on_fire: list[Callable[[FaultRecord], None]] = []
        self.budget = DEFAULT_BUDGET
        self.total_hits: int = 0
        self.fired_count: int = 0               # firings so far (kernel loops compare it per round)
        self._checking: Any = None         # the folio of the migrate_folio check in progress
        self.recording: bool = False
        self.counting: bool = False              # count hits (no log): a matrix's fault-free run
        self.active: bool = False
        self._enabled = True

    @property
    def enabled(self) -> bool:
        """Master switch (default True): when False no site fires, records or counts a
        hit (``active`` stays False) whatever is armed.  Setting it recomputes
        :attr:`active`, so ``fake_mm.faults.enabled = False`` takes effect at once."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = bool(value)
        self._update()

    def _update(self) -> None:
        self.active = self._enabled and (self.recording or self.counting or bool(self.armed)
                                         or bool(self.holds))

    # -- sites -----------------------------------------------------------------------
    def declare(self, site: Site) -> None:
        """Make *site* (built-in or user) known to this injector, replacing one of that name."""
        self.sites[site.name] = site

    def declare_site(self, name: str, errnos: Iterable[int | str] | int | str, kernel: str = "driver",
                     meaning: str = "") -> Site:
        """Declare a user fault site that driver code hits with ``fake_mm.fault_point``.

        *errnos* (ints, negative ints or names such as ``"ENOMEM"``/``"-ENOMEM"``) are
        the errnos it may return, the first being the default.  Declaring the same site
        again with the same errnos returns the existing one; a built-in name or a
        conflicting redeclaration is a ValueError.
        """
        if not isinstance(name, str):
            raise TypeError(f"fault site name: expected a string, got {name!r}")
        for what, value in (("kernel", kernel), ("meaning", meaning)):
            if not isinstance(value, str):
                raise TypeError(f"fault site {name!r}: {what}: expected a string, got {value!r}")
        if errnos is None or isinstance(errnos, (bool, float, bytes)):
            raise TypeError(f"fault site {name!r}: errnos: expected errno names or numbers, got {errnos!r}")
        try:
            spec = parse_spec(f"{name}=off")
        except FaultSpecError:
            spec = None
        if spec is None or spec.site != name:
            raise ValueError(f"bad fault site name {name!r}: expected letters, digits, '_' and '.'")
        if isinstance(errnos, (int, str)):
            errnos = [errnos]
        values = tuple(dict.fromkeys(_errno_value(e) for e in errnos))
        if not values:
            raise ValueError(f"fault site {name!r}: declare at least one errno it may return")
        old = self.sites.get(name)
        if old is not None:
            if not old.user:
                raise ValueError(f"fault site {name!r} is built in; choose another name")
            if old.errnos != values:
                raise ValueError(f"fault site {name!r} is already declared with errnos "
                                 f"{_names(old.errnos)}, not {_names(values)}")
            return old
        s = Site(name, kernel, meaning or f"{name} fails", "a negative errno", values, user=True)
        self.sites[name] = s
        return s

    def _site(self, name: str) -> Site:
        s = self.sites.get(name)
        if s is None:
            raise UnknownSite(name, tuple(self.sites))
        return s

    # -- arming ----------------------------------------------------------------------
    def arm(self, site: str, errno: int | None = None, *, nth: int = 1, times: int = 1,
            every: int = 1, predicate: Callable[[dict[str, Any]], bool] | None = None,
            callback: Callable[[dict[str, Any]], Any] | None = None) -> Arming:
        """Arm *site* from hit *nth* on, at most *times* times (-1: unlimited), every
        *every*-th eligible hit counted from *nth*; *predicate(ctx)* filters hits;
        *callback(ctx)* runs when it fires — with ``errno=None`` and a callback the site
        does not fail.  Returns the :class:`Arming` (``disarm(arming)`` removes it).

        *nth* and *every* are integers from 1 to ``MAX_INT`` (2**63 - 1), *times* -1 or
        1 to ``MAX_INT``; out of range is a ValueError, a wrong type (a float, a bool, a
        non-callable *predicate*) a TypeError, each naming the parameter."""
        _check_arm_args(site, errno, nth, times, every, predicate, callback)
        s = self._site(site)
        if errno is not None and abs(errno) not in s.errnos:
            raise ValueError(f"fault site {site!r} cannot return -{errno_name(errno)}; "
                             f"it may return {_names(s.errnos)}")
        fail = errno is not None or callback is None
        a = Arming(site, errno=abs(errno) if errno is not None else s.errnos[0], nth=nth, times=times,
                   every=every, predicate=predicate, callback=callback, fail=fail)
        self._add(a)
        return a

    def arm_spec(self, spec: str | FaultSpec,
                 callbacks: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None) -> Arming:
        """Arm one spec (text or parsed, grammar in :mod:`.spec`); ``call(name)`` terms
        look *name* up in *callbacks*.  Raises :class:`FaultSpecError` for a bad spec,
        an unknown site, an errno the site cannot return or an unknown callback."""
        if not isinstance(spec, (str, FaultSpec)):
            raise TypeError(f"arm_spec: spec: expected a fault spec string or a FaultSpec, got {spec!r}")
        fs = parse_spec(spec) if isinstance(spec, str) else spec
        validate_spec(fs, self.sites)
        if callbacks is not None and not isinstance(callbacks, Mapping):
            raise TypeError(f"arm_spec: callbacks: expected a mapping of name -> callable, got {callbacks!r}")
        callbacks = dict(callbacks or {})
        for name, fn in callbacks.items():
            if not callable(fn):
                raise TypeError(f"arm_spec: callbacks[{name!r}]: expected a callable, got {fn!r}")
        for t in fs.terms:
            if t.action == "call" and t.arg not in callbacks:
                known = ", ".join(sorted(callbacks)) or "none registered"
                raise FaultSpecError(fs.text, t.arg_column or t.column, f"a registered callback ({known})",
                                     str(t.arg))
        a = Arming(fs.site, spec=fs, nth=fs.nth, every=fs.every,
                   times=-1 if fs.times is None else fs.times, terms=list(fs.terms),
                   callbacks=callbacks, default_errno=self.sites[fs.site].errnos[0])
        self._add(a)
        return a

    def _add(self, a: Arming) -> None:
        self.armed.setdefault(a.site, []).append(a)
        self._update()

    def disarm(self, arming: Arming | None = None) -> None:
        """Remove one arming, or all of them (holds stay until released)."""
        if arming is None:
            self.armed.clear()
        else:
            lst = self.armed.get(arming.site, [])
            if arming in lst:
                lst.remove(arming)
            if not lst:
                self.armed.pop(arming.site, None)
        self._update()

    def record(self, on: bool = True) -> None:
        """Count every hit (and log it) even when nothing is armed."""
        self.recording = on
        self._update()

    def count_hits(self, on: bool = True) -> None:
        """Count every hit in :attr:`hits` even when nothing is armed, without logging
        it (memory stays per site, whatever the number of hits)."""
        self.counting = on
        self._update()

    # -- holds -----------------------------------------------------------------------
    def hold(self, folio: Any, attempts: int | None = None) -> Hold:
        """Take a short-term reference on *folio* now (as a concurrent GUP would); the
        next *attempts* ``migrate_folio`` checks of it fail, and the reference is dropped
        at the one after (None: kept until :meth:`release_holds`).  A hold taken during a
        ``migrate_folio`` check of the folio (a ``hold`` action or a ``call`` at that
        site) makes that check fail and counts it as the first attempt."""
        folio = getattr(folio, "folio", folio)
        if attempts is not None and attempts < 1:
            raise ValueError(f"hold: attempts must be >= 1 or None, got {attempts!r}")
        mm = self.mm if self.mm is not None else folio._mm
        mm.folio_get(folio)
        h = Hold(self, folio, attempts, 1 if folio is self._checking else 0)
        self.holds.append(h)
        self._update()
        return h

    def release_holds(self) -> int:
        """Drop every short-term reference still held; returns how many."""
        holds = list(self.holds)
        for h in holds:
            h.release()
        return len(holds)

    def _migrate_check(self, folio: Any) -> None:
        for h in list(self.holds):
            if h.folio is folio:
                h.seen += 1
                if h.attempts is not None and h.seen > h.attempts:
                    h.release()

    # -- the site call ---------------------------------------------------------------
    def hit(self, site: str, **ctx: Any) -> int | None:
        """Called by a fault site: the negative errno to fail with, or None."""
        n = self.hits.get(site, 0) + 1
        self.hits[site] = n
        self.total_hits += 1
        if self.total_hits > self.budget:
            raise FaultBudgetExceeded(site, self.total_hits, _external_caller())
        fired, ret = _NO
        armings = self.armed.get(site)
        if site == "migrate_folio":
            folio = ctx.get("folio")
            if self.holds:
                self._migrate_check(folio)
            if armings:
                self._checking = folio      # a hold taken now counts this check (see hold())
                try:
                    fired, ret = self._fire(armings, ctx)
                finally:
                    self._checking = None
        elif armings:
            fired, ret = self._fire(armings, ctx)
        if fired:
            self.fired_count += 1
        if fired or self.recording:
            rec = FaultRecord(site, n, fired, ret, ctx, _external_caller() if fired else "")
            self.log.append(rec)
            if fired and self.on_fire:
                for listener in self.on_fire:
                    listener(rec)
        return ret

    def _fire(self, armings: list[Arming], ctx: dict[str, Any]) -> tuple[bool, int | None]:
        """Every arming sees the hit; the first errno wins."""
        fired, ret = _NO
        for a in armings:
            f, r = a.fire(self, ctx)
            if f:
                fired = True
                if ret is None:
                    ret = r
        return fired, ret

    @property
    def fired(self) -> list[FaultRecord]:
        """The logged records that fired, in order."""
        return [r for r in self.log if r.fired]

    def reset(self) -> None:
        """Back to the freshly built state: disarmed, holds released, counters, log and
        budget use cleared, the random generator re-seeded.  Declared sites, listeners
        and the budget setting stay."""
        self.release_holds()
        self.armed.clear()
        self.hits.clear()
        self.log.clear()
        self.total_hits = 0
        self.fired_count = 0
        self.recording = False
        self.counting = False
        self.random.seed(self.seed)
        self._update()


def _names(errnos: Iterable[int]) -> str:
    return ", ".join(f"-{errno_name(e)}" for e in errnos)
