"""The host's cyclic garbage collector during long model calls.

A model call that walks many folios (a long-term pin that migrates them, a
``migrate_pages`` of a long list, an unpin of many pages while an observer such as the
contract checker records each folio it touches, that observer's judgement of a pin that
returned many entries, a ``fallocate`` or ``write`` of a shmem file, a MAP_POPULATE/mlock
population or a write to fresh user memory, each a folio per page) allocates and frees a few Python
objects per folio that never form reference cycles: new folios, reverse-map entries,
``Page`` entries, trace events, the observer's records.  Each allocation still counts toward CPython's collection thresholds, and
the full collections they trigger scan every tracked object of the process: for a
machine with 1 GiB mapped, millions of them, several times per call, which costs about
as much as the model's own work.  Such calls pause the automatic collector while they
run and resume it when they return (or raise).  On resuming, when the call allocated
past the collector's first threshold, the young generation is collected at once (one
pass over the objects the call allocated, never over the whole heap), so the call pays
for its own garbage rather than whatever code allocates next.  A collector the caller
had disabled stays disabled.  A call over fewer than :data:`PAUSE_MIN` folios or pages
allocates too little to reach even the first threshold more than once, so it is not
paused.  This is host memory management only: nothing the model or its observer does
depends on it.
"""

from __future__ import annotations

import gc

__all__ = ["gc_pause", "gc_resume", "PAUSE_MIN"]

#: calls over fewer folios or pages than this run with the collector as it is (a few
#: Python objects each: well below one young collection's threshold of 700)
PAUSE_MIN = 64


def gc_pause(nr: int) -> bool:
    """Stop automatic collections for a call over *nr* folios or pages; True if they
    were running and are now paused (pass it to gc_resume)."""
    if nr >= PAUSE_MIN and gc.isenabled():
        gc.disable()
        return True
    return False


def gc_resume(paused: bool) -> None:
    """Undo :func:`gc_pause` (*paused*: what it returned)."""
    if paused:
        gc.enable()
        if gc.get_count()[0] > gc.get_threshold()[0]:
            gc.collect(0)
