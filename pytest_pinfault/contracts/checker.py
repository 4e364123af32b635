"""The contract checker: judges the fake mm's real state against the eleven rules.

Pure Python; never imports pytest.  One :class:`Checker` watches one
:class:`~pytest_pinfault.mm.FakeMM`:

* the constructor snapshots the machine (:meth:`Checker.baseline`) and registers the
  checker for ``@pin_entry_point`` functions (:func:`checker_for`);
* attached as the machine's observer (``fake_mm._checker = checker``, what the plugin
  does; mm/observer.py) it also hears of every refcount change and every core pinning
  call: it judges core pin returns (rules 1-3), finds the driver calls the test made
  without any declaration and judges them once they returned (rules 1-2), and judges
  coherence (rule 6) whenever a call moved, unmapped, truncated or freed a page that a
  hold or device mapping may still refer to (:mod:`.tracking`);
* :meth:`Checker.check` judges the rules that can be read from state (on demand: 1, 5,
  6, 7, 8, 11; with ``final=True`` also 4, 9 and 10) (:mod:`.state_rules`);
* :func:`pin_entry_point` names a driver entry point explicitly (:mod:`.entry`),
  :func:`expect_violation` asserts that a block breaks a rule (:mod:`.expect`).

Cost: an attached checker's judgement of a call is proportional to the folios the call
touched; its final check to the folios the test touched.  A checker that is not attached
falls back to one pass over the allocated folios per judged call and per check.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
from typing import Any, Callable, Hashable, Iterable

from ..mm.fakemm import FakeMM
from ..mm.folio import MAPPING_CHANGE, PG_isolated, folio_serial
from ..mm.observer import MMObserver
from ..mm.sched import PF_MEMALLOC_PIN
from . import counters as _counters
from .returns import ReturnRules, return_code
from .rules import Rule
from .state_rules import HSTATE_SIZES, StateRules
from .tracking import (_RETURN_OPS, PKG_DIR, CallSnapshot, ModelOp, RootCall, find_model_op, find_root_call,
                       return_value, returned)
from .units import USER_KINDS, fault_lines, injector_holds, short_caller, split_units
from .violation import Violation, snapshot_folio

__all__ = ["Checker", "CallSnapshot", "checker_for", "USER_KINDS"]

_N_EVENTS = 6
_NO_ISOLATED: frozenset[int] = frozenset()   # a tracked snapshot's (unused) set of isolated folios
_NO_COUNTERS: dict[Any, Any] = {}                 # a core call's snapshot: named counters not judged
_NO_INJ: dict[Any, Any] = {}                      # no fault-injector holds (injector_holds)


#: code object -> its bytecode, for the cheap "has this frame returned?" test.  A plain
#: dict (a weak one costs a weakref per lookup, on every root call), cleared when large.
_CODE_BYTES: dict[Any, bytes] = {}


def _code_bytes(code: Any) -> bytes:
    co = _CODE_BYTES.get(code)
    if co is None:
        if len(_CODE_BYTES) > 4096:
            _CODE_BYTES.clear()
        co = _CODE_BYTES[code] = code.co_code
    return co


def _caller_text(frame: Any) -> str:
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} {frame.f_code.co_name}"


def checker_for(fake_mm: FakeMM) -> "Checker | None":
    """The :class:`Checker` registered for *fake_mm* (the newest one), or None."""
    return getattr(fake_mm, "_registered_checker", None)


@dataclasses.dataclass(eq=False, slots=True)
class Hold:
    """A long-term hold the checker remembers until it is released."""

    folio: Any
    owner: str
    call: str
    caller: str
    base: int                      # hold units before it was taken (released when <= base)
    mapping: Any = None
    index: int = 0
    rmap: tuple[Any, ...] = ()
    vkey: Any = None               # key of the rule 1 violation that named it at its call


class Checker(StateRules, ReturnRules, MMObserver):
    """Contract checker for one fake mm (see the module docstring).

    ``violations`` collects every violation found (each persistent one once);
    ``on_violation(v)`` is called for each new one.
    """

    def __init__(self, fake_mm: FakeMM, on_violation: Callable[[Violation], Any] | None = None,
                 *, register: bool = True, at_boot: bool = False) -> None:
        """*register* (default): become :func:`checker_for` *fake_mm* (the checker that
        ``@pin_entry_point`` functions report to; the newest one wins).  *at_boot*: take
        the baseline of the machine as ``FakeMM()`` construction left it
        (:meth:`boot_baseline`) instead of now (:meth:`baseline`).  Attaching the checker
        as ``fake_mm._checker`` (what the plugin does) additionally judges every core
        pinning call, every undeclared driver call and coherence as the model changes."""
        self.fake_mm = fake_mm
        self.on_violation = on_violation
        self.violations: list[Violation] = []
        self._reported: set[Hashable] = set()
        self._expected: set[Hashable] = set()
        self._holds: dict[int, Hold] = {}
        self._holders: dict[Any, list[Any]] = {}
        self._device_views: dict[Any, Callable[[], Iterable[tuple[Any, int, int]]]] = {}
        self._touched: dict[tuple[int, int], None] = {}   # (pfn, nr_pages) ever held
        self._depth = 0
        self._call_seq = 0
        self._open: list[CallSnapshot] = []     # explicit call snapshots being filled
        self._root: RootCall | None = None      # the root call running now (attached)
        self._coh_op: ModelOp | None = None     # a model call to judge coherence after
        self._seen: dict[int, Any] = {}         # user folios touched since the baseline
        self._seen_valid = False                # attached since the baseline: _seen is complete
        self._closing = False
        self._ucache: dict[int, tuple[int, int]] | None = None   # hold units during a check
        self._cand_cache: list[Any] | None = None                 # _candidates() during a check
        self._scan_cache: Any = None                              # _scan() during a check
        self._last_parent: Any = None           # the caller of the last root call (a hint)
        self._root_depth = 0                    # where _open_root last found a root call
        if at_boot:
            self.boot_baseline()
        else:
            self.baseline()
        if register:
            fake_mm._registered_checker = self   # type: ignore[attr-defined]

    # ------------------------------------------------------------------ attachment
    @property
    def attached(self) -> bool:
        """Whether this checker is the fake mm's attached observer."""
        return self.fake_mm._observer is self

    def _candidates(self) -> Iterable[Any]:
        """Every folio the final rules must look at: those touched since the baseline
        and those held at the baseline (attached), else every allocated folio."""
        cached = self._cand_cache
        if cached is not None:
            return cached
        if self._seen_valid and self.attached:
            seen = self._seen
            live = [f for f in seen.values() if not f.freed]
            if len(live) != len(seen):
                for key in [key for key, f in seen.items() if f.freed]:
                    del seen[key]             # forget freed folios for good
            if self._b_folios:
                out = {k: b[0] for k, b in self._b_folios.items()}
                out.update(seen)
                res = [f for f in out.values() if not f.freed]
            else:
                res = live
        else:
            res = list(self.fake_mm.iter_folios())
        if self._ucache is not None:
            self._cand_cache = res            # for the rest of the running check
        return res

    # ------------------------------------------------------------------ baseline
    def baseline(self) -> None:
        """Snapshot the machine as the test starts: pin counters, NR_ISOLATED_*, isolated
        pageblocks, every task's PF_MEMALLOC_PIN and its mm's locked_vm/pinned_vm, the
        hugetlb pools, the warning and livelock counts, and every folio's hold units."""
        k = self.fake_mm
        st = k.stats
        self._b_pins = (st.nr_foll_pin_acquired, st.nr_foll_pin_released)
        self._b_isolated = (st.nr_isolated_anon, st.nr_isolated_file)
        self._b_isolate_pb = {z.name: z.nr_isolate_pageblock for z in k.zones.values()}
        self._b_task_flags = {t.pid: t.flags & PF_MEMALLOC_PIN for t in k.tasks}
        self._b_mm: dict[int, tuple[Any, int, int]] = {}
        for t in k.tasks:
            if t.mm is not None:
                self._b_mm[id(t.mm)] = (t.mm, t.mm.locked_vm, t.mm.pinned_vm)
        self._b_warnings = len(k.warnings)
        self._b_livelocks = len(k.livelocks)
        self._b_seq = k.trace.seq
        self._b_faults = len(k.faults.log)
        self._b_counters = _counters.snapshot(k)
        holds = injector_holds(k)
        self._b_folios: dict[int, tuple[Any, int, int]] = {}
        self._b_isolated_folios: set[int] = set()
        self._b_huge_inuse: dict[int, Any] = {}
        for f in k.iter_folios():
            if f.flags & PG_isolated:
                self._b_isolated_folios.add(id(f))
            if f.kind in USER_KINDS:
                p, r = split_units(k, f, holds)
                self._b_folios[id(f)] = (f, p, r)
                if f.kind == "hugetlb" and f._refcount > 0:
                    self._b_huge_inuse[id(f)] = f
        self._b_hugetlb = {size: self._hstate_state(size) for size in HSTATE_SIZES}
        self._seen = {}
        self._root = None
        self._coh_op = None
        self._seen_valid = self.attached

    def boot_baseline(self) -> None:
        """The baseline :meth:`baseline` would have taken right after ``FakeMM()``
        construction, rebuilt from what construction leaves: no pins, isolations,
        warnings, livelocks or held folios, PF_MEMALLOC_PIN clear, locked_vm/pinned_vm
        0, and the boot hugetlb pools (all free) with the trace position that
        ``FakeMM.__init__`` recorded in ``_boot_state``.  Costs nothing at construction
        beyond that one tuple."""
        k = self.fake_mm
        seq, pools = k._boot_state
        self._b_pins = (0, 0)
        self._b_isolated = (0, 0)
        self._b_isolate_pb = {z.name: 0 for z in k.zones.values()}
        self._b_task_flags = {}
        self._b_mm = {}
        self._b_hugetlb = {size: pool + (0,) for size, pool in zip(HSTATE_SIZES, pools)}
        self._b_warnings = 0
        self._b_livelocks = 0
        self._b_seq = seq
        self._b_faults = 0
        self._b_counters = _counters.boot_snapshot(k)
        self._b_folios = {}
        self._b_isolated_folios = set()
        self._b_huge_inuse = {}
        self._seen = {}
        self._root = None
        self._coh_op = None
        self._seen_valid = False

    def _base_units(self, f: Any) -> tuple[int, int]:
        b = self._b_folios.get(id(f))
        if b is None or b[0] is not f:
            return 0, 0
        return b[1], b[2]

    # ------------------------------------------------------------------ declarations
    def declare_longterm(self, folios: Iterable[Any], owner: str = "test") -> None:
        """Declare holds as long-term: rule 1 judges them until they are released (the
        folio is freed or nothing holds it any more)."""
        self.notice()
        for f in folios:
            if f is None:
                continue
            self._remember(getattr(f, "folio", f), owner, "", "", base=0)

    def declare_holder(self, owner: Any, folios_or_pages: Iterable[Any]) -> None:
        """*owner* (a driver object the test keeps alive) holds pins/references on these
        folios: rule 4 excludes them until :meth:`release_holder`, and rule 10 does not
        probe ranges they sit in."""
        lst = self._holders.setdefault(owner, [])
        for e in folios_or_pages:
            if e is None:
                continue
            f = getattr(e, "folio", e)
            if not any(x is f for x in lst):
                lst.append(f)
                self._touch(f)

    def release_holder(self, owner: Any) -> None:
        """The holder *owner* has been released: its pins and references count again."""
        if owner not in self._holders:
            raise ValueError(f"no holder {owner!r} was declared "
                             f"(declared: {', '.join(map(repr, self._holders)) or 'none'})")
        self.notice()
        del self._holders[owner]

    def declare_device_mapping(self, owner: Any, view: Callable[[], Iterable[tuple[Any, int, int]]]) -> None:
        """A driver keeps a device-side mapping of user memory without holding the pages
        (the mmu-notifier design): *view()* returns ``(mm, addr, pfn)`` for every entry
        the device would use now.  Rule 6 then checks that each entry is the page the CPU
        page table maps at *addr* -- on demand, at teardown, and (attached) after every
        call that moved, unmapped or freed a page.  Undo with
        :meth:`release_device_mapping`."""
        self._device_views[owner] = view

    def release_device_mapping(self, owner: Any) -> None:
        """The device mapping of *owner* is gone (the driver unregistered its notifier).
        What the calls so far did to it is judged first."""
        if owner in self._device_views:
            self.notice()
            if self._coh_op is not None and self._coh_op.all:
                # a model call still running moved pages under this mapping: judge it now
                self._record(self._check_device_view(owner, self._device_views[owner]))
        self._device_views.pop(owner, None)

    def _holder_folios(self) -> dict[int, Any]:
        return {id(f): f for lst in self._holders.values() for f in lst if not f.freed}

    def _remember(self, f: Any, owner: str, call: str, caller: str, base: int,
                  vkey: Any = None) -> Hold | None:
        if f.kind == "zero":
            return None
        rmap = tuple(f.rmap or ()) if f.kind == "anon" else ()
        h = self._holds[id(f)] = Hold(f, owner, call, caller, base, f._mapping, f.index, rmap, vkey)
        self._touched[(f.pfn, f.nr_pages)] = None
        return h

    def _touch(self, f: Any) -> None:
        self._touched[(f.pfn, f.nr_pages)] = None

    # ------------------------------------------------------------------ snapshots
    def _state(self, f: Any, snap: CallSnapshot) -> tuple[Any, int, int, bool]:
        """What *f* looked like before *snap*'s call: its hold units now (it is about to
        change for the first time in that call), or nothing for a folio the call made."""
        if f._serial > snap.serial:
            return f, 0, 0, False
        k = self.fake_mm
        p, r = split_units(k, f, injector_holds(k) if k.faults.holds else _NO_INJ)
        return f, p, r, bool(f._flags & PG_isolated)

    def _new_snapshot(self, tracked: bool, counters: bool = True) -> CallSnapshot:
        k = self.fake_mm
        st = k.stats
        mms = {}
        for t in k.tasks:
            mm = t.mm
            if mm is not None:
                mms[id(mm)] = (mm, mm.locked_vm, mm.pinned_vm)
        return CallSnapshot({}, st.nr_foll_pin_acquired, st.nr_foll_pin_released,
                            (st.nr_isolated_anon, st.nr_isolated_file), _NO_ISOLATED, mms, k.trace.seq,
                            len(k.faults.log), tracked, folio_serial(),
                            _counters.snapshot(k) if counters else _NO_COUNTERS)

    def snapshot_call(self, counters: bool = True) -> CallSnapshot:
        """State before a pinning call.  Attached: filled as the call touches folios
        (cost: what the call touches), until :meth:`judge_return` closes it; otherwise
        one pass over the allocated folios now."""
        if self.fake_mm._observer is self:
            rc = self._root
            if rc is not None:
                i = rc.frame.f_lasti
                code = rc.code
                p = rc.parent
                if (0 <= i < len(code) and code[i] in _RETURN_OPS) or (
                        p is not None and p.f_lasti != rc.parent_lasti):
                    self._close_root(rc)
            snap: CallSnapshot = self._new_snapshot(True, counters)
            self._open.append(snap)
            return snap
        snap = self._new_snapshot(False, counters)
        snap.isolated = set()
        k = self.fake_mm
        holds = injector_holds(k)
        for f in k.iter_folios():
            if f.flags & PG_isolated:
                snap.isolated.add(id(f))
            if f.kind in USER_KINDS:
                p, r = split_units(k, f, holds)
                if p or r:
                    snap.folios[id(f)] = (f, p, r, bool(f.flags & PG_isolated))
        return snap

    def _close_snapshot(self, snap: CallSnapshot) -> None:
        opened = self._open
        if opened and opened[-1] is snap:     # the usual case: the innermost call
            opened.pop()
            return
        for i in range(len(opened) - 1, -1, -1):
            if opened[i] is snap:
                del opened[i]
                break

    def _grown(self, before: CallSnapshot) -> list[tuple[Any, int, int]]:
        """User folios whose hold units grew since *before*: (folio, +pins, +refs)."""
        k = self.fake_mm
        holds = injector_holds(k)
        out = []
        if before.tracked:
            # each entry is the folio's own (recorded by folio_ref), so no identity test
            for f, bp, br, _ in before.folios.values():
                if f.kind not in USER_KINDS:
                    continue
                p, r = split_units(k, f, holds)
                if (p or r) and p + r > bp + br:
                    out.append((f, p - bp, r - br))
            return out
        for f in k.iter_folios():
            if f.kind not in USER_KINDS:
                continue
            p, r = split_units(k, f, holds)
            if not (p or r):
                continue
            bp, br = before.units(f)
            if p + r > bp + br:
                out.append((f, p - bp, r - br))
        return out

    def _new_isolated(self, before: CallSnapshot) -> list[Any]:
        if before.tracked:
            return [b[0] for b in before.folios.values() if b[0].flags & PG_isolated and not b[3]]
        return [f for f in self.fake_mm.iter_folios()
                if f.flags & PG_isolated and id(f) not in before.isolated]

    # ------------------------------------------------------------------ observer events
    def folio_ref(self, folio: Any, new: int | None) -> None:
        """Observer event: *folio*'s refcount is about to become *new*, or
        (``MAPPING_CHANGE``, None) another field its accounting depends on is about to
        change (mm/observer.py).  A mapping change of a held or device-mapped page
        makes the running model call judge coherence once it returned."""
        # the hot path of every model call: the tests of returned() are written out
        op = self._coh_op
        if op is not None and returned(op):    # type: ignore[arg-type]
            self._judge_op(op)
        rc = self._root
        if rc is not None:
            i = rc.frame.f_lasti
            code = rc.code
            p = rc.parent
            if (0 <= i < len(code) and code[i] in _RETURN_OPS) or (
                    p is not None and p.f_lasti != rc.parent_lasti):
                if rc.driver:
                    self._close_root(rc)
                else:                          # nothing to judge (_close_root)
                    self._root = None
                    rc.frame = rc.parent = None
                rc = self._open_root()
        else:
            rc = self._open_root()
        if folio.kind not in USER_KINDS:
            return
        key = id(folio)
        snap = rc.snap
        state = None
        if snap is None:                       # not a driver call: nothing to judge
            self._seen[key] = folio
        elif key not in snap.folios:
            state = snap.folios[key] = self._state(folio, snap)
            self._seen[key] = folio
        opened = self._open
        if opened:
            serial = folio._serial
            for s in opened:
                sf = s.folios
                if key not in sf:
                    if state is not None and (serial > s.serial) == (serial > snap.serial):  # type: ignore[union-attr]
                        sf[key] = state
                    elif serial > s.serial:        # _state, written out
                        sf[key] = (folio, 0, 0, False)
                    else:
                        k = self.fake_mm
                        p, r = split_units(k, folio, injector_holds(k) if k.faults.holds else _NO_INJ)
                        sf[key] = (folio, p, r, bool(folio._flags & PG_isolated))
        if new == MAPPING_CHANGE and (self._device_views or key in self._holds):
            op = self._coh_op
            if op is None:
                frame, parent = find_model_op()
                op = self._coh_op = ModelOp(frame, parent, parent.f_lasti if parent is not None else -1,
                                            _code_bytes(frame.f_code))
            if key in self._holds:
                op.folios.add(key)
            else:
                op.all = True

    def pin_call_begin(self, call: str) -> CallSnapshot:
        """Observer event: a core pinning call starts.  (The named counters --
        locked_vm, mm and file references, DMA mappings -- are the driver's to give back:
        they are judged for driver calls, not for the core's own error paths.)"""
        if self.fake_mm._observer is not self:
            return self.snapshot_call(counters=False)
        # snapshot_call(counters=False), written out: this runs for every core call
        rc = self._root
        if rc is not None:
            i = rc.frame.f_lasti
            code = rc.code
            p = rc.parent
            if (0 <= i < len(code) and code[i] in _RETURN_OPS) or (
                    p is not None and p.f_lasti != rc.parent_lasti):
                if rc.driver:
                    self._close_root(rc)
                else:
                    self._root = None
                    rc.frame = rc.parent = None
        k = self.fake_mm                       # _new_snapshot(True, False), written out
        st = k.stats
        mms = {}
        for t in k.tasks:
            mm = t.mm
            if mm is not None:
                mms[id(mm)] = (mm, mm.locked_vm, mm.pinned_vm)
        snap = CallSnapshot({}, st.nr_foll_pin_acquired, st.nr_foll_pin_released,
                            (st.nr_isolated_anon, st.nr_isolated_file), _NO_ISOLATED, mms, k.trace.seq,
                            len(k.faults.log), True, folio_serial(), _NO_COUNTERS)
        self._open.append(snap)
        if self._root is None:
            # the test calling the core directly (the usual case): this call is the root
            # call, found without walking the stack
            frame = sys._getframe(2)
            parent = frame.f_back
            if parent is not None and parent is self._last_parent:
                self._root = RootCall(frame, parent, parent.f_lasti, _code_bytes(frame.f_code),
                                      False, "", "", None)
        return snap

    def pin_call_end(self, call: str, token: Any, ret: Any, entries: Any, longterm: bool,
                     caller: str) -> None:
        """Observer event: the core pinning call returned: judge rules 1-3.

        The usual return (a count, every entry filled and held, every long-term folio
        pinnable) is recognised here without side effects first; anything else goes
        through :meth:`judge_return`, which finds and words the violation."""
        if type(ret) is int and ret >= 0 and type(entries) is list and token.tracked \
                and len(entries) >= ret:
            held = self._clean_core_return(ret, entries, token, longterm)
            if held is not None:
                self._close_snapshot(token)
                self._call_seq += 1
                before = token.folios
                hs = self._holds
                touched = self._touched
                for key, f in held.items():    # _remember, written out
                    kind = f.kind
                    if kind == "zero":
                        continue
                    b = before.get(key)
                    base = b[1] + b[2] if b is not None and b[0] is f else 0
                    hs[key] = Hold(f, call, call, caller, base, f._mapping, f.index,
                                   tuple(f.rmap or ()) if kind == "anon" else (), None)
                    touched[(f.pfn, f.nr_pages)] = None
                return
        self.judge_return(call, ret, entries, token, caller=caller, count=True,
                          longterm=longterm, core=True)

    def _clean_core_return(self, n: int, entries: list[Any], before: CallSnapshot,
                           longterm: bool) -> dict[int, Any] | None:
        """The folios a core call that returned *n* now holds long-term (``id -> folio``;
        none unless *longterm*), when rules 1 and 3 have nothing to say about it; else
        None.  The same tests as :meth:`judge_return` (rule 3: ``_count_honesty``; rule
        1: the placement of ``entries[:n]``), without building a violation."""
        k = self.fake_mm
        holds = injector_holds(k) if k.faults.holds else _NO_INJ
        units = 0
        for f, bp, br, _ in before.folios.values():
            if f.kind not in USER_KINDS:
                continue
            p, r = split_units(k, f, holds)
            if (p or r) and p + r > bp + br:
                units += p + r - bp - br
        uncounted = 0
        held: dict[int, Any] = {}
        for i in range(n):
            e = entries[i]
            if e is None:
                return None
            try:
                f = e.folio
            except AttributeError:
                return None
            if f.kind not in USER_KINDS:
                uncounted += 1
            if longterm:
                held[id(f)] = f
        if units != n - uncounted:
            return None
        if not longterm:
            return held
        pinnable = k.folio_is_longterm_pinnable
        for f in held.values():
            if not pinnable(f):
                return None
        return held

    def attached_to(self, fake_mm: Any) -> None:
        """Observer event: attached.  What changed since the baseline is unknown, so
        every allocated user folio counts as touched."""
        for f in fake_mm.iter_folios():
            if f.kind in USER_KINDS:
                self._seen[id(f)] = f
        self._seen_valid = True

    def _open_root(self) -> RootCall:
        prev = self._last_parent
        callee = caller = None
        if prev is not None:
            # find_root_call's first step, written out: the caller of the previous root
            # call (the test function) is usually still on the stack, and the new root
            # call is the frame it called.  Tried first at the depth where it was found
            # last time (a repeated call: sys._getframe(depth) materialises one frame,
            # a walk every frame on the way).
            d = self._root_depth
            if d:
                try:
                    g = sys._getframe(d)
                except ValueError:
                    g = None
                if g is not None and g.f_back is prev:
                    callee, caller = g, prev
            if callee is None:
                g, inner, d = sys._getframe(1), None, 0
                while g is not None:
                    if g is prev:
                        if inner is not None:
                            callee, caller = inner, g
                            self._root_depth = d
                        break
                    inner = g
                    g = g.f_back
                    d += 1
        if callee is None:
            callee, caller = find_root_call(None)
        code = callee.f_code
        driver = caller is not None and not code.co_filename.startswith(PKG_DIR)
        if driver and caller is not None:
            rc = RootCall(callee, caller, caller.f_lasti, _code_bytes(code), True,
                          getattr(code, "co_qualname", code.co_name), _caller_text(caller),
                          self._new_snapshot(True))
        else:
            rc = RootCall(callee, caller, caller.f_lasti if caller is not None else -1,
                          _code_bytes(code), False, "", "", None)
        self._root = rc
        self._last_parent = caller
        return rc

    def notice(self, final: bool = False) -> None:
        """Judge the model call and the root call that have returned (every one with
        *final*: the test is over), if any."""
        op = self._coh_op
        if op is not None and (final or returned(op)):   # type: ignore[arg-type]
            self._judge_op(op)
        rc = self._root
        if rc is not None and (final or returned(rc)):
            self._close_root(rc, final)
        if final:
            self._last_parent = None

    def _judge_op(self, op: ModelOp) -> None:
        """Coherence after a model call that moved, unmapped or freed held or
        device-mapped pages."""
        self._coh_op = None
        op.frame = op.parent = None
        if self._closing:
            return
        self._closing = True
        try:
            self._record(self._check_coherence(None if op.all else op.folios))
        finally:
            self._closing = False

    def _close_root(self, rc: RootCall, final: bool = False) -> None:
        self._root = None
        if not rc.driver:
            rc.frame = rc.parent = None
            return
        if self._closing:
            return
        self._closing = True
        try:
            found: list[Violation] = []
            if rc.driver and rc.snap is not None:
                value = return_value(rc)
                found += self.judge_return(rc.name, value, None, rc.snap, caller=rc.caller,
                                           count=False, auto=True, record=False)
            self._record(found)
        finally:
            self._closing = False
            rc.frame = rc.parent = None        # never keep a test's frames alive
            if final:
                self._last_parent = None

    # ------------------------------------------------------------------ reporting
    def _events(self, folios: Iterable[Any] = (), since: int | None = None) -> tuple[str, ...]:
        tr = self.fake_mm.trace
        since = self._b_seq if since is None else since
        objs = [f for f in folios if f is not None]
        evs = tr.since(since)
        if objs:
            ids = {id(o) for o in objs}
            rel = [e for e in evs if any(id(v) in ids for v in e.fields.values())]
            if rel:
                evs = rel
        return tuple(str(e) for e in evs[-_N_EVENTS:])

    def _faults(self, since: int | None = None) -> tuple[str, ...]:
        log = self.fake_mm.faults.log
        start = self._b_faults if since is None else since
        if start > len(log):
            start = 0
        return fault_lines(log[start:])

    def _v(self, rule: Rule, message: str, folios: Iterable[Any] = (), call: str = "",
           caller: str = "", key: Hashable = None, since: int | None = None,
           faults_since: int | None = None, hint: str = "") -> Violation:
        folios = [getattr(f, "folio", f) for f in folios if f is not None]
        return Violation(rule, message, tuple(snapshot_folio(f) for f in folios), call, caller,
                         self._events(folios[:64], since), key if key is not None else (rule.id, message),
                         faults=self._faults(faults_since), hint=hint)

    def _record(self, found: list[Violation]) -> list[Violation]:
        out = []
        for v in found:
            if v.key in self._expected:
                continue
            out.append(v)
            if v.key in self._reported:
                continue
            self._reported.add(v.key)
            self.violations.append(v)
            if self.on_violation is not None:
                self.on_violation(v)
        return out

    # ------------------------------------------------------------------ check
    def check(self, final: bool = False) -> list[Violation]:
        """Judge the state-readable rules now; with *final* (teardown) also rules 4, 9
        and 10 (whose probes migrate folios: run it last).  Returns the violations
        found by this call; new ones are also appended to :attr:`violations`."""
        self._ucache = {}
        collecting = gc.isenabled()
        if final and collecting:
            gc.disable()                 # a final check makes many short-lived tuples, no cycles
        try:
            self.notice(final=final)
            return self._check(final)
        finally:
            self._ucache = None
            self._cand_cache = None
            self._scan_cache = None
            if final and collecting:
                gc.enable()

    def _check(self, final: bool) -> list[Violation]:
        found: list[Violation] = []
        found += self._check_longterm()
        found += self._check_termination()
        found += self._check_coherence()
        found += self._check_isolation()
        found += self._check_scope()
        found += self._check_warnings()
        found += _counters.probe_violations(self)
        if final:
            found += self._check_balance()
            found += self._check_accounting()
            found += _counters.teardown_violations(self, self._b_counters)
            found += self._check_contiguity()
            self._root = None
        return self._record(found)


def _make_private_checker(fake_mm: FakeMM) -> Checker:
    return Checker(fake_mm, register=False, at_boot=True)


FakeMM.observer_factory = staticmethod(_make_private_checker)

__all__ += ["return_code"]
