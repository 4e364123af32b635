"""Scatter-gather tables: ``struct scatterlist``, ``struct sg_table``, ``struct sg_append_table``.

Kernel: lib/scatterlist.c, include/linux/scatterlist.h (v6.12).

A table is a chain of *chunks*.  A chunk of :data:`SG_MAX_SINGLE_ALLOC` entries (one page
of 32-byte ``struct scatterlist``) comes from ``__get_free_page`` -- the ``alloc_pages``
fault site -- and a smaller one from ``kmalloc_array`` -- the ``kmalloc`` fault site --
exactly as ``sg_kmalloc`` decides, so a fault matrix fails a table build at the chunk the
kernel would fail at.  When a table needs more than one chunk, the last entry of a full
chunk is the chain entry pointing at the next one (``sg_chain``), and the last data entry
carries the end mark (``sg_mark_end``).  :func:`sg_next` follows both.

Entries are :class:`Scatterlist` objects with the fields drivers touch (``page``,
``offset``, ``length``, ``dma_address``, ``dma_length``); ``page_link``'s two low bits are
``is_chain``/``is_last``.  The chain is walked by object, not by pointer arithmetic.

.. note:: ``sizeof(struct scatterlist)`` is 32 (x86-64 with CONFIG_NEED_SG_DMA_LENGTH and
   CONFIG_NEED_SG_DMA_FLAGS), so SG_MAX_SINGLE_ALLOC is 128.  No ARCH_NO_SG_CHAIN, no
   preallocated first chunk (``sg_alloc_table_chained``), no zone-device pgmap check in
   ``pages_are_mergeable`` (the model has no ZONE_DEVICE).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .folio import PAGE_SHIFT, PAGE_SIZE, Folio, Page

if TYPE_CHECKING:  # pragma: no cover
    from .fakemm import FakeMM

if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object

__all__ = ["Scatterlist", "SgTable", "SgAppendTable", "SG_MAX_SINGLE_ALLOC", "SCATTERLIST_SIZE",
           "UINT_MAX", "sg_next", "sg_page", "sg_is_last", "sg_is_chain", "sg_set_page",
           "sg_set_folio", "sg_dma_address", "sg_dma_len", "for_each_sg", "for_each_sgtable_sg",
           "for_each_sgtable_dma_sg", "sg_nents", "sg_chunks"]

SCATTERLIST_SIZE = 32                                   # sizeof(struct scatterlist), x86-64
SG_MAX_SINGLE_ALLOC = PAGE_SIZE // SCATTERLIST_SIZE     # 128
UINT_MAX = (1 << 32) - 1


class _Chunk:
    """One allocation of ``nents`` entries: a page (a full chunk) or a kmalloc object."""

    __slots__ = ("entries", "alloc", "nents")

    def __init__(self, nents: int, alloc: Any) -> None:
        self.nents: int = nents
        self.alloc: Any = alloc
        self.entries: list[Scatterlist] = [Scatterlist(self, i) for i in range(nents)]
        self.entries[-1]._end = True                     # sg_init_table: sg_mark_end(&sgl[nents - 1])


class Scatterlist:
    """``struct scatterlist``: one entry.  ``page`` (``sg_page()``), ``offset``,
    ``length``, and after DMA mapping ``dma_address``/``dma_length``."""

    __slots__ = ("_chunk", "_i", "_chain", "_end", "page", "offset", "length",
                 "dma_address", "dma_length")

    def __init__(self, chunk: _Chunk, i: int) -> None:
        self._chunk: _Chunk | None = chunk
        self._i = i
        self._chain: _Chunk | None = None
        self._end = False
        self.page: Page | None = None
        self.offset: int = 0
        self.length: int = 0
        self.dma_address: int = 0
        self.dma_length: int = 0

    def __repr__(self) -> str:
        if self._chain is not None:
            return "<sg chain>"
        pfn = "NULL" if self.page is None else f"{self.page.pfn:#x}"
        end = " end" if self._end else ""
        return f"<sg page={pfn} off={self.offset} len={self.length} dma={self.dma_address:#x}{end}>"


class SgTable:
    """``struct sg_table``: ``sgl`` (the first entry or None), ``nents`` (entries after
    DMA mapping, or the CPU entries before), ``orig_nents`` (CPU entries)."""

    __slots__ = ("sgl", "nents", "orig_nents", "__weakref__")

    def __init__(self) -> None:
        self.sgl: Scatterlist | None = None
        self.nents: int = 0
        self.orig_nents: int = 0

    def __repr__(self) -> str:
        return f"<sg_table nents={self.nents} orig_nents={self.orig_nents}>"


class SgAppendTable:
    """``struct sg_append_table``: ``sgt``, ``prv`` (the last populated entry) and
    ``total_nents`` (entries allocated, chain entries included)."""

    __slots__ = ("sgt", "prv", "total_nents")

    def __init__(self) -> None:
        self.sgt: SgTable = SgTable()
        self.prv: Scatterlist | None = None
        self.total_nents: int = 0

    def __repr__(self) -> str:
        return f"<sg_append_table {self.sgt!r} total_nents={self.total_nents}>"


# --------------------------------------------------------------------------- inlines
def sg_is_chain(sg: Scatterlist) -> bool:
    """include/linux/scatterlist.h:sg_is_chain."""
    return sg._chain is not None


def sg_is_last(sg: Scatterlist) -> bool:
    """include/linux/scatterlist.h:sg_is_last."""
    return sg._end


def sg_next(sg: Scatterlist) -> Scatterlist | None:
    """The next entry, following a chain entry; None after the last one.
    Kernel: lib/scatterlist.c:sg_next (v6.12)."""
    ch = sg._chunk
    if sg._end or ch is None:           # the end, or an entry of a freed table
        return None
    i = sg._i + 1
    if i >= ch.nents:
        return None                         # not reached on a well-formed table
    nxt = ch.entries[i]
    if nxt._chain is not None:
        nxt = nxt._chain.entries[0]
    return nxt


def sg_page(sg: Scatterlist) -> Page | None:
    """include/linux/scatterlist.h:sg_page."""
    return sg.page


def sg_set_page(sg: Scatterlist, page: Page | Folio, len: int, offset: int) -> None:
    """Point *sg* at *len* bytes of *page* from *offset*.
    Kernel: include/linux/scatterlist.h:sg_set_page (v6.12)."""
    if isinstance(page, Folio):
        page = Page(page, page.pfn)
    sg.page = page
    sg.offset = offset
    sg.length = len


def sg_set_folio(sg: Scatterlist, folio: Folio, len: int, offset: int) -> None:
    """Point *sg* at *len* bytes of *folio* from *offset* (the head page, offset into the
    folio).  Kernel: include/linux/scatterlist.h:sg_set_folio (v6.12)."""
    sg_set_page(sg, Page(folio, folio.pfn), len, offset)


def sg_dma_address(sg: Scatterlist) -> int:
    """include/linux/scatterlist.h:sg_dma_address."""
    return sg.dma_address


def sg_dma_len(sg: Scatterlist) -> int:
    """include/linux/scatterlist.h:sg_dma_len."""
    return sg.dma_length


def for_each_sg(sgl: Scatterlist | None, nr: int) -> Iterator[tuple[int, Scatterlist]]:
    """``for_each_sg(sglist, sg, nr, i)``: yields ``(i, sg)`` for *nr* entries."""
    sg = sgl
    for i in range(nr):
        if sg is None:
            return
        yield i, sg
        sg = sg_next(sg)


def for_each_sgtable_sg(sgt: SgTable) -> Iterator[tuple[int, Scatterlist]]:
    """``for_each_sgtable_sg(sgt, sg, i)``: the ``orig_nents`` CPU entries."""
    return for_each_sg(sgt.sgl, sgt.orig_nents)


def for_each_sgtable_dma_sg(sgt: SgTable) -> Iterator[tuple[int, Scatterlist]]:
    """``for_each_sgtable_dma_sg(sgt, sg, i)``: the ``nents`` DMA entries."""
    return for_each_sg(sgt.sgl, sgt.nents)


def sg_nents(sg: Scatterlist | None) -> int:
    """Entries from *sg* to the end mark.  Kernel: lib/scatterlist.c:sg_nents."""
    n = 0
    while sg is not None:
        n += 1
        sg = sg_next(sg)
    return n


def sg_chunks(sgt: SgTable) -> list[_Chunk]:
    """The chunks a table is made of (model only: for tests and the checker)."""
    out = []
    sg = sgt.sgl
    ch = sg._chunk if sg is not None else None
    while ch is not None:
        out.append(ch)
        last = ch.entries[-1]
        ch = last._chain
    return out


def _pages_are_mergeable(a: Page, b: Page) -> bool:
    """lib/scatterlist.c:pages_are_mergeable: *a* directly follows *b*."""
    return a.pfn == b.pfn + 1


class ScatterlistMixin(_Base):
    """lib/scatterlist.c half of :class:`~pytest_pinfault.FakeMM`."""

    # ---------------------------------------------------------------- allocation
    def _sg_kmalloc(self, nents: int, gfp: int) -> _Chunk | None:
        """lib/scatterlist.c:sg_kmalloc: a page for a full chunk, kmalloc_array otherwise."""
        if nents == SG_MAX_SINGLE_ALLOC:
            alloc = self.alloc_pages(gfp, 0)
        else:
            alloc = self.kmalloc_array(nents, SCATTERLIST_SIZE, gfp)
        if alloc is None:
            return None
        ch = _Chunk(nents, alloc)
        self._sg_live[id(ch)] = ch
        return ch

    def _sg_kfree(self, ch: _Chunk, nents: int) -> None:
        """lib/scatterlist.c:sg_kfree."""
        if self._sg_live.pop(id(ch), None) is None:
            self._warn("sg_kfree", f"freeing a scatterlist chunk twice ({nents} entries)")
            return
        if nents == SG_MAX_SINGLE_ALLOC:
            self.free_pages_block(ch.alloc, 0)
        else:
            self.kfree(ch.alloc)
        for e in ch.entries:            # break the entry <-> chunk cycles: freed by refcount
            e._chunk = None
            e._chain = None
            e._end = True
        ch.entries = []

    @property
    def sg_chunks_live(self) -> int:
        """Scatterlist chunks allocated and not yet freed (model only)."""
        return self._read_sg_chunks()

    def _read_sg_chunks(self) -> int:
        """The ``scatterlist.chunks`` counter's reading (a bound method, as the counter
        registry takes it): :attr:`sg_chunks_live`."""
        return len(self._sg_live)

    # ---------------------------------------------------------------- tables
    def sg_init_table(self, sgl: Scatterlist, nents: int) -> None:
        """Clear the chunk *sgl* starts and mark entry ``nents - 1`` as the end.
        Kernel: lib/scatterlist.c:sg_init_table (v6.12)."""
        ch = sgl._chunk
        if ch is None or not 0 < nents <= ch.nents:
            self._warn("sg_init_table", f"sg_init_table of {nents} entries on an allocation of "
                                        f"{0 if ch is None else ch.nents}")
            return
        for e in ch.entries[:nents]:
            e.page, e.offset, e.length, e.dma_address, e.dma_length = None, 0, 0, 0, 0
            e._chain, e._end = None, False
        ch.entries[nents - 1]._end = True

    def _sg_free(self, table: SgTable, max_ents: int, num_ents: int) -> None:
        """lib/scatterlist.c:__sg_free_table (no preallocated first chunk)."""
        sg = table.sgl
        if sg is None:
            return
        ch: _Chunk | None = sg._chunk
        while num_ents and ch is not None:
            alloc_size = num_ents
            if alloc_size > max_ents:
                nxt = ch.entries[max_ents - 1]._chain
                alloc_size = max_ents
                sg_size = alloc_size - 1
            else:
                sg_size = alloc_size
                nxt = None
            num_ents -= sg_size
            self._sg_kfree(ch, alloc_size)
            ch = nxt
        table.sgl = None

    def sg_free_table(self, table: SgTable) -> None:
        """Free a table from :meth:`sg_alloc_table` or :meth:`sg_alloc_table_from_pages`
        (its ``orig_nents`` says how many entries were allocated).
        Kernel: lib/scatterlist.c:sg_free_table (v6.12)."""
        self._sg_free(table, SG_MAX_SINGLE_ALLOC, table.orig_nents)

    def sg_free_append_table(self, table: SgAppendTable) -> None:
        """Free an append table (its ``total_nents`` chunks' worth of entries).
        Kernel: lib/scatterlist.c:sg_free_append_table (v6.12)."""
        if not isinstance(table, SgAppendTable):
            raise TypeError(f"sg_free_append_table: table must be an SgAppendTable, got {type(table).__name__}")
        self._sg_free(table.sgt, SG_MAX_SINGLE_ALLOC, table.total_nents)

    def sg_alloc_table(self, table: SgTable, nents: int, gfp_mask: int) -> int:
        """Allocate a table of *nents* entries, chained in chunks of
        SG_MAX_SINGLE_ALLOC (127 data entries + the chain entry each but the last).
        0, -EINVAL for ``nents == 0``, or -ENOMEM with whatever was allocated freed
        again.  Kernel: lib/scatterlist.c:sg_alloc_table / __sg_alloc_table (v6.12)."""
        table.sgl, table.nents, table.orig_nents = None, 0, 0
        if nents == 0:
            return -errno.EINVAL
        if nents < 0 or nents > UINT_MAX:
            return -errno.EINVAL
        # a table that needs more full chunks than the machine has free pages fails at the
        # first chunk that cannot be had; answer that now instead of building it
        if (nents - 1) // (SG_MAX_SINGLE_ALLOC - 1) > sum(z.free_pages for z in self.zones.values()):
            return -errno.ENOMEM
        left = nents
        prv: _Chunk | None = None
        prv_max = 0
        max_ents = SG_MAX_SINGLE_ALLOC
        while left:
            alloc_size = left
            if alloc_size > max_ents:
                alloc_size = max_ents
                sg_size = alloc_size - 1
            else:
                sg_size = alloc_size
            left -= sg_size
            ch = self._sg_kmalloc(alloc_size, gfp_mask)
            if ch is None:
                if prv is not None:          # the previous chunk's last entry is not a link
                    table.orig_nents += 1
                    table.nents = table.orig_nents
                self.sg_free_table(table)
                return -errno.ENOMEM
            table.orig_nents += sg_size
            table.nents = table.orig_nents
            if prv is not None:
                self._sg_chain_chunk(prv, prv_max, ch)
            else:
                table.sgl = ch.entries[0]
            if not left:
                self.sg_mark_end(ch.entries[sg_size - 1])
            prv, prv_max = ch, max_ents
        return 0

    @staticmethod
    def _sg_chain_chunk(prv: _Chunk, prv_nents: int, ch: _Chunk) -> None:
        """include/linux/scatterlist.h:sg_chain: entry prv_nents-1 links to *ch*."""
        link = prv.entries[prv_nents - 1]
        link.page, link.offset, link.length = None, 0, 0
        link._chain, link._end = ch, False

    def sg_mark_end(self, sg: Scatterlist) -> None:
        """include/linux/scatterlist.h:sg_mark_end."""
        sg._end = True
        sg._chain = None

    def sg_unmark_end(self, sg: Scatterlist) -> None:
        """include/linux/scatterlist.h:sg_unmark_end."""
        sg._end = False

    def _get_next_sg(self, table: SgAppendTable, cur: Scatterlist | None, needed_sges: int,
                     gfp: int) -> Scatterlist | int:
        """lib/scatterlist.c:get_next_sg: the next free entry, allocating a chunk (and
        turning the last free entry into its chain link) when only one is left."""
        nxt: Scatterlist | None = None
        if cur is not None:
            nxt = sg_next(cur)
            if nxt is None:         # the kernel dereferences NULL here
                self._warn("sg_alloc_append_table_from_pages",
                           "appending to a table whose end was already marked (left_pages was 0)")
                return -errno.EINVAL
            if not sg_is_last(nxt) or needed_sges == 1:
                return nxt
        alloc_size = min(needed_sges, SG_MAX_SINGLE_ALLOC)
        ch = self._sg_kmalloc(alloc_size, gfp)
        if ch is None:
            return -errno.ENOMEM
        if nxt is not None:
            table.total_nents += alloc_size - 1
            nxt.page, nxt.offset, nxt.length = None, 0, 0
            nxt._chain, nxt._end = ch, False                 # __sg_chain
        else:
            table.sgt.sgl = ch.entries[0]
            table.total_nents = alloc_size
        return ch.entries[0]

    def sg_alloc_append_table_from_pages(self, sgt_append: SgAppendTable, pages: Sequence[Page],
                                         n_pages: int, offset: int, size: int, max_segment: int,
                                         left_pages: int, gfp_mask: int) -> int:
        """Append *n_pages* pages to *sgt_append*, merging physically contiguous pages
        into one entry of at most *max_segment* bytes (rounded down to PAGE_SIZE), and
        the first pages into the previous call's last entry when they continue it.
        *left_pages* is how many more pages later calls will append (room is kept for
        them; 0 marks the end).  0, -EINVAL (max_segment below PAGE_SIZE: a WARN; an
        *offset* on a continued table: a WARN) or -ENOMEM (an entry chunk's allocation
        failed; the previous last entry is restored and the caller must call
        :meth:`sg_free_append_table`).
        Kernel: lib/scatterlist.c:sg_alloc_append_table_from_pages (v6.12)."""
        if n_pages < 0 or n_pages > len(pages):   # the kernel would read past the array
            self._warn("sg_alloc_append_table_from_pages",
                       f"n_pages={n_pages} but the page array has {len(pages)} entries")
            return -errno.EINVAL
        max_segment = max_segment & ~(PAGE_SIZE - 1)
        if max_segment < PAGE_SIZE:
            self._warn("sg_alloc_append_table_from_pages", "WARN_ON(max_segment < PAGE_SIZE)")
            return -errno.EINVAL
        prv = sgt_append.prv
        prv_len = 0
        start = 0
        s = prv
        if prv is not None:
            if offset:
                self._warn("sg_alloc_append_table_from_pages", "WARN_ON(offset) on a continued table")
                return -errno.EINVAL
            prv_len = prv.length
            assert prv.page is not None     # the last entry of a built table has its page
            next_pfn = ((prv.page.pfn << PAGE_SHIFT) + prv.offset + prv.length) >> PAGE_SHIFT
            if n_pages and pages[0].pfn == next_pfn:
                last_pfn = next_pfn - 1
                while start < n_pages and pages[start].pfn == last_pfn + 1:
                    if prv.length + PAGE_SIZE > max_segment:
                        break
                    prv.length += PAGE_SIZE
                    last_pfn = pages[start].pfn
                    start += 1
                if start == n_pages:
                    if not left_pages:
                        self.sg_mark_end(prv)
                    return 0
        if start >= n_pages:        # the kernel reads pages[0] of an empty array
            self._warn("sg_alloc_append_table_from_pages", f"n_pages={n_pages}: no page to append")
            return -errno.EINVAL
        # number of contiguous chunks
        chunks = 1
        seg_len = 0
        for i in range(start + 1, n_pages):
            seg_len += PAGE_SIZE
            if seg_len >= max_segment or not _pages_are_mergeable(pages[i], pages[i - 1]):
                chunks += 1
                seg_len = 0
        cur = start
        added = 0
        for i in range(chunks):
            seg_len = 0
            j = cur + 1
            while j < n_pages:
                seg_len += PAGE_SIZE
                if seg_len >= max_segment or not _pages_are_mergeable(pages[j], pages[j - 1]):
                    break
                j += 1
            r = self._get_next_sg(sgt_append, s, chunks - i + left_pages, gfp_mask)
            if isinstance(r, int):
                if prv is not None:
                    prv.length = prv_len
                return r
            s = r
            chunk_size = ((j - cur) << PAGE_SHIFT) - offset
            sg_set_page(s, pages[cur], min(size, chunk_size), offset)
            added += 1
            size -= chunk_size
            offset = 0
            cur = j
        sgt_append.sgt.nents += added
        sgt_append.sgt.orig_nents = sgt_append.sgt.nents
        sgt_append.prv = s
        if not left_pages and s is not None:
            self.sg_mark_end(s)
        return 0

    def sg_alloc_table_from_pages_segment(self, sgt: SgTable, pages: Sequence[Page], n_pages: int,
                                          offset: int, size: int, max_segment: int,
                                          gfp_mask: int) -> int:
        """A table for *n_pages* pages, contiguous runs merged up to *max_segment*
        bytes; 0 or -errno (nothing left allocated).  Free with :meth:`sg_free_table`.
        Kernel: lib/scatterlist.c:sg_alloc_table_from_pages_segment (v6.12)."""
        app = SgAppendTable()
        err = self.sg_alloc_append_table_from_pages(app, pages, n_pages, offset, size,
                                                    max_segment, 0, gfp_mask)
        if err:
            self.sg_free_append_table(app)
            return err
        sgt.sgl, sgt.nents, sgt.orig_nents = app.sgt.sgl, app.sgt.nents, app.sgt.orig_nents
        if app.total_nents != sgt.orig_nents:
            self._warn("sg_alloc_table_from_pages_segment", "WARN_ON(append.total_nents != sgt->orig_nents)")
        return 0

    def sg_alloc_table_from_pages(self, sgt: SgTable, pages: Sequence[Page], n_pages: int,
                                  offset: int, size: int, gfp_mask: int) -> int:
        """:meth:`sg_alloc_table_from_pages_segment` with no segment limit (UINT_MAX).
        Kernel: include/linux/scatterlist.h:sg_alloc_table_from_pages (v6.12)."""
        return self.sg_alloc_table_from_pages_segment(sgt, pages, n_pages, offset, size,
                                                      UINT_MAX, gfp_mask)
