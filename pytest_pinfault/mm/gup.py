"""get_user_pages / pin_user_pages, long-term pinning and memfd_pin_folios.

Kernel: mm/gup.c (v6.17): try_grab_folio, gup_put_folio, is_valid_gup_args,
__get_user_pages, __get_user_pages_locked, __gup_longterm_locked,
collect_longterm_unpinnable_folios, migrate_longterm_unpinnable_folios,
check_and_migrate_movable_pages/_folios, the get_/pin_user_pages* entry points,
gup_fast_fallback, unpin_user_page(s)[_dirty_lock], unpin_user_folio, unpin_folio(s),
folio_add_pins, memfd_pin_folios.

Reference arithmetic (§1.6 of the contract): FOLL_GET adds one reference per page;
FOLL_PIN adds GUP_PIN_COUNTING_BIAS (1024) per page to a small folio, and one reference
plus one ``_pincount`` per page to a large folio; the zero folio is never pinned.
``memfd_pin_folios`` takes exactly one pin per folio.

Long-term pins run under PF_MEMALLOC_PIN and loop: pin, check that every folio is
long-term pinnable, and if not isolate and migrate those folios, drop every pin and
pin again (``-EAGAIN``).  The kernel loop is unbounded; the model stops after
``MMConfig.gup_retry_limit`` rounds.  What happens then depends on why the loop kept
going:

* an injected fault fired on the last round (a persistent ``folio_isolate_lru`` failure,
  say): the real kernel would loop there for ever, and that is the kernel's outcome, not
  a driver fault.  It is recorded in ``fake_mm.kernel_outcomes`` as a
  :class:`KernelOutcome`.  ``__gup_longterm_locked`` re-enters ``__get_user_pages`` on
  every round, which checks ``fatal_signal_pending()``: the task hangs until it is
  killed, so the model kills it (``fatal_signal_pending``) and the next round returns
  ``-EINTR``, as v6.12 does.  ``memfd_pin_folios`` has no such check in its loop: the
  task would never return, so the model raises :class:`KernelHang` and the caller never
  sees a return value.
* nothing was injected (machine state, such as the ``pcp_thp_shared_list`` quirk handing
  back CMA pages as migration targets): a livelock (``fake_mm.livelocks``, contract
  rule 5); every pin is dropped and the call returns ``-ENOMEM``.

A task that keeps calling GUP after a signal is pending (a driver loop retrying on
``-EINTR``) would never finish either: after ``gup_retry_limit`` such calls the model
records a livelock naming the caller's loop and raises
:class:`~pytest_pinfault.faults.injector.FaultBudgetExceeded` to end it.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
from typing import TYPE_CHECKING, Any, Sequence

from . import gfp as _g
from .folio import (GUP_PIN_COUNTING_BIAS, KIND_ANON, KIND_FILE, KIND_HUGETLB, KIND_SHMEM, KIND_ZERO,
                    PAGE_SHIFT, PAGE_SIZE, PG_anon_exclusive, PG_dirty, PG_isolated, PG_lru, Folio, Page)
from .mm_types import (FOLL, INTERNAL_GUP_FLAGS, pte_entry, VM_IO, VM_MAYWRITE, VM_PFNMAP, VM_READ,
                       VM_SHARED, VM_WRITE, VMA, MMStruct)
from .hostgc import gc_pause, gc_resume
from .memfd import MemFile
from .migrate import MIGRATE_SYNC, MR_LONGTERM_PIN, MigrationTargetControl
from .gfp import ZONE_MOVABLE
from .mmzone import pageblock_order

if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object

__all__ = ["Livelock", "KernelOutcome", "KernelHang", "Out"]

_WRITE = int(FOLL.WRITE)
_GET = int(FOLL.GET)
_FORCE = int(FOLL.FORCE)
_NOWAIT = int(FOLL.NOWAIT)
_NOFAULT = int(FOLL.NOFAULT)
_ANON = int(FOLL.ANON)
_LONGTERM = int(FOLL.LONGTERM)
_PCI_P2PDMA = int(FOLL.PCI_P2PDMA)
_TOUCH = int(FOLL.TOUCH)
_REMOTE = int(FOLL.REMOTE)
_PIN = int(FOLL.PIN)
_UNLOCKABLE = int(FOLL.UNLOCKABLE)
_FAST_ONLY = int(FOLL.FAST_ONLY)

_LONGTERM_GFP = int(_g.GFP_USER | _g.gfp_t.NOWARN)
_CALLERS: dict[tuple[Any, int], str] = {}   # (code, instruction) -> "file:line function"


def _is_cow_mapping(vma: VMA) -> bool:
    """include/linux/mm.h:is_cow_mapping (v6.12): private and may be written."""
    return vma.flags & (VM_SHARED | VM_MAYWRITE) == VM_MAYWRITE


@dataclasses.dataclass(frozen=True)
class Livelock:
    """A retry loop that exceeded its bound (contract rule 5)."""

    loop: str
    iterations: int
    folio: Any
    caller: str

    def __str__(self) -> str:
        on = f", kept failing on {self.folio!r}" if self.folio is not None else ""
        return f"livelock in {self.loop}: {self.iterations} iterations{on} (called from {self.caller})"


@dataclasses.dataclass(frozen=True)
class KernelOutcome:
    """A kernel retry loop that an injected fault keeps failing, so the real kernel would
    never leave it (see the module docstring): ``loop`` (the kernel function),
    ``rounds`` (the model's bound), ``site`` and ``occurrence`` (the fault that fired on
    the last round), ``folio`` (the one the loop kept failing on), ``caller`` (the code
    outside the package that made the call) and ``returned``: ``-EINTR`` when the kernel
    checks for a fatal signal in the loop (the task hangs until killed, then the call
    returns that), None when it does not (the task never returns).

    Kernel: mm/gup.c:__gup_longterm_locked, __get_user_pages (fatal_signal_pending),
    memfd_pin_folios (v6.12)."""

    loop: str
    rounds: int
    site: str
    occurrence: int
    folio: Any
    caller: str
    returned: int | None

    @property
    def kind(self) -> str:
        """``"killed"`` (the call returned -EINTR) or ``"hang"`` (never returns)."""
        return "hang" if self.returned is None else "killed"

    def __str__(self) -> str:
        why = (f"{self.loop} would retry for ever: the injected {self.site} fault fires on every "
               f"round (last at {self.site}#{self.occurrence})")
        if self.returned is None:
            return (f"{why}; {self.loop} never checks for a fatal signal, so the task would hang "
                    f"there unkillable (called from {self.caller or '<unknown>'})")
        return (f"{why}; the task hangs until killed, then __get_user_pages sees the fatal signal "
                f"and the call returns -EINTR (called from {self.caller or '<unknown>'})")

    def as_dict(self) -> dict[str, Any]:
        """The outcome as plain JSON types (the JSON report's ``kernel`` entries)."""
        folio = self.folio
        return {"loop": self.loop, "rounds": self.rounds, "site": self.site,
                "occurrence": self.occurrence, "kind": self.kind, "returned": self.returned,
                "pfn": getattr(folio, "pfn", None), "caller": self.caller, "message": str(self)}


class KernelHang(BaseException):
    """Raised out of a kernel call whose retry loop an injected fault keeps failing and
    that never checks for a fatal signal (:class:`KernelOutcome` with ``returned`` None):
    the real task would never return, so nothing after the call can run.  A
    BaseException, so driver code's ``except Exception`` cannot swallow it."""

    def __init__(self, outcome: KernelOutcome) -> None:
        self.outcome = outcome
        super().__init__(str(outcome))


class GupMixin(_Base):
    """GUP half of :class:`~pytest_pinfault.FakeMM`."""

    _observer: Any = None              # set per instance by FakeMM.__init__
    _core_pinning = False              # inside a judged core pinning call
    # set by __gup_longterm_locked for the walk it calls next, which consumes it: its
    # fast loop may leave a small folio in pages[] for the Page (see _page_entries)
    _gup_folio_entries = False
    # set by that walk: every entry it returned is a Page of a small folio it judged
    # long-term pinnable, and it took no fault
    _gup_walk_pinnable = False

    # ------------------------------------------------------------------ contract judging
    def _judge_core_pin(self, call: str, func: Any, args: tuple[Any, ...], entries: Any, gup_flags: int) -> int:
        """Run core pinning call *func* and report it to the attached observer
        (``pin_call_begin``/``pin_call_end``, mm/observer.py; long-term when
        *gup_flags* has FOLL_LONGTERM).  Only the outermost core call is reported.
        Reached only when an observer is attached: without one each entry point costs
        one attribute check."""
        obs = self._observer
        f = sys._getframe(2)
        where = (f.f_code, f.f_lasti)
        caller = _CALLERS.get(where)
        if caller is None:
            if len(_CALLERS) > 4096:
                _CALLERS.clear()
            caller = _CALLERS[where] = \
                f"{f.f_code.co_filename.rpartition(os.sep)[2]}:{f.f_lineno} {f.f_code.co_name}"
        token = obs.pin_call_begin(call)
        self._core_pinning = True
        try:
            ret: int = func(self, *args)        # a core pinning call: count or -errno
        finally:
            self._core_pinning = False
        paused = gc_pause(ret)                # mm/hostgc.py: the judgement reads each entry
        try:
            obs.pin_call_end(call, token, ret, entries, bool(int(gup_flags) & _LONGTERM), caller)
        finally:
            gc_resume(paused)
        return ret

    # ------------------------------------------------------------------ grab / put
    def try_grab_folio(self, folio: Folio, refs: int, flags: int) -> int:
        """Take *refs* references (FOLL_GET) or pins (FOLL_PIN) on *folio*: 0, or
        -ENOMEM when the refcount is 0 (WARN).  Hits the ``try_grab_folio`` fault site.
        Kernel: mm/gup.c:try_grab_folio (v6.10+, int-returning)."""
        if type(folio) is not Folio or folio._mm is not self or folio.freed or type(refs) is not int \
                or (type(flags) is not int and not isinstance(flags, int)):
            for name, v in (("refs", refs), ("flags", flags)):
                if not isinstance(v, int):
                    raise TypeError(f"try_grab_folio: {name} must be an int, got {type(v).__name__}")
            usable = self._usable_folio(folio, "try_grab_folio")
            if usable is None:
                return -errno.EFAULT
            folio = usable
        if refs <= 0:
            if refs < 0:
                self._warn("try_grab_folio", f"negative count: {refs} references or pins", folio=folio)
                return -errno.EINVAL
            return 0
        fi = self.faults
        if fi.active:
            rc = fi.hit("try_grab_folio", folio=folio, refs=refs, flags=flags)
            if rc is not None:
                return rc
        r = folio._rc                         # folio._refcount, read from its slot
        if r <= 0:
            self._warn("try_grab_folio", "WARN_ON_ONCE(folio_ref_count(folio) <= 0)", folio=folio)
            return -errno.ENOMEM
        if type(flags) is not int:
            flags = int(flags)
        if flags & _GET:
            if folio.kind != KIND_ZERO:       # folio_put ignores the zero folio: so do gets
                folio._refcount = r + refs
        elif flags & _PIN:
            if folio.kind == KIND_ZERO:
                return 0
            r += refs if folio.order else refs * GUP_PIN_COUNTING_BIAS
            watch = self._ref_watch
            if watch is not None:             # folio._refcount = r, written out
                watch(folio, r)
            folio._rc = r
            if folio.order:
                folio._pincount += refs
            self.stats.nr_foll_pin_acquired += refs
        return 0

    def gup_put_folio(self, folio: Folio, refs: int, flags: int) -> None:
        """Release what try_grab_folio took.  A count below 1, a folio already freed or
        of another machine, or more pins than the folio has is a recorded warning and
        changes nothing.  Kernel: mm/gup.c:gup_put_folio."""
        if type(folio) is not Folio or folio._mm is not self or folio.freed or type(refs) is not int \
                or type(flags) is not int:
            for name, v in (("refs", refs), ("flags", flags)):
                if not isinstance(v, int):
                    raise TypeError(f"gup_put_folio: {name} must be an int, got {type(v).__name__}")
            usable = self._usable_folio(folio, "gup_put_folio")
            if usable is None:
                return
            folio = usable
            flags = int(flags)
        if refs <= 0:
            self._warn("unpin" if flags & _PIN else "put_page",
                       f"{'negative' if refs < 0 else 'zero'} count: releasing {refs} "
                       f"{'pins' if flags & _PIN else 'references'}", folio=folio)
            return
        if not flags & _PIN:
            self._folio_put_refs(folio, refs)
            return
        if folio.kind == KIND_ZERO:
            return
        if folio.order:
            if folio._pincount < refs:
                self._warn("unpin", f"unpinning {refs} of a folio with _pincount {folio._pincount}",
                           folio=folio)
                return
            self.stats.nr_foll_pin_released += refs      # a refused unpin releases nothing
            folio._pincount -= refs
            self._folio_put_refs(folio, refs)
            return
        r = folio._rc
        bias = refs * GUP_PIN_COUNTING_BIAS
        if r < bias:
            self._warn("unpin", "unpinning a small folio with refcount < 1024 (not pinned)",
                       folio=folio)
            return
        self.stats.nr_foll_pin_released += refs
        # _folio_put_refs(folio, bias), written out for the common case
        left = r - bias
        if left > 0 and left >= folio._mc + (folio.nr_pages if folio._mapping is not None else 0):
            watch = self._ref_watch
            if watch is not None:           # folio._refcount = left, written out
                watch(folio, left)
            folio._rc = left                # nothing freed, nothing to check
            return
        self._put_refs(folio, bias, "folio_put_refs")

    def _folio_put_refs(self, folio: Folio, refs: int) -> None:
        left = folio._rc - refs
        if left > 0 and left >= folio._mc + (folio.nr_pages if folio._mapping is not None else 0) \
                and not folio.freed and folio.kind != KIND_ZERO:
            watch = self._ref_watch
            if watch is not None:           # folio._refcount = left, written out
                watch(folio, left)
            folio._rc = left                # the common case: nothing freed, nothing to check
            return
        self._put_refs(folio, refs, "folio_put_refs")

    def put_page(self, page: Page | Folio) -> None:
        """Drop a FOLL_GET reference; misuse is recorded as for folio_put.
        Kernel: include/linux/mm.h:put_page."""
        folio = self._usable_folio(page, "put_page", "page")
        if folio is not None:
            self._put_refs(folio, 1, "put_page")

    # ------------------------------------------------------------------ release APIs
    def unpin_user_page(self, page: Page) -> None:
        """Release one pin.  Kernel: mm/gup.c:unpin_user_page."""
        folio = self._usable_folio(page, "unpin_user_page", "page")
        if folio is not None:
            self.gup_put_folio(folio, 1, _PIN)

    def unpin_user_pages(self, pages: Sequence[Page | None], npages: int) -> None:
        """Release one pin per entry of ``pages[:npages]``, grouping consecutive pages of
        a folio; NULL (None) entries are skipped (v6.13, and 6.12.y), on ``kernel`` "6.1"
        and "6.6" they are a recorded ``null_pointer_dereference`` warning (the kernel
        oopses); an errno-valued *npages* is a WARN and a no-op.
        Kernel: mm/gup.c:unpin_user_pages."""
        self.unpin_user_pages_dirty_lock(pages, npages, False)

    def unpin_user_pages_dirty_lock(self, pages: Sequence[Page | None], npages: int,
                                    make_dirty: bool) -> None:
        """As :meth:`unpin_user_pages`, marking each folio dirty first if *make_dirty*.
        With *make_dirty*, a NULL entry is a ``null_pointer_dereference`` warning before
        v6.13 (6.12.118 skips NULL only when not dirtying).
        Kernel: mm/gup.c:unpin_user_pages_dirty_lock (v6.13)."""
        if npages < 0:
            self._warn("unpin_user_pages", f"WARN_ON(IS_ERR_VALUE(npages)): npages={npages}")
            return
        npages = self._array_bound("unpin_user_pages", pages, npages, "pages")
        # NULL entries are skipped since v6.13 ('mm/gup: handle NULL pages in
        # unpin_user_pages()'); 6.12.118 has it in unpin_user_pages only, 6.1.192 nowhere:
        # there page_folio(NULL) dereferences NULL
        cfg = self.config
        null_ok = cfg.kernel_at_least("6.13") or (cfg.kernel_at_least("6.12") and not make_dirty)
        paused = gc_pause(npages)           # mm/hostgc.py: an observer records each folio
        try:
            i = 0
            put = self.gup_put_folio
            fast = self._ref_watch is None
            released = 0                    # NR_FOLL_PIN_RELEASED of the written-out puts
            while i < npages:
                page = pages[i]
                if page is None:
                    if not null_ok:
                        self._warn("null_pointer_dereference",
                                   f"unpin_user_pages{'_dirty_lock' if make_dirty else ''}: pages[{i}] is NULL: "
                                   f"kernel {cfg.kernel} has no NULL check there (page_folio(NULL))")
                    i += 1
                    continue
                if type(page) is not Page:
                    folio = self._usable_folio(page, "unpin_user_pages", f"pages[{i}]")
                    if folio is None:
                        i += 1
                        continue
                folio = page.folio
                n = 1
                if folio.order:
                    while i + n < npages and (nxt := pages[i + n]) is not None and nxt.folio is folio:
                        n += 1
                if make_dirty and folio.kind != KIND_ZERO:
                    folio.flags |= PG_dirty
                if fast and n == 1 and type(folio) is Folio and not folio.order \
                        and folio._mm is self and not folio.freed and folio.kind != KIND_ZERO:
                    # gup_put_folio(folio, 1, FOLL_PIN) of a small folio that keeps a
                    # reference, written out
                    left = folio._rc - GUP_PIN_COUNTING_BIAS
                    if left > 0 and left >= folio._mc + (1 if folio._mapping is not None else 0):
                        folio._rc = left
                        released += 1
                        i += 1
                        continue
                put(folio, n, _PIN)
                fast = self._ref_watch is None
                i += n
        finally:
            self.stats.nr_foll_pin_released += released
            gc_resume(paused)

    def unpin_user_page_range_dirty_lock(self, page: Page, npages: int, make_dirty: bool) -> None:
        """Release one pin on each of *npages* physically consecutive pages from *page*
        (one ``gup_put_folio`` per folio run), dirtying each folio first if
        *make_dirty*.  A pfn in the range with no folio is a recorded warning.
        Kernel: mm/gup.c:unpin_user_page_range_dirty_lock / gup_folio_range_next (v6.12)."""
        i = 0
        while i < npages:
            pfn = page.pfn + i
            folio = page.folio if page.folio.pfn <= pfn < page.folio.pfn + page.folio.nr_pages \
                else self.pfn_to_folio(pfn)
            if folio is None:
                self._warn("unpin_user_page_range_dirty_lock", f"no folio at pfn {pfn:#x} inside the range")
                return
            nr = min(npages - i, folio.nr_pages - (pfn - folio.pfn)) if folio.order else 1
            if make_dirty and folio.kind != KIND_ZERO:
                folio.flags |= PG_dirty
            self.gup_put_folio(folio, nr, _PIN)
            i += nr

    def unpin_user_folio(self, folio: Folio, npages: int) -> None:
        """Release *npages* pins of *folio*; a count below 1, a freed or foreign folio,
        or more pins than it has is a recorded warning.  Kernel: mm/gup.c:unpin_user_folio."""
        usable = self._usable_folio(folio, "unpin_user_folio")
        if usable is not None:
            self.gup_put_folio(usable, npages, _PIN)

    def unpin_folio(self, folio: Folio) -> None:
        """Release one pin (memfd_pin_folios' unit).  Kernel: mm/gup.c:unpin_folio."""
        usable = self._usable_folio(folio, "unpin_folio")
        if usable is not None:
            self.gup_put_folio(usable, 1, _PIN)

    def unpin_folios(self, folios: Sequence[Folio | None], nfolios: int) -> None:
        """Release one pin per entry of ``folios[:nfolios]``; consecutive identical
        entries are grouped, None skipped, errno-valued *nfolios* warns.
        Kernel: mm/gup.c:unpin_folios (v6.11)."""
        if nfolios < 0:
            self._warn("unpin_folios", f"WARN_ON(IS_ERR_VALUE(nfolios)): nfolios={nfolios}")
            return
        nfolios = self._array_bound("unpin_folios", folios, nfolios, "folios")
        paused = gc_pause(nfolios)          # mm/hostgc.py: an observer records each folio
        try:
            i = 0
            watch = self._ref_watch
            stats = self.stats
            while i < nfolios:
                folio = folios[i]
                if folio is None:
                    i += 1
                    continue
                if type(folio) is not Folio and self._usable_folio(folio, "unpin_folios", f"folios[{i}]") is None:
                    i += 1
                    continue
                n = 1
                while i + n < nfolios and folios[i + n] is folio:
                    n += 1
                if watch is None and n == 1 and type(folio) is Folio and not folio.order \
                        and folio._mm is self and not folio.freed and folio.kind != KIND_ZERO:
                    # gup_put_folio(folio, 1, FOLL_PIN) of a small folio that keeps a
                    # reference, written out
                    left = folio._rc - GUP_PIN_COUNTING_BIAS
                    if left > 0 and left >= folio._mc + (1 if folio._mapping is not None else 0):
                        folio._rc = left
                        stats.nr_foll_pin_released += 1
                        i += 1
                        continue
                self.gup_put_folio(folio, n, _PIN)
                i += n
        finally:
            gc_resume(paused)

    def folio_add_pins(self, folio: Folio, pins: int) -> int:
        """Add *pins* pins to an already pinned folio (iommufd, v6.13): 0 or -errno.
        An unpinned folio warns (VM_WARN_ON_ONCE) and is pinned anyway, as in the
        kernel; a negative count (the kernel's unsigned wrap) warns and returns -EINVAL;
        a freed or foreign folio warns and returns -EFAULT.
        Kernel: mm/gup.c:folio_add_pins (v6.13)."""
        usable = self._usable_folio(folio, "folio_add_pins")
        if usable is None:
            return -errno.EFAULT
        folio = usable
        if pins < 0:
            self._warn("folio_add_pins", f"negative count: folio_add_pins(folio, {pins})", folio=folio)
            return -errno.EINVAL
        if not self.folio_maybe_dma_pinned(folio) and folio.kind != KIND_ZERO:
            self._warn("folio_add_pins", "folio_add_pins on a folio that is not pinned", folio=folio)
        return self.try_grab_folio(folio, pins, _PIN)

    def _array_bound(self, site: str, arr: Any, n: int, param: str) -> int:
        """*n* clamped to the length of the C array *arr*: reading past its end is what
        KASAN reports as an out-of-bounds access; recorded as a warning."""
        if not isinstance(arr, (list, tuple)):
            raise TypeError(f"{site}: {param} must be a list, got {type(arr).__name__}")
        if n > len(arr):
            self._warn(site, f"BUG: KASAN: slab-out-of-bounds: {param}[{len(arr)}..{n - 1}] "
                             f"read past the array's {len(arr)} entries")
            return len(arr)
        return n

    # ------------------------------------------------------------------ validation
    def _gup_arg_types(self, call: str, start: Any, nr_pages: Any, gup_flags: Any, pages: Any,
                       mm: Any = False) -> bool:
        """Python-level checks of a GUP call's arguments: a wrong type is a TypeError
        naming the parameter; *mm* of another machine is a recorded warning (False)."""
        for name, v in (("start", start), ("nr_pages", nr_pages), ("gup_flags", gup_flags)):
            if not isinstance(v, int):
                raise TypeError(f"{call}: {name} must be an int, got {type(v).__name__}")
        if pages is not None and not isinstance(pages, list):
            raise TypeError(f"{call}: pages must be a list or None, got {type(pages).__name__}")
        if mm is not False:
            if not isinstance(mm, MMStruct):
                raise TypeError(f"{call}: mm must be an mm_struct (MMStruct), got {type(mm).__name__}")
            if mm._k is not self:
                self._warn("foreign_object", f"{call}: mm {mm!r} belongs to another FakeMM")
                return False
        return True

    def _is_valid_gup_args(self, pages: Any, locked: Any, gup_flags: int, to_set: int) -> tuple[bool, int]:
        """Kernel: mm/gup.c:is_valid_gup_args (v6.3+): each failure is a WARN."""
        if gup_flags & INTERNAL_GUP_FLAGS:
            self._warn("is_valid_gup_args", "internal FOLL_ flags passed by the caller")
            return False, gup_flags
        gup_flags |= to_set
        if locked is not None:
            if getattr(locked, "value", 1) != 1:
                self._warn("is_valid_gup_args", "*locked must be 1")
                return False, gup_flags
            gup_flags |= _UNLOCKABLE
        if gup_flags & (_GET | _PIN) == (_GET | _PIN):
            self._warn("is_valid_gup_args", "FOLL_GET and FOLL_PIN are mutually exclusive")
            return False, gup_flags
        if gup_flags & _LONGTERM and not gup_flags & _PIN:
            self._warn("is_valid_gup_args", "FOLL_LONGTERM without FOLL_PIN")
            return False, gup_flags
        if gup_flags & (_GET | _PIN) and pages is None:
            self._warn("is_valid_gup_args", "FOLL_GET/FOLL_PIN with pages == NULL")
            return False, gup_flags
        if gup_flags & _LONGTERM and gup_flags & _PCI_P2PDMA:
            self._warn("is_valid_gup_args", "FOLL_LONGTERM with FOLL_PCI_P2PDMA")
            return False, gup_flags
        return True, gup_flags

    # ------------------------------------------------------------------ entry points
    def get_user_pages(self, start: int, nr_pages: int, gup_flags: int, pages: list[Page] | None) -> int:
        """Take FOLL_GET references on the pages of ``current->mm`` at *start*: count,
        -errno, or -EINVAL for invalid flags.  Kernel: mm/gup.c:get_user_pages (v6.5+)."""
        if self._observer is not None and not self._core_pinning:
            return self._judge_core_pin("get_user_pages", GupMixin.get_user_pages,
                                        (start, nr_pages, gup_flags, pages), pages, 0)
        if not self._gup_arg_types("get_user_pages", start, nr_pages, gup_flags, pages):
            return -errno.EINVAL
        ok, flags = self._is_valid_gup_args(pages, None, int(gup_flags), _TOUCH)
        if not ok:
            return -errno.EINVAL
        return self.__gup_longterm_locked(self.current.mm, start, nr_pages, pages, None, flags)

    def get_user_pages_remote(self, mm: MMStruct, start: int, nr_pages: int, gup_flags: int,
                              pages: list[Page] | None, locked: Any = None) -> int:
        """As get_user_pages on another *mm*.  Kernel: mm/gup.c:get_user_pages_remote."""
        if self._observer is not None and not self._core_pinning:
            return self._judge_core_pin("get_user_pages_remote", GupMixin.get_user_pages_remote,
                                        (mm, start, nr_pages, gup_flags, pages, locked), pages, 0)
        if not self._gup_arg_types("get_user_pages_remote", start, nr_pages, gup_flags, pages, mm):
            return -errno.EINVAL
        ok, flags = self._is_valid_gup_args(pages, locked, int(gup_flags), _TOUCH | _REMOTE)
        if not ok:
            return -errno.EINVAL
        return self.__gup_longterm_locked(mm, start, nr_pages, pages, locked, flags)

    def get_user_pages_unlocked(self, start: int, nr_pages: int, pages: list[Page] | None, gup_flags: int) -> int:
        """Kernel: mm/gup.c:get_user_pages_unlocked (note the argument order)."""
        if self._observer is not None and not self._core_pinning:
            return self._judge_core_pin("get_user_pages_unlocked", GupMixin.get_user_pages_unlocked,
                                        (start, nr_pages, pages, gup_flags), pages, False)
        if not self._gup_arg_types("get_user_pages_unlocked", start, nr_pages, gup_flags, pages):
            return -errno.EINVAL
        ok, flags = self._is_valid_gup_args(pages, None, int(gup_flags), _TOUCH | _UNLOCKABLE)
        if not ok:
            return -errno.EINVAL
        return self.__gup_longterm_locked(self.current.mm, start, nr_pages, pages, None, flags)

    def pin_user_pages(self, start: int, nr_pages: int, gup_flags: int, pages: list[Page] | None) -> int:
        """Pin (FOLL_PIN) the pages of ``current->mm`` at *start*; with FOLL_LONGTERM,
        migrate them out of ZONE_MOVABLE/CMA first.  Count, -errno, or **0** for invalid
        flags.  Release with unpin_user_pages.  Kernel: mm/gup.c:pin_user_pages (v6.5+)."""
        if self._observer is not None and not self._core_pinning:
            return self._judge_core_pin("pin_user_pages", GupMixin.pin_user_pages,
                                        (start, nr_pages, gup_flags, pages), pages, gup_flags)
        if not self._gup_arg_types("pin_user_pages", start, nr_pages, gup_flags, pages):
            return 0
        ok, flags = self._is_valid_gup_args(pages, None, int(gup_flags), _PIN)
        if not ok:
            return 0
        return self.__gup_longterm_locked(self.current.mm, start, nr_pages, pages, None, flags)

    def pin_user_pages_remote(self, mm: MMStruct, start: int, nr_pages: int, gup_flags: int,
                              pages: list[Page] | None, locked: Any = None) -> int:
        """As pin_user_pages on another *mm* (0 for invalid flags).
        Kernel: mm/gup.c:pin_user_pages_remote."""
        if self._observer is not None and not self._core_pinning:
            return self._judge_core_pin("pin_user_pages_remote", GupMixin.pin_user_pages_remote,
                                        (mm, start, nr_pages, gup_flags, pages, locked), pages, gup_flags)
        if not self._gup_arg_types("pin_user_pages_remote", start, nr_pages, gup_flags, pages, mm):
            return 0
        ok, flags = self._is_valid_gup_args(pages, locked, int(gup_flags), _PIN | _TOUCH | _REMOTE)
        if not ok:
            return 0
        return self.__gup_longterm_locked(mm, start, nr_pages, pages, locked, flags)

    def pin_user_pages_unlocked(self, start: int, nr_pages: int, pages: list[Page] | None, gup_flags: int) -> int:
        """Kernel: mm/gup.c:pin_user_pages_unlocked (0 for invalid flags)."""
        if self._observer is not None and not self._core_pinning:
            return self._judge_core_pin("pin_user_pages_unlocked", GupMixin.pin_user_pages_unlocked,
                                        (start, nr_pages, pages, gup_flags), pages, gup_flags)
        if not self._gup_arg_types("pin_user_pages_unlocked", start, nr_pages, gup_flags, pages):
            return 0
        ok, flags = self._is_valid_gup_args(pages, None, int(gup_flags), _PIN | _TOUCH | _UNLOCKABLE)
        if not ok:
            return 0
        return self.__gup_longterm_locked(self.current.mm, start, nr_pages, pages, None, flags)

    def get_user_pages_fast(self, start: int, nr_pages: int, gup_flags: int, pages: list[Page] | None) -> int:
        """Lockless walk first, slow path for the rest (-EINVAL for invalid flags).
        Kernel: mm/gup.c:get_user_pages_fast."""
        if self._observer is not None and not self._core_pinning:
            return self._judge_core_pin("get_user_pages_fast", GupMixin.get_user_pages_fast,
                                        (start, nr_pages, gup_flags, pages), pages, 0)
        if not self._gup_arg_types("get_user_pages_fast", start, nr_pages, gup_flags, pages):
            return -errno.EINVAL
        ok, flags = self._is_valid_gup_args(pages, None, int(gup_flags), _GET)
        if not ok:
            return -errno.EINVAL
        return self._gup_fast_fallback(start, nr_pages, flags, pages)

    def pin_user_pages_fast(self, start: int, nr_pages: int, gup_flags: int, pages: list[Page] | None) -> int:
        """Fast-path pin; folios that are not long-term pinnable leave the rest to the
        slow path, which migrates (-EINVAL for invalid flags).
        Kernel: mm/gup.c:pin_user_pages_fast."""
        if self._observer is not None and not self._core_pinning:
            return self._judge_core_pin("pin_user_pages_fast", GupMixin.pin_user_pages_fast,
                                        (start, nr_pages, gup_flags, pages), pages, gup_flags)
        if not self._gup_arg_types("pin_user_pages_fast", start, nr_pages, gup_flags, pages):
            return -errno.EINVAL
        ok, flags = self._is_valid_gup_args(pages, None, int(gup_flags), _PIN)
        if not ok:
            return -errno.EINVAL
        return self._gup_fast_fallback(start, nr_pages, flags, pages)

    # ------------------------------------------------------------------ fast path
    def _gup_fast_fallback(self, start: int, nr_pages: int, flags: int, pages: list[Page] | None) -> int:
        if flags & ~int(FOLL.WRITE | FOLL.LONGTERM | FOLL.FORCE | FOLL.PIN | FOLL.GET
                        | FOLL.FAST_ONLY | FOLL.NOFAULT | FOLL.PCI_P2PDMA | FOLL.HONOR_NUMA_FAULT):
            return -errno.EINVAL
        if nr_pages <= 0:
            return 0
        start &= ~(PAGE_SIZE - 1)
        end = start + (nr_pages << PAGE_SHIFT)
        if end > (1 << 47):
            return -errno.EFAULT
        mm = self.current.mm
        if flags & _PIN:
            mm.has_pinned = True
        seq = mm.write_protect_seq
        nr = 0
        while nr < nr_pages:
            addr = start + (nr << PAGE_SHIFT)
            vma = mm.find_vma(addr)
            ent = mm.lookup(addr)
            if vma is None or ent is None or vma.flags & (VM_IO | VM_PFNMAP):
                break
            folio, idx = ent
            if folio.kind == KIND_ZERO and flags & _PIN and flags & _WRITE:
                break
            if flags & _WRITE and not self._pte_writable(mm, vma, addr, folio):
                break
            if (flags & _PIN and folio.kind == KIND_ANON and not folio.flags & PG_anon_exclusive
                    and not vma.is_shared()):
                break                      # gup_must_unshare: the slow path unshares
            if flags & (_PIN | _WRITE | _LONGTERM) == _PIN | _LONGTERM and folio.kind != KIND_ANON:
                break                      # gup_must_unshare(NULL, ...): the slow path decides
            if flags & _LONGTERM and not self.folio_is_longterm_pinnable(folio):
                break
            if self.try_grab_folio(folio, 1, flags) < 0:
                break
            _set(pages, nr, Page(folio, folio.pfn + idx))
            nr += 1
        if flags & _PIN and mm.write_protect_seq != seq:
            assert pages is not None        # is_valid_gup_args refuses FOLL_PIN without pages
            self.unpin_user_pages(pages, nr)
            nr = 0
        if nr == nr_pages or flags & _FAST_ONLY:
            return nr
        sub: list[Page] | None = [] if pages is not None else None
        ret = self.__gup_longterm_locked(mm, start + (nr << PAGE_SHIFT), nr_pages - nr, sub,
                                         None, flags | _TOUCH | _UNLOCKABLE)
        if sub is not None:
            for j in range(max(ret, 0)):
                _set(pages, nr + j, sub[j])
        if ret < 0:
            return nr if nr else ret
        return ret + nr

    # ------------------------------------------------------------------ slow path
    def __get_user_pages(self, mm: MMStruct, start: int, nr_pages: int, flags: int,
                         pages: list[Page] | None) -> int:
        """Kernel: mm/gup.c:__get_user_pages (v6.12): VMA checks, faults, grabs.  Returns
        the number of pages grabbed; an error is returned only if none was."""
        if nr_pages == 0:
            return 0
        start &= ~(PAGE_SIZE - 1)
        pin = flags & _PIN
        grab = flags & (_GET | _PIN)
        write = flags & _WRITE
        # gup_must_unshare for what is not anonymous: a read-only long-term pin of a
        # page-cache or zero page in a COW mapping needs an unshare fault first
        unshare_ro = flags & (_PIN | _WRITE | _LONGTERM) == _PIN | _LONGTERM
        fi = self.faults
        pte = mm.pte
        task = self.current
        folio_entries = self._gup_folio_entries
        self._gup_folio_entries = False
        self._gup_walk_pinnable = False
        # a checked long-term walk judges each small folio's pinnability as it goes
        # (folio_is_longterm_pinnable, written out, its pageblock test asked once per
        # pageblock): a pinnable one gets its Page, any other stays a folio; *judged* counts
        # the pinnable entries, so that a walk whose every entry was judged so, with no
        # fault taken, needs no collect step (see __gup_longterm_locked)
        judged = 0
        last_pb, pb_ok = -1, True
        pageblock_pinnable = self._pageblock_pinnable
        i = 0
        vma = None
        vma_end = -1
        shared = False
        faulted = -1
        pins = 0
        check_pte = True
        watch = self._ref_watch
        bias = GUP_PIN_COUNTING_BIAS if pin else 1
        fast = watch is None and pages is not None and bool(grab) and not fi.active
        while i < nr_pages:
            addr = start + (i << PAGE_SHIFT)
            if addr >= vma_end or vma is None or addr < vma.start:
                vma = mm.find_vma(addr)
                rc = self._check_vma_flags(vma, flags)
                if rc:
                    return self._gup_done(i, rc, pins)
                assert vma is not None      # _check_vma_flags refuses a missing VMA
                vma_end = vma.end
                shared = vma.is_shared()
                # which of follow_page_pte's refusals below can apply in this VMA: a write
                # without a writable shared mapping, a pin of anonymous memory in a private
                # one, a read-only long-term pin in a COW mapping
                check_pte = (write and not (shared and vma.flags & VM_WRITE)) or (pin and not shared) \
                    or (unshare_ro and _is_cow_mapping(vma))
            if task._sigpending == 2:          # fatal_signal_pending(): fatal signals only
                self._gup_signalled(task)
                return self._gup_done(i, -errno.EINTR, pins)
            if fast and not check_pte:
                # a run of present PTEs of small folios, on a machine without an
                # observer and with no fault armed: follow_page_pte, the grab, the
                # pages[] entry and the dirty bit below, written out (what ends the run
                # goes the long way; tests/mm/test_hot_paths.py compares the two)
                assert pages is not None        # for the type checker: fast implies it
                vpn = addr >> PAGE_SHIFT
                stop = vpn + min(nr_pages - i, (vma_end - addr) >> PAGE_SHIFT)
                run: list[Any] = []             # the run's pages[] entries, stored after it
                put = run.append
                for vpn in range(vpn, stop):
                    ent = pte.get(vpn)
                    # a small folio is its entry (mm_types.pte_entry): None, a
                    # large folio's (folio, index) pair or a subclass go the long way
                    if type(ent) is not Folio:
                        break
                    folio = ent
                    r = folio._rc
                    if folio.order or r <= 0 or folio.kind == KIND_ZERO:
                        break
                    folio._rc = r + bias
                    if write:
                        folio._flags |= PG_dirty
                    if folio_entries:
                        pb = folio.pfn >> pageblock_order
                        if pb != last_pb:
                            last_pb = pb
                            pb_ok = pageblock_pinnable(pb)
                        if pb_ok and folio._zone.idx != ZONE_MOVABLE:
                            put(Page(folio, folio.pfn))
                            judged += 1
                        else:
                            # to be migrated: its Page, if it ever needs one, is made
                            # by _page_entries once a pin stands
                            put(folio)
                    else:
                        put(Page(folio, folio.pfn))
                if run:
                    j = i + len(run)
                    _set_run(pages, i, run)
                    if pin:
                        pins += j - i
                    i = j
                    continue
            ent = pte.get(addr >> PAGE_SHIFT)
            if ent is not None:
                folio, idx = pte_entry(ent)
                # follow_page_pte: a write needs a writable PTE; a pin of a shared
                # anonymous page needs it unshared first (-EMLINK internally)
                kind = folio.kind
                if check_pte and ((write and not (shared and vma.flags & VM_WRITE) and
                                   not (kind == KIND_ANON and folio._flags & PG_anon_exclusive
                                        and (vma.flags & VM_WRITE or flags & _FORCE)))
                                  or (pin and kind == KIND_ANON and not shared
                                      and not folio._flags & PG_anon_exclusive)
                                  or (unshare_ro and kind != KIND_ANON and _is_cow_mapping(vma))):
                    ent = None
                n = 1
            else:
                ent = self._follow_page(mm, vma, addr, flags)
                if ent is not None:
                    folio, idx = ent
                    kind = folio.kind
                    # a huge leaf never reaches past its VMA (whose flags were checked)
                    n = min(folio.nr_pages - idx, nr_pages - i, (vma_end - addr) >> PAGE_SHIFT) \
                        if folio.order else 1
            if ent is None:
                if flags & _NOFAULT or faulted == addr:
                    return self._gup_done(i, -errno.EFAULT, pins)
                rc = self._faultin_page(mm, vma, addr, flags)
                if rc:
                    return self._gup_done(i, rc, pins)
                faulted = addr
                watch = self._ref_watch
                fast = watch is None and pages is not None and bool(grab) and not fi.active
                # a fault may have changed the VMA's flags (a callback's mprotect)
                check_pte = (write and not (shared and vma.flags & VM_WRITE)) or (pin and not shared) \
                    or (unshare_ro and _is_cow_mapping(vma))
                continue
            if grab:
                r = folio._rc
                if fi.active or r <= 0:
                    rc = self.try_grab_folio(folio, n, flags)
                    if rc:
                        return self._gup_done(i, rc, pins)
                elif kind != KIND_ZERO:        # the zero folio's refcount is not kept
                    # folio._refcount += ..., written out (observer first)
                    r += GUP_PIN_COUNTING_BIAS if pin and not folio.order else n
                    if watch is not None:
                        watch(folio, r)
                    folio._rc = r
                    if pin:
                        if folio.order:
                            folio._pincount += n
                        pins += n
            if pages is not None and n == 1:
                page = Page(folio, folio.pfn + idx)
                if i == len(pages):
                    pages.append(page)
                elif i < len(pages):
                    pages[i] = page
                else:
                    _set(pages, i, page)
            elif pages is not None:
                base = folio.pfn + idx
                for j in range(n):
                    page = Page(folio, base + j)
                    if i + j < len(pages):
                        pages[i + j] = page
                    elif i + j == len(pages):
                        pages.append(page)
                    else:
                        _set(pages, i + j, page)
            if write and kind != KIND_ZERO:
                if watch is not None:          # folio.flags |= PG_dirty, written out
                    watch(folio, None)
                folio._flags |= PG_dirty
            i += n
        self._gup_walk_pinnable = judged == i and faulted < 0
        return self._gup_done(i, 0, pins)

    def _gup_signalled(self, task: Any) -> None:
        """One more GUP call cut short by a pending fatal signal.  A task that keeps calling
        after ``gup_retry_limit`` of them is in a loop that never ends (a killed task's
        driver retrying on -EINTR): record a livelock and end the loop."""
        counts = self._gup_signalled_calls
        n = counts[task.pid] = counts.get(task.pid, 0) + 1
        if n <= self.config.gup_retry_limit:
            return
        from .bug import external_caller
        from ..faults.injector import FaultBudgetExceeded
        caller = external_caller(3)
        ll = Livelock(f"the caller's loop around GUP (task {task.comm}[{task.pid}] has a signal "
                      f"pending: every call returns -EINTR)", n, None, caller)
        self.livelocks.append(ll)
        self.stats.livelocks += 1
        self._trace("livelock", loop=ll.loop, iterations=n, message=str(ll))
        raise FaultBudgetExceeded("__get_user_pages", n, caller,
                                  what=f"{n} GUP calls returned -EINTR to a task with a signal pending")

    def _gup_done(self, i: int, rc: int, pins: int) -> int:
        self.stats.nr_foll_pin_acquired += pins
        return i if i else rc

    def _check_vma_flags(self, vma: Any, flags: int) -> int:
        """Kernel: mm/gup.c:check_vma_flags (v6.12)."""
        if vma is None:
            return -errno.EFAULT
        vm = vma.flags
        if vm & (VM_IO | VM_PFNMAP):
            return -errno.EFAULT
        if flags & _ANON and vma.file is not None and not vma.anon:
            return -errno.EFAULT
        if flags & _WRITE:
            if not vm & VM_WRITE:
                # FOLL_FORCE writes only into COW mappings (is_cow_mapping), not hugetlb
                if not flags & _FORCE or vm & (VM_SHARED | VM_MAYWRITE) != VM_MAYWRITE \
                        or vma.is_hugetlb():
                    return -errno.EFAULT
        elif not vm & VM_READ and not flags & _FORCE:
            return -errno.EFAULT
        return 0

    def _follow_page(self, mm: MMStruct, vma: Any, addr: int, flags: int) -> tuple[Folio, int] | None:
        """follow_page_mask for what is not a plain PTE: huge leaves (PMD-mapped THP,
        hugetlb) and PTEs needing a fault first (write to read-only, unshare)."""
        ent = mm.lookup(addr)
        if ent is None:
            return None
        folio = ent[0]
        anon = folio.kind == KIND_ANON or (folio.kind == KIND_HUGETLB and folio.mapping is None)
        if flags & _WRITE and not self._pte_writable(mm, vma, addr, folio) \
                and not (flags & _FORCE and anon and folio.flags & PG_anon_exclusive):
            return None                    # can_follow_write_pte: fault (COW) first
        if flags & _PIN and anon and not folio.flags & PG_anon_exclusive \
                and not vma.is_shared():
            return None                    # -EMLINK internally: unshare fault first
        if flags & (_PIN | _WRITE | _LONGTERM) == _PIN | _LONGTERM and folio.kind != KIND_ANON \
                and not vma.is_hugetlb() and _is_cow_mapping(vma):
            return None                    # gup_must_unshare: page cache or zero page
        return ent

    def _faultin_page(self, mm: MMStruct, vma: Any, addr: int, flags: int) -> int:
        """faultin_page: a read-only pin of a present page is an unshare fault.  A
        read-only long-term pin of an empty PTE in a COW mapping faults and unshares at
        once (the kernel maps the zero or page-cache page, gup_must_unshare() then makes
        follow_page_pte() fail with -EMLINK and a second fault unshares: same result)."""
        ent = mm.lookup(addr)
        unshare = bool(flags & _PIN) and not flags & _WRITE and (
            ent is not None or (bool(flags & _LONGTERM) and not vma.is_hugetlb() and _is_cow_mapping(vma)))
        return self.handle_mm_fault(mm, vma, addr, bool(flags & _WRITE), unshare=unshare)

    def __get_user_pages_locked(self, mm: MMStruct, start: int, nr_pages: int, pages: list[Page] | None,
                                locked: Any, flags: int) -> int:
        """Kernel: mm/gup.c:__get_user_pages_locked: FOLL_PIN sets MMF_HAS_PINNED; a
        final 0 becomes -EFAULT unless FOLL_NOWAIT."""
        if flags & _PIN:
            mm.has_pinned = True
        if pages is not None and not flags & _PIN:
            flags |= _GET              # pages[] wanted without FOLL_PIN: FOLL_GET implied
        ret = self.__get_user_pages(mm, start, nr_pages, flags, pages)
        if ret == 0 and nr_pages and not flags & _NOWAIT:
            return -errno.EFAULT
        return ret

    def __gup_longterm_locked(self, mm: MMStruct, start: int, nr_pages: int, pages: list[Page] | None,
                              locked: Any, flags: int) -> int:
        """Kernel: mm/gup.c:__gup_longterm_locked (v6.12+ contract, bounded here)."""
        if not flags & _LONGTERM:
            return self.__get_user_pages_locked(mm, start, nr_pages, pages, locked, flags)
        assert pages is not None            # is_valid_gup_args refuses FOLL_LONGTERM without pages
        saved = self.memalloc_pin_save()
        paused = gc_pause(nr_pages)           # mm/hostgc.py: a walk over many folios
        try:
            rounds = 0
            fi = self.faults
            while True:
                fired = fi.fired_count
                # the walk of an unobserved machine may leave small folios for Pages
                defer = self._gup_folio_entries = self._ref_watch is None
                self._gup_walk_pinnable = False
                nr = self.__get_user_pages_locked(mm, start, nr_pages, pages, locked, flags)
                if nr <= 0:
                    rc = nr
                    break
                if defer and self._gup_walk_pinnable:
                    # check_and_migrate_movable_pages would find nothing: the walk
                    # judged every entry pinnable (tests/mm/test_hot_paths.py compares
                    # with an observed machine, which always checks)
                    rc = 0
                    break
                rc = self.check_and_migrate_movable_pages(nr, pages)
                if rc == 0 and defer:
                    self._page_entries(pages, nr)
                if rc != -errno.EAGAIN:
                    break
                rounds += 1
                rc = self._longterm_retry_exhausted("__gup_longterm_locked", rounds, fired)
                if rc:
                    break
        finally:
            self._pin_anyway_next = False     # the kernel's migrate_allow is per call
            self._gup_folio_entries = False
            self.memalloc_pin_restore(saved)
            gc_resume(paused)
        return rc if rc else nr

    @staticmethod
    def _page_entries(pages: list[Any], nr: int) -> None:
        """The pin stands: give every small folio the walk left in ``pages[:nr]`` its
        :class:`Page`.  The walk of an unobserved machine leaves the folio itself
        (its one page's ``struct page`` in the kernel) so that a round whose pins are
        dropped for migration makes no Page at all; anything else is already a Page
        (tests/mm/test_hot_paths.py compares with an observed machine, which never
        defers)."""
        pages[:nr] = [Page(e, e.pfn) if type(e) is Folio else e for e in pages[:nr]]

    def _longterm_retry_exhausted(self, loop: str, rounds: int, fired: int) -> int:
        """Count one more -EAGAIN round of a long-term pin loop (*fired*: the injector's
        ``fired_count`` when the round began).  Below ``gup_retry_limit`` rounds: 0, go
        on.  At the limit, when a fault fired during the last round, the kernel's own
        outcome (module docstring): ``__gup_longterm_locked`` gets its task killed and
        returns 0 (the next round sees the signal and returns -EINTR);
        ``memfd_pin_folios`` raises :class:`KernelHang`.  Otherwise a :class:`Livelock`
        is recorded and -ENOMEM returned.  Every round ended in -EAGAIN, which unpinned
        and cleared every entry, so the folio named is the last one the collect step
        found unpinnable."""
        self.stats.gup_longterm_retries += 1
        if rounds < self.config.gup_retry_limit:
            return 0
        from .bug import external_caller
        stuck = self._gup_last_unpinnable
        fi = self.faults
        if fi.fired_count > fired:
            rec = next(r for r in reversed(fi.log) if r.fired)
            hang = loop == "memfd_pin_folios"
            out = KernelOutcome(loop, rounds, rec.site, rec.occurrence, stuck, external_caller(3),
                                None if hang else -errno.EINTR)
            self.kernel_outcomes.append(out)
            self._trace("kernel_outcome", loop=loop, iterations=rounds, folio=stuck, message=str(out))
            if hang:
                raise KernelHang(out)
            task = self.current
            task.fatal_signal_pending = True        # killed: the next round returns -EINTR
            self.killed_tasks.append(task)
            return 0
        ll = Livelock(loop, rounds, stuck, external_caller(3))
        self.livelocks.append(ll)
        self.stats.livelocks += 1
        self._trace("livelock", loop=loop, iterations=rounds, folio=stuck, message=str(ll))
        return -errno.ENOMEM

    # ------------------------------------------------------------------ check & migrate
    def check_and_migrate_movable_pages(self, nr_pages: int, pages: list[Page]) -> int:
        """0 (all pinnable, pins kept), -EAGAIN (migrated; every pin dropped; re-pin), or
        -ENOMEM/-EBUSY (failed; every pin dropped).  Kernel: mm/gup.c (v6.12+)."""
        return self._check_and_migrate(pages, nr_pages)

    def check_and_migrate_movable_folios(self, nr_folios: int, folios: list[Folio]) -> int:
        """The folio-array form used by memfd_pin_folios.  Kernel: mm/gup.c (v6.11+)."""
        return self._check_and_migrate(folios, nr_folios)

    def _check_and_migrate(self, entries: list[Page] | list[Folio], nr: int) -> int:
        """Kernel: mm/gup.c:check_and_migrate_movable_pages_or_folios.  Entries are pages
        or folios alike: both have ``.folio``."""
        nr = self._array_bound("check_and_migrate_movable_pages", entries, nr, "pages")
        if self._pin_anyway_next:
            # quirk gup_keep_pins_on_isolation_failure: after a failed migration the
            # kernel re-pinned with migrate_allow false, without checking again
            self._pin_anyway_next = False
            return 0
        movable: list[Folio] = []
        if not self._collect_longterm_unpinnable(entries, nr, movable):
            return 0
        if self.config.has_quirk("gup_keep_pins_on_isolation_failure"):
            return self._pin_anyway(entries, nr, movable)
        return self._migrate_longterm_unpinnable(entries, nr, movable)

    def _collect_longterm_unpinnable(self, entries: list[Page] | list[Folio], nr: int, movable: list[Folio]) -> int:
        """Kernel: mm/gup.c:collect_longterm_unpinnable_folios (v6.17 drain logic; the
        6.12.y logic, which drains only on an unexpected reference, under the quirk
        ``gup_drain_on_unexpected_ref_only``, as in 6.12.118): isolate the unpinnable
        folios onto *movable*; return how many were found."""
        collected = 0
        drained = 0
        prev = None
        # v6.17 compares a small folio's count with expected + 1, which every pinned one
        # fails (always draining); 6.12.y counts the pin itself (GUP_PIN_COUNTING_BIAS)
        pin_refs = GUP_PIN_COUNTING_BIAS if self.config.has_quirk("gup_drain_on_unexpected_ref_only") else 1
        pinnable = self.folio_is_longterm_pinnable
        expected = self.folio_expected_ref_count
        isolate = self.folio_isolate_lru
        mod_isolated = self.node_stat_mod_isolated
        pageblock_pinnable = self._pageblock_pinnable
        fi = self.faults
        trace = self.trace
        watch = self._ref_watch
        stats = self.stats
        lru_nr, lru_lists = self._lru_nr, self._lru_lists
        last_pb, pb_ok = -1, True
        # no observer, no fault armed, no verbose trace: the tests and the isolation are
        # written out (re-decided after a drain, which hits a fault site)
        fast = watch is None and not fi.active and not trace.verbose
        last: Folio | None = None
        iso_anon = iso_file = 0          # NR_ISOLATED_* of the written-out isolations
        try:
            for i in range(nr):
                e = entries[i]
                if e is None:
                    continue
                folio = e if type(e) is Folio else e.folio
                if folio is prev:
                    continue
                prev = folio
                if fast and type(folio) is Folio:
                    # folio_is_longterm_pinnable, written out: not in a CMA or isolated
                    # pageblock (asked once per pageblock), not in ZONE_MOVABLE unless
                    # the zero folio
                    pb = folio.pfn >> pageblock_order
                    if pb != last_pb:
                        last_pb = pb
                        pb_ok = pageblock_pinnable(pb)
                    if pb_ok and (folio.kind == KIND_ZERO or folio._zone.idx != ZONE_MOVABLE):
                        continue
                elif pinnable(folio):
                    continue
                collected += 1
                last = folio
                kind = folio.kind
                if kind == KIND_HUGETLB:
                    self.folio_isolate_hugetlb(folio, movable)
                    continue
                # (once both drains ran, the kernel no longer compares the counts)
                if drained < 2 and not folio.order and folio._rc != expected(folio) + pin_refs:
                    if drained == 0:
                        self.lru_add_drain()
                        drained = 1
                    if drained == 1 and folio._rc != expected(folio) + pin_refs:
                        self.lru_add_drain_all()
                        drained = 2
                    fast = self._ref_watch is None and not fi.active and not trace.verbose
                if fast and type(folio) is Folio and folio._mm is self and not folio.freed and folio._rc > 0:
                    # folio_isolate_lru + node_stat_mod_isolated, written out
                    flags = folio._flags
                    if not flags & PG_lru:
                        continue
                    folio._flags = (flags & ~PG_lru) | PG_isolated
                    folio._rc += 1
                    idx = folio._zone.idx
                    nr_pages = folio.nr_pages
                    lru_nr[idx] -= nr_pages
                    lru_lists[idx][kind == KIND_FILE].pop(folio, None)
                    movable.append(folio)
                    if kind == KIND_ANON or kind == KIND_SHMEM:
                        iso_anon += nr_pages
                    else:
                        iso_file += nr_pages
                    continue
                if not isolate(folio):
                    continue
                movable.append(folio)
                mod_isolated(folio, folio.nr_pages)
        finally:
            stats.nr_isolated_anon += iso_anon
            stats.nr_isolated_file += iso_file
            if collected:                 # the last unpinnable folio met (set with it)
                self._gup_last_unpinnable = last
        return collected

    def _migrate_longterm_unpinnable(self, entries: list[Page] | list[Folio], nr: int, movable: list[Folio]) -> int:
        """Kernel: mm/gup.c:migrate_longterm_unpinnable_folios (v6.12+): unpin every
        entry, migrate the isolated folios; any migrate_pages failure becomes -ENOMEM."""
        self._unpin_entries(entries, nr)
        failed = bool(movable) and self._migrate_longterm(movable)
        self.putback_movable_pages(movable)
        return -errno.ENOMEM if failed else -errno.EAGAIN

    def _pin_anyway(self, entries: list[Page] | list[Folio], nr: int, movable: list[Folio]) -> int:
        """Quirk gup_keep_pins_on_isolation_failure (v5.1..v5.12): folios that could not be
        isolated stay pinned where they are; if migration fails, pin anyway."""
        if not movable:
            return 0                      # isolation failed: keep the pins, report success
        self._unpin_entries(entries, nr)
        if self._migrate_longterm(movable):
            self._pin_anyway_next = True      # re-pin without migrating: "pin anyway"
        self.putback_movable_pages(movable)
        return -errno.EAGAIN

    def _unpin_entries(self, entries: list[Page] | list[Folio], nr: int) -> None:
        """Drop the pin of every entry and clear it (unpin_folio + pofs_clear_entry)."""
        put = self.gup_put_folio
        fast = self._ref_watch is None
        released = 0                     # NR_FOLL_PIN_RELEASED of the written-out puts
        try:
            for i in range(nr):
                e = entries[i]
                if e is not None:
                    folio = e if type(e) is Folio else e.folio
                    if fast and type(folio) is Folio and not folio.order and folio._mm is self \
                            and not folio.freed and folio.kind != KIND_ZERO \
                            and (left := folio._rc - GUP_PIN_COUNTING_BIAS) > 0 \
                            and left >= folio._mc + (1 if folio._mapping is not None else 0):
                        # gup_put_folio(folio, 1, FOLL_PIN) of a small folio that keeps a
                        # reference, written out
                        folio._rc = left
                        released += 1
                    else:
                        put(folio, 1, _PIN)
                        fast = self._ref_watch is None
                    entries[i] = None  # type: ignore[call-overload]  # the kernel NULLs the caller's slot; the caller must not read it after the error
        finally:
            self.stats.nr_foll_pin_released += released

    def _migrate_longterm(self, movable: list[Folio]) -> int:
        """migrate_pages of the isolated folios to long-term pinnable targets
        (GFP_USER | __GFP_NOWARN under PF_MEMALLOC_PIN, MR_LONGTERM_PIN)."""
        mtc = MigrationTargetControl(gfp_mask=_LONGTERM_GFP, reason=MR_LONGTERM_PIN)
        return self.migrate_pages(movable, self.alloc_migration_target, None, mtc, MIGRATE_SYNC,
                                  MR_LONGTERM_PIN)

    # ------------------------------------------------------------------ memfd
    def memfd_pin_folios(self, memfd: Any, start: int, end: int, folios: list[Folio],
                         max_folios: int, offset: Any) -> int:
        """Pin the folios backing bytes ``[start, end]`` (inclusive) of a shmem or
        hugetlbfs memfd, allocating holes, one pin per folio, migrated out of
        ZONE_MOVABLE/CMA.  Returns the number of folios stored in *folios* (<=
        *max_folios*) and sets ``offset.value`` to ``start``'s offset in the first, or
        -errno with nothing pinned (-EINVAL: bad range, max_folios 0 or negative, not shmem/hugetlbfs,
        ``end >= i_size``).  Release with unpin_folios.  Kernel: mm/gup.c:memfd_pin_folios
        (v6.11+, with the Sept 2024 fixes)."""
        if self._observer is not None and not self._core_pinning:
            return self._judge_core_pin("memfd_pin_folios", GupMixin.memfd_pin_folios,
                                        (memfd, start, end, folios, max_folios, offset), folios, _LONGTERM)
        for name, v in (("start", start), ("end", end), ("max_folios", max_folios)):
            if not isinstance(v, int):
                raise TypeError(f"memfd_pin_folios: {name} must be an int, got {type(v).__name__}")
        if start < 0 or start > end or max_folios <= 0:
            return -errno.EINVAL
        if memfd is None:
            return -errno.EINVAL
        if isinstance(memfd, MemFile) and memfd._k is not self:
            self._warn("foreign_object", f"memfd_pin_folios: memfd {memfd!r} belongs to another FakeMM")
            return -errno.EINVAL
        if not isinstance(memfd, MemFile) or not (memfd.shmem_file() or memfd.is_file_hugepages()):
            return -errno.EINVAL
        if not isinstance(folios, list):
            raise TypeError(f"memfd_pin_folios: folios must be a list, got {type(folios).__name__}")
        if not hasattr(offset, "value"):
            raise TypeError(f"memfd_pin_folios: offset must be an Out box, got {type(offset).__name__}")
        if end >= memfd.i_size:
            return -errno.EINVAL
        h = memfd.hstate
        pgshift = h.huge_page_shift() if h is not None else PAGE_SHIFT
        saved = self.memalloc_pin_save()
        rounds = 0
        fi = self.faults
        stats = self.stats
        # mm/hostgc.py: a walk over many folios
        paused = gc_pause(min(max_folios, ((end - start) >> pgshift) + 1))
        try:
            while True:
                fired = fi.fired_count
                nr_folios = 0
                start_idx = start >> pgshift
                end_idx = end >> pgshift
                if h is not None:
                    start_idx <<= h.order
                    end_idx <<= h.order
                cursor = Out(start_idx)
                mapping = memfd.mapping
                while cursor.value <= end_idx and nr_folios < max_folios:
                    if not mapping.max_order and self._ref_watch is None and not fi.active:
                        # a page cache of small folios only, on a machine without an
                        # observer and with no fault armed: the lookups, the grab and
                        # the batch's reference taken and dropped again, written out
                        # (what ends the run goes the long way below;
                        # tests/mm/test_hot_paths.py compares the two)
                        idx = cursor.value
                        stop = min(end_idx + 1, idx + max_folios - nr_folios)
                        pages = mapping.pages
                        run: list[Folio] = []        # the run's folios[] entries, stored after it
                        put = run.append
                        for idx in range(idx, stop):
                            folio = pages.get(idx)
                            if folio is None:
                                break
                            r = folio._rc
                            if r <= 0 or folio.order or folio.freed or folio.kind == KIND_ZERO:
                                break
                            folio._rc = r + GUP_PIN_COUNTING_BIAS
                            put(folio)
                        else:
                            idx = stop
                        if run:
                            if nr_folios == 0:
                                offset.value = start - (run[0].index << PAGE_SHIFT)   # offset_in_folio
                            _set_run(folios, nr_folios, run)
                            nr_folios += len(run)
                            stats.nr_foll_pin_acquired += len(run)
                            cursor.value = idx
                            continue
                    batch: list[Folio] = []
                    nr_found = self.filemap_get_folios_contig(memfd.mapping, cursor, end_idx, batch)
                    err = 0
                    watch = self._ref_watch
                    for folio in batch:
                        if nr_folios and folios[nr_folios - 1] is folio:
                            continue
                        if nr_folios >= max_folios:
                            break
                        r = folio._rc
                        if fi.active or r <= 0 or folio.freed or folio.kind == KIND_ZERO:
                            if self.try_grab_folio(folio, 1, _PIN):
                                err = -errno.EINVAL
                                break
                        else:
                            # try_grab_folio(folio, 1, FOLL_PIN), written out for the
                            # usual case: no fault armed, a live folio of this machine
                            r += 1 if folio.order else GUP_PIN_COUNTING_BIAS
                            if watch is not None:
                                watch(folio, r)
                            folio._rc = r
                            if folio.order:
                                folio._pincount += 1
                            stats.nr_foll_pin_acquired += 1
                        if nr_folios == 0:
                            offset.value = start - (folio.index << PAGE_SHIFT)   # offset_in_folio
                        if nr_folios < len(folios):
                            folios[nr_folios] = folio
                        elif nr_folios == len(folios):
                            folios.append(folio)
                        else:
                            _set(folios, nr_folios, folio)
                        nr_folios += 1
                    put = self.folio_put
                    for folio in batch:
                        # folio_put of the batch's reference, written out for a folio
                        # that keeps others (the page cache's, the pin just taken)
                        r = folio._rc
                        if watch is None and r > 1 \
                                and r > folio._mc + (folio.nr_pages if folio._mapping is not None else 0) \
                                and folio._mm is self and folio.kind != KIND_ZERO:
                            folio._rc = r - 1
                        else:
                            put(folio)
                    if err:
                        self.unpin_folios(folios, nr_folios)
                        return err
                    if nr_found == 0:
                        new = self.memfd_alloc_folio(memfd, cursor.value)
                        if isinstance(new, int):
                            if new == -errno.EEXIST:
                                continue
                            self.unpin_folios(folios, nr_folios)
                            return new
                        self.folio_put(new)
                ret = self.check_and_migrate_movable_folios(nr_folios, folios)
                if ret != -errno.EAGAIN:
                    break
                rounds += 1
                ret = self._longterm_retry_exhausted("memfd_pin_folios", rounds, fired)
                if ret:
                    break
        finally:
            self._pin_anyway_next = False
            self.memalloc_pin_restore(saved)
            gc_resume(paused)
        return ret if ret else nr_folios


class Out:
    """A one-value mutable box standing for a C scalar out-parameter (``pgoff_t *offset``)."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value: Any = value

    def __repr__(self) -> str:
        return f"Out({self.value!r})"


def _set_run(arr: list[Any], first: int, run: list[Any]) -> None:
    """:func:`_set` of ``arr[first + k] = run[k]`` for every k, with one list operation
    when *arr* ends at *first* or already reaches past the run."""
    end = first + len(run)
    if first == len(arr):
        arr += run
    elif end <= len(arr):
        arr[first:end] = run
    else:
        for k, value in enumerate(run, first):
            _set(arr, k, value)


def _set(arr: list[Any] | None, i: int, value: Any) -> None:
    """Write ``arr[i]`` like a C array: overwrite a pre-sized list, grow a shorter one."""
    if arr is None:
        return
    if i < len(arr):
        arr[i] = value
    else:
        while len(arr) < i:
            arr.append(None)
        arr.append(value)


# the kernel's double-underscore names, reachable from outside the class
for _n in ("__get_user_pages", "__get_user_pages_locked", "__gup_longterm_locked"):
    setattr(GupMixin, _n, getattr(GupMixin, "_GupMixin" + _n))
