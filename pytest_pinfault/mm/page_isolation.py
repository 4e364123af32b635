"""Pageblock isolation for contiguous allocation and memory offlining.

Kernel: mm/page_isolation.c (has_unmovable_pages, set_migratetype_isolate,
start_isolate_page_range, undo_isolate_page_range, test_pages_isolated), v6.12.

Isolation sets pageblocks to MIGRATE_ISOLATE so that nothing allocates from them while
their in-use pages are migrated away.  It refuses (-EBUSY) a pageblock holding unmovable
pages: reserved (memblock) pages anywhere, and outside ZONE_MOVABLE any in-use page that
is neither on the LRU nor a migratable hugetlb folio.  A CMA pageblock counts as movable
only when the isolation is for CMA.  Pins are *not* looked at here; they make the later
migration fail instead.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any
from .folio import KIND_HUGETLB, PG_lru
from .gfp import MIGRATE_CMA, MIGRATE_ISOLATE, ZONE_MOVABLE
from .mmzone import pageblock_nr_pages, pageblock_order

MEMORY_OFFLINE = 0x1
REPORT_FAILURE = 0x2


if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object


class IsolationMixin(_Base):
    """Isolation half of :class:`~pytest_pinfault.FakeMM`."""

    def _restorable_mt(self, site: str, migratetype: Any) -> bool:
        """A migratetype a pageblock can be given back (not MIGRATE_ISOLATE, inside
        MIGRATE_TYPES); otherwise a recorded warning (the kernel would index its free
        lists out of bounds)."""
        if not isinstance(migratetype, int):
            raise TypeError(f"{site}: migratetype must be an int, got {type(migratetype).__name__}")
        if 0 <= migratetype < MIGRATE_ISOLATE:
            return True
        self._warn(site, f"migratetype {migratetype} out of range (expected 0..{MIGRATE_ISOLATE - 1})")
        return False

    def has_unmovable_pages(self, start_pfn: int, end_pfn: int, migratetype: int,
                            flags: int = 0) -> int:
        """First pfn in ``[start_pfn, end_pfn)`` (one pageblock) that blocks isolation,
        or -1.  Kernel: mm/page_isolation.c:has_unmovable_pages (v6.12)."""
        if self.get_pageblock_migratetype(start_pfn) == MIGRATE_CMA:
            return -1 if migratetype == MIGRATE_CMA else start_pfn
        r = self._reserved_in(start_pfn, end_pfn)
        if r >= 0:
            return r
        zone = self._pfn_zone(start_pfn)
        if zone is not None and zone.idx == ZONE_MOVABLE:
            return -1
        for folio in self.folios_in_range(start_pfn, end_pfn):
            if folio.kind == KIND_HUGETLB:
                continue                       # x86-64 hstates support migration
            if folio.flags & PG_lru:
                continue
            return max(folio.pfn, start_pfn)
        return -1

    def start_isolate_page_range(self, start_pfn: int, end_pfn: int, migratetype: int,
                                 flags: int = 0) -> int:
        """Isolate every pageblock of ``[start_pfn, end_pfn)``; 0 or -EBUSY (nothing
        left isolated); a *migratetype* that is not a pageblock type to restore
        (UNMOVABLE..CMA) is a recorded warning and -EINVAL.
        Kernel: mm/page_isolation.c:start_isolate_page_range (v6.12)."""
        if not self._restorable_mt("start_isolate_page_range", migratetype):
            return -errno.EINVAL
        lo = start_pfn & ~(pageblock_nr_pages - 1)
        hi = (end_pfn + pageblock_nr_pages - 1) & ~(pageblock_nr_pages - 1)
        done: list[int] = []
        for pb in self._memory_pageblocks(lo, hi):
            rc = self._set_migratetype_isolate(pb, migratetype, flags, start_pfn, end_pfn)
            if rc:
                for d in done:
                    self._unset_migratetype_isolate(d, migratetype)
                return rc
            done.append(pb)
        return 0

    def _set_migratetype_isolate(self, pb: int, migratetype: int, flags: int,
                                 start_pfn: int = 0, end_pfn: int = 1 << 62) -> int:
        """Isolate pageblock *pb*, checking only its part inside ``[start_pfn, end_pfn)``
        for unmovable pages (v5.19+: "mm: page_isolation: check specified range for
        unmovable pages")."""
        pfn = pb << pageblock_order
        zone = self._pfn_zone(pfn)
        if zone is None:
            return 0                            # a hole
        if self.get_pageblock_migratetype(pfn) == MIGRATE_ISOLATE:
            return -errno.EBUSY
        bad = self.has_unmovable_pages(max(pfn, start_pfn), min(pfn + pageblock_nr_pages, end_pfn),
                                       migratetype, flags)
        self._isolate_fail_pfn = bad if bad >= 0 else None
        if bad >= 0:
            if flags & REPORT_FAILURE:
                self._trace("isolate_pageblock_fail", pfn=bad, folio=self.pfn_to_folio(bad))
            return -errno.EBUSY
        self._set_pageblock_migratetype(zone, pb, MIGRATE_ISOLATE)
        return 0

    def _unset_migratetype_isolate(self, pb: int, migratetype: int) -> None:
        pfn = pb << pageblock_order
        zone = self._pfn_zone(pfn)
        if zone is not None and self.get_pageblock_migratetype(pfn) == MIGRATE_ISOLATE:
            self._set_pageblock_migratetype(zone, pb, migratetype)

    def undo_isolate_page_range(self, start_pfn: int, end_pfn: int, migratetype: int) -> None:
        """Give isolated pageblocks *migratetype* back.  Kernel: mm/page_isolation.c."""
        if not self._restorable_mt("undo_isolate_page_range", migratetype):
            return
        lo = start_pfn & ~(pageblock_nr_pages - 1)
        hi = (end_pfn + pageblock_nr_pages - 1) & ~(pageblock_nr_pages - 1)
        for pb in self._memory_pageblocks(lo, hi):
            self._unset_migratetype_isolate(pb, migratetype)

    def test_pages_isolated(self, start_pfn: int, end_pfn: int, flags: int = 0) -> int:
        """0 when every present page of the range is free in an isolated pageblock, else
        -EBUSY.  Kernel: mm/page_isolation.c:test_pages_isolated (v6.12)."""
        for pb in self._memory_pageblocks(start_pfn, end_pfn):
            if self.get_pageblock_migratetype(pb << pageblock_order) != MIGRATE_ISOLATE \
                    and self._pfn_zone(pb << pageblock_order) is not None:
                return -errno.EBUSY
        present = self._present_in(start_pfn, end_pfn)
        free = 0
        for zone in self._zone_list:
            lo, hi = max(start_pfn, zone.zone_start_pfn), min(end_pfn, zone.zone_end_pfn)
            if lo < hi:
                free += zone.free[MIGRATE_ISOLATE].count_range(lo, hi)
        return 0 if free == present else -errno.EBUSY
