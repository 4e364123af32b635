"""mmu interval notifiers: the non-pinning alternative to long-term pins.

Kernel: mm/mmu_notifier.c (mmu_interval_notifier_insert/remove,
mmu_interval_read_begin/retry, mmu_interval_set_seq), include/linux/mmu_notifier.h,
v5.5+ (99cb252f5e68).

A driver registers a virtual range with ``ops.invalidate(sub, range, cur_seq)``.  Before
the model changes page-table entries in that range -- munmap, mprotect, COW, truncation,
and migration for CMA allocation, offlining or a long-term pin elsewhere -- it calls
``invalidate``; the driver must call :meth:`MMUIntervalNotifier.set_seq` and stop using
the range.  Readers bracket their device mapping with ``read_begin``/``read_retry``.

.. note:: Single-threaded: an invalidation is never "in progress" when a reader
   begins, so ``read_begin`` never sleeps; the sequence is still odd during the callback.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object

__all__ = ["MMUIntervalNotifier", "MMUNotifierRange"]


@dataclasses.dataclass(frozen=True)
class MMUNotifierRange:
    """``struct mmu_notifier_range``: the address range and the event name."""

    mm: Any
    start: int
    end: int
    event: str


class MMUIntervalNotifier:
    """``struct mmu_interval_notifier``: ``start``/``last`` (inclusive), ``ops`` with
    ``invalidate(sub, range, cur_seq) -> bool``, the ``invalidate_seq``."""

    def __init__(self, mm: Any, start: int, length: int, ops: Any) -> None:
        self.mm = mm
        self.start = start
        self.last: int = start + length - 1
        self.ops = ops
        self.invalidate_seq = 0
        self._seq_set = 0

    def set_seq(self, cur_seq: int) -> None:
        """mmu_interval_set_seq: called by ``invalidate`` under the driver lock."""
        self._seq_set = cur_seq


class MMUNotifierMixin(_Base):
    """Notifier half of :class:`~pytest_pinfault.FakeMM`."""

    def mmu_interval_notifier_insert(self, mm: Any, start: int, length: int, ops: Any) -> MMUIntervalNotifier | int:
        """Register ``[start, start+length)`` of *mm*; the notifier, or -EINVAL (length 0
        or overflow).  Kernel: mm/mmu_notifier.c:mmu_interval_notifier_insert."""
        import errno

        from .mm_types import MMStruct
        if self._foreign(mm, MMStruct, "mmu_interval_notifier_insert", "mm"):
            return -errno.EINVAL
        if length <= 0 or start < 0 or start + length > 1 << 64:
            return -errno.EINVAL
        sub = MMUIntervalNotifier(mm, start, length, ops)
        sub.invalidate_seq = self._notifier_seq
        mm.notifiers.append(sub)
        return sub

    def mmu_interval_notifier_remove(self, sub: MMUIntervalNotifier) -> None:
        """Unregister *sub* (the kernel also waits for running callbacks).
        Kernel: mm/mmu_notifier.c:mmu_interval_notifier_remove (v6.12)."""
        if sub in sub.mm.notifiers:
            sub.mm.notifiers.remove(sub)

    def mmu_interval_read_begin(self, sub: MMUIntervalNotifier) -> int:
        """The sequence to pass to :meth:`mmu_interval_read_retry` (even: no
        invalidation running).  Kernel: mm/mmu_notifier.c:mmu_interval_read_begin (v6.12)."""
        return sub.invalidate_seq

    def mmu_interval_read_retry(self, sub: MMUIntervalNotifier, seq: int) -> bool:
        """True when an invalidation ran since ``read_begin`` returned *seq*: the caller
        must retry.  Kernel: include/linux/mmu_notifier.h:mmu_interval_read_retry (v6.12)."""
        return sub.invalidate_seq != seq

    def mmu_interval_check_retry(self, sub: MMUIntervalNotifier, seq: int) -> bool:
        """True when an invalidation collided with the critical section begun by
        :meth:`mmu_interval_read_begin` returning *seq* (False is only a hint; the
        authoritative test is :meth:`mmu_interval_read_retry`).  Kernel:
        include/linux/mmu_notifier.h:mmu_interval_check_retry (v6.12)."""
        return sub.invalidate_seq != seq

    def _mmu_notify(self, mm: Any, start: int, end: int, event: str) -> None:
        subs = [s for s in mm.notifiers if s.start < end and start <= s.last]
        if not subs:
            return
        self._notifier_seq += 2
        rng = MMUNotifierRange(mm, start, end, event)
        for sub in subs:
            cur = self._notifier_seq - 1          # odd while invalidating
            sub.invalidate_seq = cur
            ok = sub.ops.invalidate(sub, rng, cur)
            if ok is False:
                self._warn("mmu_notifier", "invalidate returned false for a blockable range")
            if sub._seq_set != cur:
                self._warn("mmu_interval_set_seq", "invalidate did not call mmu_interval_set_seq")
            sub.invalidate_seq = cur + 1
        if self.trace.on:
            self._trace("mmu_invalidate", start=start, end=end, event=event, nr=len(subs))
