"""``FakeMM``: the one object that owns the fake machine's memory state.

Each kernel file's functions live in a mixin named after it (``page_alloc``, ``swap``,
``migrate``, ``cma`` ...); ``FakeMM`` composes them, builds the machine from an
:class:`MMConfig` and keeps the shared state: zones, pageblock migratetypes, the folios
(indexed by memory section), tasks, counters, the trace, kernel warnings and the fault
injector.  Construction costs O(zones + CMA areas + hugetlb pool pages), never O(RAM).
"""

from __future__ import annotations

from typing import Any, Iterator

from ..faults.injector import Injector, UnknownSite
from .bug import KernelWarning, external_caller
from .cma import CMA, CmaMixin
from .config import MMConfig
from .folio import (GUP_PIN_COUNTING_BIAS, KIND_CONTIG, KIND_HUGETLB, KIND_ZERO,
                    PG_reserved, Folio, Page)
from .gfp import MIGRATE_CMA, ZONE_MOVABLE
from .hugetlb import HState, HugetlbMixin
from .memblock import compute_layout
from .memory_hotplug import MemoryBlocks, MemoryHotplugMixin
from .gup import GupMixin, Out
from .memfd import MemfdMixin
from .migrate import MigrateMixin
from .mm_types import AddressSpaceMixin
from .mmu_notifier import MMUNotifierMixin
from .slab import SlabMixin
from .mmzone import PerCpuPages, Zone, pageblock_order, zone_batchsize
from .page_alloc import NR_PCP_LISTS, PageAllocMixin
from .page_isolation import IsolationMixin
from .sched import Task
from .swap import SwapMixin
from .trace import Trace
from .vmstat import VMStat

__all__ = ["FakeMM", "Out", "KERNEL_VERSION"]

#: The kernel behaviour the default configuration models.
KERNEL_VERSION = "6.17"

SECTION_SHIFT = 15           # 128 MiB memory sections (SECTION_SIZE_BITS 27)
_MAX_FOLIO_ORDER = 18        # 1 GiB gigantic hugetlb folios


class FakeMM(PageAllocMixin, SwapMixin, MigrateMixin, HugetlbMixin, IsolationMixin,
             CmaMixin, MemoryHotplugMixin, AddressSpaceMixin, MemfdMixin, GupMixin,
             MMUNotifierMixin, SlabMixin):
    """A fake Linux mm built from an :class:`MMConfig` (see the package docs).

    Attributes: ``zones`` (name -> :class:`Zone`), ``cma_areas``, ``memory_blocks``,
    ``zero_folio``, ``stats`` (:class:`VMStat`), ``trace`` (:class:`Trace`), ``faults``
    (:class:`Injector`), ``warnings`` (recorded :class:`KernelWarning`), ``current``
    (the running :class:`Task`).
    """

    #: ``observer.folio_ref`` of the attached observer, or None (read by every
    #: ``Folio._refcount`` write; see :mod:`pytest_pinfault.mm.observer`)
    _ref_watch: Any = None
    #: what :meth:`check` builds when no observer is attached: a callable taking the
    #: FakeMM and returning an observer (the contract checker package installs one)
    observer_factory: Any = None

    def __init__(self, config: MMConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = MMConfig(**overrides)
        elif overrides:
            config = config.replace(**overrides)
        self.config = config
        self.stats = VMStat()
        self.trace = Trace()
        self.faults = Injector(mm=self, seed=config.seed)
        self.warnings: list[KernelWarning] = []
        self._steer: str | None = None
        self._pcp_thp_shared = config.has_quirk("pcp_thp_shared_list")
        self._pcp_disabled = 0
        self._sections: dict[int, dict[int, Folio]] = {}
        self._contig_blocks: dict[int, Folio] = {}
        self._nr_allocated = 0
        self._pb_mt: dict[int, int] = {}
        self._offline_blocks: set[int] = set()
        self._lru_disable_count = 0
        self._lru_add: list[list[Folio]] = [[] for _ in range(config.nr_cpus)]
        self._lru_nr = [0, 0, 0, 0]
        self._next_pid = 1
        self.livelocks: list[Any] = []
        self.kernel_outcomes: list[Any] = []     # KernelOutcome: loops the kernel itself never leaves
        self._gup_signalled_calls: dict[int, int] = {}
        self.killed_tasks: list[Any] = []        # tasks a kernel outcome killed (see mm/gup.py)
        self._gup_last_unpinnable: Folio | None = None
        self._pin_anyway_next = False
        self._notifier_seq = 0
        self._slab_live: dict[int, Any] = {}
        self.tasks: list[Task] = []
        self.current = self.create_task("init")
        self._observer: Any = None          # the attached observer (mm/observer.py)
        self._own_checker: Any = None       # check()'s lazily created one
        self._build(config)
        self.current.mm = self.create_mm()
        # what Checker.boot_baseline needs: the trace position and the boot hugetlb pools
        h2, h1 = self._hstates[2 << 20], self._hstates[1 << 30]
        self._boot_state = (self.trace._seq, (
            (h2.nr_huge_pages, h2.free_huge_pages, h2.resv_huge_pages, h2.surplus_huge_pages),
            (h1.nr_huge_pages, h1.free_huge_pages, h1.resv_huge_pages, h1.surplus_huge_pages)))

    # ------------------------------------------------------------------ construction
    def _build(self, cfg: MMConfig) -> None:
        lay = compute_layout(cfg)
        self._memory = lay.memory
        self._reserved = lay.reserved
        self._cma_ranges = [(b, b + c) for _, b, c in lay.cma]
        self.cma_areas = [CMA(name, b, c) for name, b, c in lay.cma]
        self._zone_list: list[Zone] = []
        self.zones: dict[str, Zone] = {}
        for idx in sorted(lay.zones):
            s, e = lay.zones[idx]
            zone = Zone(idx, s, e)
            self.zones[zone.name] = zone
            self._zone_list.append(zone)
        # zonelists: for each highest zone index, that zone and every lower one, populated
        for zone in self._zone_list:
            zone.present_pages = self._present_in(zone.zone_start_pfn, zone.zone_end_pfn)
            zone.managed_pages = zone.present_pages - self._reserved_count(zone.zone_start_pfn, zone.zone_end_pfn)
        self._zonelists = {
            hi: [z for z in reversed(self._zone_list) if z.idx <= hi and z.present_pages]
            for hi in range(4)
        }
        for zone in self._zone_list:
            zone.pcp = [PerCpuPages(zone_batchsize(zone.managed_pages), NR_PCP_LISTS)
                        for _ in range(cfg.nr_cpus)]
            self._free_zone_memory(zone)
        self._setup_watermarks()
        self.memory_blocks = MemoryBlocks(self)
        dma32 = self.zones.get("DMA32") or self.zones["DMA"]
        self.zero_folio = Folio(self, lay.zero_pfn, 0, dma32, KIND_ZERO)
        self.zero_folio.flags |= PG_reserved
        self._hstates: dict[int, HState] = {}
        for nbytes in (2 << 20, 1 << 30):
            self._hstates[nbytes] = HState(self, (nbytes >> 12).bit_length() - 1)
        for nbytes, count in sorted(cfg.hugetlb.items()):
            h = self._hstates[nbytes]
            for _ in range(count):
                if not self.alloc_pool_huge_folio(h):
                    self._trace("hugetlb_boot_short", size=nbytes, wanted=count, got=h.nr_huge_pages,
                                message=f"HugeTLB: allocating {count} of page size {nbytes >> 10}kB failed."
                                        f"  Only allocated {h.nr_huge_pages} hugepages.")
                    break

    def _free_zone_memory(self, zone: Zone) -> None:
        """memblock_free_all: every present, unreserved page of the zone becomes free."""
        for s, e in self._memory:
            lo, hi = max(s, zone.zone_start_pfn), min(e, zone.zone_end_pfn)
            if lo >= hi:
                continue
            p = lo
            for rs, re_ in self._reserved:
                if re_ <= p or rs >= hi:
                    continue
                if rs > p:
                    self._buddy_put(zone, p, rs - p)
                p = max(p, re_)
            if p < hi:
                self._buddy_put(zone, p, hi - p)

    def _setup_watermarks(self) -> None:
        """min_free_kbytes and per-zone watermarks.  Kernel: mm/page_alloc.c:
        calculate_min_free_kbytes, __setup_per_zone_wmarks (v6.12)."""
        lowmem = sum(z.managed_pages for z in self._zone_list if z.idx != ZONE_MOVABLE)
        lowmem_kb = lowmem * 4
        min_free_kbytes = max(128, min(262144, int((lowmem_kb * 16) ** 0.5)))
        pages_min = min_free_kbytes >> 2
        for z in self._zone_list:
            tmp = pages_min * z.managed_pages // lowmem if lowmem else 0
            if z.idx == ZONE_MOVABLE:
                z.wmark_min = max(32, min(128, z.managed_pages // 1024))
            else:
                z.wmark_min = tmp
            step = max(tmp >> 2, z.managed_pages * 10 // 10000)
            z.wmark_low = z.wmark_min + step
            z.wmark_high = z.wmark_low + step
            nr_cpus = len(z.pcp) or 1
            for pcp in z.pcp:
                pcp.high = max(z.wmark_low // nr_cpus, pcp.batch << 2)
        self.min_free_kbytes = min_free_kbytes

    # ------------------------------------------------------------------ tasks
    def create_task(self, comm: str = "task", mm: Any = None) -> Task:
        """A new task on the next cpu (round robin) with address space *mm* (a new one
        when omitted, like fork+exec)."""
        if mm is None and self.tasks:
            mm = self.create_mm()
        pid = self._next_pid
        self._next_pid += 1
        task = Task(pid, comm, (pid - 1) % self.config.nr_cpus, mm)
        self.tasks.append(task)
        return task

    # ------------------------------------------------------------------ memory map
    def _present_in(self, lo: int, hi: int, offline: bool = False) -> int:
        """Pages of ``[lo, hi)`` that exist (and are online, unless *offline*)."""
        total = 0
        for s, e in self._memory:
            a, b = max(s, lo), min(e, hi)
            if a < b:
                total += b - a
        if offline:
            return total
        for blk in self._offline_blocks:
            a, b = max(blk << SECTION_SHIFT, lo), min((blk + 1) << SECTION_SHIFT, hi)
            if a < b:
                total -= b - a
        return total

    def _reserved_count(self, lo: int, hi: int) -> int:
        total = 0
        for s, e in self._reserved:
            a, b = max(s, lo), min(e, hi)
            if a < b:
                total += b - a
        return total

    def _reserved_in(self, lo: int, hi: int) -> int:
        """First reserved pfn in [lo, hi), or -1 (PageReserved)."""
        for s, e in self._reserved:
            if s < hi and lo < e:
                return max(s, lo)
        return -1

    def _pfn_zone(self, pfn: int) -> Zone | None:
        """The zone a present pfn belongs to (None for holes and offline memory)."""
        for z in self._zone_list:
            if z.zone_start_pfn <= pfn < z.zone_start_pfn + z.spanned_pages:
                if (pfn >> SECTION_SHIFT) in self._offline_blocks:
                    return None
                for s, e in self._memory:
                    if s <= pfn < e:
                        return z
                return None
        return None

    def _zone_spanning(self, pfn: int) -> Zone:
        for z in self._zone_list:
            if z.zone_spans_pfn(pfn):
                return z
        raise ValueError(f"pfn {pfn:#x} is outside every zone")

    def _block_zone(self, start: int, nr: int) -> Zone | None:
        """The single zone holding all of [start, start+nr), else None."""
        z = self._pfn_zone(start)
        if z is None or not z.zone_spans_pfn(start + nr - 1):
            return None
        return z

    def pfn_valid(self, pfn: int) -> bool:
        return self._pfn_zone(pfn) is not None

    # ------------------------------------------------------------------ folio index
    def _sections_for(self, pfn: int) -> dict[int, Folio]:
        sec = self._sections.get(pfn >> SECTION_SHIFT)
        if sec is None:
            sec = self._sections[pfn >> SECTION_SHIFT] = {}
        return sec

    def pfn_to_folio(self, pfn: int) -> Folio | None:
        """The allocated folio containing *pfn*, or None (free, reserved or absent)."""
        if self.zero_folio.pfn == pfn:
            return self.zero_folio
        for order in range(_MAX_FOLIO_ORDER + 1):
            head = pfn & ~((1 << order) - 1)
            sec = self._sections.get(head >> SECTION_SHIFT)
            if sec is not None:
                f = sec.get(head)
                if f is not None and head + f.nr_pages > pfn:
                    return f
        for start, block in self._contig_blocks.items():
            if start <= pfn < start + block.nr_pages:
                return block
        return None

    def pfn_to_page(self, pfn: int) -> Page | None:
        folio = self.pfn_to_folio(pfn)
        return None if folio is None else Page(folio, pfn)

    def folios_in_range(self, lo: int, hi: int) -> Iterator[Folio]:
        """Allocated folios overlapping ``[lo, hi)``, in pfn order (cost follows the
        folios of the sections involved, not the range's size)."""
        out = []
        first = max(0, (lo >> SECTION_SHIFT) - (1 << (_MAX_FOLIO_ORDER - SECTION_SHIFT)))
        for secno in range(first, ((hi - 1) >> SECTION_SHIFT) + 1):
            sec = self._sections.get(secno)
            if not sec:
                continue
            for pfn, f in sec.items():
                if pfn < hi and pfn + f.nr_pages > lo:
                    out.append(f)
        out.sort(key=lambda f: f.pfn)
        return iter(out)

    def iter_folios(self) -> Iterator[Folio]:
        """Every allocated folio (not free memory, not the zero folio)."""
        for sec in list(self._sections.values()):
            yield from list(sec.values())

    @property
    def nr_allocated_pages(self) -> int:
        return self._nr_allocated

    # ------------------------------------------------------------------ references
    def folio_get(self, folio: Folio) -> None:
        """Take a reference.  Kernel: include/linux/mm.h:folio_get."""
        if folio._refcount <= 0:
            self._warn("folio_get", "VM_BUG_ON_FOLIO(folio_ref_zero_or_close_to_overflow(folio))", folio=folio)
            return
        folio._refcount += 1

    def folio_try_get(self, folio: Folio) -> bool:
        """Take a reference unless the refcount is already 0.  Kernel: include/linux/page_ref.h."""
        if folio._refcount <= 0 or folio.freed:
            return False
        folio._refcount += 1
        return True

    def folio_put(self, folio: Folio) -> None:
        """Drop a reference; the last one frees the folio.  Kernel: include/linux/mm.h:folio_put."""
        if folio.kind == KIND_ZERO:
            return
        if folio._refcount <= 0:
            self._warn("folio_put", "refcount underflow (VM_BUG_ON_FOLIO(page_ref_count(page) == 0))",
                       folio=folio)
            return
        folio._refcount -= 1
        if folio._refcount == 0:
            self._free_folio(folio)

    def folio_ref_count(self, folio: Folio) -> int:
        return folio._refcount

    def _free_folio(self, folio: Folio) -> None:
        if folio.kind == KIND_HUGETLB and folio.hstate is not None:
            self.free_huge_folio(folio)
            return
        self._lru_del_on_free(folio)
        if folio._pincount:
            self._warn("free_pinned", "freeing a folio with _pincount != 0", folio=folio)
        self._free_folio_to_buddy(folio)

    def _free_folio_to_buddy(self, folio: Folio) -> None:
        pfn = folio.pfn
        sec = self._sections.get(pfn >> SECTION_SHIFT)
        if sec is not None and sec.get(pfn) is folio:
            del sec[pfn]
        folio.freed = True
        folio.flags = 0
        folio._data = None
        folio.mapping = None
        self._nr_allocated -= folio.nr_pages
        if self.trace.verbose:
            self._trace("free", folio=folio)
        zone = folio._zone
        if folio.kind == KIND_CONTIG:
            self._contig_blocks.pop(pfn, None)
            self._buddy_put(zone, pfn, folio.nr_pages)
        else:                   # gigantic orders bypass the per-cpu lists in there
            self._free_block(zone, pfn, folio.order)

    def _alloc_gigantic(self, gfp: int, order: int) -> Folio | None:
        """A gigantic (1 GiB) folio: an aligned free range taken directly, as
        alloc_contig_pages/memblock do; movable placement rules apply."""
        from .gfp import _MOVABLE, MIGRATE_MOVABLE
        n = 1 << order
        mts = (MIGRATE_MOVABLE, MIGRATE_CMA) if gfp & _MOVABLE else (MIGRATE_MOVABLE,)
        for zone in self._zonelist(gfp):
            for mt in mts:
                pfn = self._buddy_take(zone, mt, order)
                if pfn >= 0:
                    f = Folio(self, pfn, order, zone, KIND_HUGETLB)
                    self._sections_for(pfn)[pfn] = f
                    self._nr_allocated += n
                    return f
        return None

    # ------------------------------------------------------------------ predicates
    def is_zero_folio(self, folio: Folio) -> bool:
        """Kernel: include/linux/mm.h:is_zero_folio."""
        return folio is self.zero_folio

    def folio_test_large(self, folio: Folio) -> bool:
        """Kernel: include/linux/page-flags.h:folio_test_large."""
        return folio.order > 0

    def folio_is_longterm_pinnable(self, folio: Folio) -> bool:
        """False for folios in a MIGRATE_CMA or MIGRATE_ISOLATE pageblock or in
        ZONE_MOVABLE; True for the zero folio otherwise.

        Kernel: include/linux/mm.h:folio_is_longterm_pinnable (v6.15+ check order).
        """
        mt = self._pb_mt.get(folio.pfn >> pageblock_order)
        if mt is None:
            if self._cma_ranges and self._pfn_in_cma(folio.pfn):
                return False
        elif mt >= MIGRATE_CMA:
            return False
        if folio.kind == KIND_ZERO:
            return True
        return folio._zone.idx != ZONE_MOVABLE

    def folio_maybe_dma_pinned(self, folio: Folio) -> bool:
        """Large folios: ``_pincount > 0`` (exact).  Small folios: refcount >= 1024
        (false positives possible).  Kernel: include/linux/mm.h:folio_maybe_dma_pinned."""
        if folio.order:
            return folio._pincount > 0
        return folio._refcount >= GUP_PIN_COUNTING_BIAS

    # ------------------------------------------------------------------ user fault sites
    def fault_point(self, name: str, **context: Any) -> int | None:
        """Hit the fault site *name* from driver code; returns a negative errno when the
        site fires (fail the operation with it) and None otherwise (carry on).

        The site must be declared first (``fake_mm.faults.declare_site(name, errnos)``,
        the ``pinfault`` fixture, a conftest hook or the ``pinfault_sites`` ini key) with
        the errnos it may return; an undeclared name raises
        :class:`~pytest_pinfault.faults.injector.UnknownSite`.  *context* (``folio=``,
        ``size=`` ...) is what specs filter on and what the fired-fault log records; pass
        the folio being worked on as ``folio=`` so zone/migratetype/order/kind filters
        apply.  Place one call where the real driver can fail, e.g.::

            rc = fake_mm.fault_point("udmabuf.sg_alloc", size=n)
            if rc is not None:
                return rc
        """
        fi = self.faults
        if name not in fi.sites:
            raise UnknownSite(name, tuple(fi.sites))
        if fi.active:
            return fi.hit(name, **context)
        return None

    # ------------------------------------------------------------------ contracts
    def attach_observer(self, observer: Any) -> None:
        """Report the model's events to *observer* (an
        :class:`~pytest_pinfault.mm.observer.MMObserver`, typically the contract
        checker), replacing any observer attached before; None detaches.  The model's
        own interface (no kernel counterpart)."""
        self._observer = observer
        self._ref_watch = None if observer is None else observer.folio_ref
        if observer is not None and hasattr(observer, "attached_to"):
            observer.attached_to(self)

    def detach_observer(self, observer: Any = None) -> None:
        """Stop reporting to *observer* (or to whatever is attached, when None)."""
        if observer is None or self._observer is observer:
            self.attach_observer(None)

    @property
    def _checker(self) -> Any:
        """The attached observer (the contract checker the plugin attaches)."""
        return self._observer

    @_checker.setter
    def _checker(self, observer: Any) -> None:
        self.attach_observer(observer)

    def check(self, final: bool = False) -> list[Any]:
        """Judge the pin contract now (:meth:`Checker.check
        <pytest_pinfault.contracts.Checker.check>`): rules 1, 5, 6, 7, 8 and 11, with
        *final* also 4, 9 and 10 (their probes migrate folios: run it last).  Returns the
        :class:`~pytest_pinfault.contracts.Violation` list this call found.

        Asks the attached observer (the plugin attaches its checker, which also judges
        every core pinning call's return).  Without one, a private checker is made on
        first use by :attr:`observer_factory` (installed by
        :mod:`pytest_pinfault.contracts`) with the baseline of the machine as
        construction left it; it is not attached (core returns stay unjudged).  Works
        without pytest."""
        ck = self._observer
        if ck is None:
            ck = self._own_checker
            if ck is None:
                if self.observer_factory is None:
                    return []
                ck = self._own_checker = self.observer_factory(self)
        return ck.check(final=final)

    # ------------------------------------------------------------------ diagnostics
    def _warn(self, site: str, message: str, folio: Folio | None = None) -> None:
        w = KernelWarning(site, message, folio, external_caller(2))
        self.warnings.append(w)
        if self.trace.on:
            self._trace("warning", site=site, message=message, folio=folio)

    def _trace(self, kind: str, **fields: Any) -> None:
        if self.trace.on:
            self.trace.emit(kind, fields)

    def __repr__(self) -> str:
        zones = ", ".join(f"{z.name}={z.present_pages << 2 >> 10}MiB" for z in self._zone_list if z.present_pages)
        return f"<FakeMM {zones} cma={[a.name for a in self.cma_areas]}>"
