"""Declared driver entry points: ``@pin_entry_point``.

The checker finds undeclared driver calls by itself when it is attached (the plugin
attaches it; :mod:`.tracking`).  Declaring an entry point still helps: its returns are
judged at the moment it returns (not at the next model call), rule 3 (count honesty)
applies to it, and violations carry its declared name.
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Any, Callable, TypeVar, cast, overload

from ..mm.fakemm import FakeMM
from ..mm.folio import Folio, Page
from ..mm.mm_types import MMStruct
from .checker import checker_for
from .units import short_caller

__all__ = ["pin_entry_point", "entry_point", "LIST_PARAMS"]

#: Parameter names preferred as an entry point's entry array for rule 3 (count
#: honesty); any other list argument that the call filled with pages or folios counts too.
LIST_PARAMS = ("pages", "folios")


def _find_fake_mm(args: tuple[Any, ...], kwargs: dict[Any, Any]) -> FakeMM | None:
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, FakeMM):
            return a
    if args:
        for attr in ("fake_mm", "k", "mm_k"):
            v = getattr(args[0], attr, None)
            if isinstance(v, FakeMM):
                return v
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, MMStruct) and isinstance(a._k, FakeMM):
            return a._k
    return None


def _is_entry(x: Any) -> bool:
    return isinstance(x, (Page, Folio))


def _out_arrays(bound: dict[str, Any]) -> list[tuple[str, list[Any], int]]:
    """(name, list, length before the call) of every list argument, named ones first."""
    out = []
    for name, v in bound.items():
        if isinstance(v, list):
            out.append((name, v, len(v)))
    out.sort(key=lambda t: (t[0] not in LIST_PARAMS,))
    return out


def _filled(arrays: list[tuple[str, list[Any], int]], before_ids: dict[int, list[Any]]) -> list[Any] | None:
    """The out-array the call filled: a ``pages``/``folios`` list, else the first list
    argument now holding pages or folios that it did not hold before the call."""
    for name, lst, _ in arrays:
        if name in LIST_PARAMS:
            return lst
    for name, lst, _ in arrays:
        prev = before_ids.get(id(lst), [])
        now = [id(x) for x in lst if _is_entry(x)]
        if now and now != prev:
            return lst
    return None


#: a driver entry point: any function (the decorators return it with its own type)
_F = TypeVar("_F", bound=Callable[..., Any])


def entry_point(name: str | None = None, *, count: bool | None = None) -> Callable[[_F], _F]:
    """Decorator factory for driver entry points; see :func:`pin_entry_point`."""
    def deco(func: _F) -> _F:
        call = name or func.__name__
        sig = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            k = _find_fake_mm(args, kwargs)
            checker = checker_for(k) if k is not None else None
            if checker is None or checker._depth:
                return func(*args, **kwargs)
            caller = short_caller(sys._getframe(1))
            try:
                bound = sig.bind_partial(*args, **kwargs).arguments
            except TypeError:
                bound = {}
            arrays = _out_arrays(bound)
            before_ids = {id(lst): [id(x) for x in lst if _is_entry(x)] for _, lst, _ in arrays}
            before = checker.snapshot_call()
            checker._depth += 1
            try:
                ret = func(*args, **kwargs)
            finally:
                checker._depth -= 1
            entries = _filled(arrays, before_ids)
            use_count = count
            if use_count is None:
                use_count = (entries is not None and isinstance(ret, int) and not isinstance(ret, bool))
            checker.judge_return(call, ret, entries, before, caller=caller, count=use_count)
            return ret

        wrapper.__pin_entry_point__ = call  # type: ignore[attr-defined]  # a marker attribute on the function object
        return cast(_F, wrapper)     # functools.wraps: same signature as func
    return deco


@overload
def pin_entry_point(func: _F, *, name: str | None = None, count: bool | None = None) -> _F: ...
@overload
def pin_entry_point(func: None = None, *, name: str | None = None,
                    count: bool | None = None) -> Callable[[_F], _F]: ...


def pin_entry_point(func: _F | None = None, *, name: str | None = None,
                    count: bool | None = None) -> _F | Callable[[_F], _F]:
    """Declare a driver entry point (``@pin_entry_point`` or
    ``@pin_entry_point(name=..., count=...)``); its returns are judged like a core
    pinning call's.  Optional under the plugin: an attached checker judges undeclared
    driver calls too (rules 1-2); declaring adds rule 3 and judges at the return itself.

    Finding the fake mm: the first argument (positional or keyword) that is a
    ``FakeMM``; else the ``fake_mm``, ``k`` or ``mm_k`` attribute of the first
    positional argument (a driver object); else the mm of the first ``MMStruct``
    argument.  Without a :class:`Checker` watching that fake mm (or when called from
    inside another entry point) the function just runs.

    Return convention: an ``int`` is the return code; a tuple/list whose first item is
    an ``int`` gives it as its first item; anything else counts as success.
    Negative -> rule 2 (no new pin, reference, locked_vm or isolated folio compared with
    just before the call).  Otherwise every user folio whose pins/references grew during
    the call and are still held is a long-term hold: rule 1 now, remembered for
    on-demand and teardown checks.  Rule 3 applies when the function returned a plain
    ``int`` and has an out-array: a parameter named ``pages`` or ``folios`` that
    received a list, else any list argument the call filled with pages or folios
    (``count=False`` switches it off, ``count=True`` forces it): the first *ret*
    entries must be non-NULL and the call must hold exactly *ret* units (one pin or
    reference per entry).
    """
    deco = entry_point(name, count=count)
    if func is None:
        return deco
    return deco(func)
