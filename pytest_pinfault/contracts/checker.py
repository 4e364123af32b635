"""The contract checker: judges the fake mm's real state against the eleven rules.

Pure Python; never imports pytest.  One :class:`Checker` watches one
:class:`~pytest_pinfault.mm.FakeMM`:

* :meth:`Checker.baseline` snapshots the machine at test start (done by the
  constructor);
* :meth:`Checker.check` judges the rules that can be read from state (on demand: 1, 5,
  6, 7, 8, 11; with ``final=True`` also 4, 9 and 10);
* :func:`pin_entry_point` judges rules 1-3 at the return of a driver entry point,
  :func:`check_core_pin_return` at the return of a core pinning call;
* :func:`expect_violation` asserts that a block breaks a rule.

Hold accounting
---------------
For a user folio (anon, shmem, file, hugetlb) the checker splits the refcount into
what the model itself accounts for -- ``folio_expected_ref_count()`` (page cache,
PG_private, one per mapping), one for an ``lru_add`` batch, one for LRU/hugetlb
isolation, one per live fault-injector hold -- and the rest, which is held by somebody:
``pins`` (``_pincount`` for large folios, ``refcount // 1024`` for small ones) and
``refs`` (the plain references left over).  ``pins + refs`` is the folio's *hold units*.
Kernel-owned folios (``alloc_pages``, slab, balloon, cma/contig blocks) are never judged
by hold units.  Cost: one pass over the allocated folios per entry-point call and per
check, i.e. proportional to the folios the test allocated, not to RAM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno as _errno
import functools
import inspect
import os
import sys
import weakref
from typing import Any, Callable, Hashable, Iterable, Iterator

from ..mm.fakemm import FakeMM
from ..mm.folio import GUP_PIN_COUNTING_BIAS, PG_isolated
from ..mm.gfp import MIGRATE_CMA, MIGRATE_ISOLATE, ZONE_MOVABLE
from ..mm.memory_hotplug import MEMORY_BLOCK_PAGES
from ..mm.mm_types import MMStruct
from ..mm.sched import PF_MEMALLOC_PIN
from .rules import (ACCOUNTING, COHERENCE, CONTIGUITY, COUNT_HONESTY, ERROR_NOTHING_HELD,
                    ISOLATION_HYGIENE, KERNEL_WARNINGS, LONGTERM_PLACEMENT, PIN_BALANCE,
                    SCOPE_HYGIENE, TERMINATION, Rule, get_rule)
from .violation import Violation, snapshot_folio

__all__ = ["Checker", "CallSnapshot", "pin_entry_point", "entry_point", "check_core_pin_return",
           "expect_violation", "checker_for", "USER_KINDS", "LIST_PARAMS"]

#: Folio kinds whose references belong to user memory and are judged by hold units.
USER_KINDS = frozenset({"anon", "shmem", "file", "hugetlb"})
#: Parameter names an entry point's entry array must have for rule 3 (count honesty).
LIST_PARAMS = ("pages", "folios")

_HSTATE_SIZES = (2 << 20, 1 << 30)
_N_EVENTS = 6

# FakeMM -> the Checker watching it (the newest one wins)
_CHECKERS: "weakref.WeakKeyDictionary[FakeMM, Checker]" = weakref.WeakKeyDictionary()


def checker_for(fake_mm: FakeMM) -> "Checker | None":
    """The :class:`Checker` watching *fake_mm*, or None."""
    return _CHECKERS.get(fake_mm)


def _errname(ret: int) -> str:
    name = _errno.errorcode.get(-ret)
    return f"-{name}" if name else str(ret)


def _short_caller(frame: Any) -> str:
    if frame is None:
        return ""
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} {frame.f_code.co_name}"


# ------------------------------------------------------------------------ hold units
def _pins(f: Any) -> int:
    return f._pincount if f.order else f._refcount // GUP_PIN_COUNTING_BIAS


def _split(k: FakeMM, f: Any, inj_holds: dict[int, int]) -> tuple[int, int]:
    """(pins, refs) held on user folio *f* beyond what the model accounts for."""
    if f.freed or f._refcount <= 0:
        return 0, 0
    acc = k.folio_expected_ref_count(f)
    if f.lru_batch != -1:
        acc += 1
    if f.flags & PG_isolated:
        acc += 1
    acc += inj_holds.get(id(f), 0)
    pins = _pins(f)
    weight = pins if f.order else pins * GUP_PIN_COUNTING_BIAS
    return pins, max(0, f._refcount - acc - weight)


def _inj_holds(k: FakeMM) -> dict[int, int]:
    out: dict[int, int] = {}
    for h in k.faults.holds:
        if not h.released:
            out[id(h.folio)] = out.get(id(h.folio), 0) + 1
    return out


def _where(k: FakeMM, f: Any) -> str:
    mt = k.get_pageblock_migratetype(f.pfn)
    if mt == MIGRATE_ISOLATE:
        return "an isolated pageblock"
    if mt == MIGRATE_CMA or f.is_cma:
        return "CMA"
    if f._zone.idx == ZONE_MOVABLE:
        return "ZONE_MOVABLE"
    return "a pageblock that is not long-term pinnable"


@dataclasses.dataclass
class CallSnapshot:
    """State before a pinning call: per user folio ``id -> (folio, pins, refs)``, pin
    counters, isolation counters and isolated folios, per-mm locked_vm/pinned_vm, and
    the trace position."""

    folios: dict[int, tuple[Any, int, int]]
    pins_acquired: int
    pins_released: int
    nr_isolated: tuple[int, int]
    isolated: set[int]
    mms: dict[int, tuple[Any, int, int]]
    seq: int

    def units(self, f: Any) -> tuple[int, int]:
        b = self.folios.get(id(f))
        if b is None or b[0] is not f:
            return 0, 0
        return b[1], b[2]


@dataclasses.dataclass
class _Hold:
    """A long-term hold the checker remembers until it is released."""

    folio: Any
    owner: str
    call: str
    caller: str
    base: int                      # hold units before it was taken (released when <= base)
    mapping: Any = None
    index: int = 0
    rmap: tuple = ()


class Checker:
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
        as ``fake_mm._checker`` (what the plugin does) additionally judges the return of
        every core pinning call (rules 1-3)."""
        self.fake_mm = fake_mm
        self.on_violation = on_violation
        self.violations: list[Violation] = []
        self._reported: set[Hashable] = set()
        self._expected: set[Hashable] = set()
        self._holds: dict[int, _Hold] = {}
        self._holders: dict[Any, list[Any]] = {}
        self._device_views: dict[Any, Callable[[], Iterable[tuple[Any, int, int]]]] = {}
        self._touched: list[tuple[int, int]] = []
        self._depth = 0
        self._call_seq = 0
        if at_boot:
            self.boot_baseline()
        else:
            self.baseline()
        if register:
            _CHECKERS[fake_mm] = self

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
        self._b_hugetlb = {size: self._hstate_state(size) for size in _HSTATE_SIZES}
        self._b_warnings = len(k.warnings)
        self._b_livelocks = len(k.livelocks)
        self._b_seq = k.trace.seq
        holds = _inj_holds(k)
        self._b_folios: dict[int, tuple[Any, int, int]] = {}
        self._b_isolated_folios: set[int] = set()
        for f in k.iter_folios():
            if f.flags & PG_isolated:
                self._b_isolated_folios.add(id(f))
            if f.kind in USER_KINDS:
                p, r = _split(k, f, holds)
                self._b_folios[id(f)] = (f, p, r)

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
        self._b_hugetlb = {size: pool + (0,) for size, pool in zip(_HSTATE_SIZES, pools)}
        self._b_warnings = 0
        self._b_livelocks = 0
        self._b_seq = seq
        self._b_folios = {}
        self._b_isolated_folios = set()

    def _hstate_state(self, size: int) -> tuple[int, int, int, int, int]:
        k = self.fake_mm
        h = k.hstate(size)
        inuse = sum(1 for f in k.iter_folios()
                    if f.kind == "hugetlb" and f.hstate is h and f._refcount > 0)
        return h.nr_huge_pages, h.free_huge_pages, h.resv_huge_pages, h.surplus_huge_pages, inuse

    def _base_units(self, f: Any) -> tuple[int, int]:
        b = self._b_folios.get(id(f))
        if b is None or b[0] is not f:
            return 0, 0
        return b[1], b[2]

    # ------------------------------------------------------------------ declarations
    def declare_longterm(self, folios: Iterable[Any], owner: str = "test") -> None:
        """Declare holds as long-term: rule 1 judges them until they are released (the
        folio is freed or nothing holds it any more)."""
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
        del self._holders[owner]

    def declare_device_mapping(self, owner: Any, view: Callable[[], Iterable[tuple[Any, int, int]]]) -> None:
        """A driver keeps a device-side mapping of user memory without holding the pages
        (the mmu-notifier design): *view()* returns ``(mm, addr, pfn)`` for every entry
        the device would use now.  Rule 6 then checks that each entry is the page the CPU
        page table maps at *addr*: an entry that survived a migration, unmap or COW means
        the driver missed an invalidation.  Undo with :meth:`release_device_mapping`."""
        self._device_views[owner] = view

    def release_device_mapping(self, owner: Any) -> None:
        """The device mapping of *owner* is gone (the driver unregistered its notifier)."""
        self._device_views.pop(owner, None)

    def _holder_folios(self) -> dict[int, Any]:
        return {id(f): f for lst in self._holders.values() for f in lst if not f.freed}

    def _remember(self, f: Any, owner: str, call: str, caller: str, base: int) -> None:
        if f.kind == "zero":
            return
        rmap = tuple(f.rmap or ()) if f.kind == "anon" else ()
        self._holds[id(f)] = _Hold(f, owner, call, caller, base, f.mapping, f.index, rmap)
        self._touch(f)

    def _touch(self, f: Any) -> None:
        self._touched.append((f.pfn, f.nr_pages))

    # ------------------------------------------------------------------ snapshots
    def snapshot_call(self) -> CallSnapshot:
        """State before a pinning call (cost: one pass over the allocated folios)."""
        k = self.fake_mm
        holds = _inj_holds(k)
        folios: dict[int, tuple[Any, int, int]] = {}
        isolated: set[int] = set()
        for f in k.iter_folios():
            if f.flags & PG_isolated:
                isolated.add(id(f))
            if f.kind in USER_KINDS:
                p, r = _split(k, f, holds)
                if p or r:
                    folios[id(f)] = (f, p, r)
        st = k.stats
        mms = {}
        for t in k.tasks:
            if t.mm is not None:
                mms[id(t.mm)] = (t.mm, t.mm.locked_vm, t.mm.pinned_vm)
        return CallSnapshot(folios, st.nr_foll_pin_acquired, st.nr_foll_pin_released,
                            (st.nr_isolated_anon, st.nr_isolated_file), isolated, mms, k.trace.seq)

    def _grown(self, before: CallSnapshot) -> list[tuple[Any, int, int]]:
        """User folios whose hold units grew since *before*: (folio, +pins, +refs)."""
        k = self.fake_mm
        holds = _inj_holds(k)
        out = []
        for f in k.iter_folios():
            if f.kind not in USER_KINDS:
                continue
            p, r = _split(k, f, holds)
            if not (p or r):
                continue
            bp, br = before.units(f)
            if p + r > bp + br:
                out.append((f, p - bp, r - br))
        return out

    # ------------------------------------------------------------------ reporting
    def _events(self, folios: Iterable[Any] = (), since: int | None = None) -> tuple[str, ...]:
        tr = self.fake_mm.trace
        since = self._b_seq if since is None else since
        objs = [f for f in folios if f is not None]
        evs = tr.since(since)
        if objs:
            rel = [e for e in evs if any(v is o for v in e.fields.values() for o in objs)]
            if rel:
                evs = rel
        return tuple(str(e) for e in evs[-_N_EVENTS:])

    def _v(self, rule: Rule, message: str, folios: Iterable[Any] = (), call: str = "",
           caller: str = "", key: Hashable = None, since: int | None = None) -> Violation:
        folios = [getattr(f, "folio", f) for f in folios if f is not None]
        return Violation(rule, message, tuple(snapshot_folio(f) for f in folios), call, caller,
                         self._events(folios, since), key if key is not None else (rule.id, message))

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
        found: list[Violation] = []
        found += self._check_longterm()
        found += self._check_termination()
        found += self._check_coherence()
        found += self._check_isolation()
        found += self._check_scope()
        found += self._check_warnings()
        if final:
            found += self._check_balance()
            found += self._check_accounting()
            found += self._check_contiguity()
        return self._record(found)

    # rule 1 ------------------------------------------------------------------------
    def _still_held(self, h: _Hold, holds: dict[int, int]) -> bool:
        f = h.folio
        if f.freed:
            return False
        p, r = _split(self.fake_mm, f, holds)
        return p + r > h.base

    def _check_longterm(self) -> list[Violation]:
        k = self.fake_mm
        holds = _inj_holds(k)
        out = []
        for key, h in list(self._holds.items()):
            if not self._still_held(h, holds):
                del self._holds[key]
                continue
            f = h.folio
            if not k.folio_is_longterm_pinnable(f):
                by = f" (held by {h.owner})" if h.owner else ""
                out.append(self._v(LONGTERM_PLACEMENT, f"a long-term hold sits in {_where(k, f)}{by}",
                                   [f], h.call, h.caller, key=("longterm", id(f))))
        return out

    # rule 5 ------------------------------------------------------------------------
    def _check_termination(self) -> list[Violation]:
        out = []
        lls = self.fake_mm.livelocks
        for i in range(self._b_livelocks, len(lls)):
            ll = lls[i]
            out.append(self._v(TERMINATION,
                               f"livelock in {ll.loop}: gave up after {ll.iterations} iterations"
                               + (", kept failing on the folio below" if ll.folio is not None else ""),
                               [ll.folio] if ll.folio is not None else [], caller=ll.caller, key=("livelock", i)))
        return out

    # rule 6 ------------------------------------------------------------------------
    def _check_coherence(self) -> list[Violation]:
        out = []
        holds = _inj_holds(self.fake_mm)
        for h in list(self._holds.values()):
            if not self._still_held(h, holds):
                continue
            f = h.folio
            if h.mapping is not None:
                now = h.mapping.lookup(h.index)
                if now is not None and now is not f:
                    host = getattr(h.mapping, "host", None)
                    name = getattr(host, "name", "?")
                    out.append(self._v(COHERENCE,
                                       f"held folio is no longer what the page cache maps at index "
                                       f"{h.index} of memfd:{name} (it now maps pfn={now.pfn:#x})",
                                       [f, now], h.call, h.caller, key=("coherence", id(f), "pc")))
            for mm, (kind, vpn) in h.rmap:
                ent = mm.pte.get(vpn) if kind == "pte" else mm.huge.get(vpn)
                now = ent[0] if isinstance(ent, tuple) else ent
                if now is not None and now is not f:
                    out.append(self._v(COHERENCE,
                                       f"held anonymous folio is no longer what the page table maps at "
                                       f"{vpn << 12:#x} (it now maps pfn={now.pfn:#x})",
                                       [f, now], h.call, h.caller, key=("coherence", id(f), vpn)))
        for owner, view in list(self._device_views.items()):
            for mm, addr, pfn in view():
                ent = mm.lookup(addr)
                cpu = None if ent is None else ent[0].pfn + ent[1]
                if cpu != pfn:
                    dev = self.fake_mm.pfn_to_folio(pfn)
                    where = "nothing" if ent is None else f"pfn={cpu:#x}"
                    out.append(self._v(COHERENCE,
                                       f"device mapping of {owner!r} at {addr:#x} still points at "
                                       f"pfn={pfn:#x}, but the page table maps {where} "
                                       f"(a missed mmu notifier invalidation)",
                                       [dev, None if ent is None else ent[0]],
                                       key=("coherence-device", id(owner), addr, pfn)))
        return out

    # rule 7 ------------------------------------------------------------------------
    def _check_isolation(self) -> list[Violation]:
        k = self.fake_mm
        out = []
        left = [f for f in k.iter_folios() if f.flags & PG_isolated and id(f) not in self._b_isolated_folios]
        if left:
            out.append(self._v(ISOLATION_HYGIENE,
                               f"{len(left)} folio(s) left isolated from the LRU",
                               left, key=("isolated", tuple(id(f) for f in left))))
        st = k.stats
        now = (st.nr_isolated_anon, st.nr_isolated_file)
        if now != self._b_isolated:
            out.append(self._v(ISOLATION_HYGIENE,
                               f"NR_ISOLATED not back to baseline: nr_isolated_anon={now[0]} "
                               f"nr_isolated_file={now[1]} (baseline {self._b_isolated[0]}, "
                               f"{self._b_isolated[1]})", key=("nr_isolated", now)))
        for z in k.zones.values():
            base = self._b_isolate_pb.get(z.name, 0)
            if z.nr_isolate_pageblock > base:
                out.append(self._v(ISOLATION_HYGIENE,
                                   f"zone {z.name}: {z.nr_isolate_pageblock - base} pageblock(s) left "
                                   f"MIGRATE_ISOLATE", key=("isolate_pb", z.name, z.nr_isolate_pageblock)))
        return out

    # rule 8 ------------------------------------------------------------------------
    def _check_scope(self) -> list[Violation]:
        out = []
        for t in self.fake_mm.tasks:
            now = t.flags & PF_MEMALLOC_PIN
            if now != self._b_task_flags.get(t.pid, 0):
                state = "left set" if now else "cleared"
                out.append(self._v(SCOPE_HYGIENE,
                                   f"PF_MEMALLOC_PIN {state} on task {t.comm}[{t.pid}] "
                                   f"(memalloc_pin_save without memalloc_pin_restore?)",
                                   key=("scope", t.pid, now)))
        return out

    # rule 11 -----------------------------------------------------------------------
    def _check_warnings(self) -> list[Violation]:
        out = []
        ws = self.fake_mm.warnings
        for i in range(self._b_warnings, len(ws)):
            w = ws[i]
            out.append(self._v(KERNEL_WARNINGS, f"WARNING: {w.site}: {w.message}",
                               [w.folio] if w.folio is not None else [],
                               caller=w.caller, key=("warning", i)))
        return out

    # rule 4 ------------------------------------------------------------------------
    def _check_balance(self) -> list[Violation]:
        k = self.fake_mm
        out = []
        holder = self._holder_folios()
        holds = _inj_holds(k)
        excused = sum(_pins(f) for f in holder.values())
        acq = k.stats.nr_foll_pin_acquired - self._b_pins[0]
        rel = k.stats.nr_foll_pin_released - self._b_pins[1]
        pinned, leaked = [], []
        for f in k.iter_folios():
            if f.kind not in USER_KINDS or id(f) in holder:
                continue
            p, r = _split(k, f, holds)
            bp, br = self._base_units(f)
            if p > bp:
                pinned.append(f)
            if r > br:
                leaked.append((f, r - br))
        if acq - rel > excused:
            what = f" ({excused} owned by declared holders)" if excused else ""
            out.append(self._v(PIN_BALANCE,
                               f"{acq - rel - excused} pin(s) never released: acquired {acq}, "
                               f"released {rel} since the test started{what}",
                               pinned, key=("pins", acq, rel)))
        elif acq < rel:
            out.append(self._v(PIN_BALANCE,
                               f"more pins released than acquired: acquired {acq}, released {rel}",
                               key=("pins", acq, rel)))
        if leaked:
            n = sum(d for _, d in leaked)
            out.append(self._v(PIN_BALANCE,
                               f"{n} leaked reference(s) on {len(leaked)} folio(s): refcount above what "
                               f"the model accounts for (a FOLL_GET/folio_get never put)",
                               [f for f, _ in leaked], key=("refs", tuple(id(f) for f, _ in leaked))))
        return out

    # rule 9 ------------------------------------------------------------------------
    def _check_accounting(self) -> list[Violation]:
        k = self.fake_mm
        out = []
        seen: set[int] = set()
        for t in k.tasks:
            mm = t.mm
            if mm is None or id(mm) in seen:
                continue
            seen.add(id(mm))
            _, lv, pv = self._b_mm.get(id(mm), (mm, 0, 0))
            for name, now, base in (("locked_vm", mm.locked_vm, lv), ("pinned_vm", mm.pinned_vm, pv)):
                if now != base:
                    out.append(self._v(ACCOUNTING,
                                       f"{name} of {t.comm}[{t.pid}]'s mm is {now} pages, baseline {base}"
                                       f" ({now - base:+d} not returned)", key=("acct", id(mm), name, now)))
        for size in _HSTATE_SIZES:
            nr, free, resv, surplus, inuse = self._hstate_state(size)
            bnr, bfree, bresv, bsurplus, binuse = self._b_hugetlb[size]
            name = k.hstate(size).name
            if nr != bnr or surplus != bsurplus:
                out.append(self._v(ACCOUNTING, f"{name}: nr_huge_pages={nr} surplus={surplus}, baseline "
                                               f"{bnr}/{bsurplus}", key=("hugetlb-nr", size, nr, surplus)))
            if free + inuse != nr:
                out.append(self._v(ACCOUNTING, f"{name}: free_huge_pages={free} + in use {inuse} != "
                                               f"nr_huge_pages={nr}", key=("hugetlb-sum", size, free, inuse)))
            if inuse == binuse and (free, resv) != (bfree, bresv):
                out.append(self._v(ACCOUNTING, f"{name}: free_huge_pages={free} resv_huge_pages={resv}, "
                                               f"baseline {bfree}/{bresv} with no more pages in use",
                                   key=("hugetlb-resv", size, free, resv)))
        return out

    # rule 10 -----------------------------------------------------------------------
    def _touched_ranges(self) -> list[tuple[int, int]]:
        k = self.fake_mm
        rngs = list(self._touched)
        for f in k.iter_folios():
            if f.kind in USER_KINDS and self._base_units(f) == (0, 0) and id(f) not in self._b_folios:
                rngs.append((f.pfn, f.nr_pages))
        return rngs

    def _blockers(self, lo: int, hi: int) -> tuple[list[Any], bool]:
        """(user folios in [lo, hi) that are held, True if the range must not be judged:
        a live kernel-owned folio, a declared holder's or fault-injector-held folio)."""
        k = self.fake_mm
        holder = self._holder_folios()
        holds = _inj_holds(k)
        held, skip = [], False
        for f in k.folios_in_range(lo, hi):
            if f.kind not in USER_KINDS or id(f) in holder or id(f) in holds:
                if not (f.kind == "hugetlb" and f._refcount == 0):
                    skip = True
                continue
            p, r = _split(k, f, holds)
            if p or r:
                held.append(f)
        return held, skip

    def _check_contiguity(self) -> list[Violation]:
        k = self.fake_mm
        rngs = self._touched_ranges()
        if not rngs:
            return []
        out = []
        fi = k.faults
        saved_enabled = fi.enabled
        saved_stats = k.stats.as_dict()
        fi.enabled = False                  # the setter recomputes fi.active
        try:
            for area in k.cma_areas:
                lo, hi = area.base_pfn, area.end_pfn
                if not any(p < hi and p + n > lo for p, n in rngs):
                    continue
                if area.available_count != area.count:
                    continue                        # the test holds a cma_alloc() of its own
                held, skip = self._blockers(lo, hi)
                if skip:
                    continue
                page = k.cma_alloc(area, area.count, 0, no_warn=True)
                if page is not None:
                    k.cma_release(area, page, area.count)
                    continue
                out.append(self._v(CONTIGUITY,
                                   f"cma_alloc of the whole CMA area '{area.name}' ({area.count} pages at "
                                   f"pfn {lo:#x}) fails with no holder left",
                                   held, key=("cma", area.name)))
            blocks = sorted({p // MEMORY_BLOCK_PAGES for p, n in rngs}
                            | {(p + n - 1) // MEMORY_BLOCK_PAGES for p, n in rngs})
            for b in blocks:
                lo, hi = b * MEMORY_BLOCK_PAGES, (b + 1) * MEMORY_BLOCK_PAGES
                if b not in k.memory_blocks:
                    continue
                blk = k.memory_blocks[b]
                if blk.state != "online" or blk.zone == "none" or k._reserved_in(lo, hi) >= 0:
                    continue
                if k._present_in(lo, hi) != hi - lo:
                    continue
                if any(a.base_pfn < hi and a.end_pfn > lo for a in k.cma_areas):
                    continue                        # CMA pageblocks are never offlinable
                held, skip = self._blockers(lo, hi)
                if skip:
                    continue
                rc = k.offline_pages(lo, hi - lo)
                if rc == 0:
                    k.online_pages(lo, hi - lo)
                    continue
                out.append(self._v(CONTIGUITY,
                                   f"offline_pages of memory block {b} (pfn {lo:#x}-{hi:#x}, zone "
                                   f"{blk.zone}) fails with {_errname(rc)} with no holder left",
                                   held, key=("offline", b)))
        finally:
            fi.enabled = saved_enabled
            for name, value in saved_stats.items():
                setattr(k.stats, name, value)
        return out

    # ------------------------------------------------------------------ return judging
    def judge_return(self, call: str, ret: Any, entries: Any, before: CallSnapshot, *,
                     caller: str = "", count: bool | None = None, longterm: bool = True,
                     core: bool = False) -> list[Violation]:
        """Judge rules 1-3 at the return of a pinning call (see :func:`pin_entry_point`
        and :func:`check_core_pin_return`).  Returns the new violations."""
        self._call_seq += 1
        seq = self._call_seq
        k = self.fake_mm
        rc = _return_code(ret)
        grown = self._grown(before)
        found: list[Violation] = []
        if rc is not None and rc < 0:
            problems = []
            if grown:
                pins = sum(p for _, p, _ in grown)
                refs = sum(r for _, _, r in grown)
                problems.append(f"{pins} new pin(s) and {refs} new reference(s) on {len(grown)} folio(s)")
            else:
                dp = ((k.stats.nr_foll_pin_acquired - before.pins_acquired)
                      - (k.stats.nr_foll_pin_released - before.pins_released))
                if dp > 0:
                    problems.append(f"{dp} new pin(s)")
            for mm, lv, pv in before.mms.values():
                if mm.locked_vm > lv:
                    problems.append(f"locked_vm +{mm.locked_vm - lv}")
                if mm.pinned_vm > pv:
                    problems.append(f"pinned_vm +{mm.pinned_vm - pv}")
            iso = [f for f in k.iter_folios() if f.flags & PG_isolated and id(f) not in before.isolated]
            st = k.stats
            if iso or (st.nr_isolated_anon, st.nr_isolated_file) != before.nr_isolated:
                problems.append(f"{len(iso)} isolated folio(s)")
            if problems:
                found.append(self._v(ERROR_NOTHING_HELD,
                                     f"{call} returned {_errname(rc)} but left " + ", ".join(problems)
                                     + " behind", [f for f, _, _ in grown] + iso, call, caller,
                                     key=("call", seq, 2), since=before.seq))
            return self._record(found)
        # success: rule 3 (count honesty)
        if count and isinstance(rc, int) and entries is not None:
            found += self._count_honesty(call, rc, entries, grown, caller, seq, before)
        # rule 1: placement of what the call holds after it returned
        if core:
            held = []
            if longterm and isinstance(rc, int) and entries is not None:
                for e in list(entries)[:rc]:
                    if e is not None and not any(x is e.folio for x in held):
                        held.append(e.folio)
        else:
            held = [f for f, _, _ in grown]
        bad = []
        for f in held:
            bp, br = before.units(f)
            self._remember(f, call, call, caller, base=bp + br)
            if not k.folio_is_longterm_pinnable(f):
                bad.append(f)
        for f in bad:
            found.append(self._v(LONGTERM_PLACEMENT,
                                 f"a long-term hold sits in {_where(k, f)} (taken by {call})",
                                 [f], call, caller, key=("longterm", id(f)), since=before.seq))
        return self._record(found)

    def _count_honesty(self, call: str, n: int, entries: Any, grown: list, caller: str,
                       seq: int, before: CallSnapshot) -> list[Violation]:
        ents = list(entries)
        if len(ents) < n:
            return [self._v(COUNT_HONESTY, f"{call} returned {n} but filled only {len(ents)} entries",
                            [], call, caller, key=("call", seq, 3), since=before.seq)]
        nulls = [i for i in range(n) if ents[i] is None]
        if nulls:
            return [self._v(COUNT_HONESTY, f"{call} returned {n} but entry {nulls[0]} is NULL",
                            [], call, caller, key=("call", seq, 3), since=before.seq)]
        units = sum(p + r for _, p, r in grown)
        # entries on folios whose refcount is not judged (the zero folio a read-only pin
        # may return, kernel-owned pages) carry no counted unit
        uncounted = sum(1 for e in ents[:n] if getattr(e, "folio", e).kind not in USER_KINDS)
        if units != n - uncounted:
            also = f" ({uncounted} on the zero folio or kernel pages)" if uncounted else ""
            return [self._v(COUNT_HONESTY,
                            f"{call} returned {n} but {units} entr{'y is' if units == 1 else 'ies are'} held"
                            + also,
                            [f for f, _, _ in grown], call, caller, key=("call", seq, 3), since=before.seq)]
        return []


def _return_code(ret: Any) -> int | None:
    """The int a pinning call returned: an int, or the first item of a tuple/list
    ``(rc, ...)``; None for anything else (a non-int return counts as success)."""
    if isinstance(ret, bool):
        return None
    if isinstance(ret, int):
        return ret
    if isinstance(ret, (tuple, list)) and ret and isinstance(ret[0], int) and not isinstance(ret[0], bool):
        return ret[0]
    return None


# ------------------------------------------------------------------------ core returns
def check_core_pin_return(checker: Checker, call: str, ret: int, entries: Any,
                          before: CallSnapshot, *, longterm: bool = True,
                          caller: str | None = None) -> list[Violation]:
    """Judge the return of a core pinning call (``pin_user_pages*``,
    ``memfd_pin_folios``): a negative *ret* must leave nothing held (rule 2); a
    non-negative one must hold exactly ``entries[:ret]`` (rule 3) and, for a long-term
    call (FOLL_LONGTERM or memfd_pin_folios), every returned folio must be long-term
    pinnable (rule 1) and is remembered for teardown.  *before* is
    :meth:`Checker.snapshot_call` taken just before the call."""
    if caller is None:
        caller = _short_caller(sys._getframe(1))
    return checker.judge_return(call, ret, entries, before, caller=caller, count=True,
                                longterm=longterm, core=True)


# ------------------------------------------------------------------------ entry points
def _find_fake_mm(args: tuple, kwargs: dict) -> FakeMM | None:
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, FakeMM):
            return a
    if args:
        for attr in ("fake_mm", "k", "mm_k"):
            v = getattr(args[0], attr, None)
            if isinstance(v, FakeMM):
                return v
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, MMStruct):
            return a._k
    return None


def entry_point(name: str | None = None, *, count: bool | None = None) -> Callable[[Callable], Callable]:
    """Decorator factory for driver entry points; see :func:`pin_entry_point`."""
    def deco(func: Callable) -> Callable:
        call = name or func.__name__
        sig = inspect.signature(func)
        list_param = next((p for p in LIST_PARAMS if p in sig.parameters), None)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            k = _find_fake_mm(args, kwargs)
            checker = _CHECKERS.get(k) if k is not None else None
            if checker is None or checker._depth:
                return func(*args, **kwargs)
            caller = _short_caller(sys._getframe(1))
            before = checker.snapshot_call()
            checker._depth += 1
            try:
                ret = func(*args, **kwargs)
            finally:
                checker._depth -= 1
            entries = None
            if list_param is not None:
                try:
                    entries = sig.bind_partial(*args, **kwargs).arguments.get(list_param)
                except TypeError:                         # pragma: no cover - call already ran
                    entries = None
                if not isinstance(entries, list):
                    entries = None
            use_count = count
            if use_count is None:
                use_count = (entries is not None and isinstance(ret, int) and not isinstance(ret, bool))
            checker.judge_return(call, ret, entries, before, caller=caller, count=use_count)
            return ret

        wrapper.__pin_entry_point__ = call  # type: ignore[attr-defined]
        return wrapper
    return deco


def pin_entry_point(func: Callable | None = None, *, name: str | None = None,
                    count: bool | None = None) -> Any:
    """Declare a driver entry point (``@pin_entry_point`` or
    ``@pin_entry_point(name=..., count=...)``); its returns are judged like a core
    pinning call's.

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
    on-demand and teardown checks.  Rule 3 applies when the function has a parameter
    named ``pages`` or ``folios`` that received a list and it returned a plain ``int``
    (``count=False`` switches it off, ``count=True`` forces it): the first *ret*
    entries must be non-NULL and the call must hold exactly *ret* units (one pin or
    reference per entry).
    """
    deco = entry_point(name, count=count)
    if func is None:
        return deco
    return deco(func)


# ------------------------------------------------------------------------ expectations
@contextlib.contextmanager
def expect_violation(checker: Checker, rule: "int | str | Rule", *,
                     final: bool | None = None) -> Iterator[list[Violation]]:
    """Assert that the block violates *rule*: on exit the checker runs (with
    ``final=True`` by default for rules 4, 9 and 10, whose checks are teardown-only)
    and the block must have produced at least one violation of that rule, else
    ``AssertionError`` naming it.  Those violations are removed from
    ``checker.violations`` (and not reported again); any other violation stays.  The
    yielded list receives the caught violations."""
    r = get_rule(rule)
    if final is None:
        final = r.number in (4, 9, 10)
    start = len(checker.violations)
    caught: list[Violation] = []
    yield caught
    checker.check(final=final)
    new = checker.violations[start:]
    hits = [v for v in new if v.rule == r]
    if not hits:
        others = "; ".join(f"[{v.rule.id}] {v.message}" for v in new) or "none"
        raise AssertionError(f"expected a violation of rule {r.number} ({r.id}: {r.meaning}), "
                             f"but none happened (other violations: {others})")
    for v in hits:
        checker.violations.remove(v)
        checker._expected.add(v.key)
    caught.extend(hits)
