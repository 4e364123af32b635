"""Rules 1-3 at the return of a pinning call: a core call, a declared entry point or a
driver call the checker found by itself.  A mixin of
:class:`~pytest_pinfault.contracts.Checker`.

One call gives at most one violation per rule, whatever the number of folios: the
splat lists the folios compactly (pfn runs) and names the faults that fired during the
call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Hashable, Iterable

from . import counters as _counters
from .rules import COUNT_HONESTY, ERROR_NOTHING_HELD, LONGTERM_PLACEMENT
from .tracking import CallSnapshot
from .units import USER_KINDS, compact_folios, errname, placement_bad, short_caller, where
from .violation import Violation

if TYPE_CHECKING:  # pragma: no cover
    from .checker import Hold
    from .rules import Rule

__all__ = ["ReturnRules", "return_code", "check_core_pin_return"]


def return_code(ret: Any) -> int | None:
    """The int a pinning call returned: an int, or the first item of a tuple/list
    ``(rc, ...)``; None for anything else (a non-int return counts as success)."""
    if isinstance(ret, bool):
        return None
    if isinstance(ret, int):
        return ret
    if isinstance(ret, (tuple, list)) and ret and isinstance(ret[0], int) and not isinstance(ret[0], bool):
        return ret[0]
    return None


class ReturnRules:
    """Rules 1-3 judged at a call's return."""

    fake_mm: Any

    if TYPE_CHECKING:
        # What these rules use of the Checker they are part of (see StateRules).
        _call_seq: int

        def _close_snapshot(self, snap: CallSnapshot) -> None: ...
        def _grown(self, before: CallSnapshot) -> list[tuple[Any, int, int]]: ...
        def _new_isolated(self, before: CallSnapshot) -> list[Any]: ...
        def _record(self, found: list[Violation]) -> list[Violation]: ...
        def _remember(self, f: Any, owner: str, call: str, caller: str, base: int,
                      vkey: Any = None) -> Hold | None: ...
        def _v(self, rule: Rule, message: str, folios: Iterable[Any] = (), call: str = "",
               caller: str = "", key: Hashable = None, since: int | None = None,
               faults_since: int | None = None, hint: str = "") -> Violation: ...

    def judge_return(self, call: str, ret: Any, entries: Any, before: CallSnapshot, *,
                     caller: str = "", count: bool | None = None, longterm: bool = True,
                     core: bool = False, auto: bool = False, record: bool = True) -> list[Violation]:
        """Judge rules 1-3 at the return of a pinning call (see :func:`pin_entry_point`
        and :func:`check_core_pin_return`); *auto*: a driver call the checker found by
        itself (named after its function).  Returns the new violations (recorded unless
        *record* is false)."""
        self._close_snapshot(before)
        self._call_seq += 1
        seq = self._call_seq
        k = self.fake_mm
        rc = return_code(ret)
        grown = self._grown(before)
        found: list[Violation] = []
        how = " (an undeclared driver call)" if auto else ""
        fsince = before.faults_at
        if rc is not None and rc < 0:
            problems = []
            if grown:
                pins = sum(p for _, p, _ in grown)
                refs = sum(r for _, _, r in grown)
                problems.append(f"{pins} new pin(s) and {refs} new reference(s) on "
                                + compact_folios(f for f, _, _ in grown))
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
            if before.counters:
                problems += _counters.error_problems(k, before.counters)
            iso = self._new_isolated(before)
            st = k.stats
            if iso or (st.nr_isolated_anon, st.nr_isolated_file) != before.nr_isolated:
                problems.append(f"{len(iso)} isolated folio(s)")
            if problems:
                found.append(self._v(ERROR_NOTHING_HELD,
                                     f"{call}{how} returned {errname(rc)} but left " + ", ".join(problems)
                                     + " behind", [f for f, _, _ in grown] + iso, call, caller,
                                     key=("call", seq, 2), since=before.seq, faults_since=fsince,
                                     hint="the error path must undo everything taken before the failure "
                                          "(unpin_user_pages/unpin_folios/put_page, account_locked_vm(.., "
                                          "false), putback_movable_pages)"))
            return self._record(found) if record else found
        # success: rule 3 (count honesty)
        if count and isinstance(rc, int) and entries is not None:
            found += self._count_honesty(call, rc, entries, grown, caller, seq, before)
        # rule 1: placement of what the call holds after it returned
        if core:
            held = []
            if longterm and isinstance(rc, int) and entries is not None:
                ids = set()
                for e in list(entries)[:rc]:
                    if e is not None and id(e.folio) not in ids:
                        ids.add(id(e.folio))
                        held.append(e.folio)
        else:
            held = [f for f, _, _ in grown]
        bad = []
        for f in held:
            bp, br = before.units(f)
            bad_here = placement_bad(k, f, isolated_counts=not auto)
            self._remember(f, call, call, caller, base=bp + br,
                           vkey=("longterm-call", seq) if bad_here else None)
            if bad_here:
                bad.append(f)
        if bad:
            places = sorted({where(k, f) for f in bad})
            n = len(bad)
            what = "a long-term hold sits" if n == 1 else f"{n} long-term holds sit"
            if auto:
                hint = ("a reference or pin that outlives the call is long-term whatever flag took it: "
                        "pin with FOLL_LONGTERM (pin_user_pages*/memfd_pin_folios), or drop it before "
                        "returning")
            elif core:
                hint = "the kernel should have migrated these folios before pinning them"
            else:
                hint = ("a hold that outlives the entry point is long-term: take it with FOLL_LONGTERM "
                        "(pin_user_pages*/memfd_pin_folios), not get_user_pages/FOLL_GET/get_page")
            found.append(self._v(LONGTERM_PLACEMENT,
                                 f"{what} in {' and '.join(places)} (taken by {call}{how})",
                                 bad, call, caller, key=("longterm-call", seq), since=before.seq,
                                 faults_since=fsince, hint=hint))
        return self._record(found) if record else found

    def _count_honesty(self, call: str, n: int, entries: Any, grown: list[Any], caller: str,
                       seq: int, before: CallSnapshot) -> list[Violation]:
        ents = list(entries)
        fs = before.faults_at
        if len(ents) < n:
            return [self._v(COUNT_HONESTY, f"{call} returned {n} but filled only {len(ents)} entries",
                            [], call, caller, key=("call", seq, 3), since=before.seq, faults_since=fs,
                            hint="return the number of entries actually stored")]
        nulls = [i for i in range(n) if ents[i] is None]
        if nulls:
            return [self._v(COUNT_HONESTY, f"{call} returned {n} but entry {nulls[0]} is NULL",
                            [], call, caller, key=("call", seq, 3), since=before.seq, faults_since=fs,
                            hint="return the number of entries actually stored")]
        units = sum(p + r for _, p, r in grown)
        # entries on folios whose refcount is not judged (the zero folio a read-only pin
        # may return, kernel-owned pages) carry no counted unit
        uncounted = sum(1 for e in ents[:n] if getattr(e, "folio", e).kind not in USER_KINDS)
        if units != n - uncounted:
            also = f" ({uncounted} on the zero folio or kernel pages)" if uncounted else ""
            return [self._v(COUNT_HONESTY,
                            f"{call} returned {n} but {units} entr{'y is' if units == 1 else 'ies are'} held"
                            + also,
                            [f for f, _, _ in grown], call, caller, key=("call", seq, 3), since=before.seq,
                            faults_since=fs,
                            hint="a short count from pin_user_pages*/memfd_pin_folios is not an error: "
                                 "use what it returned, not what was asked for")]
        return []


def check_core_pin_return(checker: Any, call: str, ret: int, entries: Any,
                          before: CallSnapshot, *, longterm: bool = True,
                          caller: str | None = None) -> list[Violation]:
    """Judge the return of a core pinning call (``pin_user_pages*``,
    ``memfd_pin_folios``): a negative *ret* must leave nothing held (rule 2); a
    non-negative one must hold exactly ``entries[:ret]`` (rule 3) and, for a long-term
    call (FOLL_LONGTERM or memfd_pin_folios), every returned folio must be long-term
    pinnable (rule 1) and is remembered for teardown.  *before* is
    :meth:`Checker.snapshot_call` taken just before the call."""
    import sys
    if caller is None:
        caller = short_caller(sys._getframe(1))
    found: list[Violation] = checker.judge_return(call, ret, entries, before, caller=caller, count=True,
                                                  longterm=longterm, core=True)
    return found
