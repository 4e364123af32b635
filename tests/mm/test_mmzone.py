"""Zones and free areas: the FreeList extent arithmetic, zone_batchsize, and the boot
layout of small and large machines (zone spans, holes, Movable, memmap, CMA, memory
blocks), including the sparse construction of a 1 TiB machine."""

from __future__ import annotations

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.mm import (MAX_PAGE_ORDER, MIGRATE_CMA, MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE,
                                MIGRATE_UNMOVABLE)
from pytest_pinfault.mm.mmzone import FreeList, zone_batchsize

MiB, GiB = 1 << 20, 1 << 30
PFN_16M = (16 * MiB) >> 12
PFN_3G = (3 * GiB) >> 12
PFN_4G = (4 * GiB) >> 12
BLOCK = 32768                     # 128 MiB memory block / section, in pages


def pfn(nbytes: int) -> int:
    return nbytes >> 12


class TestFreeListPut:
    def test_disjoint_runs_stay_separate(self):
        """Non-adjacent runs are separate extents, sorted by pfn."""
        fl = FreeList()
        fl.put(100, 10)
        fl.put(10, 5)
        assert list(fl.extents()) == [(10, 15), (100, 110)]
        assert fl.nr_free == 15
        assert len(fl) == 2

    def test_coalesce_left(self):
        """A run starting where an extent ends extends it."""
        fl = FreeList()
        fl.put(0, 4)
        fl.put(4, 4)
        assert list(fl.extents()) == [(0, 8)]

    def test_coalesce_right(self):
        """A run ending where an extent starts extends it downwards."""
        fl = FreeList()
        fl.put(8, 8)
        fl.put(4, 4)
        assert list(fl.extents()) == [(4, 16)]

    def test_coalesce_both_sides(self):
        """Filling the gap between two extents merges all three into one."""
        fl = FreeList()
        fl.put(0, 4)
        fl.put(8, 4)
        fl.put(4, 4)
        assert list(fl.extents()) == [(0, 12)]
        assert fl.nr_free == 12

    def test_single_pages_merge_into_buddy_blocks(self):
        """Freeing 1024 single pages one by one yields one order-10 block."""
        fl = FreeList()
        for p in range(1024, 2048):
            fl.put(p, 1)
        assert list(fl.extents()) == [(1024, 2048)]
        assert fl.buddyinfo() == [0] * MAX_PAGE_ORDER + [1]


class TestFreeListTake:
    def test_top_down_choice(self):
        """take() returns the highest block: fresh allocations come from the top."""
        fl = FreeList()
        fl.put(0, 1024)
        assert fl.take(0) == 1023
        assert fl.take(0) == 1022
        assert fl.nr_free == 1022
        assert list(fl.extents()) == [(0, 1022)]

    def test_natural_alignment(self):
        """An order-k block starts at a multiple of 2**k."""
        fl = FreeList()
        fl.put(0, 1023)                       # [0, 1023): top aligned order-9 block is 0
        assert fl.take(9) == 0
        assert list(fl.extents()) == [(512, 1023)]
        assert fl.take(8) == 512              # [512, 768)
        assert fl.take(2) == 1016             # highest aligned 4-page block below 1023

    def test_unaligned_extent_too_small(self):
        """An extent of 3 pages at pfn 1 holds an aligned order-1 block but no order-2 one."""
        fl = FreeList()
        fl.put(1, 3)
        assert fl.take(2) == -1
        assert fl.nr_free == 3
        assert fl.take(1) == 2
        assert fl.take(1) == -1
        assert list(fl.extents()) == [(1, 2)]

    def test_falls_back_to_lower_extent(self):
        """When the top extent is too small, a lower extent serves the order."""
        fl = FreeList()
        fl.put(0, 16)
        fl.put(1000, 2)
        assert fl.take(3) == 8
        assert list(fl.extents()) == [(0, 8), (1000, 1002)]

    def test_splits_an_extent(self):
        """Taking from the middle of an extent leaves both sides free."""
        fl = FreeList()
        fl.put(0, 20)                         # highest aligned 8-block inside is [8, 16)
        assert fl.take(3) == 8
        assert list(fl.extents()) == [(0, 8), (16, 20)]
        assert fl.nr_free == 12

    def test_bounds(self):
        """lo/hi restrict the block to [lo, hi)."""
        fl = FreeList()
        fl.put(0, 1024)
        assert fl.take(0, lo=0, hi=100) == 99
        assert fl.take(4, lo=200, hi=300) == 272
        assert fl.take(9, lo=100, hi=1024) == 512
        assert fl.take(9, lo=0, hi=512) == -1  # [0, 512) is no longer wholly free
        assert fl.take(0, lo=2000) == -1

    def test_empty(self):
        """An empty list gives -1."""
        assert FreeList().take(0) == -1


class TestFreeListTakeMany:
    """take_many(order, count) removes what *count* take(order) calls would, in order."""

    @pytest.mark.parametrize("order", [0, 1, 3])
    @pytest.mark.parametrize("count", [0, 1, 5, 13, 40, 1000])
    def test_same_blocks_as_repeated_take(self, order, count):
        extents = [(3, 17), (20, 21), (32, 64), (70, 75), (96, 130)]   # unaligned ends too
        many, one = FreeList(), FreeList()
        for s, e in extents:
            many.put(s, e - s)
            one.put(s, e - s)
        got = many.take_many(order, count)
        want = []
        while len(want) < count:
            a = one.take(order)
            if a < 0:
                break
            want.append(a)
        assert got == want
        assert list(many.extents()) == list(one.extents()) and many.nr_free == one.nr_free
        assert all(a % (1 << order) == 0 for a in got)


class TestFreeListRanges:
    def test_remove_range_across_extents(self):
        """remove_range() removes every free page of the range and returns the runs."""
        fl = FreeList()
        fl.put(0, 10)
        fl.put(20, 10)
        fl.put(40, 10)
        assert fl.remove_range(5, 45) == [(5, 10), (20, 30), (40, 45)]
        assert list(fl.extents()) == [(0, 5), (45, 50)]
        assert fl.nr_free == 10

    def test_remove_range_inside_one_extent(self):
        """Removing the middle of one extent splits it."""
        fl = FreeList()
        fl.put(0, 100)
        assert fl.remove_range(10, 20) == [(10, 20)]
        assert list(fl.extents()) == [(0, 10), (20, 100)]

    def test_remove_range_nothing_free(self):
        """A range without free pages removes nothing."""
        fl = FreeList()
        fl.put(0, 10)
        assert fl.remove_range(10, 50) == []
        assert fl.nr_free == 10

    def test_count_range(self):
        """count_range() counts free pages inside [lo, hi) only."""
        fl = FreeList()
        fl.put(0, 10)
        fl.put(20, 10)
        assert fl.count_range(5, 25) == 10
        assert fl.count_range(10, 20) == 0
        assert fl.count_range(0, 1000) == 20

    def test_contains(self):
        """contains() is true exactly for free pfns."""
        fl = FreeList()
        fl.put(10, 5)
        assert [p for p in range(0, 20) if fl.contains(p)] == [10, 11, 12, 13, 14]


class TestFreeListBuddyinfo:
    def test_aligned_decomposition(self):
        """An extent is counted as its maximal naturally aligned blocks."""
        fl = FreeList()
        fl.put(1, 14)                         # 1 | 2-3 | 4-7 | 8-11 | 12-13 | 14
        assert fl.buddyinfo()[:4] == [2, 2, 2, 0]
        assert sum(n << o for o, n in enumerate(fl.buddyinfo())) == 14

    def test_capped_at_max_order(self):
        """Blocks larger than MAX_PAGE_ORDER are counted as several order-10 blocks."""
        fl = FreeList()
        fl.put(0, 4096)
        assert fl.buddyinfo() == [0] * MAX_PAGE_ORDER + [4]


class TestZoneBatchsize:
    @pytest.mark.parametrize("managed, batch", [
        (0, 1), (3998, 1), (8192, 1), (16384, 3), (32768, 7), (65536, 15),
        (131072, 31), (262144, 63), (1 << 30, 63),
    ])
    def test_values(self, managed, batch):
        """zone_batchsize: rounddown_pow_of_two(b + b/2) - 1 of managed/4096, capped at 63."""
        assert zone_batchsize(managed) == batch

    def test_zone_pcp_uses_it(self):
        """Each cpu's pcp of a zone has that zone's batch."""
        mm = FakeMM(MMConfig(ram="2GiB", nr_cpus=3))
        z = mm.zones["DMA32"]
        assert len(z.pcp) == 3
        assert {p.batch for p in z.pcp} == {zone_batchsize(z.managed_pages)} == {63}
        assert mm.zones["DMA"].pcp[0].batch == 1


class TestZoneLayout2GiB:
    @pytest.fixture
    def mm(self):
        return FakeMM(MMConfig(ram="2GiB"))

    def test_zone_names(self, mm):
        """Zones are keyed by /proc/zoneinfo names; Normal exists but is empty."""
        assert list(mm.zones) == ["DMA", "DMA32", "Normal"]
        assert mm.zones["Normal"].present_pages == 0
        assert not mm.zones["Normal"].populated()

    def test_dma(self, mm):
        """DMA spans the first 16 MiB, minus the ISA hole [0x9f, 0x100), minus pfn 0."""
        z = mm.zones["DMA"]
        assert (z.zone_start_pfn, z.spanned_pages) == (0, 4096)
        assert z.present_pages == 4096 - (0x100 - 0x9F)
        assert z.managed_pages == z.present_pages - 1
        assert not mm.pfn_valid(0xA0)
        assert mm.pfn_valid(0x9E) and mm.pfn_valid(0x100)

    def test_dma32(self, mm):
        """DMA32 holds the rest; the kernel image and the memmap are not managed."""
        z = mm.zones["DMA32"]
        assert (z.zone_start_pfn, z.zone_end_pfn) == (PFN_16M, pfn(2 * GiB))
        assert z.present_pages == pfn(2 * GiB) - PFN_16M
        memmap = pfn(2 * GiB) * 64 // 4096
        kernel_image = pfn(32 * MiB)
        assert memmap == 8192
        assert z.managed_pages == z.present_pages - kernel_image - memmap

    def test_free_at_boot_equals_managed(self, mm):
        """Right after boot every managed page is free, none on pcp lists."""
        for z in mm.zones.values():
            assert z.free_pages == z.managed_pages
            assert z.pcp_pages == 0
            assert sum(n << o for o, n in enumerate(z.buddyinfo())) == z.managed_pages
        assert mm.nr_allocated_pages == 0

    def test_memmap_at_top_is_not_free(self, mm):
        """The memmap is reserved top-down from the end of RAM."""
        top = pfn(2 * GiB)
        free = mm.zones["DMA32"].free[MIGRATE_MOVABLE]
        assert free.count_range(top - 8192, top) == 0
        assert free.contains(top - 8193)
        assert free.count_range(PFN_16M, pfn(48 * MiB)) == 0   # kernel image

    def test_memory_blocks(self, mm):
        """16 online blocks of 128 MiB; block 0 mixes DMA and DMA32 so its zone is 'none'."""
        blocks = mm.memory_blocks
        assert list(blocks) == list(range(16))
        assert len(blocks) == 16
        b = blocks[15]
        assert (b.start_pfn, b.nr_pages, b.state, b.zone) == (15 * BLOCK, BLOCK, "online", "DMA32")
        assert blocks[0].zone == "none"
        with pytest.raises(KeyError):
            blocks[16]


class TestZoneLayout4GiB:
    @pytest.fixture
    def mm(self):
        return FakeMM(MMConfig(ram="4GiB"))

    def test_low_split(self, mm):
        """4 GiB of RAM: 3 GiB below the PCI hole, 1 GiB from 4 GiB up."""
        assert mm.pfn_valid(PFN_3G - 1)
        assert not mm.pfn_valid(PFN_3G)
        assert not mm.pfn_valid(PFN_4G - 1)
        assert mm.pfn_valid(PFN_4G)
        assert not mm.pfn_valid(pfn(5 * GiB))

    def test_dma32_spans_to_4g_with_the_hole(self, mm):
        """DMA32 spans [16 MiB, 4 GiB) like zone_spanned_pages_in_node; the hole is not present."""
        z = mm.zones["DMA32"]
        assert (z.zone_start_pfn, z.spanned_pages) == (PFN_16M, PFN_4G - PFN_16M)
        assert z.spanned_pages == 1044480
        assert z.present_pages == PFN_3G - PFN_16M
        assert z.managed_pages == z.present_pages - pfn(32 * MiB)

    def test_normal(self, mm):
        """Normal is [4 GiB, 5 GiB) and holds the memmap (16384 pages) at its top."""
        z = mm.zones["Normal"]
        assert (z.zone_start_pfn, z.zone_end_pfn) == (PFN_4G, pfn(5 * GiB))
        assert z.present_pages == pfn(GiB)
        assert z.managed_pages == pfn(GiB) - 16384
        assert "Movable" not in mm.zones

    def test_memory_blocks(self, mm):
        """Blocks 0..23 below the hole, 32..39 above it; the hole has no blocks."""
        ids = list(mm.memory_blocks)
        assert ids == list(range(24)) + list(range(32, 40))
        assert mm.memory_blocks[32].zone == "Normal"
        assert mm.memory_blocks[23].zone == "DMA32"
        with pytest.raises(KeyError):
            mm.memory_blocks[24]

    def test_three_and_a_half_gib_is_split(self):
        """3.5 GiB also splits at 3 GiB: 512 MiB of Normal from 4 GiB."""
        mm = FakeMM(MMConfig(ram="3584MiB"))
        z = mm.zones["Normal"]
        assert (z.zone_start_pfn, z.present_pages) == (PFN_4G, pfn(512 * MiB))
        assert mm.zones["DMA32"].present_pages == PFN_3G - PFN_16M

    def test_three_gib_is_not_split(self):
        """Below 3.5 GiB all RAM is below 4 GiB and Normal is empty."""
        mm = FakeMM(MMConfig(ram="3GiB"))
        assert mm.zones["Normal"].present_pages == 0
        assert mm.zones["DMA32"].zone_end_pfn == PFN_3G
        assert mm.zones["DMA32"].present_pages == PFN_3G - PFN_16M


class TestMovable:
    def test_carved_from_top_of_normal(self):
        """movablecore takes the top of the highest zone; the memmap lands in it."""
        mm = FakeMM(MMConfig(ram="4GiB", movablecore="512MiB"))
        normal, movable = mm.zones["Normal"], mm.zones["Movable"]
        split = PFN_4G + pfn(512 * MiB)
        assert (normal.zone_start_pfn, normal.zone_end_pfn) == (PFN_4G, split)
        assert (movable.zone_start_pfn, movable.zone_end_pfn) == (split, pfn(5 * GiB))
        assert normal.managed_pages == normal.present_pages == pfn(512 * MiB)
        assert movable.present_pages == pfn(512 * MiB)
        assert movable.managed_pages == pfn(512 * MiB) - 16384
        assert [mm.memory_blocks[i].zone for i in range(32, 40)] == ["Normal"] * 4 + ["Movable"] * 4
        assert [b.id for b in mm.memory_blocks.in_zone("Movable")] == [36, 37, 38, 39]

    def test_carved_from_dma32_on_small_machines(self):
        """Without a Normal zone, Movable comes from the top of DMA32."""
        mm = FakeMM(MMConfig(ram="2GiB", movablecore="256MiB"))
        split = pfn(2 * GiB - 256 * MiB)
        assert mm.zones["DMA32"].zone_end_pfn == split
        assert mm.zones["Movable"].zone_start_pfn == split
        assert mm.zones["Movable"].present_pages == pfn(256 * MiB)

    def test_movable_watermark_is_clamped(self):
        """ZONE_MOVABLE's min watermark is managed/1024 clamped to [32, 128]."""
        mm = FakeMM(MMConfig(ram="4GiB", movablecore="512MiB"))
        z = mm.zones["Movable"]
        assert z.wmark_min == max(32, min(128, z.managed_pages // 1024)) == 112


class TestCmaPlacement:
    def test_default_top_of_memory_below_4g(self):
        """An unbounded area goes at the top of RAM below 4 GiB, pageblock aligned."""
        mm = FakeMM(MMConfig(ram="4GiB", cma="128MiB"))
        (area,) = mm.cma_areas
        assert (area.name, area.base_pfn, area.count) == ("reserved", PFN_3G - 32768, 32768)
        z = mm.zones["DMA32"]
        assert z.free[MIGRATE_CMA].nr_free == 32768
        assert list(z.free[MIGRATE_CMA].extents()) == [(PFN_3G - 32768, PFN_3G)]
        assert z.free_cma_pages == 32768
        assert z.free_pages == z.managed_pages
        assert mm.get_pageblock_migratetype(area.base_pfn) == MIGRATE_CMA
        assert mm.get_pageblock_migratetype(area.base_pfn - 1) == MIGRATE_MOVABLE

    def test_below_memmap_on_small_machines(self):
        """On a 2 GiB machine the area sits just below the memmap reservation."""
        mm = FakeMM(MMConfig(ram="2GiB", cma="64MiB"))
        (area,) = mm.cma_areas
        assert area.base_pfn + area.count == pfn(2 * GiB) - 8192
        assert area.base_pfn % 512 == 0

    def test_bounds(self):
        """'128MiB@256MiB-1GiB' places the area top-down inside the bounds."""
        mm = FakeMM(MMConfig(ram="2GiB", cma="128MiB@256MiB-1GiB"))
        (area,) = mm.cma_areas
        assert (area.base_pfn, area.count) == (pfn(896 * MiB), 32768)

    def test_fixed_base(self):
        """'64MiB@512MiB' asks for exactly that base."""
        mm = FakeMM(MMConfig(ram="2GiB", cma="64MiB@512MiB"))
        assert mm.cma_areas[0].base_pfn == pfn(512 * MiB)

    def test_avoids_movable_and_other_areas(self):
        """Areas do not overlap each other or ZONE_MOVABLE."""
        mm = FakeMM(MMConfig(ram="2GiB", movablecore="512MiB", cma={"a": "128MiB", "b": "64MiB"}))
        a, b = mm.cma_areas
        assert (a.name, b.name) == ("a", "b")
        movable_start = mm.zones["Movable"].zone_start_pfn
        assert a.base_pfn + a.count == movable_start
        assert b.base_pfn + b.count == a.base_pfn
        assert mm.zones["DMA32"].free_cma_pages == 32768 + 16384


class TestSparse:
    def test_one_tib_machine(self):
        """A 1 TiB machine constructs with ranges, not pages, and has the right zone sizes."""
        mm = FakeMM(MMConfig(ram="1TiB"))
        normal = mm.zones["Normal"]
        high = pfn(1 << 40) - PFN_3G
        assert (normal.zone_start_pfn, normal.spanned_pages) == (PFN_4G, high)
        assert normal.present_pages == high
        memmap = pfn(1 << 40) * 64 // 4096           # 16 GiB of struct pages
        assert normal.managed_pages == high - memmap
        assert normal.free_pages == normal.managed_pages
        assert mm.zones["DMA32"].present_pages == PFN_3G - PFN_16M
        # free memory is a handful of extents, no folios exist, no contents
        for z in mm.zones.values():
            assert sum(len(fl) for fl in z.free) <= 2
        assert mm.nr_allocated_pages == 0
        assert list(mm.iter_folios()) == []
        assert len(mm.memory_blocks) == 24 + (high // BLOCK) == 8192
        assert mm.memory_blocks[8191 + 8].zone == "Normal"

    def test_one_tib_allocation_is_cheap(self):
        """Allocating on a 1 TiB machine creates only the folios asked for."""
        from pytest_pinfault.mm import GFP_KERNEL
        mm = FakeMM(MMConfig(ram="1TiB"))
        f = mm.folio_alloc(GFP_KERNEL, 9)
        assert f is not None and f.zone == "Normal"
        assert list(mm.iter_folios()) == [f]
        assert mm.nr_allocated_pages == 512


class TestZoneMigratetypesAtBoot:
    def test_everything_starts_movable(self):
        """At boot all non-CMA free memory is on the MOVABLE lists."""
        mm = FakeMM(MMConfig(ram="1GiB"))
        for z in mm.zones.values():
            assert z.free[MIGRATE_UNMOVABLE].nr_free == 0
            assert z.free[MIGRATE_RECLAIMABLE].nr_free == 0
            assert z.free[MIGRATE_MOVABLE].nr_free == z.managed_pages
