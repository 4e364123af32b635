"""The per-FakeMM fault injector that the model's fault sites call.

A site line in the model reads::

    fi = self.faults
    if fi.active and fi.hit("folio_isolate_lru", folio=folio) is not None:
        return False

``active`` is False while nothing is armed and nothing records hits, so an idle site
costs one attribute read.  :meth:`Injector.arm` is the programmatic way to make a site
fire; the spec grammar and matrices build on it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .sites import BUILTIN_SITES, Site

__all__ = ["Injector", "Arming", "FaultRecord", "UnknownSite"]


class UnknownSite(KeyError):
    """A site name that is neither built in nor declared."""

    def __str__(self) -> str:
        return f"unknown fault site {self.args[0]!r}; known sites: {', '.join(sorted(self.args[1]))}"


@dataclasses.dataclass
class Arming:
    """When and how one site fires: from hit ``nth`` on (1-based), at most ``times``
    times (-1: unlimited), every ``every``-th eligible hit; ``errno`` (positive) to
    return; ``predicate(ctx)`` filters eligible hits; ``callback(ctx)`` runs when it
    fires (a race) — with ``errno=None`` and a callback the site does not fail."""

    site: str
    errno: int | None = None
    nth: int = 1
    times: int = 1
    every: int = 1
    predicate: Callable[[dict[str, Any]], bool] | None = None
    callback: Callable[[dict[str, Any]], Any] | None = None
    fail: bool = True
    eligible: int = 0
    fired: int = 0

    def should_fire(self, ctx: dict[str, Any]) -> bool:
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


@dataclasses.dataclass(frozen=True)
class FaultRecord:
    """One hit of a site: ``occurrence`` is the 1-based hit count of that site;
    ``fired`` tells whether it failed (``errno`` negative) or ran a callback."""

    site: str
    occurrence: int
    fired: bool
    errno: int | None
    context: dict[str, Any]


class Injector:
    """Fault state of one FakeMM: armed sites, per-site hit counts and the fired log."""

    def __init__(self, sites: dict[str, Site] | None = None) -> None:
        self.sites: dict[str, Site] = dict(BUILTIN_SITES if sites is None else sites)
        self.armed: dict[str, list[Arming]] = {}
        self.hits: dict[str, int] = {}
        self.log: list[FaultRecord] = []
        self.recording = False
        self.active = False
        self.enabled = True

    def _update(self) -> None:
        self.active = self.enabled and (self.recording or bool(self.armed))

    def declare(self, site: Site) -> None:
        self.sites[site.name] = site

    def arm(self, site: str, errno: int | None = None, *, nth: int = 1, times: int = 1,
            every: int = 1, predicate: Callable[[dict[str, Any]], bool] | None = None,
            callback: Callable[[dict[str, Any]], Any] | None = None) -> Arming:
        """Arm *site*; returns the :class:`Arming` (``disarm(arming)`` removes it)."""
        s = self.sites.get(site)
        if s is None:
            raise UnknownSite(site, tuple(self.sites))
        if errno is not None and abs(errno) not in s.errnos:
            names = ", ".join(f"-{_name(e)}" for e in s.errnos)
            raise ValueError(f"fault site {site!r} cannot return -{_name(abs(errno))}; it may return {names}")
        fail = errno is not None or callback is None
        a = Arming(site, abs(errno) if errno is not None else s.errnos[0], nth, times, every,
                   predicate, callback, fail)
        self.armed.setdefault(site, []).append(a)
        self._update()
        return a

    def disarm(self, arming: Arming | None = None) -> None:
        """Remove one arming, or all of them."""
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

    def hit(self, site: str, **ctx: Any) -> int | None:
        """Called by a fault site: the negative errno to fail with, or None."""
        n = self.hits.get(site, 0) + 1
        self.hits[site] = n
        ret = None
        fired = False
        for a in self.armed.get(site, ()):
            if a.should_fire(ctx):
                fired = True
                if a.callback is not None:
                    a.callback(ctx)
                if a.fail:
                    ret = -a.errno
                    break
        if fired or self.recording:
            self.log.append(FaultRecord(site, n, fired, ret, ctx))
        return ret

    @property
    def fired(self) -> list[FaultRecord]:
        return [r for r in self.log if r.fired]

    def reset(self) -> None:
        self.armed.clear()
        self.hits.clear()
        self.log.clear()
        self.recording = False
        self._update()


def _name(e: int) -> str:
    import errno as _errno
    return _errno.errorcode.get(e, str(e))
