"""Zones, free areas and per-cpu page lists.

Kernel: include/linux/mmzone.h (struct zone, free_area, per_cpu_pages), v6.12.

Free memory is kept as sorted extents per (zone, migratetype) — never one object per
free page — so a machine with 1 TiB of RAM costs what a machine with 4 GiB costs.  A
buddy block of order *k* is any naturally aligned run of ``2**k`` free pages inside one
extent; :meth:`FreeList.buddyinfo` derives the kernel's per-order view from the extents.

.. note:: Buddy merging is implicit (adjacent free extents coalesce); the kernel's
   free-list ordering (LIFO per order) is replaced by a deterministic top-down choice,
   which matches the observation that fresh allocations come from the top of a zone.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Iterator

from .gfp import MIGRATE_TYPES, ZONE_NAMES

__all__ = ["Zone", "FreeList", "PerCpuPages", "MAX_PAGE_ORDER", "pageblock_order",
           "pageblock_nr_pages"]

MAX_PAGE_ORDER = 10           # largest buddy order (4 MiB), v6.12 naming
pageblock_order = 9           # == HPAGE_PMD_ORDER on x86-64
pageblock_nr_pages = 1 << pageblock_order
PAGE_ALLOC_COSTLY_ORDER = 3
HPAGE_PMD_ORDER = 9


#: memory sections of 128 MiB (SECTION_SIZE_BITS 27): the unit of the folio index and
#: of memory hotplug
SECTION_SHIFT = 15


class FreeList:
    """Free pfn extents ``[start, end)`` of one migratetype in one zone, sorted, disjoint."""

    __slots__ = ("starts", "ends", "nr_free")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.nr_free: int = 0

    def __len__(self) -> int:
        return len(self.starts)

    def extents(self) -> Iterator[tuple[int, int]]:
        return zip(self.starts, self.ends)

    def put(self, pfn: int, n: int) -> None:
        """Add the free run ``[pfn, pfn+n)``, merging with neighbours."""
        starts, ends = self.starts, self.ends
        end = pfn + n
        i = bisect_left(starts, pfn)
        merge_left = i > 0 and ends[i - 1] == pfn
        merge_right = i < len(starts) and starts[i] == end
        if merge_left and merge_right:
            ends[i - 1] = ends[i]
            del starts[i], ends[i]
        elif merge_left:
            ends[i - 1] = end
        elif merge_right:
            starts[i] = pfn
        else:
            starts.insert(i, pfn)
            ends.insert(i, end)
        self.nr_free += n

    def take(self, order: int, lo: int = 0, hi: int = 1 << 62) -> int:
        """Remove and return the highest naturally aligned free block of *order* within
        ``[lo, hi)``, or -1 when there is none."""
        n = 1 << order
        mask = ~(n - 1)
        starts, ends = self.starts, self.ends
        i = bisect_left(starts, hi) - 1
        while i >= 0:
            s, e = starts[i], ends[i]
            if e > hi:
                e = hi
            if e <= lo:
                return -1
            a = (e - n) & mask
            if a >= s and a >= lo:
                self._carve(i, a, a + n)
                return a
            i -= 1
        return -1

    def take_many(self, order: int, count: int) -> list[int]:
        """Remove up to *count* blocks of *order*, the ones that many :meth:`take` calls
        would return, in that order (highest first); fewer when the list runs out."""
        n = 1 << order
        mask = ~(n - 1)
        out: list[int] = []
        starts, ends = self.starts, self.ends
        i = len(starts) - 1
        while i >= 0 and count:
            s = starts[i]
            a = top = (ends[i] - n) & mask
            if a >= s:
                k = min(count, (a - s) // n + 1)     # blocks top, top - n, ... down to s
                out.extend(range(top, top - k * n, -n))
                a = top - k * n
                count -= k
            if a != top:                        # blocks [a + n, top + n) went
                self._carve(i, a + n, top + n)
            i -= 1
        return out

    def _carve(self, i: int, a: int, b: int) -> None:
        starts, ends = self.starts, self.ends
        s, e = starts[i], ends[i]
        if a == s:
            if b == e:
                del starts[i], ends[i]
            else:
                starts[i] = b
        elif b == e:
            ends[i] = a
        else:
            ends[i] = a
            starts.insert(i + 1, b)
            ends.insert(i + 1, e)
        self.nr_free -= b - a

    def remove_range(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Remove every free page in ``[lo, hi)``; return the removed runs."""
        starts, ends = self.starts, self.ends
        i = bisect_right(ends, lo)
        out: list[tuple[int, int]] = []
        while i < len(starts) and starts[i] < hi:
            a, b = max(starts[i], lo), min(ends[i], hi)
            self._carve(i, a, b)
            out.append((a, b))
            if i < len(starts) and starts[i] < a:   # split kept a left part
                i += 1
        return out

    def count_range(self, lo: int, hi: int) -> int:
        """Free pages inside ``[lo, hi)``."""
        starts, ends = self.starts, self.ends
        i = bisect_right(ends, lo)
        total = 0
        while i < len(starts) and starts[i] < hi:
            total += min(ends[i], hi) - max(starts[i], lo)
            i += 1
        return total

    def contains(self, pfn: int) -> bool:
        i = bisect_right(self.starts, pfn) - 1
        return i >= 0 and pfn < self.ends[i]

    def buddyinfo(self) -> list[int]:
        """Free blocks per order, as /proc/buddyinfo would list them for this list."""
        counts = [0] * (MAX_PAGE_ORDER + 1)
        for s, e in zip(self.starts, self.ends):
            p = s
            while p < e:
                order = MAX_PAGE_ORDER
                while order and ((p & ((1 << order) - 1)) or p + (1 << order) > e):
                    order -= 1
                counts[order] += 1
                p += 1 << order
        return counts


class PerCpuPages:
    """``struct per_cpu_pages`` of one zone on one cpu.

    Lists hold the head pfns of free blocks of orders 0..PAGE_ALLOC_COSTLY_ORDER per pcp
    migratetype, plus THP lists: one per movable/non-movable class (bf14ed81f571, v6.10),
    or a single shared one under the ``pcp_thp_shared_list`` quirk.
    """

    __slots__ = ("lists", "count", "batch", "high")

    def __init__(self, batch: int, nr_lists: int) -> None:
        self.lists: list[list[int]] = [[] for _ in range(nr_lists)]
        self.count: int = 0
        self.batch: int = batch
        self.high: int = batch << 2


def zone_batchsize(managed_pages: int) -> int:
    """Kernel: mm/page_alloc.c:zone_batchsize (v6.12): about 1/4096 of the zone, capped."""
    batch = min(managed_pages >> 10, (1 << 20) // 4096)
    batch //= 4
    if batch < 1:
        batch = 1
    batch = batch + batch // 2
    return (1 << (batch.bit_length() - 1)) - 1 if batch > 1 else 1


class Zone:
    """One zone of the single NUMA node: its span, its free areas and counters.

    ``zone_start_pfn``/``spanned_pages`` give the span, ``present_pages`` the pages that
    exist in it (minus holes and offline blocks), ``managed_pages`` those the buddy
    allocator manages (present minus boot-time reservations).  ``free_pages`` is
    NR_FREE_PAGES (pages on the per-cpu lists are not free, as in the kernel) and
    ``free_cma_pages`` NR_FREE_CMA_PAGES.
    """

    def __init__(self, idx: int, start_pfn: int, end_pfn: int) -> None:
        self.idx = idx
        self.name = ZONE_NAMES[idx]
        self.zone_start_pfn = start_pfn
        self.spanned_pages: int = end_pfn - start_pfn
        self.present_pages = 0
        self.managed_pages = 0
        self.free: list[FreeList] = [FreeList() for _ in range(MIGRATE_TYPES)]
        self.pcp: list[PerCpuPages] = []
        self.wmark_min = 0
        self.wmark_low = 0
        self.wmark_high = 0
        self.nr_free = 0              # NR_FREE_PAGES (isolated pages excluded)
        self.nr_free_cma = 0          # NR_FREE_CMA_PAGES
        self.nr_isolate_pageblock = 0

    @property
    def zone_end_pfn(self) -> int:
        """First pfn after the zone's span (include/linux/mmzone.h:zone_end_pfn)."""
        return self.zone_start_pfn + self.spanned_pages

    def zone_spans_pfn(self, pfn: int) -> bool:
        """Whether *pfn* lies in the zone's span (include/linux/mmzone.h:zone_spans_pfn)."""
        return self.zone_start_pfn <= pfn < self.zone_start_pfn + self.spanned_pages

    @property
    def free_pages(self) -> int:
        """NR_FREE_PAGES: free buddy pages, isolated ones excluded, per-cpu ones excluded."""
        return self.nr_free

    @property
    def free_cma_pages(self) -> int:
        """Free pages of the zone in CMA pageblocks (``NR_FREE_CMA_PAGES``)."""
        return self.nr_free_cma

    @property
    def pcp_pages(self) -> int:
        """Pages held on the zone's per-cpu lists, all CPUs."""
        return sum(p.count for p in self.pcp)

    def populated(self) -> bool:
        """Whether the zone has present pages (include/linux/mmzone.h:populated_zone)."""
        return self.present_pages > 0

    def buddyinfo(self) -> list[int]:
        """Free blocks per order over every migratetype, as /proc/buddyinfo lists them."""
        total = [0] * (MAX_PAGE_ORDER + 1)
        for fl in self.free:
            for o, c in enumerate(fl.buddyinfo()):
                total[o] += c
        return total

    def __repr__(self) -> str:
        return (f"<zone {self.name} pfn [{self.zone_start_pfn:#x}, {self.zone_end_pfn:#x}) "
                f"present={self.present_pages} managed={self.managed_pages} free={self.free_pages}>")
