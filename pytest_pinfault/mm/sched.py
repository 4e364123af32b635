"""Tasks: the part of ``task_struct`` the mm looks at.

Kernel: include/linux/sched.h (PF_MEMALLOC_PIN, ``current``), v6.12.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Task", "PF_MEMALLOC_PIN"]

PF_MEMALLOC_PIN = 0x10000000


class Task:
    """A task: ``pid``, ``comm``, the cpu it runs on (whose per-cpu lists and LRU batch
    it uses), its ``flags`` (PF_MEMALLOC_PIN), its address space ``mm``, its ``uid`` and its descriptor table ``files``."""

    __slots__ = ("pid", "comm", "cpu", "flags", "mm", "signal_pending", "cap_ipc_lock",
                 "uid", "files")

    def __init__(self, pid: int, comm: str, cpu: int, mm: Any = None) -> None:
        self.pid = pid
        self.comm = comm
        self.cpu = cpu
        self.flags = 0
        self.mm = mm
        self.signal_pending = False
        self.cap_ipc_lock = False
        self.uid = 1000                  # current_uid(); 0 is root (every capability)
        self.files: Any = None           # the descriptor table (fs/file.c), made on first use

    def __repr__(self) -> str:
        return f"<task {self.comm}[{self.pid}] cpu{self.cpu}>"
