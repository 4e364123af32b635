"""Per-user accounting and mm references: ``struct user_struct``, ``can_do_mlock``,
``capable(CAP_IPC_LOCK)``, ``mmgrab``/``mmdrop``/``mmget``/``mmput``.

Kernel: include/linux/sched/user.h (struct user_struct), kernel/user.c (alloc_uid,
free_uid), include/linux/cred.h (get_uid, current_user), mm/mlock.c (can_do_mlock),
include/linux/sched/mm.h (mmgrab, mmdrop, mmget, mmget_not_zero), kernel/fork.c (mmput),
v6.12.

A task's uid is ``task.uid`` (default 1000, the first user).  ``user_struct`` objects
live in a per-machine uid table and are created on first use.  Counters registered with
``fake_mm.counters``: ``user.locked_vm`` (accounting: io_uring, iommufd and SO_ZEROCOPY
charge it), ``user.refs`` (references from :meth:`get_uid` not yet given back),
``mm.mm_count`` and ``mm.mm_users`` (references from ``mmgrab``/``mmget`` beyond the
owner's).

.. note:: No user namespaces, no rlimit per task: RLIMIT_MEMLOCK is the one on the
   current task's mm (``mm.rlimit_memlock``).  ``mmput`` of the last user reference
   tears the address space down like ``exit_mmap``; the model has no ``mm_struct`` to
   free at ``__mmdrop``, it only stops counting the mm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .fakemm import FakeMM
    from .mm_types import MMStruct

if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object

__all__ = ["UserStruct", "CAP_IPC_LOCK", "GLOBAL_ROOT_UID"]

CAP_IPC_LOCK = 14
GLOBAL_ROOT_UID = 0


class UserStruct:
    """``struct user_struct``: ``uid``, ``locked_vm`` (pages charged against
    RLIMIT_MEMLOCK by io_uring & co.; ``atomic_long_t`` in the kernel) and the reference
    count ``__count`` (1 for the uid table entry + one per :meth:`get_uid`)."""

    __slots__ = ("uid", "locked_vm", "_count", "__weakref__")

    def __init__(self, uid: int) -> None:
        self.uid: int = uid
        self.locked_vm: int = 0
        self._count = 1

    def __repr__(self) -> str:
        return f"<user_struct uid={self.uid} locked_vm={self.locked_vm}>"


class UserMixin(_Base):
    """Per-user accounting and mm reference half of :class:`~pytest_pinfault.FakeMM`."""

    def _init_user(self) -> None:
        self._uidhash: dict[int, UserStruct] = {}
        self._mm_refd: dict[int, Any] = {}
        c = self.counters
        # the readers are bound methods, not closures: no cell and no closure tuple per
        # counter and machine (fewer objects for the cyclic collector to walk)
        c.register("user.locked_vm", self._read_user_locked_vm,
                   rule="accounting", doc="pages charged to a user's locked_vm (RLIMIT_MEMLOCK)")
        c.register("user.refs", self._read_user_refs,
                   doc="user_struct references taken with get_uid and not freed")
        c.register("mm.mm_count", self._read_mm_count,
                   doc="mm_struct references taken with mmgrab and not dropped")
        c.register("mm.mm_users", self._read_mm_users,
                   doc="address-space users taken with mmget and not put")

    def _read_user_locked_vm(self) -> dict[Any, int]:
        return {u: u.locked_vm for u in self._uidhash.values()} if self._uidhash else {}

    def _read_user_refs(self) -> dict[Any, int]:
        return {u: u._count - 1 for u in self._uidhash.values()} if self._uidhash else {}

    def _read_mm_count(self) -> dict[Any, int]:
        return {m: m.mm_count - 1 for m in self._mm_refd.values()} if self._mm_refd else {}

    def _read_mm_users(self) -> dict[Any, int]:
        return {m: m.users - 1 for m in self._mm_refd.values()} if self._mm_refd else {}

    # ---------------------------------------------------------------- user_struct
    def find_user(self, uid: int) -> UserStruct:
        """The uid's ``user_struct`` (created on first use, like alloc_uid); no
        reference is taken.  Kernel: kernel/user.c:alloc_uid / find_user (v6.12)."""
        u = self._uidhash.get(uid)
        if u is None:
            u = self._uidhash[uid] = UserStruct(uid)
        return u

    def current_user(self) -> UserStruct:
        """The current task's user (no reference taken).  Kernel: include/linux/cred.h:current_user."""
        return self.find_user(getattr(self.current, "uid", 1000))

    def get_uid(self, u: UserStruct) -> UserStruct:
        """Take a reference on *u* and return it.  Kernel: include/linux/sched/user.h:get_uid."""
        u._count += 1
        return u

    def get_current_user(self) -> UserStruct:
        """``get_uid(current_user())``.  Kernel: include/linux/cred.h:get_current_user."""
        return self.get_uid(self.current_user())

    def free_uid(self, u: UserStruct | None) -> None:
        """Drop a reference from :meth:`get_uid`; NULL is a no-op; dropping the table's
        own reference is a refcount underflow (recorded warning).
        Kernel: kernel/user.c:free_uid (v6.12)."""
        if u is None:
            return
        if u._count <= 1:
            self._warn("free_uid", f"refcount_t: underflow; use-after-free (user_struct uid={u.uid})")
            return
        u._count -= 1

    # ---------------------------------------------------------------- capabilities
    def capable(self, cap: int) -> bool:
        """Does the current task have capability *cap*?  Only CAP_IPC_LOCK is modelled
        (``task.cap_ipc_lock``); root (uid 0) has every capability.
        Kernel: kernel/capability.c:capable (v6.12)."""
        task = self.current
        if getattr(task, "uid", 1000) == GLOBAL_ROOT_UID:
            return True
        if cap == CAP_IPC_LOCK:
            return bool(getattr(task, "cap_ipc_lock", False))
        return False

    def rlimit_memlock(self) -> int:
        """``rlimit(RLIMIT_MEMLOCK)`` of the current task, in bytes (from its mm).
        Kernel: include/linux/sched/signal.h:rlimit (v6.12)."""
        mm = self.current.mm
        return mm.rlimit_memlock if mm is not None else self.config.memlock

    def can_do_mlock(self) -> bool:
        """True when RLIMIT_MEMLOCK is not 0 or the task has CAP_IPC_LOCK.
        Kernel: mm/mlock.c:can_do_mlock (v6.12)."""
        return self.rlimit_memlock() != 0 or self.capable(CAP_IPC_LOCK)

    # ---------------------------------------------------------------- mm references
    def mmgrab(self, mm: "MMStruct") -> None:
        """Pin the ``mm_struct`` itself (not the address space).
        Kernel: include/linux/sched/mm.h:mmgrab (v6.12)."""
        mm.mm_count += 1
        self._mm_refd[id(mm)] = mm

    def mmdrop(self, mm: "MMStruct") -> None:
        """Drop a :meth:`mmgrab` reference; the last one frees the mm_struct (a drop
        below zero is a recorded warning).  Kernel: include/linux/sched/mm.h:mmdrop."""
        if mm.mm_count <= 0:
            self._warn("mmdrop", "refcount underflow: mmdrop of a freed mm_struct")
            return
        mm.mm_count -= 1
        self._mm_refd[id(mm)] = mm

    def mmget(self, mm: "MMStruct") -> None:
        """Take an address-space user reference.  Kernel: include/linux/sched/mm.h:mmget."""
        if mm.users <= 0:
            self._warn("mmget", "mmget on an mm whose address space is gone (use mmget_not_zero)")
            return
        mm.users += 1
        self._mm_refd[id(mm)] = mm

    def mmget_not_zero(self, mm: "MMStruct") -> bool:
        """:meth:`mmget` unless the address space is already gone; True on success.
        Kernel: include/linux/sched/mm.h:mmget_not_zero (v6.12)."""
        if mm.users <= 0:
            return False
        mm.users += 1
        self._mm_refd[id(mm)] = mm
        return True

    def mmput(self, mm: "MMStruct") -> None:
        """Drop an address-space user reference; the last one unmaps everything
        (exit_mmap) and drops the mm_count reference the users held.
        Kernel: kernel/fork.c:mmput / __mmput (v6.12)."""
        if mm.users <= 0:
            self._warn("mmput", "refcount underflow: mmput of an mm with no users")
            return
        mm.users -= 1
        self._mm_refd[id(mm)] = mm
        if mm.users == 0:
            for v in list(mm.vmas):
                mm.munmap(v.start, v.end - v.start)
            self.mmdrop(mm)
