"""Folios and pages: the kernel's reference and pin arithmetic, flags and contents.

Kernel: include/linux/mm_types.h (struct folio), include/linux/mm.h (folio_ref_*,
folio_maybe_dma_pinned, folio_is_longterm_pinnable), include/linux/page-flags.h, v6.12.

A :class:`Folio` keeps its identity while it exists; migration makes a new one.  The
fields are the ones pinning depends on: ``_refcount``, ``_pincount`` (exact for large
folios), ``_mapcount`` (here: the number of page-table mappings, 0 when unmapped, not the
kernel's -1 based value), flags, kind, ``mapping``/``index`` and contents.

.. note:: Contents are stored sparsely per base page and only once written: a 1 GiB
   hugetlb folio costs nothing until it is written to.  ``_data`` maps a page index to
   the page's contents, stored compactly: an ``int`` for a page filled with one byte
   value (what most test data is), immutable ``bytes`` for a page written whole, and a
   ``bytearray`` only for a page written in parts; a page written all zero is dropped.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ._proto import FakeMMProto
    from .mmzone import Zone

__all__ = ["Folio", "Page", "GUP_PIN_COUNTING_BIAS", "page_folio", "MAPPING_CHANGE"]

PAGE_SHIFT = 12
PAGE_SIZE = 4096
GUP_PIN_COUNTING_BIAS = 1024

# folio kinds
KIND_ANON = "anon"
KIND_SHMEM = "shmem"
KIND_HUGETLB = "hugetlb"
KIND_FILE = "file"
KIND_ZERO = "zero"
KIND_KERNEL = "kernel"      # non-LRU kernel allocation (alloc_pages without a mapping)
KIND_CONTIG = "contig"      # a cma_alloc()/alloc_contig_range() range
KIND_BALLOON = "balloon"    # memory taken by fill_zone() to create pressure

# page flags (bit values are the model's own)
PG_locked = 1 << 0
PG_uptodate = 1 << 1
PG_dirty = 1 << 2
PG_lru = 1 << 3
PG_active = 1 << 4
PG_writeback = 1 << 5
PG_swapbacked = 1 << 6
PG_private = 1 << 7
PG_isolated = 1 << 8            # on a private list after folio_isolate_lru/hugetlb
PG_hugetlb_migratable = 1 << 9
PG_anon_exclusive = 1 << 10
PG_reserved = 1 << 11
PG_unevictable = 1 << 12
PG_mlocked = 1 << 13
PG_hugetlb_temporary = 1 << 14
PG_large_rmappable = 1 << 15

FLAG_NAMES = {
    PG_locked: "locked", PG_uptodate: "uptodate", PG_dirty: "dirty", PG_lru: "lru",
    PG_active: "active", PG_writeback: "writeback", PG_swapbacked: "swapbacked",
    PG_private: "private", PG_isolated: "isolated", PG_hugetlb_migratable: "hugetlb_migratable",
    PG_anon_exclusive: "anon_exclusive", PG_reserved: "reserved", PG_unevictable: "unevictable",
    PG_mlocked: "mlocked", PG_hugetlb_temporary: "hugetlb_temporary",
    PG_large_rmappable: "large_rmappable",
}

_ZEROS = bytes(PAGE_SIZE)
_SERIALS = itertools.count(1)
#: what an observer's ``folio_ref`` gets as *new* before ``_mapcount`` or ``mapping`` change
MAPPING_CHANGE = -(1 << 62)


def folio_serial() -> int:
    """A number above the ``_serial`` of every folio created so far (creation order)."""
    return next(_SERIALS)


class Folio:
    """One allocated folio (head of ``nr_pages`` physically contiguous pages).

    The counters are public attributes with the kernel's names (``_refcount``,
    ``_pincount``); read them through :attr:`refcount`, :attr:`pincount` and
    :attr:`mapcount` or the kernel accessors on :class:`~pytest_pinfault.FakeMM`.
    ``freed`` is set when the last reference is dropped: a freed folio object must not be
    used again (the kernel's use-after-free), and the model records a warning if it is.
    """

    __slots__ = (
        "pfn", "order", "nr_pages", "_rc", "_pincount", "_mc", "_flags",
        "kind", "_mapping", "index", "_zone", "_data", "private", "_lru",
        "rmap", "hstate", "freed", "_mm", "_serial", "__weakref__",
    )

    def __init__(self, mm: FakeMMProto, pfn: int, order: int, zone: "Zone", kind: str) -> None:
        self._mm = mm
        self._serial = next(_SERIALS)  # creation order (an observer tells new folios apart)
        self.pfn: int = pfn
        self.order: int = order
        self.nr_pages: int = 1 << order
        # a new folio: the watched fields are set without telling the observer
        self._rc = 1                 # _refcount
        self._pincount = 0
        self._mc = 0                 # _mapcount
        self._flags = 0              # flags
        self.kind: str = kind
        self._mapping: Any = None    # mapping
        self.index: int = 0
        self._zone = zone
        self._data: dict[int, bytes | bytearray | int] | None = None
        self.private: Any = None
        self._lru = -1               # lru_batch: cpu whose lru_add batch holds a reference, or -1
        self.rmap: Any = None        # page-table mappings (set by the address-space model)
        self.hstate: Any = None
        self.freed: bool = False

    # -- what an observer watches ---------------------------------------------------
    # The machine's attached observer (mm/observer.py) hears of every change of the
    # fields a folio's reference accounting depends on, before it happens: _refcount
    # (with the new value), _mapcount and mapping (with MAPPING_CHANGE: the page
    # tables or the page cache stop or start mapping it), flags and lru_batch (None).
    @property
    def _refcount(self) -> int:
        return self._rc

    @_refcount.setter
    def _refcount(self, value: int) -> None:
        watch = self._mm._ref_watch
        if watch is not None:
            watch(self, value)
        self._rc = value

    @property
    def _mapcount(self) -> int:
        return self._mc

    @_mapcount.setter
    def _mapcount(self, value: int) -> None:
        watch = self._mm._ref_watch
        if watch is not None:
            watch(self, MAPPING_CHANGE)
        self._mc = value

    @property
    def flags(self) -> int:
        """The page flags (``PG_*`` bits; :meth:`flag_names` spells them)."""
        return self._flags

    @flags.setter
    def flags(self, value: int) -> None:
        watch = self._mm._ref_watch
        if watch is not None:
            watch(self, None)
        self._flags = value

    @property
    def mapping(self) -> Any:
        """The page cache holding the folio (the :class:`AddressSpace` of its file), or
        None (anonymous or free)."""
        return self._mapping

    @mapping.setter
    def mapping(self, value: Any) -> None:
        watch = self._mm._ref_watch
        if watch is not None:
            watch(self, MAPPING_CHANGE)
        self._mapping = value

    @property
    def lru_batch(self) -> int:
        """The CPU whose ``lru_add`` folio batch holds the folio (with a reference of its
        own, as in mm/swap.c), or -1 when no batch does."""
        return self._lru

    @lru_batch.setter
    def lru_batch(self, value: int) -> None:
        watch = self._mm._ref_watch
        if watch is not None:
            watch(self, None)
        self._lru = value

    # -- read-only views ----------------------------------------------------------
    @property
    def refcount(self) -> int:
        """``_refcount``, as :meth:`FakeMM.folio_ref_count` reads it."""
        return self._refcount

    @property
    def pincount(self) -> int:
        """Exact pin count for large folios; ``refcount // 1024`` estimate for small ones."""
        if self.order:
            return self._pincount
        return self._refcount // GUP_PIN_COUNTING_BIAS

    @property
    def mapcount(self) -> int:
        """How many page-table mappings map the folio (``folio_mapcount``)."""
        return self._mapcount

    @property
    def folio(self) -> "Folio":
        """The folio itself (so code written for a page or a folio reads ``.folio``)."""
        return self

    @property
    def zone(self) -> str:
        """Name of the zone, as /proc/zoneinfo spells it ("DMA32", "Movable" ...)."""
        return self._zone.name

    @property
    def migratetype(self) -> int:
        """The migratetype of the folio's pageblock (``MIGRATE_*``;
        ``get_pageblock_migratetype``)."""
        return self._mm.get_pageblock_migratetype(self.pfn)

    @property
    def migratetype_name(self) -> str:
        """The pageblock's migratetype by name (``"Movable"``, ``"CMA"`` ...)."""
        from .gfp import MIGRATETYPE_NAMES
        return MIGRATETYPE_NAMES[self.migratetype]

    @property
    def is_cma(self) -> bool:
        """Whether the folio lies in a CMA area (``is_migrate_cma_folio``)."""
        return self._mm._pfn_in_cma(self.pfn)

    @property
    def size(self) -> int:
        """Size in bytes (``folio_size``)."""
        return self.nr_pages << PAGE_SHIFT

    def test(self, flag: int) -> bool:
        """Whether the page flag *flag* (a ``PG_*`` bit) is set."""
        return bool(self.flags & flag)

    def flag_names(self) -> list[str]:
        """The names of the flags set (``"lru"``, ``"locked"`` ...)."""
        return [n for b, n in FLAG_NAMES.items() if self.flags & b]

    # -- contents -----------------------------------------------------------------
    def read(self, offset: int, n: int) -> bytes:
        """Read *n* bytes at byte *offset* of the folio (zeros where never written)."""
        if offset < 0 or n < 0 or offset + n > self.size:
            raise ValueError(f"folio read [{offset}, {offset + n}) outside its {self.size} bytes")
        data = self._data
        if not data:
            return bytes(n)
        out = bytearray()
        while n:
            pg, off = divmod(offset, PAGE_SIZE)
            take = min(n, PAGE_SIZE - off)
            buf = data.get(pg)
            if buf is None:
                out += _ZEROS[:take]
            elif type(buf) is int:
                out += bytes((buf,)) * take
            else:
                out += buf[off:off + take]  # type: ignore[index]  # not an int: `type(buf) is int` (kept for speed) does not narrow
            offset += take
            n -= take
        return bytes(out)

    def write(self, offset: int, buf: bytes) -> None:
        """Write *buf* at byte *offset* of the folio and mark it dirty."""
        n = len(buf)
        if offset < 0 or offset + n > self.size:
            raise ValueError(f"folio write [{offset}, {offset + n}) outside its {self.size} bytes")
        data = self._data
        if data is None:
            data = self._data = {}
        pos = 0
        mv = memoryview(buf)
        while pos < n:
            pg, off = divmod(offset + pos, PAGE_SIZE)
            take = min(n - pos, PAGE_SIZE - off)
            if take == PAGE_SIZE:
                chunk = bytes(mv[pos:pos + PAGE_SIZE])
                first = chunk[0]
                if chunk.count(first) == PAGE_SIZE:        # one repeated byte value
                    if first:
                        data[pg] = first
                    else:
                        data.pop(pg, None)
                else:
                    data[pg] = chunk
                pos += take
                continue
            page = data.get(pg)
            if type(page) is not bytearray:
                if page is None:
                    page = bytearray(PAGE_SIZE)
                elif type(page) is int:
                    page = bytearray(bytes((page,)) * PAGE_SIZE)
                else:
                    page = bytearray(page)
                data[pg] = page
            page[off:off + take] = mv[pos:pos + take]
            pos += take
        self.flags |= PG_dirty

    def zero(self) -> None:
        """Drop the contents: the folio reads as zeroes again."""
        self._data = None

    def __repr__(self) -> str:
        state = "freed " if self.freed else ""
        return (f"<{state}folio pfn={self.pfn:#x} order={self.order} {self.kind} "
                f"zone={self._zone.name} mt={self.migratetype_name} ref={self._refcount} "
                f"pin={self._pincount} map={self._mapcount} flags={'|'.join(self.flag_names()) or '0'}>")


class Page:
    """A base page of a folio, as GUP hands it out (``struct page *``).

    ``page.folio`` is the folio (``page_folio()``), ``page.pfn`` the page's own pfn.
    Two Page objects for the same pfn compare equal.
    """

    __slots__ = ("folio", "pfn")

    def __init__(self, folio: Folio, pfn: int) -> None:
        self.folio: Folio = folio
        self.pfn: int = pfn

    @property
    def is_cma(self) -> bool:
        """Whether the page's folio lies in a CMA area."""
        return self.folio.is_cma

    @property
    def zone(self) -> str:
        """Name of the page's zone, as /proc/zoneinfo spells it."""
        return self.folio._zone.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Page) and other.pfn == self.pfn and other.folio is self.folio

    def __hash__(self) -> int:
        return hash(self.pfn)

    def __repr__(self) -> str:
        return f"<page pfn={self.pfn:#x} of {self.folio!r}>"


def page_folio(page: Page | Folio) -> Folio:
    """The folio a page belongs to.  Kernel: include/linux/page-flags.h:page_folio."""
    return page.folio
