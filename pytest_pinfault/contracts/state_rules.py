"""The rules judged from the machine's state: on demand (1, 5, 6, 7, 8, 11) and at
teardown (4, 9, 10).  A mixin of :class:`~pytest_pinfault.contracts.Checker`.

Cost: rules 1 and 6 look at the remembered holds and declared device mappings; the
others at the folios the test touched (an attached checker keeps that set), or at every
allocated folio for a checker that is not attached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable

from ..mm.folio import PG_isolated, PG_locked, PG_writeback
from ..mm.gfp import ZONE_MOVABLE
from ..mm.memory_hotplug import MEMORY_BLOCK_PAGES
from ..mm.sched import PF_MEMALLOC_PIN
from .rules import (ACCOUNTING, COHERENCE, CONTIGUITY, ISOLATION_HYGIENE, KERNEL_WARNINGS,
                    LONGTERM_PLACEMENT, PIN_BALANCE, SCOPE_HYGIENE, TERMINATION)
from .units import (USER_KINDS, compact_folios, errname, fill_units, injector_holds, pins_of, split_units,
                    where)
from .violation import Violation

if TYPE_CHECKING:  # pragma: no cover
    from .checker import Hold
    from .rules import Rule

__all__ = ["StateRules", "HSTATE_SIZES"]

HSTATE_SIZES = (2 << 20, 1 << 30)


class StateRules:
    """Rules 1 and 4-11 read from state (see the module docstring)."""

    fake_mm: Any

    if TYPE_CHECKING:
        # What these rules use of the Checker they are part of (checker.py sets or defines
        # it; a checker verifies the definitions match these declarations).
        _seen: dict[int, Any]
        _holds: dict[int, Hold]
        _touched: dict[tuple[int, int], None]
        _ucache: dict[int, tuple[int, int]] | None
        _device_views: dict[Any, Callable[[], Iterable[tuple[Any, int, int]]]]
        _b_pins: tuple[int, int]
        _b_isolated: tuple[int, int]
        _b_isolate_pb: dict[str, int]
        _b_task_flags: dict[int, int]
        _b_mm: dict[int, tuple[Any, int, int]]
        _b_warnings: int
        _b_livelocks: int
        _b_folios: dict[int, tuple[Any, int, int]]
        _b_isolated_folios: set[int]
        _b_huge_inuse: dict[int, Any]
        _b_hugetlb: dict[int, tuple[int, int, int, int, int]]

        @property
        def attached(self) -> bool: ...
        def _candidates(self) -> Iterable[Any]: ...
        def _base_units(self, f: Any) -> tuple[int, int]: ...
        def _holder_folios(self) -> dict[int, Any]: ...
        def _v(self, rule: Rule, message: str, folios: Iterable[Any] = (), call: str = "",
               caller: str = "", key: Hashable = None, since: int | None = None,
               faults_since: int | None = None, hint: str = "") -> Violation: ...

    # rule 1 ------------------------------------------------------------------------
    def _units(self, f: Any, holds: dict[int, int]) -> tuple[int, int]:
        """split_units, remembered for the rest of the running check (``_ucache``)."""
        c = self._ucache
        if c is None:
            return split_units(self.fake_mm, f, holds)
        u = c.get(id(f))
        if u is None:
            u = c[id(f)] = split_units(self.fake_mm, f, holds)
        return u

    def _still_held(self, h: Hold, holds: dict[int, int]) -> bool:
        f = h.folio
        if f.freed:
            return False
        p, r = self._units(f, holds)
        return p + r > h.base

    def _check_longterm(self) -> list[Violation]:
        """One violation per call (or declaration) whose holds sit where they must not
        (reported once: the key of the violation their call got, if any)."""
        k = self.fake_mm
        holds = injector_holds(k)
        groups: dict[tuple[str, str, str, Any], list[Any]] = {}
        cache = self._ucache
        pinnable = k.folio_is_longterm_pinnable
        if cache is None:
            cache = {}
        hs = self._holds
        # every remembered hold (after a 1 GiB pin: 262,144) in one tight loop first
        fill_units(k, [h.folio for h in hs.values()], holds, cache)
        # the holds still held (usually few: a new dict, not a deletion per released
        # hold); a freed folio has no units, so its hold goes too
        kept = {}
        for key, h in hs.items():
            u = cache[key]
            if u[0] + u[1] > h.base:
                kept[key] = h
                if not pinnable(h.folio):
                    groups.setdefault((h.owner, h.call, h.caller, h.vkey), []).append(h.folio)
        self._holds = kept
        out = []
        for (owner, call, caller, vkey), fs in groups.items():
            places = sorted({where(k, f) for f in fs})
            by = f" (held by {owner})" if owner else ""
            n = len(fs)
            what = "a long-term hold sits" if n == 1 else f"{n} long-term holds sit"
            out.append(self._v(LONGTERM_PLACEMENT, f"{what} in {' and '.join(places)}{by}", fs, call,
                               caller, key=vkey or ("longterm", tuple(sorted(id(f) for f in fs)))))
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
                               [ll.folio] if ll.folio is not None else [], caller=ll.caller,
                               key=("livelock", i)))
        return out

    # rule 6 ------------------------------------------------------------------------
    def _check_coherence(self, only: Any = None) -> list[Violation]:
        """Rule 6 over every hold and device mapping, or (*only*: folio ids) over those
        holds alone."""
        out = []
        holds = injector_holds(self.fake_mm)
        hs = (list(self._holds.values()) if only is None
              else [self._holds[i] for i in only if i in self._holds])
        for h in hs:
            if not self._still_held(h, holds):
                if only is not None:
                    self._holds.pop(id(h.folio), None)     # released by this call
                continue
            f = h.folio
            if h.mapping is not None:
                now = h.mapping.lookup(h.index)
                if now is not None and now is not f:
                    host = getattr(h.mapping, "host", None)
                    name = getattr(host, "name", "?")
                    out.append(self._v(COHERENCE,
                                       f"stale page: the held folio pfn={f.pfn:#x} is no longer what the "
                                       f"page cache maps at index {h.index} of memfd:{name}; it now maps "
                                       f"pfn={now.pfn:#x}, so DMA through the hold is not seen by the file",
                                       [f, now], h.call, h.caller, key=("coherence", id(f), "pc"),
                                       hint="hold the page with a long-term pin (FOLL_LONGTERM / "
                                            "memfd_pin_folios) so it can neither move nor be replaced"))
            for mm, key in h.rmap:
                if not (isinstance(key, tuple) and len(key) == 2 and hasattr(mm, "pte")):
                    continue                       # a test's own stand-in page table
                kind, vpn = key
                ent = mm.pte.get(vpn) if kind == "pte" else mm.huge.get(vpn)
                now = ent[0] if isinstance(ent, tuple) else ent
                if now is not None and now is not f:
                    out.append(self._v(COHERENCE,
                                       f"stale page: the held anonymous folio pfn={f.pfn:#x} is no longer "
                                       f"what the page table maps at {vpn << 12:#x}; it now maps "
                                       f"pfn={now.pfn:#x} (replaced by copy-on-write or migration), so DMA "
                                       f"through the hold is not seen by the process",
                                       [f, now], h.call, h.caller, key=("coherence", id(f), vpn),
                                       hint="pin with FOLL_WRITE (or FOLL_LONGTERM|FOLL_WRITE) so the "
                                            "page is unshared before it is handed to the device"))
        if only is None:
            for owner, view in list(self._device_views.items()):
                out += self._check_device_view(owner, view)
        return out

    def _check_device_view(self, owner: Any, view: Any) -> list[Violation]:
        """One violation per kind of difference (offset, stale page, freed page, nothing
        mapped) over the device's entries that disagree with the CPU page table."""
        k = self.fake_mm
        kinds: dict[str, list[tuple[int, int, Any, Any]]] = {}
        for mm, addr, pfn in view():
            ent = mm.lookup(addr)
            cpu = None if ent is None else ent[0].pfn + ent[1]
            if cpu == pfn:
                continue
            dev = k.pfn_to_folio(pfn)
            if ent is not None and dev is ent[0]:
                kind = "offset"
            elif dev is None or dev.freed:
                kind = "freed" if ent is not None else "unmapped-freed"
            elif ent is None:
                kind = "unmapped"
            else:
                kind = "stale"
            kinds.setdefault(kind, []).append((addr, pfn, cpu, dev))
        out = []
        for kind, ents in kinds.items():
            addr, pfn, cpu, dev = ents[0]
            n = len(ents)
            first = f"{addr:#x} -> pfn={pfn:#x}"
            more = f" (first: {first}; {n} entries)" if n > 1 else f" ({first})"
            if kind == "offset":
                msg = (f"device mapping of {owner!r} is off within the right folio: the device uses "
                       f"pfn={pfn:#x} at {addr:#x}, the page table maps pfn={cpu:#x} there{more}")
                hint = "the device page table is filled with a wrong index or offset into the folio"
            elif kind == "stale":
                msg = (f"stale page: device mapping of {owner!r} still points at pfn={pfn:#x}, but the "
                       f"page table maps pfn={cpu:#x} at {addr:#x} (a missed mmu notifier "
                       f"invalidation){more}")
                hint = ("evict the device mapping in the mmu_interval_notifier invalidate callback and "
                        "re-fault under mmu_interval_read_begin/read_retry")
            elif kind == "freed":
                msg = (f"freed page: device mapping of {owner!r} still points at pfn={pfn:#x}, which is "
                       f"free memory now; the page table maps pfn={cpu:#x} at {addr:#x} (a missed mmu "
                       f"notifier invalidation){more}")
                hint = "evict the device mapping in the mmu_interval_notifier invalidate callback"
            else:
                gone = "free memory now" if kind == "unmapped-freed" else "still allocated"
                msg = (f"device mapping of {owner!r} still points at pfn={pfn:#x} ({gone}), but the page "
                       f"table maps nothing at {addr:#x} (unmapped, migrated or offlined: a missed mmu "
                       f"notifier invalidation){more}")
                hint = "evict the device mapping in the mmu_interval_notifier invalidate callback"
            folios = [d for _, _, _, d in ents if d is not None and not d.freed][:64]
            out.append(self._v(COHERENCE, msg, folios,
                               key=("coherence-device", id(owner), kind,
                                    tuple((a, p) for a, p, _, _ in ents)), hint=hint))
        return out

    # rule 7 ------------------------------------------------------------------------
    def _check_isolation(self) -> list[Violation]:
        k = self.fake_mm
        out = []
        left = self._scan()[0]
        if left:
            out.append(self._v(ISOLATION_HYGIENE,
                               f"{len(left)} folio(s) left isolated from the LRU",
                               left, key=("isolated", tuple(id(f) for f in left)),
                               hint="put back what migrate_pages() left on the list with "
                                    "putback_movable_pages() (or folio_putback_lru())"))
        st = k.stats
        now = (st.nr_isolated_anon, st.nr_isolated_file)
        if now != self._b_isolated:
            parts = []
            for name, value, base in (("nr_isolated_anon", now[0], self._b_isolated[0]),
                                      ("nr_isolated_file", now[1], self._b_isolated[1])):
                if value != base:
                    parts.append(f"{name}={value} (baseline {base}, {value - base:+d} pages)")
            low = any(v < b for v, b in zip(now, self._b_isolated))
            if low:
                hint = ("more isolated pages were put back than were counted in: code that isolates "
                        "folios itself (folio_isolate_lru) must add them with node_stat_mod_isolated"
                        "(folio, folio_nr_pages(folio)) -- node_stat_mod_folio(folio, NR_ISOLATED_ANON "
                        "+ folio_is_file_lru(folio), ...) in the kernel -- before migrate_pages() or "
                        "putback_movable_pages() take them off again")
            else:
                hint = ("isolated pages were never put back: call putback_movable_pages() for what "
                        "migrate_pages() left on the list, or undo node_stat_mod_isolated() on a "
                        "path that drops the folio")
            out.append(self._v(ISOLATION_HYGIENE,
                               "NR_ISOLATED not back to baseline: " + ", ".join(parts),
                               key=("nr_isolated", now), hint=hint))
        for z in k.zones.values():
            base = self._b_isolate_pb.get(z.name, 0)
            if z.nr_isolate_pageblock > base:
                out.append(self._v(ISOLATION_HYGIENE,
                                   f"zone {z.name}: nr_isolate_pageblock={z.nr_isolate_pageblock} "
                                   f"({z.nr_isolate_pageblock - base} pageblock(s) left MIGRATE_ISOLATE)",
                                   key=("isolate_pb", z.name, z.nr_isolate_pageblock),
                                   hint="every start_isolate_page_range() needs its "
                                        "undo_isolate_page_range()"))
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
        holds = injector_holds(k)
        excused = sum(pins_of(f) for f in holder.values())
        acq = k.stats.nr_foll_pin_acquired - self._b_pins[0]
        rel = k.stats.nr_foll_pin_released - self._b_pins[1]
        pinned, leaked = [], []
        cache = self._ucache
        for f in self._candidates():
            if f.kind not in USER_KINDS or id(f) in holder:
                continue
            if cache is not None:
                u = cache.get(id(f))
                if u is None:
                    u = cache[id(f)] = split_units(k, f, holds)
                p, r = u
            else:
                p, r = split_units(k, f, holds)
            if not (p or r):
                continue
            bp, br = self._base_units(f)
            if p > bp:
                pinned.append(f)
            if r > br:
                leaked.append((f, r - br))
        if acq - rel > excused:
            what = f" ({excused} owned by declared holders)" if excused else ""
            out.append(self._v(PIN_BALANCE,
                               f"{acq - rel - excused} pin(s) never released: acquired {acq}, "
                               f"released {rel} since the test started{what}"
                               + (f"; still pinned: {compact_folios(pinned)}" if pinned else ""),
                               pinned, key=("pins", acq, rel)))
        elif acq < rel:
            out.append(self._v(PIN_BALANCE,
                               f"more pins released than acquired: acquired {acq}, released {rel}",
                               key=("pins", acq, rel)))
        if leaked:
            n = sum(d for _, d in leaked)
            out.append(self._v(PIN_BALANCE,
                               f"{n} leaked reference(s) on {compact_folios(f for f, _ in leaked)}: refcount "
                               f"above what the model accounts for (a FOLL_GET/folio_get never put)",
                               [f for f, _ in leaked], key=("refs", tuple(id(f) for f, _ in leaked))))
        return out

    # rule 9 ------------------------------------------------------------------------
    def _hstate_state(self, size: int) -> tuple[int, int, int, int, int]:
        k = self.fake_mm
        h = k._hstates[size]               # k.hstate(size), without parsing the size
        if h.nr_huge_pages == 0:
            inuse = 0                      # no pool page, none in use
        elif getattr(self, "_seen_valid", False) and self.attached:
            pool = list(self._b_huge_inuse.values()) + list(self._seen.values())
            ids: set[int] = set()
            inuse = 0
            for f in pool:
                if id(f) in ids:
                    continue
                ids.add(id(f))
                if f.kind == "hugetlb" and f.hstate is h and f._refcount > 0 and not f.freed:
                    inuse += 1
        else:
            inuse = sum(1 for f in k.iter_folios()
                        if f.kind == "hugetlb" and f.hstate is h and f._refcount > 0)
        return h.nr_huge_pages, h.free_huge_pages, h.resv_huge_pages, h.surplus_huge_pages, inuse

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
                                       f" ({now - base:+d} not returned)", key=("acct", id(mm), name, now),
                                       hint="every account_locked_vm(mm, n, true) needs its "
                                            "account_locked_vm(mm, n, false) on release and error paths"
                                            if name == "locked_vm" else
                                            "every atomic64_add to pinned_vm needs its atomic64_sub"))
        for size in HSTATE_SIZES:
            nr, free, resv, surplus, inuse = self._hstate_state(size)
            bnr, bfree, bresv, bsurplus, binuse = self._b_hugetlb[size]
            name = k._hstates[size].name
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
    def _scan(self) -> tuple[list[Any], list[tuple[int, int]]]:
        """One pass over the candidate folios (kept for the running check): (folios left
        isolated beyond the baseline, (pfn, nr_pages) of every user folio allocated since
        the baseline that lies in a CMA area or ZONE_MOVABLE)."""
        cached: tuple[list[Any], list[tuple[int, int]]] | None = getattr(self, "_scan_cache", None)
        if cached is not None and self._ucache is not None:
            return cached
        base = self._b_folios
        b_iso = self._b_isolated_folios
        cma = [(a.base_pfn, a.end_pfn) for a in self.fake_mm.cma_areas]
        left: list[Any] = []
        rngs: list[tuple[int, int]] = []
        for f in self._candidates():
            if f._flags & PG_isolated and id(f) not in b_iso:
                left.append(f)
            if f._zone.idx != ZONE_MOVABLE:
                if not cma:
                    continue
                pfn = f.pfn
                for lo, hi in cma:
                    if lo <= pfn < hi:
                        break
                else:
                    continue
            if id(f) not in base and f.kind in USER_KINDS:
                rngs.append((f.pfn, f.nr_pages))
        out = (left, rngs)
        self._scan_cache = out if self._ucache is not None else None
        return out

    def _touched_ranges(self) -> list[tuple[int, int]]:
        """(pfn, nr_pages) of every hold ever taken and every user folio allocated since
        the baseline that lies in a CMA area or ZONE_MOVABLE (the ranges rule 10 probes)."""
        return list(self._touched) + self._scan()[1]

    def _blockers(self, lo: int, hi: int) -> tuple[list[Any], bool, bool]:
        """One pass over the folios in [lo, hi): (the user folios that are held, True if
        the range must not be judged -- a live kernel-owned folio, a declared holder's
        or fault-injector-held folio --, True if a probe would only move folios around:
        every folio is a user folio, not isolated, locked or under writeback, and holds
        nothing the model does not account for, so the probe can be skipped)."""
        k = self.fake_mm
        holder = self._holder_folios()
        holds = injector_holds(k)
        cache = self._ucache
        held, skip, movable = [], False, True
        busy = PG_isolated | PG_locked | PG_writeback
        for f in k.folios_in_range(lo, hi):
            if f.kind not in USER_KINDS or id(f) in holder or id(f) in holds:
                movable = False
                if not (f.kind == "hugetlb" and f._rc == 0):
                    skip = True
                continue
            u = cache.get(id(f)) if cache is not None else None
            if u is None:
                u = self._units(f, holds)
            if u[0] or u[1]:
                held.append(f)
                movable = False
            elif f._flags & busy:
                movable = False
        return held, skip, movable and not self._pcp_quirk()

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
                held, skip, movable = self._blockers(lo, hi)
                if skip or movable:
                    continue
                page = k.cma_alloc(area, area.count, 0, no_warn=True)
                if self._ucache is not None:
                    self._ucache.clear()            # the probe moved folios
                if page is not None:
                    k.cma_release(area, page, area.count)
                    continue
                out.append(self._v(CONTIGUITY,
                                   f"cma_alloc of the whole CMA area '{area.name}' ({area.count} pages at "
                                   f"pfn {lo:#x}) fails with no holder left",
                                   held, key=("cma", area.name)))
            # the first and last memory block of each range (only a range of more than
            # one page can end in another block than it starts)
            starts = {p // MEMORY_BLOCK_PAGES for p, n in rngs}
            starts.update([(p + n - 1) // MEMORY_BLOCK_PAGES for p, n in rngs if n > 1])
            blocks = sorted(starts)
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
                if blk.zone != "Movable":
                    continue                        # only ZONE_MOVABLE promises offlining
                held, skip, movable = self._blockers(lo, hi)
                if skip or movable:
                    continue
                rc = k.offline_pages(lo, hi - lo)
                if self._ucache is not None:
                    self._ucache.clear()            # the probe moved folios
                if rc == 0:
                    k.online_pages(lo, hi - lo)
                    continue
                out.append(self._v(CONTIGUITY,
                                   f"offline_pages of memory block {b} (pfn {lo:#x}-{hi:#x}, zone "
                                   f"{blk.zone}) fails with {errname(rc)} with no holder left",
                                   held, key=("offline", b)))
        finally:
            fi.enabled = saved_enabled
            for name, value in saved_stats.items():
                setattr(k.stats, name, value)
        return out

    def _pcp_quirk(self) -> bool:
        return bool(getattr(self.fake_mm, "_pcp_thp_shared", False))
