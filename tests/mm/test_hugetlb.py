"""hugetlb pools: boot-time pools and their placement, hstate lookup, dequeue under
PF_MEMALLOC_PIN, temporary migration targets, and dissolving free pool folios."""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.mm import GFP_HIGHUSER_MOVABLE, ConfigError
from pytest_pinfault.mm.folio import KIND_HUGETLB, PG_hugetlb_temporary

MiB, GiB = 1 << 20, 1 << 30

# a 2 MiB pool wholly in ZONE_MOVABLE (no pinnable pool folio exists)
MOVABLE_POOL = MMConfig(ram="4GiB", movablecore="512MiB", hugetlb={"2MiB": 4})


def counters(h):
    return (h.nr_huge_pages, h.free_huge_pages, h.resv_huge_pages, h.surplus_huge_pages)


class TestBootPools:
    def test_counts(self):
        """hugetlb={'2MiB': 16, '1GiB': 1} gives full, free, unreserved pools."""
        mm = FakeMM(MMConfig(ram="4GiB", hugetlb={"2MiB": 16, "1GiB": 1}))
        h2, h1 = mm.hstate("2MiB"), mm.hstate("1GiB")
        assert counters(h2) == (16, 16, 0, 0)
        assert counters(h1) == (1, 1, 0, 0)
        assert h2.available == 16
        assert mm.nr_allocated_pages == 16 * 512 + 262144

    def test_pool_folios(self):
        """Pool folios are free hugetlb folios of the pool's order, naturally aligned."""
        mm = FakeMM(MMConfig(ram="4GiB", hugetlb={"2MiB": 3, "1GiB": 1}))
        for size, order in (("2MiB", 9), ("1GiB", 18)):
            h = mm.hstate(size)
            for f in h.free_list:
                assert (f.kind, f.order, f.refcount, f.hstate) == (KIND_HUGETLB, order, 0, h)
                assert f.pfn % (1 << order) == 0
                assert mm.folio_test_hugetlb(f)
        (giga,) = mm.hstate("1GiB").free_list
        assert mm.pfn_to_folio(giga.pfn + 12345) is giga

    def test_hstate_fields(self):
        """hstate size helpers follow the kernel's."""
        mm = FakeMM(MMConfig(ram="2GiB"))
        h2, h1 = mm.hstate("2MiB"), mm.hstate("1GiB")
        assert (h2.size, h2.name, h2.huge_page_order(), h2.huge_page_shift(), h2.pages_per_huge_page()) == (
            2 * MiB, "hugepages-2048kB", 9, 21, 512)
        assert (h1.size, h1.name, h1.huge_page_order(), h1.pages_per_huge_page()) == (
            GiB, "hugepages-1048576kB", 18, 262144)
        assert counters(h2) == counters(h1) == (0, 0, 0, 0)

    def test_movable_first(self):
        """With movablecore the 2 MiB pool fills ZONE_MOVABLE first, then Normal."""
        mm = FakeMM(MMConfig(ram="4GiB", movablecore="512MiB", hugetlb={"2MiB": 230}))
        zones = [f.zone for f in mm.hstate("2MiB").free_list]
        k = zones.count("Movable")
        assert k > 200
        assert zones == ["Movable"] * k + ["Normal"] * (230 - k)
        assert mm.zones["Movable"].free_pages < 1024

    def test_cma_when_cma_dominates(self):
        """htlb_alloc_mask is movable: with CMA over half the free memory the pool lands in CMA."""
        mm = FakeMM(MMConfig(ram="1GiB", cma="512MiB", hugetlb={"2MiB": 8}))
        assert all(f.is_cma for f in mm.hstate("2MiB").free_list)

    def test_short_boot_pool(self):
        """Asking for more than fits allocates what it can and logs the kernel's message."""
        mm = FakeMM(MMConfig(ram="1GiB", hugetlb={"2MiB": 1000}))
        h = mm.hstate("2MiB")
        assert 400 < h.nr_huge_pages < 1000
        (ev,) = mm.trace.filter("hugetlb_boot_short")
        assert ev.fields["got"] == h.nr_huge_pages
        assert ev.fields["message"] == (f"HugeTLB: allocating 1000 of page size 2048kB failed.  "
                                        f"Only allocated {h.nr_huge_pages} hugepages.")


class TestHstateLookup:
    def test_sizes(self):
        """hstate() takes strings or bytes; no argument means the default size."""
        mm = FakeMM(MMConfig(ram="2GiB"))
        assert mm.hstate() is mm.hstate("2MiB") is mm.hstate(2 * MiB)
        assert mm.hstate("1GiB") is mm.hstate(GiB)
        assert mm.hstate("1GiB") is not mm.hstate("2MiB")

    def test_default_size(self):
        """default_hugepagesz='1GiB' changes what hstate() returns."""
        mm = FakeMM(MMConfig(ram="2GiB", default_hugepagesz="1GiB"))
        assert mm.hstate().size == GiB

    @pytest.mark.parametrize("bad", ["4MiB", 4096, "16GiB"])
    def test_unsupported_size(self, bad):
        """A size without a pool raises ValueError naming it."""
        mm = FakeMM(MMConfig(ram="2GiB"))
        with pytest.raises(ValueError) as ei:
            mm.hstate(bad)
        assert str(ei.value) == f"hstate: expected a huge page size of 2MiB or 1GiB, got {bad!r}"

    def test_unparsable_size(self):
        """A non-size raises ConfigError (a ValueError) naming 'hstate'."""
        mm = FakeMM(MMConfig(ram="2GiB"))
        with pytest.raises(ConfigError, match=r"^hstate: expected a size .*got 'huge'$"):
            mm.hstate("huge")


class TestDequeue:
    def test_without_pin_takes_first_free(self):
        """dequeue_hugetlb_folio takes a free folio (ZONE_MOVABLE is fine) with one reference."""
        mm = FakeMM(MMConfig(ram="4GiB", movablecore="512MiB", hugetlb={"2MiB": 230}))
        h = mm.hstate("2MiB")
        f = mm.dequeue_hugetlb_folio(h, GFP_HIGHUSER_MOVABLE)
        assert f.zone == "Movable" and f.refcount == 1
        assert f not in h.free_list
        assert counters(h) == (230, 229, 0, 0)

    def test_under_pin_only_pinnable(self):
        """Under PF_MEMALLOC_PIN only long-term pinnable pool folios are dequeued."""
        mm = FakeMM(MMConfig(ram="4GiB", movablecore="512MiB", hugetlb={"2MiB": 230}))
        h = mm.hstate("2MiB")
        nr_movable = sum(f.zone == "Movable" for f in h.free_list)
        flags = mm.memalloc_pin_save()
        try:
            got = [mm.dequeue_hugetlb_folio(h, GFP_HIGHUSER_MOVABLE) for _ in range(230 - nr_movable)]
            assert mm.dequeue_hugetlb_folio(h, GFP_HIGHUSER_MOVABLE) is None
        finally:
            mm.memalloc_pin_restore(flags)
        assert all(f.zone == "Normal" and mm.folio_is_longterm_pinnable(f) for f in got)
        assert h.free_huge_pages == nr_movable
        assert all(f.zone == "Movable" for f in h.free_list)

    def test_under_pin_skips_cma(self):
        """A pool in CMA has nothing to give under PF_MEMALLOC_PIN."""
        mm = FakeMM(MMConfig(ram="1GiB", cma="512MiB", hugetlb={"2MiB": 4}))
        h = mm.hstate("2MiB")
        flags = mm.memalloc_pin_save()
        assert mm.dequeue_hugetlb_folio(h, GFP_HIGHUSER_MOVABLE) is None
        mm.memalloc_pin_restore(flags)
        assert counters(h) == (4, 4, 0, 0)
        assert mm.dequeue_hugetlb_folio(h, GFP_HIGHUSER_MOVABLE).is_cma


class TestAllocHugetlbFolioNodemask:
    def test_pool_folio_when_available(self):
        """Without constraints a free unreserved pool folio is used."""
        mm = FakeMM(MOVABLE_POOL)
        h = mm.hstate("2MiB")
        f = mm.alloc_hugetlb_folio_nodemask(h, 0, None, GFP_HIGHUSER_MOVABLE)
        assert not f.test(PG_hugetlb_temporary)
        assert counters(h) == (4, 3, 0, 0)

    def test_temporary_under_pin(self):
        """Under PF_MEMALLOC_PIN a temporary folio is made; freeing it restores the pool."""
        mm = FakeMM(MOVABLE_POOL)
        h = mm.hstate("2MiB")
        allocated = mm.nr_allocated_pages
        flags = mm.memalloc_pin_save()
        try:
            f = mm.alloc_hugetlb_folio_nodemask(h, 0, None, GFP_HIGHUSER_MOVABLE)
        finally:
            mm.memalloc_pin_restore(flags)
        assert f.test(PG_hugetlb_temporary)
        assert (f.kind, f.order, f.hstate, f.refcount) == (KIND_HUGETLB, 9, h, 1)
        assert f.zone == "Normal" and mm.folio_is_longterm_pinnable(f)
        assert counters(h) == (5, 4, 0, 0)       # counted in nr_huge_pages, not as surplus
        mm.folio_put(f)
        assert f.freed
        assert counters(h) == (4, 4, 0, 0)
        assert f not in h.free_list and len(h.free_list) == 4
        assert mm.nr_allocated_pages == allocated
        assert mm.warnings == []

    def test_temporary_when_all_reserved(self):
        """Reserved free folios are not taken: a temporary one is allocated instead."""
        mm = FakeMM(MOVABLE_POOL)
        h = mm.hstate("2MiB")
        h.resv_huge_pages = 4
        f = mm.alloc_hugetlb_folio_nodemask(h, 0, None, GFP_HIGHUSER_MOVABLE)
        assert f.test(PG_hugetlb_temporary)
        assert counters(h) == (5, 4, 4, 0)
        mm.folio_put(f)
        assert counters(h) == (4, 4, 4, 0)

    def test_allocation_failure(self):
        """When the buddy allocator fails too the result is None and nothing changes."""
        mm = FakeMM(MOVABLE_POOL)
        h = mm.hstate("2MiB")
        mm.faults.arm("alloc_pages")
        flags = mm.memalloc_pin_save()
        assert mm.alloc_hugetlb_folio_nodemask(h, 0, None, GFP_HIGHUSER_MOVABLE) is None
        mm.memalloc_pin_restore(flags)
        assert counters(h) == (4, 4, 0, 0)

    def test_pool_folio_freed_returns_to_pool(self):
        """A non-temporary folio goes back to the free list when its last reference drops."""
        mm = FakeMM(MOVABLE_POOL)
        h = mm.hstate("2MiB")
        f = mm.alloc_hugetlb_folio_nodemask(h, 0, None, GFP_HIGHUSER_MOVABLE)
        f.write(0, b"secret")
        mm.folio_put(f)
        assert not f.freed and f in h.free_list
        assert counters(h) == (4, 4, 0, 0)
        assert f.read(0, 6) == bytes(6)


class TestDissolve:
    def test_dissolve_range(self):
        """Free pool folios inside the range go back to the buddy allocator."""
        mm = FakeMM(MMConfig(ram="2GiB", hugetlb={"2MiB": 8}))
        h = mm.hstate("2MiB")
        z = mm.zones["DMA32"]
        pfns = sorted(f.pfn for f in h.free_list)
        lo, hi = pfns[2], pfns[5] + 512                  # four of the eight
        before = z.free_pages + z.pcp_pages
        assert mm.dissolve_free_hugetlb_folios(lo, hi) == 0
        assert counters(h) == (4, 4, 0, 0)
        assert sorted(f.pfn for f in h.free_list) == pfns[:2] + pfns[6:]
        assert all(mm.pfn_to_folio(p) is None for p in pfns[2:6])
        assert z.free_pages + z.pcp_pages == before + 4 * 512

    def test_in_use_folios_stay(self):
        """In-use pool folios are not dissolved."""
        mm = FakeMM(MMConfig(ram="2GiB", hugetlb={"2MiB": 2}))
        h = mm.hstate("2MiB")
        used = mm.dequeue_hugetlb_folio(h, GFP_HIGHUSER_MOVABLE)
        assert mm.dissolve_free_hugetlb_folios(0, 1 << 20) == 0
        assert counters(h) == (1, 0, 0, 0)
        assert not used.freed and mm.pfn_to_folio(used.pfn) is used

    def test_reservations_make_it_busy(self):
        """Dissolving a folio a reservation needs fails with -EBUSY."""
        mm = FakeMM(MMConfig(ram="2GiB", hugetlb={"2MiB": 2}))
        h = mm.hstate("2MiB")
        h.resv_huge_pages = 2
        assert mm.dissolve_free_hugetlb_folios(0, 1 << 20) == -errno.EBUSY
        assert counters(h) == (2, 2, 2, 0)
        h.resv_huge_pages = 1
        assert mm.dissolve_free_hugetlb_folios(0, 1 << 20) == -errno.EBUSY
        assert counters(h) == (1, 1, 1, 0)

    def test_empty_range(self):
        """A range without pool folios changes nothing and returns 0."""
        mm = FakeMM(MMConfig(ram="2GiB", hugetlb={"2MiB": 2}))
        assert mm.dissolve_free_hugetlb_folios(0, 4096) == 0
        assert counters(mm.hstate("2MiB")) == (2, 2, 0, 0)

    def test_gigantic(self):
        """A free 1 GiB folio dissolves straight back to the buddy lists."""
        mm = FakeMM(MMConfig(ram="4GiB", hugetlb={"1GiB": 1}))
        (giga,) = mm.hstate("1GiB").free_list
        z = mm.zones["DMA32"]
        before = z.free_pages
        assert mm.dissolve_free_hugetlb_folios(giga.pfn, giga.pfn + (1 << 18)) == 0
        assert giga.freed
        assert z.free_pages == before + (1 << 18) == z.managed_pages
        assert mm.nr_allocated_pages == 0
