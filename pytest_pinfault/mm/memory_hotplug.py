"""Memory blocks and memory offlining/onlining.

Kernel: mm/memory_hotplug.c (offline_pages, online_pages, scan_movable_pages,
do_migrate_range), drivers/base/memory.c (memory blocks, ``state``), v6.12.

``offline_pages`` isolates the range (``-EBUSY`` at once for unmovable or reserved
pages), then loops: migrate every movable folio out, dissolve free hugetlb folios, and
check that everything is free.  The kernel has no timeout: a page that will not migrate
(a pinned page, a referenced one) keeps it looping until a signal arrives.  The model
stands the signal in with a retry budget (``MMConfig.offline_retry_budget`` passes) and
returns ``-EINTR``, naming in the trace the folio that kept failing.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from . import gfp as _g
from .folio import KIND_HUGETLB, PG_hugetlb_migratable, PG_lru, Folio
from .gfp import MIGRATE_ISOLATE, MIGRATE_MOVABLE
from .migrate import MIGRATE_SYNC, MR_MEMORY_HOTPLUG, MigrationTargetControl
from .mmzone import pageblock_nr_pages
from .page_isolation import MEMORY_OFFLINE, REPORT_FAILURE

if TYPE_CHECKING:  # pragma: no cover
    from .fakemm import FakeMM

PAGES_PER_SECTION = 1 << 15            # 128 MiB sections on x86-64
MEMORY_BLOCK_PAGES = PAGES_PER_SECTION  # memory_block_size_bytes() == 128 MiB here


class MemoryBlock:
    """``/sys/devices/system/memory/memoryN``: ``start_pfn``, ``nr_pages``, ``state``
    (``"online"``/``"offline"``) and the zone it belongs to."""

    __slots__ = ("_mm", "id", "start_pfn", "nr_pages")

    def __init__(self, mm: "FakeMM", block_id: int) -> None:
        self._mm = mm
        self.id: int = block_id
        self.start_pfn: int = block_id * MEMORY_BLOCK_PAGES
        self.nr_pages: int = MEMORY_BLOCK_PAGES

    @property
    def state(self) -> str:
        """``"online"`` or ``"offline"``, as /sys/devices/system/memory/memoryN/state reads."""
        return "offline" if self.id in self._mm._offline_blocks else "online"

    @property
    def zone(self) -> str:
        """The zone holding all of the block's pages, or ``"none"`` when no single zone
        does."""
        zone = self._mm._block_zone(self.start_pfn, self.nr_pages)
        return zone.name if zone is not None else "none"

    def offline(self) -> int:
        """``echo offline > state``: 0 or -errno from :meth:`FakeMM.offline_pages`."""
        if self.state == "offline":
            return 0
        return self._mm.offline_pages(self.start_pfn, self.nr_pages)

    def online(self) -> int:
        """``echo online > state``."""
        if self.state == "online":
            return 0
        return self._mm.online_pages(self.start_pfn, self.nr_pages)

    def __repr__(self) -> str:
        return f"<memory{self.id} pfn {self.start_pfn:#x}+{self.nr_pages} {self.state} {self.zone}>"


class MemoryBlocks(Mapping[int, MemoryBlock]):
    """Memory blocks by id, created lazily (a 1 TiB machine has 8192 of them)."""

    def __init__(self, mm: "FakeMM") -> None:
        self._mm = mm

    def _ids(self) -> Iterator[int]:
        last = -1
        for s, e in self._mm._memory:
            for b in range(max(s // MEMORY_BLOCK_PAGES, last + 1), (e + MEMORY_BLOCK_PAGES - 1) // MEMORY_BLOCK_PAGES):
                yield b
                last = b

    def __getitem__(self, block_id: int) -> MemoryBlock:
        if not isinstance(block_id, int) or not self._mm._present_in(
                block_id * MEMORY_BLOCK_PAGES, (block_id + 1) * MEMORY_BLOCK_PAGES, offline=True):
            raise KeyError(block_id)
        return MemoryBlock(self._mm, block_id)

    def __iter__(self) -> Iterator[int]:
        return self._ids()

    def __len__(self) -> int:
        return sum(1 for _ in self._ids())

    def in_zone(self, zone: str) -> list[MemoryBlock]:
        """Online blocks lying wholly in *zone*."""
        return [b for b in (self[i] for i in self) if b.zone == zone]


if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object


class MemoryHotplugMixin(_Base):
    """Offlining half of :class:`~pytest_pinfault.FakeMM`."""

    def offline_pages(self, start_pfn: int, nr_pages: int) -> int:
        """Offline ``[start_pfn, start_pfn + nr_pages)``: 0, -EINVAL (unaligned, holes,
        several zones), -EBUSY (unmovable pages), -EINTR (a signal, fatal or not, already
        pending before the first scan, or the modelled signal after
        ``offline_retry_budget`` passes that left pages behind).

        The range must be whole memory blocks: the kernel's WARN_ON_ONCE accepts a
        pageblock-aligned start only for memmap_on_memory, whose vmemmap pages head the
        block; the model has no memmap_on_memory, so a start inside a block is the
        same recorded warning and -EINVAL (it used to offline the whole block).

        Kernel: mm/memory_hotplug.c:offline_pages (v6.12).
        """
        end_pfn = start_pfn + nr_pages
        if (nr_pages <= 0 or start_pfn < 0 or start_pfn % PAGES_PER_SECTION
                or end_pfn % PAGES_PER_SECTION):
            self._warn("offline_pages", f"offline_pages({start_pfn:#x}, {nr_pages}): unaligned range")
            return -errno.EINVAL
        if self._present_in(start_pfn, end_pfn) != nr_pages:
            return self._offline_fail(start_pfn, end_pfn, -errno.EINVAL, "memory holes")
        zone = self._block_zone(start_pfn, nr_pages)
        if zone is None:
            return self._offline_fail(start_pfn, end_pfn, -errno.EINVAL, "multizone range")
        self.lru_cache_disable()
        self.drain_all_pages(zone)
        try:
            ret = self.start_isolate_page_range(start_pfn, end_pfn, MIGRATE_MOVABLE,
                                                MEMORY_OFFLINE | REPORT_FAILURE)
            if ret:
                return self._offline_fail(start_pfn, end_pfn, ret, "failure to isolate range")
            ret = self._offline_loop(start_pfn, end_pfn)
            if ret:
                self.undo_isolate_page_range(start_pfn, end_pfn, MIGRATE_MOVABLE)
                return ret
        finally:
            self.lru_cache_enable()
        self._offline_isolated_pages(zone, start_pfn, end_pfn)
        return 0

    def _offline_loop(self, start_pfn: int, end_pfn: int) -> int:
        budget = self.config.offline_retry_budget
        passes = 0
        while True:
            while True:
                # the kernel checks signal_pending() (any signal) before every scan,
                # the first one included; the budget stands for a signal arriving later
                if passes >= budget or self.current.signal_pending:
                    stuck = next(iter(self.folios_in_range(start_pfn, end_pfn)), None)
                    self._trace("offline_signal", folio=stuck, passes=passes,
                                message="offline_pages: signal backoff")
                    return self._offline_fail(start_pfn, end_pfn, -errno.EINTR, "signal backoff",
                                              folio=stuck)
                passes += 1
                pfn = self._scan_movable_pages(start_pfn, end_pfn)
                if pfn < 0:
                    break
                self._do_migrate_range(pfn, end_pfn)
            ret = self.dissolve_free_hugetlb_folios(start_pfn, end_pfn)
            if ret:
                return self._offline_fail(start_pfn, end_pfn, ret, "failure to dissolve huge pages")
            self.drain_all_pages()
            if self.test_pages_isolated(start_pfn, end_pfn, MEMORY_OFFLINE) == 0:
                return 0

    def _offline_fail(self, start_pfn: int, end_pfn: int, ret: int, reason: str,
                      folio: Folio | None = None) -> int:
        self.stats.offline_fail += 1
        self._trace("offline_fail", start=start_pfn, end=end_pfn, ret=ret, reason=reason, folio=folio,
                    message=f"memory offlining [mem {start_pfn << 12:#x}-{(end_pfn << 12) - 1:#x}] failed due to {reason}")
        return ret

    def _scan_movable_pages(self, start: int, end: int) -> int:
        """First pfn of an LRU or in-use migratable hugetlb folio, or -1 (-ENOENT)."""
        for folio in self.folios_in_range(start, end):
            if folio.flags & PG_lru:
                return folio.pfn
            if folio.kind == KIND_HUGETLB and folio.flags & PG_hugetlb_migratable and folio._refcount:
                return folio.pfn
        return -1

    def _do_migrate_range(self, start: int, end: int) -> None:
        """Kernel: mm/memory_hotplug.c:do_migrate_range (v6.12)."""
        lst: list[Folio] = []
        for folio in list(self.folios_in_range(start, end)):
            if folio.kind == KIND_HUGETLB:
                self.folio_isolate_hugetlb(folio, lst)
            elif self.folio_isolate_lru(folio):
                self.node_stat_mod_isolated(folio, folio.nr_pages)
                lst.append(folio)
        if not lst:
            return
        mtc = MigrationTargetControl(gfp_mask=int(_g.GFP_USER | _g.gfp_t.MOVABLE | _g.gfp_t.RETRY_MAYFAIL),
                                     reason=MR_MEMORY_HOTPLUG)
        ret = self.migrate_pages(lst, self.alloc_migration_target, None, mtc, MIGRATE_SYNC,
                                 MR_MEMORY_HOTPLUG)
        if ret:
            for folio in lst:
                self._trace("offline_migrate_fail", folio=folio, ret=ret,
                            message=f"migrating pfn {folio.pfn:#x} failed ret:{ret}")
            self.putback_movable_pages(lst)

    def _offline_isolated_pages(self, zone: Any, start: int, end: int) -> None:
        runs = zone.free[MIGRATE_ISOLATE].remove_range(start, end)
        n = sum(b - a for a, b in runs)
        for pb in range(start // pageblock_nr_pages, end // pageblock_nr_pages):
            self._pb_mt.pop(pb, None)
            zone.nr_isolate_pageblock -= 1
        zone.present_pages -= n
        zone.managed_pages -= n
        for b in range(start // MEMORY_BLOCK_PAGES, end // MEMORY_BLOCK_PAGES):
            self._offline_blocks.add(b)
        self._setup_watermarks()
        self._trace("offline", start=start, end=end)

    def online_pages(self, pfn: int, nr_pages: int) -> int:
        """Online an offline range again: its pages become free MIGRATE_MOVABLE memory
        of the zone they belonged to.  0, or -EINVAL when not offline / not whole
        memory blocks (the latter with the kernel's WARN_ON_ONCE recorded).

        Kernel: mm/memory_hotplug.c:online_pages (v6.12).
        """
        end = pfn + nr_pages
        if nr_pages <= 0 or pfn < 0 or pfn % MEMORY_BLOCK_PAGES or end % MEMORY_BLOCK_PAGES:
            self._warn("online_pages", f"online_pages({pfn:#x}, {nr_pages}): not whole memory blocks")
            return -errno.EINVAL
        blocks = range(pfn // MEMORY_BLOCK_PAGES, end // MEMORY_BLOCK_PAGES)
        if not all(b in self._offline_blocks for b in blocks):
            return -errno.EINVAL
        zone = self._zone_spanning(pfn)
        for b in blocks:
            self._offline_blocks.discard(b)
        zone.present_pages += nr_pages
        zone.managed_pages += nr_pages
        self._buddy_put(zone, pfn, nr_pages)
        self._setup_watermarks()
        self._trace("online", start=pfn, end=end)
        return 0
