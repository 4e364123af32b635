"""``FakeMM``: the one object that owns the fake machine's memory state.

Each kernel file's functions live in a mixin named after it (``page_alloc``, ``swap``,
``migrate``, ``cma`` ...); ``FakeMM`` composes them, builds the machine from an
:class:`MMConfig` and keeps the shared state: zones, pageblock migratetypes, the folios
(indexed by memory section), tasks, counters, the trace, kernel warnings and the fault
injector.  Construction costs O(zones + CMA areas + hugetlb pool pages), never O(RAM).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from ..faults.injector import Injector, UnknownSite
from .argcheck import typed_api
from .bug import KernelWarning, external_caller
from .cma import CMA, CmaMixin
from .config import DEFAULT_KERNEL, MMConfig
from .folio import (GUP_PIN_COUNTING_BIAS, KIND_CONTIG, KIND_FILE, KIND_HUGETLB, KIND_ZERO,
                    MAPPING_CHANGE, PG_lru, PG_reserved, Folio, Page)
from .gfp import MIGRATE_CMA, MIGRATE_ISOLATE, MIGRATE_MOVABLE, MIGRATE_PCPTYPES, ZONE_MOVABLE
from .hugetlb import HState, HugetlbMixin
from .memblock import compute_layout
from .memory_hotplug import MemoryBlocks, MemoryHotplugMixin
from .gup import GupMixin, Out
from .memfd import AddressSpace, MemFile, MemfdMixin
from .migrate import MigrateMixin
from .mm_types import AddressSpaceMixin, MMStruct
from .mmu_notifier import MMUNotifierMixin
from .slab import SlabMixin
from .counters import CounterRegistry
from .scatterlist import ScatterlistMixin
from .dma_mapping import DmaMappingMixin
from .uaccess import UaccessMixin
from .file import FileMixin
from .dma_buf import DmaBufMixin
from .user import UserMixin
from .mmzone import SECTION_SHIFT, PerCpuPages, Zone, pageblock_order, zone_batchsize
from .page_alloc import NR_PCP_LISTS, PageAllocMixin
from .page_isolation import IsolationMixin
from .sched import Task
from .swap import SwapMixin
from .vmscan import ReclaimMixin
from .trace import Trace
from .versions import bind_present, install_versioned
from .vmstat import VMStat

__all__ = ["FakeMM", "Out", "KERNEL_VERSION"]

#: The kernel behaviour the default configuration models (``MMConfig.kernel``'s default;
#: a machine's own version is ``fake_mm.config.kernel``).
KERNEL_VERSION = DEFAULT_KERNEL

_MAX_FOLIO_ORDER = 18        # 1 GiB gigantic hugetlb folios


def _shmem_order_masks(config: MMConfig) -> tuple[dict[str, int], bool]:
    """The per-size shmem mTHP settings as order bitmasks per value (the kernel's
    huge_shmem_orders_always/inherit/within_size/madvise; 2 MiB "inherit" unless set),
    and whether any shmem folio can be large at all.  Kernel: mm/shmem.c:shmem_init,
    thpsize_shmem_enabled_store (v6.12)."""
    masks = {"always": 0, "inherit": 0, "within_size": 0, "advise": 0, "never": 0}
    settings = {2 << 20: "inherit"}
    settings.update(config.shmem_mthp)
    for nbytes, value in settings.items():
        masks[value] |= 1 << (nbytes.bit_length() - 1 - 12)
    mode = config.shmem_enabled
    possible = mode not in ("never", "deny") or bool(
        mode != "deny" and masks["always"] | masks["within_size"] | masks["advise"])
    return masks, possible


class FakeMM(PageAllocMixin, SwapMixin, ReclaimMixin, MigrateMixin, HugetlbMixin, IsolationMixin,
             CmaMixin, MemoryHotplugMixin, AddressSpaceMixin, MemfdMixin, GupMixin,
             MMUNotifierMixin, SlabMixin, ScatterlistMixin, UserMixin,
             DmaMappingMixin, UaccessMixin, FileMixin, DmaBufMixin):
    """A fake Linux mm built from an :class:`MMConfig` (see the package docs).

    Attributes: ``zones`` (name -> :class:`Zone`), ``cma_areas``, ``memory_blocks``,
    ``zero_folio``, ``stats`` (:class:`VMStat`), ``trace`` (:class:`Trace`), ``faults``
    (:class:`Injector`), ``warnings`` (recorded :class:`KernelWarning`), ``current``
    (the running :class:`Task`), ``counters`` (:class:`CounterRegistry`: named
    counters the contract checker judges, drivers may add their own).
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
        bind_present(self)          # functions of this kernel version (versions.py)
        self.stats: VMStat = VMStat()
        self.trace: Trace = Trace()
        self.faults: Injector = Injector(mm=self, seed=config.seed)
        self.warnings: list[KernelWarning] = []
        self._steer: str | None = None
        self._pcp_thp_shared = config.has_quirk("pcp_thp_shared_list")
        # the buddy fallback of this version (page_alloc.py): claim/steal from 6.12 on
        self._rmqueue_fallback = (self._rmqueue_fallback_claim_steal if config.kernel_at_least("6.12")
                                  else self._rmqueue_fallback_largest)
        # rmqueue_bulk carries an rmqueue_mode where the claim/steal fallback exists
        self._rmqueue_has_mode = config.kernel_at_least("6.12")
        self._shmem_mthp, self._shmem_huge_possible = _shmem_order_masks(config)
        self._pcp_disabled = 0
        self._sections: dict[int, dict[int, Folio]] = {}
        self._contig_blocks: dict[int, Folio] = {}
        self._nr_allocated = 0
        self._pb_mt: dict[int, int] = {}
        self._offline_blocks: set[int] = set()
        self._lru_disable_count = 0
        self._lru_add: list[list[Folio]] = [[] for _ in range(config.nr_cpus)]
        self._lru_nr = [0, 0, 0, 0]
        self._init_reclaim()
        self._next_pid = 1
        self.livelocks: list[Any] = []
        self.kernel_outcomes: list[Any] = []     # KernelOutcome: loops the kernel itself never leaves
        self._gup_signalled_calls: dict[int, int] = {}
        self.killed_tasks: list[Any] = []        # tasks a kernel outcome killed (see mm/gup.py)
        self._gup_last_unpinnable: Folio | None = None
        self._pin_anyway_next = False
        self._notifier_seq = 0
        self._contig_busy_pfn: int | None = None      # where the last alloc_contig_range failed
        self._isolate_fail_pfn: int | None = None     # the pfn that refused isolation last
        self._slab_live: dict[int, Any] = {}
        self.tasks: list[Task] = []
        self.current: Task = self.create_task("init")
        self.counters: CounterRegistry = CounterRegistry()   # what the checker judges beyond folios
        self._sg_live: dict[int, Any] = {}
        self.counters.register("scatterlist.chunks", self._read_sg_chunks,
                               doc="scatterlist chunks allocated and not freed")
        self._init_user()
        self._init_dma()
        self._init_files()
        self._init_dma_buf()
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
        self.cma_areas: list[CMA] = [CMA(name, b, c) for name, b, c in lay.cma]
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
        self.memory_blocks: MemoryBlocks = MemoryBlocks(self)
        dma32 = self.zones.get("DMA32") or self.zones["DMA"]
        self.zero_folio: Folio = Folio(self, lay.zero_pfn, 0, dma32, KIND_ZERO)
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

    def _memory_pageblocks(self, lo: int, hi: int) -> Iterator[int]:
        """The pageblocks of ``[lo, hi)`` that hold memory of this machine (present or
        offline), in order: range walks cost what the machine has, never what a caller
        passes in."""
        last = -1
        for s, e in self._memory:
            a, b = max(s, lo), min(e, hi)
            if a < b:
                for pb in range(max(a >> pageblock_order, last + 1), ((b - 1) >> pageblock_order) + 1):
                    yield pb
                    last = pb

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
        """Whether *pfn* lies in a zone of the machine (has a memmap entry).
        Kernel: include/linux/mmzone.h:pfn_valid (SPARSEMEM, v6.12)."""
        return self._pfn_zone(pfn) is not None

    # ------------------------------------------------------------------ folio index
    def _sections_for(self, pfn: int) -> dict[int, Folio]:
        sec = self._sections.get(pfn >> SECTION_SHIFT)
        if sec is None:
            sec = self._sections[pfn >> SECTION_SHIFT] = {}
        return sec

    def pfn_to_folio(self, pfn: int) -> Folio | None:
        """The allocated folio containing *pfn*, or None (free, reserved or absent)."""
        if type(pfn) is not int and not isinstance(pfn, int):
            raise TypeError(f"pfn_to_folio: pfn must be an int, got {type(pfn).__name__}")
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
        """The :class:`Page` for *pfn* inside an allocated folio, or None where the model has
        no folio (free, reserved or absent memory; the kernel always has a struct page).
        Kernel: include/asm-generic/memory_model.h:pfn_to_page (v6.12)."""
        folio = self.pfn_to_folio(pfn)
        return None if folio is None else Page(folio, pfn)

    def folios_in_range(self, lo: int, hi: int) -> Iterator[Folio]:
        """Allocated folios overlapping ``[lo, hi)``, in pfn order (cost follows the
        folios of the sections involved, not the range's size)."""
        out = []
        first = max(0, (lo >> SECTION_SHIFT) - (1 << (_MAX_FOLIO_ORDER - SECTION_SHIFT)))
        last = ((hi - 1) >> SECTION_SHIFT) + 1
        if last - first > len(self._sections):      # a range wider than what is allocated
            secnos: Iterable[int] = sorted(n for n in self._sections if first <= n < last)
        else:
            secnos = range(first, last)
        for secno in secnos:
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
        """Pages currently allocated from the buddy allocator (model bookkeeping, no kernel
        function: the sum of the allocated folios' sizes)."""
        return self._nr_allocated

    # ------------------------------------------------------------------ references
    @staticmethod
    def _folio_of(obj: Any, site: str, param: str = "folio") -> Folio:
        """``page_folio(obj)`` for a Page or Folio; a TypeError naming *param* else."""
        if isinstance(obj, (Page, Folio)):
            return obj.folio
        raise TypeError(f"{site}: {param} must be a Page or Folio, got {type(obj).__name__}")

    def _usable_folio(self, obj: Any, site: str, param: str = "folio") -> Folio | None:
        """The folio of *obj* (a :class:`Page` or :class:`Folio`) when *site* may use
        it; otherwise None after recording the misuse as a kernel warning: a folio of
        another machine, or one already freed (what KASAN reports as a use-after-free).
        A wrong Python type is a TypeError naming *param*."""
        folio: Folio | None = obj.folio if isinstance(obj, (Page, Folio)) else None
        if folio is None:
            raise TypeError(f"{site}: {param} must be a Page or Folio, got {type(obj).__name__}")
        if folio._mm is not self:
            self._warn("foreign_object", f"{site}: {param} {folio!r} belongs to another FakeMM",
                       folio=folio)
            return None
        if folio.freed:
            self._warn(site, f"BUG: KASAN: use-after-free: {site} on a freed folio", folio=folio)
            return None
        return folio

    def _foreign(self, obj: Any, cls: type[Any], site: str, param: str) -> bool:
        """True (after recording a warning) when *obj*, an instance of *cls* (an
        mm_struct or a file), belongs to another machine; a wrong type is a TypeError
        naming *param*."""
        if not isinstance(obj, cls):
            raise TypeError(f"{site}: {param} must be a {cls.__name__}, got {type(obj).__name__}")
        if obj._k is not self:
            self._warn("foreign_object", f"{site}: {param} {obj!r} belongs to another FakeMM")
            return True
        return False

    def _put_refs(self, folio: Folio, refs: int, site: str) -> None:
        """Drop *refs* references; the last frees the folio.  A put that would take the
        refcount below what the page tables (and, for a large folio, the pins) hold is
        refused and recorded as "Bad page state" (the kernel would free a mapped page
        and later hand it out twice): the model's state stays as it was."""
        if folio.kind == KIND_ZERO:
            return
        left = folio._refcount - refs
        if left < 0 or folio.freed:
            self._warn(site, f"refcount underflow (VM_BUG_ON_FOLIO(page_ref_count(page) == 0)): "
                             f"dropping {refs} of {folio._refcount}"
                             f"{'; use-after-free of a freed folio' if folio.freed else ''}", folio=folio)
            return
        if left < folio._mapcount or folio.mapping is not None:
            mapped = sum(1 for owner, _ in folio.rmap or () if isinstance(owner, MMStruct))
            m = folio.mapping
            cached = folio.nr_pages if isinstance(m, AddressSpace) and m.lookup(folio.index) is folio else 0
            if left < mapped + cached:
                self._warn("bad_page_state",
                           f"Bad page state: {site} drops a reference it does not hold: refcount "
                           f"{folio._refcount} - {refs} < {mapped} page-table mappings"
                           f"{f' + {cached} page-cache references' if cached else ''}",
                           folio=folio)
                return
        if left == 0 and folio.order and folio._pincount:
            self._warn("free_pinned", f"Bad page state: {site} frees a folio with _pincount "
                                      f"{folio._pincount} (nonzero pincount)", folio=folio)
            return
        folio._refcount = left
        if left == 0:
            self._free_folio(folio)

    def folio_get(self, folio: Folio) -> None:
        """Take a reference.  Kernel: include/linux/mm.h:folio_get."""
        if self._usable_folio(folio, "folio_get") is None:
            return
        if folio._refcount <= 0:
            self._warn("folio_get", "VM_BUG_ON_FOLIO(folio_ref_zero_or_close_to_overflow(folio))", folio=folio)
            return
        folio._refcount += 1

    def folio_try_get(self, folio: Folio) -> bool:
        """Take a reference unless the refcount is already 0.  Kernel: include/linux/page_ref.h."""
        if not isinstance(folio, (Page, Folio)):
            raise TypeError(f"folio_try_get: folio must be a Page or Folio, got {type(folio).__name__}")
        folio = folio.folio
        if folio._mm is not self:
            self._warn("foreign_object", f"folio_try_get: folio {folio!r} belongs to another FakeMM",
                       folio=folio)
            return False
        if folio._refcount <= 0 or folio.freed:
            return False
        folio._refcount += 1
        return True

    def folio_put(self, folio: Folio) -> None:
        """Drop a reference; the last one frees the folio.  Misuse is recorded, never
        absorbed: a put on a freed folio (refcount underflow) or one that would drop a
        reference the page tables hold ("Bad page state") changes nothing.
        Kernel: include/linux/mm.h:folio_put, mm/page_alloc.c:free_page_is_bad."""
        if type(folio) is not Folio or folio._mm is not self:
            if isinstance(folio, Page):
                folio = folio.folio
            if self._usable_folio(folio, "folio_put") is None:
                return
        if folio.kind == KIND_ZERO:
            return
        # the watched fields read from their slots, written after telling the observer
        # (what the Folio properties do, written out: this runs several times per folio)
        r = folio._rc
        if r > 1 and r > folio._mc + (folio.nr_pages if folio._mapping is not None else 0):
            # the common case: more references than the page tables and page cache hold
            watch = self._ref_watch
            if watch is not None:
                watch(folio, r - 1)
            folio._rc = r - 1
            return
        if r == 1 and not folio.rmap and not folio._pincount and folio._mapping is None:
            watch = self._ref_watch
            if watch is not None:
                watch(folio, 0)
            folio._rc = 0
            self._free_folio(folio)
            return
        self._put_refs(folio, 1, "folio_put")

    def folio_ref_count(self, folio: Folio) -> int:
        """The folio's reference count (``_refcount``; pins of a small folio count
        GUP_PIN_COUNTING_BIAS each).  Kernel: include/linux/page_ref.h:folio_ref_count (v6.12)."""
        return folio._refcount

    def _free_folio(self, folio: Folio) -> None:
        """The last reference went: off the LRU, then to the buddy allocator (or the
        hugetlb pool).  Kernel: mm/swap.c:__folio_put, mm/page_alloc.c:free_unref_page
        (v6.12).  Without an observer, an order-0 folio takes a shortcut that writes out
        SwapMixin._lru_del_on_free, _free_folio_to_buddy and PageAllocMixin._free_block
        (every migration frees its source here; tests/mm/test_hot_paths.py checks that
        both ways leave the same state)."""
        kind = folio.kind
        if kind == KIND_HUGETLB and folio.hstate is not None:
            self.free_huge_folio(folio)
            return
        if self._ref_watch is not None or folio.order or kind == KIND_CONTIG or self._pcp_disabled \
                or self.trace.verbose:
            self._lru_del_on_free(folio)
            if folio._pincount:
                self._warn("free_pinned", "freeing a folio with _pincount != 0", folio=folio)
            self._free_folio_to_buddy(folio)
            return
        if folio._flags & PG_lru:               # _lru_del_on_free
            folio._flags &= ~PG_lru
            idx = folio._zone.idx
            self._lru_nr[idx] -= 1
            self._lru_lists[idx][kind == KIND_FILE].pop(folio, None)
        if folio._pincount:
            self._warn("free_pinned", "freeing a folio with _pincount != 0", folio=folio)
        pfn = folio.pfn                         # _free_folio_to_buddy
        sec = self._sections.get(pfn >> SECTION_SHIFT)
        if sec is not None and sec.get(pfn) is folio:
            del sec[pfn]
        folio.freed = True
        folio._flags = 0
        folio._data = None
        folio._mapping = None
        self._nr_allocated -= 1
        mt = self._pb_mt.get(pfn >> pageblock_order, MIGRATE_MOVABLE)    # _free_block
        zone = folio._zone
        if mt >= MIGRATE_PCPTYPES:
            if mt == MIGRATE_ISOLATE:
                self._buddy_put(zone, pfn, 1)
                return
            mt = MIGRATE_MOVABLE
        pcp = zone.pcp[self.current.cpu]
        pcp.lists[mt].append(pfn)
        pcp.count += 1
        if pcp.count >= pcp.high:
            self._free_pcppages_bulk(zone, pcp, pcp.batch)

    def _free_folio_to_buddy(self, folio: Folio) -> None:
        pfn = folio.pfn
        sec = self._sections.get(pfn >> SECTION_SHIFT)
        if sec is not None and sec.get(pfn) is folio:
            del sec[pfn]
        folio.freed = True
        watch = self._ref_watch
        if watch is not None:          # folio.flags = 0; folio.mapping = None, written out
            watch(folio, None)
            folio._flags = 0
            folio._data = None
            watch(folio, MAPPING_CHANGE)
        else:
            folio._flags = 0
            folio._data = None
        folio._mapping = None
        self._nr_allocated -= folio.nr_pages
        if self.trace.verbose:
            self._trace("free", folio=folio)
        zone = folio._zone
        if folio.kind == KIND_CONTIG:       # free_contig_range: __free_page per page
            self._contig_blocks.pop(pfn, None)
            self._free_pages_one_by_one(zone, pfn, folio.nr_pages)
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
        if type(folio) is not Folio:
            folio = self._folio_of(folio, "folio_is_longterm_pinnable")
        if not self._pageblock_pinnable(folio.pfn >> pageblock_order):
            return False
        if folio.kind == KIND_ZERO:
            return True
        return folio._zone.idx != ZONE_MOVABLE

    def _pageblock_pinnable(self, pb: int) -> bool:
        """folio_is_longterm_pinnable's pageblock test for every folio of pageblock *pb*:
        not MIGRATE_CMA or MIGRATE_ISOLATE (a pageblock absent from ``_pb_mt`` has its
        boot-time type: CMA inside a CMA area).  One answer holds for the whole
        pageblock because a CMA area covers whole pageblocks (MMConfig requires the
        kernel's CMA_MIN_ALIGNMENT_BYTES); the walk and the collect loop ask once per
        pageblock."""
        mt = self._pb_mt.get(pb)
        if mt is not None:
            return mt < MIGRATE_CMA
        first = pb << pageblock_order
        return not any(lo <= first < hi for lo, hi in self._cma_ranges)

    def folio_maybe_dma_pinned(self, folio: Folio) -> bool:
        """Large folios: ``_pincount > 0`` (exact).  Small folios: refcount >= 1024
        (false positives possible).  Kernel: include/linux/mm.h:folio_maybe_dma_pinned."""
        if type(folio) is not Folio:
            folio = self._folio_of(folio, "folio_maybe_dma_pinned")
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
        """Judge the pin contract now (the checker's ``check``, in the ``contracts``
        package): rules 1, 5, 6, 7, 8 and 11, with
        *final* also 4, 9 and 10 (their probes migrate folios: run it last).  Returns the
        list of ``Violation`` records this call found.

        Asks the attached observer (the plugin attaches its checker, which also judges
        every core pinning call's return).  Without one, a private checker is made on
        first use by :attr:`observer_factory` (installed by
        the ``contracts`` package) with the baseline of the machine as
        construction left it; it is not attached (core returns stay unjudged).  Works
        without pytest."""
        ck = self._observer
        if ck is None:
            ck = self._own_checker
            if ck is None:
                if self.observer_factory is None:
                    return []
                ck = self._own_checker = self.observer_factory(self)
        found: list[Any] = ck.check(final=final)     # Violation records
        return found

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


# Wrong Python types are TypeErrors naming the parameter (argcheck.py).  The methods the
# model itself calls in its per-folio loops check their arguments inline instead.
_INLINE_CHECKED = ("folio_put", "folio_get", "folio_try_get", "try_grab_folio", "gup_put_folio",
                   "folio_add_lru", "folio_isolate_lru", "folio_putback_lru", "putback_movable_pages",
                   "folio_isolate_hugetlb", "folio_putback_hugetlb", "free_huge_folio",
                   "folio_is_longterm_pinnable", "folio_maybe_dma_pinned", "get_pageblock_migratetype",
                   "migrate_pages", "handle_mm_fault", "folio_expected_ref_count",
                   "node_stat_mod_isolated", "alloc_migration_target", "lru_add_drain", "lru_add_drain_all",
                   "lru_cache_disable", "lru_cache_enable", "pfn_to_folio", "iter_folios",
                   # judged core pinning calls name their caller by frame depth: inline checks
                   "get_user_pages", "get_user_pages_remote", "get_user_pages_unlocked",
                   "get_user_pages_fast", "pin_user_pages", "pin_user_pages_remote",
                   "pin_user_pages_unlocked", "pin_user_pages_fast", "memfd_pin_folios",
                   # harness helpers validate their own arguments (ValueError naming them)
                   "steer", "run_as", "fault_point", "fill_zone", "fragment_zone", "hstate",
                   "check", "create_task", "alloc_pages", "folio_alloc")
typed_api(FakeMM, skip=_INLINE_CHECKED)
install_versioned(FakeMM)   # functions newer than MMConfig.kernel are absent (versions.py)
typed_api(MMStruct, skip=("find_vma", "lookup", "replace_folio"))
typed_api(MemFile)
