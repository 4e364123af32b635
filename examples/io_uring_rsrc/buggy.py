"""Buggy twins of the io_uring registration model: each differs from
`driver.IoUringRsrc` in one step and is caught by the contract checker with no assert
written for its bug (test_io_uring_rsrc.py)."""

from __future__ import annotations

from typing import Any

from .driver import IoRingCtx, IoUringRsrc


class UserLockedVmLeak(IoUringRsrc):
    """Unregistering gives the ring mm's pinned_vm back but forgets the owner's per-user
    ``locked_vm``: every register/unregister cycle eats RLIMIT_MEMLOCK until the user can
    register nothing (counter ``user.locked_vm``: rule 9 at teardown)."""

    def unaccount_mem(self, ctx: IoRingCtx, nr_pages: int) -> None:
        if ctx.mm_account is not None:
            ctx.mm_account.pinned_vm -= nr_pages


class CoalesceKeepsPins(IoUringRsrc):
    """Coalescing a huge-page buffer keeps every page's pin although the imu will unpin only
    one per folio (pins never released: rule 4 at teardown)."""

    def drop_extra_pins(self, pages: list, n: int) -> None:
        pass


class AccountFailLeaksPins(IoUringRsrc):
    """When charging the buffer fails (RLIMIT_MEMLOCK), the pinned pages are not unpinned
    (rule 2 at the IORING_REGISTER_BUFFERS return)."""

    def unpin_on_error(self, pages: list, nr_pages: int) -> None:
        pass


__all__: list[Any] = ["UserLockedVmLeak", "CoalesceKeepsPins", "AccountFailLeaksPins"]
