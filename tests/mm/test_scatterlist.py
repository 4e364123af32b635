"""Scatter-gather tables against lib/scatterlist.c (v6.12): chunking by
SG_MAX_SINGLE_ALLOC, where each chunk is allocated (a page vs kmalloc_array) and so which
fault site a matrix hits, merging of contiguous pages up to max_segment, append tables
and freeing.
"""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.mm import GFP_KERNEL, PAGE_SIZE
from pytest_pinfault.mm.folio import Page
from pytest_pinfault.mm.scatterlist import (SG_MAX_SINGLE_ALLOC, UINT_MAX, SgAppendTable, SgTable,
                                            for_each_sgtable_sg, sg_chunks, sg_is_chain, sg_is_last,
                                            sg_nents, sg_next, sg_page, sg_set_folio, sg_set_page)


@pytest.fixture
def k() -> FakeMM:
    return FakeMM(MMConfig(ram="512MiB"))


def _pages(k: FakeMM, runs: list[int]) -> list[Page]:
    """Pages in physically contiguous runs of the given lengths, runs not adjacent."""
    out = []
    for n in runs:
        order = max(0, (n - 1).bit_length())
        head = k.alloc_pages(GFP_KERNEL, order + 1)    # room so the next run is not adjacent
        out += [Page(head.folio, head.pfn + i) for i in range(n)]
    return out


class TestAllocTable:
    def test_sg_max_single_alloc(self):
        """sizeof(struct scatterlist) is 32 on x86-64: 128 entries per page."""
        assert SG_MAX_SINGLE_ALLOC == 128

    @pytest.mark.parametrize("nents, chunks", [(1, [1]), (128, [128]), (129, [128, 2]),
                                               (254, [128, 127]), (255, [128, 128]),
                                               (256, [128, 128, 2])])
    def test_chunking(self, k, nents, chunks):
        """A chunk holds 127 entries + a chain link, the last one what is left."""
        t = SgTable()
        assert k.sg_alloc_table(t, nents, GFP_KERNEL) == 0
        assert t.nents == t.orig_nents == nents
        assert [c.nents for c in sg_chunks(t)] == chunks
        assert sg_nents(t.sgl) == nents
        assert sum(1 for _ in for_each_sgtable_sg(t)) == nents
        k.sg_free_table(t)
        assert t.sgl is None and k.sg_chunks_live == 0 and k.slab_live == []

    def test_full_chunk_is_a_page_small_is_kmalloc(self, k):
        """sg_kmalloc: __get_free_page for a full chunk, kmalloc_array for a smaller one."""
        before = k.nr_allocated_pages
        t = SgTable()
        assert k.sg_alloc_table(t, 129, GFP_KERNEL) == 0
        assert k.nr_allocated_pages == before + 1
        assert [o.size for o in k.slab_live] == [2 * 32]
        k.sg_free_table(t)
        assert k.nr_allocated_pages == before and k.slab_live == []

    def test_zero_nents(self, k):
        assert k.sg_alloc_table(SgTable(), 0, GFP_KERNEL) == -errno.EINVAL

    def test_more_chunks_than_memory_fails_without_building(self, k):
        """512 MiB of RAM cannot hold 2**31 entries' chunks: -ENOMEM at once."""
        assert k.sg_alloc_table(SgTable(), 1 << 31, GFP_KERNEL) == -errno.ENOMEM
        assert k.sg_chunks_live == 0

    def test_n_pages_beyond_the_array(self, k):
        pages = _pages(k, [2])
        assert k.sg_alloc_table_from_pages(SgTable(), pages, 5, 0, 5 * PAGE_SIZE, GFP_KERNEL) == -errno.EINVAL
        assert "page array has 2" in k.warnings[-1].message

    def test_second_chunk_fails_frees_first(self, k):
        """A failing second chunk (kmalloc site): -ENOMEM and the first page freed."""
        k.faults.arm("kmalloc")
        before = k.nr_allocated_pages
        t = SgTable()
        assert k.sg_alloc_table(t, 200, GFP_KERNEL) == -errno.ENOMEM
        assert k.sg_chunks_live == 0 and k.nr_allocated_pages == before and t.sgl is None

    def test_full_chunk_hits_alloc_pages_site(self, k):
        """A full chunk is a page allocation: the alloc_pages site fails it."""
        k.faults.arm("alloc_pages")
        assert k.sg_alloc_table(SgTable(), 128, GFP_KERNEL) == -errno.ENOMEM
        assert [r.site for r in k.faults.fired] == ["alloc_pages"]

    def test_small_table_hits_kmalloc_site(self, k):
        k.faults.arm("kmalloc")
        assert k.sg_alloc_table(SgTable(), 127, GFP_KERNEL) == -errno.ENOMEM
        assert [r.site for r in k.faults.fired] == ["kmalloc"]

    def test_chain_walk(self, k):
        t = SgTable()
        k.sg_alloc_table(t, 129, GFP_KERNEL)
        first = sg_chunks(t)[0]
        assert sg_is_chain(first.entries[127])
        sg = t.sgl
        for _ in range(127):
            sg = sg_next(sg)
        assert sg is sg_chunks(t)[1].entries[0]
        assert sg_is_last(sg_chunks(t)[1].entries[1]) and sg_next(sg_chunks(t)[1].entries[1]) is None
        first = t.sgl
        k.sg_free_table(t)
        assert sg_next(first) is None                  # an entry of a freed table leads nowhere


class TestFromPages:
    def test_merge_contiguous(self, k):
        """Contiguous runs become one entry each (lib/scatterlist.c:pages_are_mergeable)."""
        pages = _pages(k, [3, 1, 4])
        t = SgTable()
        assert k.sg_alloc_table_from_pages(t, pages, 8, 0, 8 * PAGE_SIZE, GFP_KERNEL) == 0
        ents = [sg for _, sg in for_each_sgtable_sg(t)]
        assert [sg.length for sg in ents] == [3 * PAGE_SIZE, PAGE_SIZE, 4 * PAGE_SIZE]
        assert [sg_page(sg) for sg in ents] == [pages[0], pages[3], pages[4]]
        k.sg_free_table(t)
        assert k.sg_chunks_live == 0

    def test_max_segment_splits(self, k):
        pages = _pages(k, [8])
        t = SgTable()
        assert k.sg_alloc_table_from_pages_segment(t, pages, 8, 0, 8 * PAGE_SIZE, 3 * PAGE_SIZE + 5,
                                                   GFP_KERNEL) == 0
        assert [sg.length for _, sg in for_each_sgtable_sg(t)] == [3 * PAGE_SIZE, 3 * PAGE_SIZE, 2 * PAGE_SIZE]
        k.sg_free_table(t)

    def test_offset_and_size(self, k):
        """The first entry starts at *offset*, the last is cut to *size*."""
        pages = _pages(k, [2, 1])
        t = SgTable()
        assert k.sg_alloc_table_from_pages(t, pages, 3, 100, 2 * PAGE_SIZE, GFP_KERNEL) == 0
        ents = [sg for _, sg in for_each_sgtable_sg(t)]
        assert [(sg.offset, sg.length) for sg in ents] == [(100, 2 * PAGE_SIZE - 100), (0, 100)]
        k.sg_free_table(t)

    def test_max_segment_below_page(self, k):
        pages = _pages(k, [1])
        assert k.sg_alloc_table_from_pages_segment(SgTable(), pages, 1, 0, PAGE_SIZE, 100,
                                                   GFP_KERNEL) == -errno.EINVAL
        assert k.warnings and "max_segment" in k.warnings[-1].message

    def test_uint_max_is_the_default_segment(self):
        assert UINT_MAX == 0xFFFFFFFF

    def test_many_entries_chain(self, k):
        """300 discontiguous pages: 300 entries in chunks 128/128/46."""
        pages = _pages(k, [1] * 300)
        t = SgTable()
        assert k.sg_alloc_table_from_pages(t, pages, 300, 0, 300 * PAGE_SIZE, GFP_KERNEL) == 0
        assert t.orig_nents == 300 and [c.nents for c in sg_chunks(t)] == [128, 128, 46]
        k.sg_free_table(t)
        assert k.sg_chunks_live == 0 and k.slab_live == []


class TestAppend:
    def test_append_merges_into_previous(self, k):
        """A second batch continuing the last entry's pages extends it (ib_umem_get)."""
        pages = _pages(k, [6])
        app = SgAppendTable()
        assert k.sg_alloc_append_table_from_pages(app, pages[:3], 3, 0, 3 * PAGE_SIZE, UINT_MAX, 3,
                                                  GFP_KERNEL) == 0
        assert k.sg_alloc_append_table_from_pages(app, pages[3:], 3, 0, 3 * PAGE_SIZE, UINT_MAX, 0,
                                                  GFP_KERNEL) == 0
        assert app.sgt.nents == 1 and app.sgt.sgl.length == 6 * PAGE_SIZE and sg_is_last(app.sgt.sgl)
        k.sg_free_append_table(app)
        assert k.sg_chunks_live == 0

    def test_left_pages_reserves_room(self, k):
        """With left_pages the first chunk is sized for what is still to come."""
        pages = _pages(k, [1] * 4)
        app = SgAppendTable()
        assert k.sg_alloc_append_table_from_pages(app, pages[:2], 2, 0, 2 * PAGE_SIZE, UINT_MAX, 2,
                                                  GFP_KERNEL) == 0
        assert app.total_nents == 4
        assert k.sg_alloc_append_table_from_pages(app, pages[2:], 2, 0, 2 * PAGE_SIZE, UINT_MAX, 0,
                                                  GFP_KERNEL) == 0
        assert app.sgt.nents == 4 and app.total_nents == 4 and k.sg_chunks_live == 1
        k.sg_free_append_table(app)
        assert k.sg_chunks_live == 0

    def test_append_failure_restores_prv_length(self, k):
        pages = _pages(k, [1, 1, 1])
        app = SgAppendTable()
        assert k.sg_alloc_append_table_from_pages(app, pages[:1], 1, 0, PAGE_SIZE, UINT_MAX, 0,
                                                  GFP_KERNEL) == 0
        prv = app.prv
        k.faults.arm("kmalloc")
        # the table was ended (left_pages 0): appending again is kernel misuse
        assert k.sg_alloc_append_table_from_pages(app, pages[1:], 2, 0, 2 * PAGE_SIZE, UINT_MAX, 0,
                                                  GFP_KERNEL) == -errno.EINVAL
        assert prv.length == PAGE_SIZE
        k.sg_free_append_table(app)
        assert k.sg_chunks_live == 0

    def test_append_chunk_fails_midway(self, k):
        """The second chunk of a 200-entry append fails: -ENOMEM, the caller frees."""
        pages = _pages(k, [1] * 200)
        app = SgAppendTable()
        k.faults.arm("kmalloc")
        assert k.sg_alloc_append_table_from_pages(app, pages, 200, 0, 200 * PAGE_SIZE, UINT_MAX, 0,
                                                  GFP_KERNEL) == -errno.ENOMEM
        assert k.sg_chunks_live == 1
        k.sg_free_append_table(app)
        assert k.sg_chunks_live == 0


class TestSetters:
    def test_sg_set_page_and_folio(self, k):
        t = SgTable()
        k.sg_alloc_table(t, 2, GFP_KERNEL)
        page = k.alloc_pages(GFP_KERNEL, 2)
        sg_set_folio(t.sgl, page.folio, 4 * PAGE_SIZE, 0)
        assert sg_page(t.sgl).pfn == page.folio.pfn and t.sgl.length == 4 * PAGE_SIZE
        sg_set_page(sg_next(t.sgl), page, 10, 5)
        assert (sg_next(t.sgl).offset, sg_next(t.sgl).length) == (5, 10)
        k.sg_free_table(t)


def test_misuse_is_recorded_or_a_type_error(k):
    t = SgTable()
    k.sg_alloc_table(t, 2, GFP_KERNEL)
    k.sg_init_table(t.sgl, 4095)
    assert "4095 entries on an allocation of 2" in k.warnings[-1].message
    with pytest.raises(TypeError, match="SgAppendTable"):
        k.sg_free_append_table(t)
    k.sg_free_table(t)
