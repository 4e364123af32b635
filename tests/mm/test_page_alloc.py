"""The page allocator: gfp tables, alloc/free, zonelists, watermarks, PF_MEMALLOC_PIN,
steering, the CMA heuristics of __rmqueue, per-cpu lists, migratetype fallback, the
pressure knobs, the pcp_thp_shared_list quirk and the alloc_pages fault site."""

from __future__ import annotations

import contextlib
import math

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.mm import (GFP_ATOMIC, GFP_DMA, GFP_DMA32, GFP_HIGHUSER, GFP_HIGHUSER_MOVABLE,
                                GFP_KERNEL, GFP_TRANSHUGE, GFP_TRANSHUGE_LIGHT, GFP_USER,
                                MIGRATE_CMA, MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE,
                                MIGRATE_UNMOVABLE, PF_MEMALLOC_PIN, ZONE_DMA, ZONE_DMA32,
                                ZONE_MOVABLE, ZONE_NORMAL, Folio, Page, gfp_migratetype, gfp_t,
                                gfp_zone)
from pytest_pinfault.mm.folio import KIND_BALLOON, KIND_KERNEL

# module-level aliases: "__GFP_*" names would be mangled inside class bodies
NOFAIL = gfp_t.NOFAIL
MOVABLE = gfp_t.MOVABLE
RECLAIMABLE = gfp_t.RECLAIMABLE
HIGHMEM = gfp_t.HIGHMEM
COMP = gfp_t.COMP

MiB = 1 << 20

# 2 GiB with a big CMA area (more than half of DMA32's free memory) and ZONE_MOVABLE:
# every unconstrained movable allocation would land in CMA or ZONE_MOVABLE here.
PIN_MACHINE = MMConfig(ram="2GiB", movablecore="512MiB", cma="768MiB")


def unsafe(folio) -> bool:
    """Memory a long-term pin must never get."""
    return folio.is_cma or folio.zone == "Movable" or folio.migratetype == MIGRATE_CMA


class TestGfpTables:
    @pytest.mark.parametrize("gfp, zone", [
        (GFP_KERNEL, ZONE_NORMAL), (GFP_USER, ZONE_NORMAL), (GFP_ATOMIC, ZONE_NORMAL),
        (GFP_DMA, ZONE_DMA), (GFP_DMA32, ZONE_DMA32), (GFP_HIGHUSER, ZONE_NORMAL),
        (GFP_HIGHUSER_MOVABLE, ZONE_MOVABLE), (GFP_TRANSHUGE, ZONE_MOVABLE),
        (GFP_TRANSHUGE_LIGHT, ZONE_MOVABLE), (MOVABLE, ZONE_NORMAL), (HIGHMEM, ZONE_NORMAL),
        (GFP_DMA32 | MOVABLE, ZONE_DMA32), (GFP_DMA | MOVABLE, ZONE_DMA),
        (GFP_KERNEL | MOVABLE, ZONE_NORMAL),
    ])
    def test_gfp_zone(self, gfp, zone):
        """GFP_ZONE_TABLE: ZONE_MOVABLE needs __GFP_MOVABLE and __GFP_HIGHMEM together."""
        assert gfp_zone(gfp) == zone

    @pytest.mark.parametrize("gfp, mt", [
        (GFP_KERNEL, MIGRATE_UNMOVABLE), (GFP_ATOMIC, MIGRATE_UNMOVABLE),
        (GFP_HIGHUSER, MIGRATE_UNMOVABLE), (GFP_HIGHUSER_MOVABLE, MIGRATE_MOVABLE),
        (GFP_KERNEL | RECLAIMABLE, MIGRATE_RECLAIMABLE), (GFP_TRANSHUGE, MIGRATE_MOVABLE),
        (GFP_DMA32 | MOVABLE, MIGRATE_MOVABLE),
    ])
    def test_gfp_migratetype(self, gfp, mt):
        """gfp_migratetype picks MOVABLE, RECLAIMABLE or UNMOVABLE from the mobility bits."""
        assert gfp_migratetype(gfp) == mt

    def test_kernel_values(self):
        """The composite masks have the v6.12 bit values."""
        assert int(GFP_KERNEL) == 0xCC0
        assert int(GFP_HIGHUSER_MOVABLE) == 0x100CCA
        assert int(GFP_ATOMIC) == 0x820
        assert not GFP_TRANSHUGE_LIGHT & gfp_t.DIRECT_RECLAIM
        assert GFP_TRANSHUGE & gfp_t.DIRECT_RECLAIM and GFP_TRANSHUGE & COMP


class TestAllocFree:
    def test_alloc_pages_returns_first_page(self, fake_mm):
        """alloc_pages gives a Page of a new kernel folio with one reference."""
        page = fake_mm.alloc_pages(GFP_KERNEL, 2)
        assert isinstance(page, Page)
        folio = page.folio
        assert page.pfn == folio.pfn and folio.pfn % 4 == 0
        assert (folio.order, folio.nr_pages, folio.refcount, folio.kind) == (2, 4, 1, KIND_KERNEL)
        assert folio.zone == "Normal"
        assert fake_mm.nr_allocated_pages == 4

    def test_free_pages(self, fake_mm):
        """__free_pages drops the allocation reference and frees the block."""
        page = fake_mm.alloc_pages(GFP_KERNEL, 3)
        getattr(fake_mm, "__free_pages")(page, 3)
        assert page.folio.freed
        assert page.folio.refcount == 0
        assert fake_mm.nr_allocated_pages == 0
        assert fake_mm.pfn_to_folio(page.pfn) is None
        assert fake_mm.warnings == []

    def test_free_pages_order_mismatch_warns(self):
        """Freeing with the wrong order records a kernel warning (not an exception)."""
        mm = FakeMM(MMConfig(ram="1GiB"))
        page = mm.alloc_pages(GFP_KERNEL, 1)
        getattr(mm, "__free_pages")(page, 0)
        assert [w.site for w in mm.warnings] == ["free_pages_order_mismatch"]
        assert page.folio.freed

    def test_folio_alloc(self, fake_mm):
        """folio_alloc returns the folio itself, naturally aligned."""
        folio = fake_mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 9)
        assert isinstance(folio, Folio)
        assert folio.order == 9 and folio.pfn % 512 == 0
        assert fake_mm.pfn_to_folio(folio.pfn + 511) is folio
        fake_mm.folio_put(folio)
        assert folio.freed and fake_mm.nr_allocated_pages == 0

    def test_memory_is_back_after_free(self):
        """Free pages (buddy + per-cpu) return to their boot value after freeing."""
        mm = FakeMM(MMConfig(ram="1GiB"))
        z = mm.zones["DMA32"]
        before = z.free_pages
        folios = [mm.folio_alloc(GFP_KERNEL, o) for o in (0, 1, 3, 4, 9, 10)]
        assert z.free_pages < before
        for f in folios:
            mm.folio_put(f)
        assert z.free_pages + z.pcp_pages == before
        mm.drain_all_pages()
        assert z.free_pages == before


class TestZonelist:
    def test_order(self):
        """The zonelist runs from gfp_zone down to DMA, skipping empty zones."""
        mm = FakeMM(MMConfig(ram="4GiB", movablecore="512MiB"))
        names = lambda gfp: [z.name for z in mm._zonelist(gfp)]  # noqa: E731
        assert names(GFP_HIGHUSER_MOVABLE) == ["Movable", "Normal", "DMA32", "DMA"]
        assert names(GFP_KERNEL) == ["Normal", "DMA32", "DMA"]
        assert names(GFP_DMA32) == ["DMA32", "DMA"]
        assert names(GFP_DMA) == ["DMA"]
        small = FakeMM(MMConfig(ram="2GiB"))
        assert [z.name for z in small._zonelist(GFP_HIGHUSER_MOVABLE)] == ["DMA32", "DMA"]

    @pytest.mark.mm_config(movablecore="512MiB")
    def test_placement_by_gfp(self, fake_mm):
        """Each gfp lands in the highest zone its zonelist allows."""
        assert fake_mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0).zone == "Movable"
        assert fake_mm.folio_alloc(GFP_KERNEL, 0).zone == "Normal"
        assert fake_mm.folio_alloc(GFP_HIGHUSER, 0).zone == "Normal"
        assert fake_mm.folio_alloc(GFP_DMA32, 0).zone == "DMA32"
        assert fake_mm.folio_alloc(GFP_DMA, 0).zone == "DMA"

    def test_falls_back_to_lower_zone(self, fake_mm):
        """When Normal is full GFP_KERNEL is served from DMA32."""
        balloon = fake_mm.fill_zone("Normal")
        assert fake_mm.zones["Normal"].free_pages == 0
        assert fake_mm.folio_alloc(GFP_KERNEL, 0).zone == "DMA32"
        balloon.release()
        fake_mm.drain_all_pages()
        assert fake_mm.folio_alloc(GFP_KERNEL, 0).zone == "Normal"

    def test_never_above_gfp_zone(self, fake_mm):
        """GFP_DMA never uses DMA32 even when DMA is exhausted."""
        fake_mm.fill_zone("DMA")
        assert fake_mm.folio_alloc(GFP_DMA, 0) is None
        assert fake_mm.stats.oom == 1


class TestWatermarks:
    def test_min_free_kbytes_formula(self):
        """min_free_kbytes = int_sqrt(lowmem_kbytes * 16), lowmem excluding ZONE_MOVABLE."""
        for cfg in (MMConfig(ram="2GiB"), MMConfig(ram="4GiB", movablecore="512MiB")):
            mm = FakeMM(cfg)
            lowmem = sum(z.managed_pages for z in mm.zones.values() if z.name != "Movable")
            assert mm.min_free_kbytes == math.isqrt(lowmem * 4 * 16)
        assert FakeMM(MMConfig(ram="2GiB")).min_free_kbytes == 5700

    def test_min_free_kbytes_capped(self):
        """min_free_kbytes is capped at 262144 (a 16 TiB machine would want 524288)."""
        assert FakeMM(MMConfig(ram="16TiB")).min_free_kbytes == 262144

    def test_per_zone_watermarks(self):
        """Each lowmem zone's min is its managed share of min_free_kbytes/4; low/high add steps."""
        mm = FakeMM(MMConfig(ram="2GiB"))
        pages_min = mm.min_free_kbytes >> 2
        lowmem = sum(z.managed_pages for z in mm.zones.values())
        for z in mm.zones.values():
            tmp = pages_min * z.managed_pages // lowmem
            step = max(tmp >> 2, z.managed_pages * 10 // 10000)
            assert (z.wmark_min, z.wmark_low, z.wmark_high) == (tmp, tmp + step, tmp + 2 * step)
        assert mm.zones["DMA32"].wmark_min == 1413

    def test_allocation_fails_at_min(self):
        """With free == min in every zone an allocation fails: None and stats.oom."""
        mm = FakeMM(MMConfig(ram="1GiB"))
        dma, dma32 = mm.zones["DMA"], mm.zones["DMA32"]
        mm.fill_zone("DMA", leave=dma.wmark_min)
        mm.fill_zone("DMA32", leave=dma32.wmark_min + 1)
        assert dma32.free_pages == dma32.wmark_min + 1
        assert mm.folio_alloc(GFP_KERNEL, 1) is None        # min + 1 - 2 + 1 == min
        assert mm.stats.oom == 1
        assert mm.trace.filter("alloc_fail")[-1].fields["reason"] == "oom"
        f = mm.folio_alloc(GFP_KERNEL, 0)                    # min + 1 - 1 + 1 > min
        assert f is not None and f.zone == "DMA32"
        assert mm.stats.oom == 1
        assert mm.folio_alloc(GFP_KERNEL, 0) is None         # now below min everywhere
        assert mm.stats.oom == 2

    def test_gfp_high_may_dip_below_min(self):
        """__GFP_HIGH (GFP_ATOMIC) halves the min watermark."""
        mm = FakeMM(MMConfig(ram="1GiB"))
        for name in ("DMA", "DMA32"):
            mm.fill_zone(name, leave=mm.zones[name].wmark_min)
        assert mm.folio_alloc(GFP_KERNEL, 0) is None
        assert mm.folio_alloc(GFP_ATOMIC, 0) is not None

    def test_free_cma_does_not_count_for_unmovable(self):
        """Free CMA pages count toward the watermark only for movable requests."""
        mm = FakeMM(MMConfig(ram="1GiB", cma="256MiB"))
        dma32 = mm.zones["DMA32"]
        mm.fill_zone("DMA", leave=0)
        mm.fill_zone("DMA32", leave=65536 + dma32.wmark_min)
        assert dma32.free_cma_pages == 65536
        assert mm.folio_alloc(GFP_KERNEL, 0) is None
        f = mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0)
        assert f is not None and f.is_cma


class TestMemallocPin:
    @pytest.mark.parametrize("steer", [None, "cma", "movable", "normal"])
    @pytest.mark.parametrize("gfp", [GFP_HIGHUSER_MOVABLE, GFP_TRANSHUGE, GFP_USER | MOVABLE])
    def test_never_cma_or_movable(self, steer, gfp):
        """Under PF_MEMALLOC_PIN no allocation returns CMA or ZONE_MOVABLE memory."""
        mm = FakeMM(PIN_MACHINE)
        flags = mm.memalloc_pin_save()
        try:
            with (mm.steer(steer) if steer else contextlib.nullcontext()):
                got = [mm.folio_alloc(gfp, 0) for _ in range(300)]
                got += [mm.folio_alloc(gfp, 9) for _ in range(40)]
                got += [mm.alloc_pages(gfp, 3).folio for _ in range(20)]
        finally:
            mm.memalloc_pin_restore(flags)
        assert None not in got
        assert [f for f in got if unsafe(f)] == []
        assert all(mm.folio_is_longterm_pinnable(f) for f in got)
        assert {f.zone for f in got} <= {"DMA32", "DMA"}

    @pytest.mark.parametrize("steer, check", [
        (None, lambda f: f.zone == "Movable"),
        ("cma", lambda f: f.is_cma),
        ("movable", lambda f: f.zone == "Movable"),
    ])
    def test_same_requests_without_pin_are_unsafe(self, steer, check):
        """Control: without the flag the same requests do land in CMA / ZONE_MOVABLE."""
        mm = FakeMM(PIN_MACHINE)
        with (mm.steer(steer) if steer else contextlib.nullcontext()):
            got = [mm.folio_alloc(GFP_HIGHUSER_MOVABLE, o) for o in (0, 0, 9)]
        assert all(check(f) for f in got)
        assert not any(mm.folio_is_longterm_pinnable(f) for f in got)

    def test_current_gfp_context_clears_movable(self, fake_mm):
        """current_gfp_context drops __GFP_MOVABLE only while the flag is set."""
        assert fake_mm.current_gfp_context(GFP_HIGHUSER_MOVABLE) == int(GFP_HIGHUSER_MOVABLE)
        flags = fake_mm.memalloc_pin_save()
        assert fake_mm.current.flags & PF_MEMALLOC_PIN
        assert fake_mm.current_gfp_context(GFP_HIGHUSER_MOVABLE) == int(GFP_HIGHUSER)
        fake_mm.memalloc_pin_restore(flags)
        assert not fake_mm.current.flags & PF_MEMALLOC_PIN

    def test_nesting(self):
        """An inner save/restore pair leaves the outer scope in force."""
        mm = FakeMM(PIN_MACHINE)
        outer = mm.memalloc_pin_save()
        inner = mm.memalloc_pin_save()
        with mm.steer("cma"):
            assert not mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0).is_cma
            mm.memalloc_pin_restore(inner)
            assert mm.current.flags & PF_MEMALLOC_PIN
            assert not mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0).is_cma
            mm.memalloc_pin_restore(outer)
            assert not mm.current.flags & PF_MEMALLOC_PIN
            assert mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0).is_cma

    def test_restore_keeps_other_flags(self, fake_mm):
        """memalloc_pin_restore touches only PF_MEMALLOC_PIN."""
        fake_mm.current.flags |= 0x800
        flags = fake_mm.memalloc_pin_save()
        fake_mm.memalloc_pin_restore(flags)
        assert fake_mm.current.flags == 0x800

    def test_flag_is_per_task(self):
        """PF_MEMALLOC_PIN belongs to the task that set it."""
        mm = FakeMM(PIN_MACHINE)
        me = mm.current
        other = mm.create_task("other")
        flags = mm.memalloc_pin_save()
        try:
            mm.current = other
            assert mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0).zone == "Movable"
        finally:
            mm.current = me
        assert mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0).zone != "Movable"
        mm.memalloc_pin_restore(flags)


class TestSteer:
    def test_each_placement(self):
        """steer('cma'|'movable'|'normal') puts movable allocations there."""
        mm = FakeMM(PIN_MACHINE)
        with mm.steer("cma"):
            assert all(mm.folio_alloc(GFP_HIGHUSER_MOVABLE, o).is_cma for o in (0, 3, 9))
        with mm.steer("movable"):
            assert all(mm.folio_alloc(GFP_HIGHUSER_MOVABLE, o).zone == "Movable" for o in (0, 3, 9))
        with mm.steer("normal"):
            for o in (0, 3, 9):
                f = mm.folio_alloc(GFP_HIGHUSER_MOVABLE, o)
                assert not f.is_cma and f.zone != "Movable"
                assert mm.folio_is_longterm_pinnable(f)

    def test_unsteered_default(self):
        """Outside steer() the same request uses the normal choice again (ZONE_MOVABLE here)."""
        mm = FakeMM(PIN_MACHINE)
        with mm.steer("normal"):
            assert mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0).zone == "DMA32"
        assert mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0).zone == "Movable"

    def test_nested_and_exception_safe(self):
        """An inner steer() restores the outer one, even when the block raises."""
        mm = FakeMM(PIN_MACHINE)
        with mm.steer("cma"):
            with pytest.raises(RuntimeError):
                with mm.steer("movable"):
                    assert mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0).zone == "Movable"
                    raise RuntimeError
            assert mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0).is_cma

    def test_does_not_affect_unmovable(self):
        """Non-movable requests ignore steering."""
        mm = FakeMM(PIN_MACHINE)
        with mm.steer("cma"):
            f = mm.folio_alloc(GFP_KERNEL, 0)
        with mm.steer("movable"):
            g = mm.folio_alloc(GFP_HIGHUSER, 0)
        assert not unsafe(f) and not unsafe(g)

    def test_full_preference_falls_back(self):
        """When the preferred placement is exhausted the normal choice is used."""
        mm = FakeMM(MMConfig(ram="1GiB", cma="2MiB"))
        with mm.steer("cma"):
            got = [mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0) for _ in range(513)]
        assert [f.is_cma for f in got] == [True] * 512 + [False]
        with mm.steer("movable"):                         # no ZONE_MOVABLE on this machine
            f = mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0)
        assert f is not None and f.zone == "DMA32"

    @pytest.mark.parametrize("bad", ["dma", "CMA", "", None])
    def test_bad_name(self, fake_mm, bad):
        """An unknown placement raises ValueError naming the choices and the value."""
        with pytest.raises(ValueError) as ei:
            with fake_mm.steer(bad):
                pass
        assert str(ei.value) == f"steer: expected one of ('cma', 'movable', 'normal'), got {bad!r}"


class TestCmaHeuristic:
    def test_movable_uses_cma_when_more_than_half_free(self):
        """Free CMA > half the zone's free pages: movable requests take CMA first."""
        mm = FakeMM(MMConfig(ram="1GiB", cma="512MiB"))
        z = mm.zones["DMA32"]
        assert z.free_cma_pages > z.free_pages // 2
        assert all(mm.folio_alloc(GFP_HIGHUSER_MOVABLE, o).is_cma for o in (0, 4, 9))

    def test_movable_prefers_own_list_otherwise(self):
        """With less CMA, movable requests use the MOVABLE list."""
        mm = FakeMM(MMConfig(ram="1GiB", cma="256MiB"))
        got = [mm.folio_alloc(GFP_HIGHUSER_MOVABLE, o) for o in (0, 4, 9)]
        assert not any(f.is_cma for f in got)
        assert all(f.migratetype == MIGRATE_MOVABLE for f in got)

    def test_exact_boundary(self):
        """CMA == half is not enough; one page less free tips it (strict '>')."""
        mm = FakeMM(MMConfig(ram="1GiB", cma="256MiB"))
        z = mm.zones["DMA32"]
        mm.fill_zone("DMA32", leave=2 * 65536)          # fill takes non-CMA memory first
        assert (z.free_pages, z.free_cma_pages) == (131072, 65536)
        first = mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 4)   # order 4: straight from the buddy
        second = mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 4)
        assert (first.is_cma, second.is_cma) == (False, True)

    def test_movable_falls_back_to_cma_when_movable_list_empty(self):
        """Movable requests use CMA when no MOVABLE pages are left."""
        mm = FakeMM(MMConfig(ram="1GiB", cma="256MiB"))
        mm.fill_zone("DMA32", leave=65536)
        assert mm.zones["DMA32"].free[MIGRATE_MOVABLE].nr_free == 0
        assert mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0).is_cma

    @pytest.mark.parametrize("gfp", [GFP_KERNEL, GFP_KERNEL | RECLAIMABLE, GFP_HIGHUSER, GFP_DMA32])
    def test_unmovable_never_gets_cma(self, gfp):
        """Non-movable requests never get CMA, even when it is nearly all free memory."""
        mm = FakeMM(MMConfig(ram="1GiB", cma="768MiB"))
        z = mm.zones["DMA32"]
        got = []
        while (f := mm.folio_alloc(gfp, 9)) is not None:
            got.append(f)
        got += [mm.folio_alloc(gfp, 0) for _ in range(500)]
        assert len(got) > 100
        assert [f for f in got if f is not None and (f.is_cma or f.migratetype == MIGRATE_CMA)] == []
        assert z.free_cma_pages == 196608
        assert mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 9).is_cma


    def test_no_fallback_to_cma_for_large_unmovable_orders(self):
        """When only CMA has blocks of the order, a non-movable request fails instead."""
        mm = FakeMM(MMConfig(ram="1GiB", cma="768MiB"))
        z = mm.zones["DMA32"]
        balloons = [mm.fragment_zone(name, max_free_order=3) for name in ("DMA", "DMA32")]
        for f in [f for b in balloons for f in b.folios if f.is_cma]:
            mm.folio_put(f)                      # CMA whole again, the rest fragmented
        mm.drain_all_pages()
        assert z.free_cma_pages == 196608
        assert z.free_pages - z.free_cma_pages > 10 * z.wmark_min   # watermark is no obstacle
        for gfp in (GFP_KERNEL, GFP_KERNEL | RECLAIMABLE, GFP_HIGHUSER):
            assert mm.folio_alloc(gfp, 9) is None
            assert mm.folio_alloc(gfp, 4) is None
        assert mm.folio_alloc(GFP_KERNEL, 3) is not None
        assert mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 9).is_cma

class TestPerCpuLists:
    def test_freed_page_sits_on_pcp(self):
        """A freed order-0 page goes to the cpu's pcp list, not to NR_FREE_PAGES."""
        mm = FakeMM(MMConfig(ram="2GiB"))
        z = mm.zones["DMA32"]
        batch = z.pcp[0].batch
        f = mm.folio_alloc(GFP_KERNEL, 0)
        assert z.pcp_pages == batch - 1                 # the refill brought a batch
        assert z.free_pages == z.managed_pages - batch
        mm.folio_put(f)
        assert f.freed
        assert z.pcp_pages == batch
        assert z.free_pages == z.managed_pages - batch
        assert any(f.pfn in lst for lst in z.pcp[0].lists)
        assert not z.free[MIGRATE_UNMOVABLE].contains(f.pfn)
        mm.drain_all_pages()
        assert z.pcp_pages == 0
        assert z.free_pages == z.managed_pages
        assert z.free[MIGRATE_UNMOVABLE].contains(f.pfn)

    def test_freed_page_is_reused_lifo(self):
        """The next allocation on the same cpu gets the page just freed."""
        mm = FakeMM(MMConfig(ram="2GiB"))
        f = mm.folio_alloc(GFP_KERNEL, 0)
        pfn = f.pfn
        mm.folio_put(f)
        assert mm.folio_alloc(GFP_KERNEL, 0).pfn == pfn

    def test_lists_are_per_cpu(self):
        """A page freed on cpu 0 is not handed out on cpu 1."""
        mm = FakeMM(MMConfig(ram="2GiB"))
        f = mm.folio_alloc(GFP_KERNEL, 0)
        pfn = f.pfn
        mm.folio_put(f)
        me, other = mm.current, mm.create_task("cpu1")
        assert other.cpu == 1
        mm.current = other
        try:
            g = mm.folio_alloc(GFP_KERNEL, 0)
        finally:
            mm.current = me
        assert g.pfn != pfn
        assert mm.zones["DMA32"].pcp[1].count > 0

    def test_drain_one_zone(self):
        """drain_all_pages(zone) empties only that zone's lists."""
        mm = FakeMM(MMConfig(ram="2GiB"))
        mm.folio_put(mm.folio_alloc(GFP_KERNEL, 0))
        mm.folio_put(mm.folio_alloc(GFP_DMA, 0))
        dma, dma32 = mm.zones["DMA"], mm.zones["DMA32"]
        assert dma.pcp_pages > 0 and dma32.pcp_pages > 0
        mm.drain_all_pages(dma)
        assert dma.pcp_pages == 0 and dma32.pcp_pages > 0

    def test_high_limit_flushes(self):
        """Freeing many pages never lets a pcp list grow past its high mark."""
        mm = FakeMM(MMConfig(ram="2GiB"))
        z = mm.zones["DMA32"]
        folios = [mm.folio_alloc(GFP_KERNEL, 0) for _ in range(2000)]
        for f in folios:
            mm.folio_put(f)
            assert z.pcp[0].count < z.pcp[0].high
        assert z.free_pages + z.pcp_pages == z.managed_pages

    def test_cma_pages_go_to_the_movable_list(self):
        """A freed CMA page waits on the MOVABLE pcp list, goes to movable requests only."""
        mm = FakeMM(MMConfig(ram="2GiB", cma="256MiB"))
        z = mm.zones["DMA32"]
        with mm.steer("cma"):
            f = mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0)
        assert f.is_cma
        pfn = f.pfn
        cma_free = z.free_cma_pages
        mm.folio_put(f)
        assert pfn in z.pcp[0].lists[mm._pindex(0, MIGRATE_MOVABLE)]
        assert z.free_cma_pages == cma_free
        assert not mm.folio_alloc(GFP_KERNEL, 0).is_cma
        g = mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0)
        assert g.pfn == pfn and g.is_cma
        mm.folio_put(g)
        mm.drain_all_pages()
        assert z.free[MIGRATE_CMA].contains(pfn)
        assert z.free_cma_pages == cma_free + 1

    def test_costly_orders_bypass_pcp(self):
        """Orders 4..8 and 10 go straight to the buddy lists."""
        mm = FakeMM(MMConfig(ram="2GiB"))
        z = mm.zones["DMA32"]
        for order in (4, 8, 10):
            f = mm.folio_alloc(GFP_KERNEL, order)
            mm.folio_put(f)
            assert z.pcp_pages == 0
        assert z.free_pages == z.managed_pages


class TestFallback:
    @pytest.mark.parametrize("kernel", ["6.1", "6.17"])
    def test_unmovable_claims_a_pageblock(self, kernel):
        """An unmovable order-0 request falls back to the largest MOVABLE buddy, a
        MAX_PAGE_ORDER block, and converts both of its pageblocks (every version)."""
        mm = FakeMM(MMConfig(ram="2GiB", kernel=kernel))
        z = mm.zones["DMA32"]
        f = mm.folio_alloc(GFP_KERNEL, 0)
        assert mm.stats.pageblock_claimed == 1
        assert mm.get_pageblock_migratetype(f.pfn) == MIGRATE_UNMOVABLE
        assert f.migratetype == MIGRATE_UNMOVABLE
        head = f.pfn & ~1023
        assert [mm.get_pageblock_migratetype(head + i * 512) for i in range(2)] == [MIGRATE_UNMOVABLE] * 2
        assert mm.get_pageblock_migratetype(head - 512) == MIGRATE_MOVABLE
        # the rest of the block moved to the UNMOVABLE list, minus the pcp batch
        assert z.free[MIGRATE_UNMOVABLE].nr_free == 1024 - z.pcp[0].batch
        # later requests use the claimed block: no new claim
        for _ in range(100):
            mm.folio_alloc(GFP_KERNEL, 0)
        assert mm.stats.pageblock_claimed == 1

    def test_reclaimable_claims_for_reclaimable(self):
        """A reclaimable request claims its block as RECLAIMABLE."""
        mm = FakeMM(MMConfig(ram="2GiB"))
        f = mm.folio_alloc(GFP_KERNEL | RECLAIMABLE, 0)
        assert mm.get_pageblock_migratetype(f.pfn) == MIGRATE_RECLAIMABLE
        assert mm.stats.pageblock_claimed == 1

    def test_pageblock_order_takes_whole_blocks(self):
        """Unmovable requests of pageblock order or more convert every block they cover."""
        mm = FakeMM(MMConfig(ram="2GiB"))
        f = mm.folio_alloc(GFP_KERNEL, 10)
        assert [mm.get_pageblock_migratetype(f.pfn + i * 512) for i in range(2)] == [MIGRATE_UNMOVABLE] * 2

    def test_largest_buddy_is_claimed_first(self):
        """The fallback looks at the largest free buddy first: with the free pages at
        the bottom of the zone the MAX_PAGE_ORDER block there is converted, not the
        mostly used pageblock on top of it."""
        mm = FakeMM(MMConfig(ram="2GiB"))
        z = mm.zones["DMA32"]
        mm.fill_zone("DMA32", leave=z.wmark_min + 300)
        # the free pages left are [12288, 12288 + min + 300): the top pageblock has 177
        top_pb = (12288 + z.wmark_min + 300) // 512 * 512
        assert z.free[MIGRATE_MOVABLE].count_range(top_pb, top_pb + 512) < 256
        f = mm.folio_alloc(GFP_KERNEL, 4)
        assert 12288 <= f.pfn < 12288 + 1024
        assert mm.get_pageblock_migratetype(f.pfn) == MIGRATE_UNMOVABLE
        assert mm.get_pageblock_migratetype(top_pb) == MIGRATE_MOVABLE
        assert mm.stats.pageblock_claimed == 1

    @pytest.mark.parametrize("kernel", ["6.1", "6.17"])
    def test_small_movable_requests_claim_large_buddies(self, kernel):
        """Whether a fallback claims depends on the order of the buddy found, not the
        request's (can_steal_fallback(current_order)): a movable order-0 request that
        falls back to a free MAX_PAGE_ORDER UNMOVABLE block converts it."""
        mm = FakeMM(MMConfig(ram="1GiB", kernel=kernel))
        z = mm.zones["DMA32"]
        blocks = [mm.folio_alloc(GFP_KERNEL, 10) for _ in range(3)]   # UNMOVABLE pageblocks
        mm.fill_zone("DMA", leave=0)
        mm.fill_zone("DMA32", leave=0)
        for b in blocks:
            mm.folio_put(b)
        claimed = mm.stats.pageblock_claimed
        f = mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0)
        assert f is not None and any(b.pfn <= f.pfn < b.pfn + 1024 for b in blocks)
        assert mm.get_pageblock_migratetype(f.pfn) == MIGRATE_MOVABLE
        assert mm.stats.pageblock_claimed == claimed + 1
        assert z.free[MIGRATE_UNMOVABLE].nr_free == 2048

    @pytest.mark.parametrize("kernel", ["6.1", "6.17"])
    def test_small_movable_requests_never_claim_small_buddies(self, kernel):
        """Movable requests that find only fallback buddies below pageblock_order/2 take
        the smallest one without claiming."""
        mm = FakeMM(MMConfig(ram="1GiB", kernel=kernel))
        z = mm.zones["DMA32"]
        blocks = [mm.folio_alloc(GFP_KERNEL, 10) for _ in range(3)]   # UNMOVABLE pageblocks
        mm.fill_zone("DMA", leave=0)
        mm.fill_zone("DMA32", leave=0)
        for b in blocks:
            mm.folio_put(b)                       # order 10: straight back to the buddy
        mm.fragment_zone("DMA32", max_free_order=2)     # only order-2 buddies stay free
        assert z.free[MIGRATE_MOVABLE].nr_free == 0
        assert z.free[MIGRATE_UNMOVABLE].nr_free == z.free_pages == 1536
        claimed = mm.stats.pageblock_claimed
        f = mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 0)
        assert f is not None and any(b.pfn <= f.pfn < b.pfn + 1024 for b in blocks)
        assert mm.get_pageblock_migratetype(f.pfn) == MIGRATE_UNMOVABLE
        assert mm.stats.pageblock_claimed == claimed


class TestPressure:
    def test_fill_zone(self):
        """fill_zone leaves exactly `leave` free pages, held as balloon folios."""
        mm = FakeMM(MMConfig(ram="1GiB"))
        z = mm.zones["DMA32"]
        balloon = mm.fill_zone("DMA32", leave=1000)
        assert z.free_pages == 1000
        assert balloon.nr_pages == z.managed_pages - 1000 == mm.nr_allocated_pages
        assert {f.kind for f in balloon.folios} == {KIND_BALLOON}
        assert {f.zone for f in balloon.folios} == {"DMA32"}
        balloon.release()
        assert balloon.folios == [] and mm.nr_allocated_pages == 0
        mm.drain_all_pages()
        assert z.free_pages == z.managed_pages

    def test_balloon_context_manager(self):
        """A Balloon used as a context manager is released on exit."""
        mm = FakeMM(MMConfig(ram="1GiB"))
        with mm.fill_zone("DMA") as balloon:
            assert mm.zones["DMA"].free_pages == 0
            held = list(balloon.folios)
        assert all(f.freed for f in held)
        mm.drain_all_pages()
        assert mm.zones["DMA"].free_pages == mm.zones["DMA"].managed_pages

    def test_fill_zone_takes_cma_last(self):
        """fill_zone uses non-CMA memory before CMA memory."""
        mm = FakeMM(MMConfig(ram="1GiB", cma="128MiB"))
        mm.fill_zone("DMA32", leave=32768)
        assert mm.zones["DMA32"].free_cma_pages == 32768

    def test_fragment_zone(self):
        """After fragment_zone no free block exceeds max_free_order: bigger orders fail."""
        mm = FakeMM(MMConfig(ram="1GiB"))
        balloons = [mm.fragment_zone(name, max_free_order=2) for name in ("DMA", "DMA32")]
        for name in ("DMA", "DMA32"):
            z = mm.zones[name]
            assert z.buddyinfo()[3:] == [0] * 8
            assert 0.45 < z.free_pages / z.managed_pages < 0.55
        assert mm.folio_alloc(GFP_KERNEL, 3) is None
        assert mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 9) is None
        assert mm.folio_alloc(GFP_KERNEL, 2) is not None
        assert mm.folio_alloc(GFP_KERNEL, 0) is not None
        for b in balloons:
            b.release()
        mm.drain_all_pages()
        assert mm.folio_alloc(GFP_KERNEL, 3) is not None
        assert mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 9) is not None

    def test_bad_arguments(self, fake_mm):
        """Unknown zones and bad orders raise ValueError naming the value."""
        with pytest.raises(ValueError, match=r"fill_zone: expected a zone name .* got 'HighMem'"):
            fake_mm.fill_zone("HighMem")
        with pytest.raises(ValueError, match=r"fragment_zone: expected a zone name"):
            fake_mm.fragment_zone("nope")
        with pytest.raises(ValueError, match=r"fragment_zone: expected 0 <= max_free_order < 10, got 10"):
            fake_mm.fragment_zone("DMA32", 10)


def _thp_sequence(mm: FakeMM, rounds: int) -> list[Folio]:
    """Free a CMA THP onto the pcp list, then ask for a non-movable THP; repeat."""
    out = []
    for _ in range(rounds):
        with mm.steer("cma"):
            cma_thp = mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 9)
        assert cma_thp.is_cma
        mm.folio_put(cma_thp)
        out.append(mm.folio_alloc(GFP_KERNEL, 9))
    return out


class TestPcpThpQuirk:
    def test_shared_list_serves_cma_to_unmovable(self):
        """pcp_thp_shared_list: a CMA THP freed to pcp is handed to a non-movable request."""
        mm = FakeMM(MMConfig(ram="2GiB", cma="256MiB", quirks=("pcp_thp_shared_list",)))
        with mm.steer("cma"):
            cma_thp = mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 9)
        pfn = cma_thp.pfn
        mm.folio_put(cma_thp)
        bad = mm.folio_alloc(GFP_KERNEL, 9)
        assert bad.pfn == pfn
        assert bad.is_cma and bad.migratetype == MIGRATE_CMA
        assert not mm.folio_is_longterm_pinnable(bad)

    def test_shared_list_breaks_pin_migration_targets(self):
        """With the quirk even a PF_MEMALLOC_PIN THP allocation can get CMA (the 2024 livelock)."""
        mm = FakeMM(MMConfig(ram="2GiB", cma="256MiB", quirks=("pcp_thp_shared_list",)))
        assert _pin_thp_after_cma_thp_freed(mm).is_cma

    def test_every_round_with_quirk(self):
        """With the quirk every round of the sequence hands out CMA."""
        mm = FakeMM(MMConfig(ram="2GiB", cma="256MiB", quirks=("pcp_thp_shared_list",)))
        assert all(f.is_cma for f in _thp_sequence(mm, 10))

    def test_fixed_kernel_never_does(self):
        """Without the quirk the same sequence never gives a non-movable request CMA."""
        mm = FakeMM(MMConfig(ram="2GiB", cma="256MiB"))
        got = _thp_sequence(mm, 20)
        assert not any(f.is_cma or f.migratetype == MIGRATE_CMA for f in got)
        # and the freed CMA THP is still there for movable requests
        with mm.steer("cma"):
            cma_thp = mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 9)
        mm.folio_put(cma_thp)
        again = mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 9)
        assert again.pfn == cma_thp.pfn and again.is_cma

    def test_fixed_kernel_under_pin(self):
        """Without the quirk a PF_MEMALLOC_PIN THP allocation never gets the CMA THP."""
        mm = FakeMM(MMConfig(ram="2GiB", cma="256MiB"))
        for _ in range(10):
            target = _pin_thp_after_cma_thp_freed(mm)
            assert not target.is_cma and mm.folio_is_longterm_pinnable(target)


def _pin_thp_after_cma_thp_freed(mm):
    """Free a THP taken from CMA (it lands on the per-cpu THP list), then allocate a
    THP under PF_MEMALLOC_PIN, as a long-term pin's migration target does."""
    with mm.steer("cma"):
        cma_thp = mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 9)
    assert cma_thp.is_cma
    mm.folio_put(cma_thp)
    flags = mm.memalloc_pin_save()
    try:
        return mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 9)
    finally:
        mm.memalloc_pin_restore(flags)


class TestAllocPagesFaultSite:
    def test_armed_site_fails_next_allocation(self, fake_mm):
        """An armed alloc_pages site makes the next allocation return None, once."""
        fake_mm.faults.arm("alloc_pages")
        assert fake_mm.alloc_pages(GFP_KERNEL, 0) is None
        assert fake_mm.folio_alloc(GFP_KERNEL, 0) is not None
        (rec,) = fake_mm.faults.fired
        assert (rec.site, rec.occurrence, rec.errno) == ("alloc_pages", 1, -12)
        assert rec.context["order"] == 0
        assert fake_mm.stats.oom == 0
        assert fake_mm.trace.filter("alloc_fail")[-1].fields["reason"] == "fault"

    def test_nofail_is_never_failed(self, fake_mm):
        """__GFP_NOFAIL allocations bypass the site; the arming stays for the next one."""
        fake_mm.faults.arm("alloc_pages")
        assert fake_mm.folio_alloc(GFP_KERNEL | NOFAIL, 0) is not None
        assert fake_mm.alloc_pages(GFP_KERNEL | NOFAIL, 3) is not None
        assert fake_mm.faults.fired == []
        assert fake_mm.folio_alloc(GFP_KERNEL, 0) is None

    def test_persistent_and_filtered(self, fake_mm):
        """times=-1 fails every matching hit; a predicate filters by order."""
        arming = fake_mm.faults.arm("alloc_pages", times=-1, predicate=lambda ctx: ctx["order"] == 9)
        assert fake_mm.folio_alloc(GFP_KERNEL, 0) is not None
        assert [fake_mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 9) for _ in range(3)] == [None] * 3
        fake_mm.faults.disarm(arming)
        assert fake_mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 9) is not None

    def test_nth(self, fake_mm):
        """nth=3 lets two allocations through and fails the third."""
        fake_mm.faults.arm("alloc_pages", nth=3)
        got = [fake_mm.folio_alloc(GFP_KERNEL, 0) for _ in range(4)]
        assert [g is None for g in got] == [False, False, True, False]


class TestFallbackSearch:
    """page_alloc._highest_block_per_order: the fallback's view of a free list as buddy
    blocks, bounded to the highest FALLBACK_WINDOW extents."""

    def _list(self):
        from pytest_pinfault.mm.mmzone import FreeList
        fl = FreeList()
        fl.put(1 << 20, 1 << 12)                          # four MAX_PAGE_ORDER blocks, lowest
        for i in range(1000):                             # then 1000 separate order-1 blocks
            fl.put((1 << 22) + 4 * i, 2)
        fl.put((1 << 23) + 3, 13)                        # 3..16: blocks of order 0, 2, 3 (+ order 0)
        return fl

    def test_decomposition_and_bounds(self):
        from pytest_pinfault.mm.page_alloc import _highest_block_per_order
        fl = self._list()
        base = 1 << 23
        # [base+3, base+16) = 1 @3, 4 @4, 8 @8: orders 0, 2, 3
        assert _highest_block_per_order(fl, 0, base, base + 512) == {0: base + 3, 2: base + 4, 3: base + 8}
        assert _highest_block_per_order(fl, 3, base, base + 512) == {3: base + 8}
        # a sub-range cuts the extent: [base+5, base+9) = 1 @5, 2 @6, 1 @8
        assert _highest_block_per_order(fl, 0, base + 5, base + 9) == {0: base + 8, 1: base + 6}
        whole = _highest_block_per_order(fl, 0, 0, 1 << 62)
        assert whole[10] == (1 << 20) + 3 * 1024 and whole[1] == (1 << 22) + 4 * 999

    def test_window_stops_the_search(self):
        """Past the window the lower extents are not looked at (the MAX_PAGE_ORDER
        blocks at the bottom are not found), unless nothing found yet holds the request."""
        from pytest_pinfault.mm.page_alloc import FALLBACK_WINDOW, _highest_block_per_order
        fl = self._list()
        near = _highest_block_per_order(fl, 0, 0, 1 << 62, FALLBACK_WINDOW)
        assert 10 not in near and set(near) == {0, 1, 2, 3}
        assert _highest_block_per_order(fl, 5, 0, 1 << 62, FALLBACK_WINDOW) == {10: (1 << 20) + 3 * 1024}
