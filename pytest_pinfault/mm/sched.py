"""Tasks: the part of ``task_struct`` the mm looks at.

Kernel: include/linux/sched.h (PF_MEMALLOC_PIN, ``current``), include/linux/sched/signal.h
(signal_pending, fatal_signal_pending), v6.12.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .mm_types import MMStruct

__all__ = ["Task", "PF_MEMALLOC_PIN"]

PF_MEMALLOC_PIN = 0x10000000


class Task:
    """A task: ``pid``, ``comm``, the cpu it runs on (whose per-cpu lists and LRU batch
    it uses), its ``flags`` (PF_MEMALLOC_PIN), its address space ``mm``, its ``uid``, its
    descriptor table ``files``, and its pending signals (``signal_pending``,
    ``fatal_signal_pending``)."""

    __slots__ = ("pid", "comm", "cpu", "flags", "mm", "_sigpending", "cap_ipc_lock",
                 "uid", "files")

    def __init__(self, pid: int, comm: str, cpu: int, mm: Any = None) -> None:
        self.pid: int = pid
        self.comm: str = comm
        self.cpu: int = cpu
        self.flags: int = 0
        self.mm: MMStruct = mm          # set for every task of a built machine
        self._sigpending = 0             # 0 none, 1 a signal, 2 a fatal one (SIGKILL)
        self.cap_ipc_lock: bool = False
        self.uid: int = 1000                  # current_uid(); 0 is root (every capability)
        self.files: Any = None           # the descriptor table (fs/file.c), made on first use

    @property
    def signal_pending(self) -> bool:
        """signal_pending(): some signal is pending, fatal or not.  Setting True queues a
        non-fatal signal (a fatal one already pending stays); False clears every signal.
        Kernel: include/linux/sched/signal.h:signal_pending (v6.12)."""
        return self._sigpending != 0

    @signal_pending.setter
    def signal_pending(self, value: bool) -> None:
        self._sigpending = max(self._sigpending, 1) if value else 0

    @property
    def fatal_signal_pending(self) -> bool:
        """fatal_signal_pending(): SIGKILL is pending (which implies signal_pending).
        Setting True kills the task; False clears every signal.
        Kernel: include/linux/sched/signal.h:fatal_signal_pending (v6.12)."""
        return self._sigpending == 2

    @fatal_signal_pending.setter
    def fatal_signal_pending(self, value: bool) -> None:
        self._sigpending = 2 if value else 0

    def __repr__(self) -> str:
        return f"<task {self.comm}[{self.pid}] cpu{self.cpu}>"
