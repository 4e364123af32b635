"""Observers: how the model reports what happens to whatever watches it.

The model never imports the code that judges it (the contract checker lives in
the ``contracts`` package and imports the model, not the other way round).  Instead a
:class:`~pytest_pinfault.FakeMM` carries at most one attached observer
(:meth:`FakeMM.attach_observer <pytest_pinfault.FakeMM.attach_observer>`), and reports
these events to it:

* ``attached_to(fake_mm)`` -- once, when it is attached.
* ``folio_ref(folio, new)`` -- *before* a folio's ``_refcount`` changes to *new*;
  with *new* ``MAPPING_CHANGE`` (mm/folio.py) before its ``_mapcount`` or ``mapping``
  changes (a page table or the page cache stops or starts mapping it: migration,
  unmap, COW, truncation, freeing), with *new* None before its ``flags`` or
  ``lru_batch`` change.  Every
  hold taken or dropped (a GUP reference or pin, ``folio_get``/``folio_put``, a mapping,
  the page cache, isolation), every migration, unmap, COW and truncation moves a
  refcount, so this one event lets an observer keep the set of folios a call touched
  (its cost then follows the call, never the machine).
* ``pin_call_begin(call)`` / ``pin_call_end(call, token, ret, entries, longterm,
  caller)`` -- around the outermost core pinning call (``pin_user_pages*``,
  ``get_user_pages*``, ``memfd_pin_folios``); *token* is what ``pin_call_begin``
  returned.
* ``check(final)`` -- :meth:`FakeMM.check <pytest_pinfault.FakeMM.check>` asks the
  observer to judge the machine now.

With no observer attached each event costs one attribute test.  This is the model's own
interface (no kernel counterpart); the kernel's nearest relatives are the page_ref
tracepoints (include/trace/events/page_ref.h, v6.12) that report every refcount change.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MMObserver"]


class MMObserver:
    """The events a :class:`~pytest_pinfault.FakeMM` reports (all no-ops here):
    subclass it, or provide the same methods, and attach with
    ``fake_mm.attach_observer(obs)``."""

    def attached_to(self, fake_mm: Any) -> None:
        """*fake_mm* reports to this observer from now on."""

    def folio_ref(self, folio: Any, new: int | None) -> None:
        """*folio*'s ``_refcount`` is about to become *new* (still the old value now);
        ``MAPPING_CHANGE``: its ``_mapcount`` or ``mapping`` is about to change; None:
        its ``flags`` or ``lru_batch``."""

    def pin_call_begin(self, call: str) -> Any:
        """A core pinning call *call* starts; the return value comes back as *token*."""
        return None

    def pin_call_end(self, call: str, token: Any, ret: Any, entries: Any, longterm: bool,
                     caller: str) -> None:
        """The core pinning call returned *ret* having filled *entries* (the caller's
        ``pages``/``folios`` list); *longterm*: FOLL_LONGTERM or ``memfd_pin_folios``;
        *caller*: ``file:line function`` of its caller."""

    def check(self, final: bool = False) -> list[Any]:
        """Judge the machine now (``FakeMM.check``); returns what was found."""
        return []
