"""MMConfig(kernel=...): the version field, the quirks a version implies, quirks that
contradict a version, functions absent from older versions, and the hugetlb handling of
contiguous allocation (docs/kernel-map.md, "Kernel versions").

Kernel sources: 6.1.192 and 6.12.118 (Debian's linux-source packages), v6.17 mainline."""

from __future__ import annotations

import copy
import errno
import pickle

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.mm import (FOLL_LONGTERM, GFP_HIGHUSER_MOVABLE, GFP_KERNEL, MIGRATE_MOVABLE,
                                MIGRATE_UNMOVABLE, MAP_SHARED, MFD_HUGETLB, MIGRATE_CMA, PROT_READ,
                                PROT_WRITE, ConfigError)
from pytest_pinfault.mm.config import DEFAULT_KERNEL, KERNEL_QUIRKS, KERNELS, QUIRK_KERNELS, QUIRKS
from pytest_pinfault.mm.folio import KIND_HUGETLB, PG_lru
from pytest_pinfault.mm.versions import SINCE

from .test_gup import anon, assert_nothing_held, machine

MiB = 1 << 20


class TestKernelField:
    def test_default_is_today(self):
        """The default machine is v6.17 and has every function."""
        cfg = MMConfig()
        assert cfg.kernel == DEFAULT_KERNEL == "6.17"
        k = FakeMM(cfg)
        assert all(hasattr(k, name) for name in SINCE)

    @pytest.mark.parametrize("bad", ["5.4", "6.2", "6.12.118", "v6.12", 6.12, None, ""])
    def test_unknown_version(self, bad):
        """Anything but one of KERNELS is refused, naming the field and the accepted values."""
        with pytest.raises(ConfigError, match=r"^kernel: expected one of '6.1', '6.6', '6.12', '6.17', got "):
            MMConfig(kernel=bad)

    def test_versions_compare_numerically(self):
        """kernel_at_least compares as numbers: 6.12 is newer than 6.6."""
        assert MMConfig(kernel="6.12").kernel_at_least("6.6")
        assert not MMConfig(kernel="6.6").kernel_at_least("6.12")
        assert MMConfig(kernel="6.1").kernel_at_least("6.1")

    def test_replace_copy_pickle_keep_the_version(self):
        """replace(), with_seed(), copy and pickle keep the version and what it implies."""
        cfg = MMConfig(kernel="6.12")
        for other in (cfg.replace(ram="2GiB"), cfg.with_seed(7), copy.copy(cfg), pickle.loads(pickle.dumps(cfg))):
            assert other.kernel == "6.12" and other.has_quirk("gup_drain_on_unexpected_ref_only")
        assert cfg.replace(kernel="6.17").has_quirk("gup_drain_on_unexpected_ref_only") is False

    def test_tables_cover_every_version_and_quirk(self):
        """Every version has its implied quirks, every quirk its versions."""
        assert set(KERNEL_QUIRKS) == set(KERNELS)
        assert set(QUIRK_KERNELS) == set(QUIRKS)
        for kv, implied in KERNEL_QUIRKS.items():
            assert all(kv in QUIRK_KERNELS[q] for q in implied)


class TestQuirksComposeWithVersion:
    def test_version_implies_its_quirks(self):
        """6.12 implies the 6.12.y drain rule; the other versions imply none."""
        assert MMConfig(kernel="6.12").has_quirk("gup_drain_on_unexpected_ref_only")
        for kv in ("6.1", "6.6", "6.17"):
            assert not MMConfig(kernel=kv).has_quirk("gup_drain_on_unexpected_ref_only")
        # implied quirks are not written into the explicit field
        assert MMConfig(kernel="6.12").quirks == ()

    def test_explicit_quirk_on_top_of_version(self):
        """An explicit quirk of the version's history composes with it."""
        cfg = MMConfig(kernel="6.1", quirks=("pcp_thp_shared_list",))
        assert cfg.has_quirk("pcp_thp_shared_list") and FakeMM(cfg)._pcp_thp_shared
        cfg = MMConfig(kernel="6.12", quirks=("gup_drain_on_unexpected_ref_only",))
        assert cfg.quirks == ("gup_drain_on_unexpected_ref_only",)

    def test_default_accepts_every_quirk(self):
        """On the default version a quirk emulates history, as before versions existed."""
        assert MMConfig(quirks=tuple(QUIRKS)).has_quirk("gup_keep_pins_on_isolation_failure")

    @pytest.mark.parametrize("kernel,quirk", [
        ("6.12", "pcp_thp_shared_list"),                  # v6.0..v6.9 only
        ("6.1", "gup_keep_pins_on_isolation_failure"),    # pre-v5.13
        ("6.6", "gup_keep_pins_on_isolation_failure"),
        ("6.1", "gup_drain_on_unexpected_ref_only"),      # 6.1.192 compares with + 1
    ])
    def test_contradiction_names_both(self, kernel, quirk):
        """A quirk the version's history cannot have is a ConfigError naming both."""
        with pytest.raises(ConfigError) as e:
            MMConfig(kernel=kernel, quirks=(quirk,))
        msg = str(e.value)
        assert msg.startswith(f"quirks: {quirk!r} contradicts kernel={kernel!r}")


@pytest.mark.parametrize("kernel", ["6.1", "6.6"])
def test_shmem_mthp_contradicts_versions_before_6_11(kernel):
    """hugepages-<size>kB/shmem_enabled (mm/shmem.c:thpsize_shmem_enabled_store) exists
    from v6.11: 6.12.118 has it, 6.1.192 not."""
    with pytest.raises(ConfigError, match=rf"^shmem_mthp: contradicts kernel='{kernel}'"):
        MMConfig(kernel=kernel, shmem_mthp={"64KiB": "always"})
    assert MMConfig(kernel=kernel).shmem_mthp == {}
    assert MMConfig(kernel="6.12", shmem_mthp={"64KiB": "always"}).shmem_mthp


class TestDrainByVersion:
    """mm/gup.c:collect_longterm_unpinnable_folios: 6.1.192 and v6.17 compare a small
    folio's count with folio_expected_ref_count() + 1 (a pinned folio never matches:
    both drains run); 6.12.118 adds pin_refs (GUP_PIN_COUNTING_BIAS) and drains only on
    an unexpected reference."""

    @pytest.mark.parametrize("kernel,drains", [("6.1", 1), ("6.6", 1), ("6.12", 0), ("6.17", 1)])
    def test_drain_without_unexpected_reference(self, kernel, drains):
        k = machine(thp="never", kernel=kernel)
        addr = anon(k, 4, where="cma")
        k.lru_add_drain_all()
        before = k.stats.lru_add_drain_all
        pages: list = []
        assert k.pin_user_pages(addr, 4, FOLL_LONGTERM, pages) == 4
        assert k.stats.lru_add_drain_all - before == drains
        assert not any(p.folio.is_cma for p in pages)
        k.unpin_user_pages(pages, 4)
        assert_nothing_held(k)


class TestAbsentFunctions:
    @pytest.mark.parametrize("kernel", KERNELS)
    def test_presence_follows_since(self, kernel):
        """A function exists from the version that added it on; before, looking it up is
        an AttributeError naming the function, the configured and the adding version."""
        k = FakeMM(MMConfig(kernel=kernel))
        key = tuple(map(int, kernel.split(".")))
        for name, (since, where, _) in SINCE.items():
            present = key >= tuple(map(int, since.split(".")))
            assert hasattr(k, name) is present, (kernel, name)
            if not present:
                with pytest.raises(AttributeError, match=rf"no {name} with kernel='{kernel}': {where}:{name} "
                                                         rf"was added in .*\(kernel >= {since}\)"):
                    getattr(k, name)

    def test_memfd_pin_folios_by_version(self):
        """memfd_pin_folios (v6.11) is absent on 6.1 and 6.6, present on 6.12 (6.12.118
        exports it) and 6.17."""
        assert [hasattr(FakeMM(MMConfig(kernel=kv)), "memfd_pin_folios") for kv in KERNELS] == [
            False, False, True, True]

    def test_class_attribute_and_instance_override(self):
        """The class still has the function (documentation, introspection), and an
        instance attribute of the same name wins (monkeypatching works)."""
        assert FakeMM.memfd_pin_folios.__name__ == "memfd_pin_folios"
        k = FakeMM(MMConfig(kernel="6.1"))
        k.memfd_pin_folios = lambda *a: -errno.ENOSYS
        assert k.memfd_pin_folios() == -errno.ENOSYS


# ----------------------------------------------------------------------- item 6
POOL = dict(ram="1GiB", cma="512MiB", hugetlb={"2MiB": 8})    # the whole pool lands in CMA


def _in_use_hugetlb(k):
    """Fault one hugetlb page of a memfd (a pool folio in CMA) and write to it."""
    f = k.memfd_create("guest", MFD_HUGETLB)
    assert f.ftruncate(2 * MiB) == 0
    mm = k.current.mm
    addr = mm.mmap(2 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, file=f)
    assert mm.write(addr, b"guest") == 5
    (folio,) = [x for x in k.iter_folios() if x.kind == KIND_HUGETLB and x.refcount]
    assert folio.is_cma
    return f, addr, folio


class TestHugetlbInContiguousRange:
    """alloc_contig_range over hugetlb pool folios.

    isolate_migratepages_block -> isolate_or_dissolve_huge_page (mm/compaction.c,
    mm/hugetlb.c; v5.13+, read in 6.1.192 and 6.12.118): a *free* pool folio found
    while isolating is replaced by a fresh one and freed; an in-use one is isolated and
    migrated; a gigantic one makes the call -ENOMEM.  After migration, the migrated
    folio's source goes back to the pool -- inside the range.  From v6.14 (and in 6.12.y,
    6.12.118) alloc_contig_range calls replace_free_hugepage_folios() before
    test_pages_isolated(); 6.1.192 does not, so the range stays busy (-EBUSY)."""

    @pytest.mark.parametrize("kernel", KERNELS)
    def test_free_pool_folio_is_replaced(self, kernel):
        """Every version: a free pool folio in the range no longer makes it busy (the
        model used to answer -EBUSY); the pool keeps its size."""
        k = FakeMM(MMConfig(kernel=kernel, **POOL))
        h = k.hstate("2MiB")
        victim = h.free_list[0]
        pfn = victim.pfn
        assert k.alloc_contig_range(pfn, pfn + 512, MIGRATE_CMA) == 0
        assert victim.freed and victim not in h.free_list
        assert (h.nr_huge_pages, h.free_huge_pages) == (8, 8)
        assert all(not pfn <= f.pfn < pfn + 512 for f in h.free_list)
        assert k.trace.filter("hugetlb_replace")
        k.free_contig_range(pfn, 512)

    @pytest.mark.parametrize("kernel,expect", [("6.1", -errno.EBUSY), ("6.6", -errno.EBUSY),
                                               ("6.12", 0), ("6.17", 0)])
    def test_migrated_in_use_folio_leaves_pool_folio_behind(self, kernel, expect):
        """An in-use hugetlb folio migrates to another pool folio; its source goes back
        to the pool inside the range: busy before replace_free_hugepage_folios (6.1),
        replaced and allocated from 6.12.y/v6.14 on.  The data moves either way."""
        k = FakeMM(MMConfig(kernel=kernel, **POOL))
        h = k.hstate("2MiB")
        _, addr, used = _in_use_hugetlb(k)
        pfn = used.pfn
        assert k.alloc_contig_range(pfn, pfn + 512, MIGRATE_CMA) == expect
        assert k.current.mm.read(addr, 5) == b"guest"
        assert k.current.mm.lookup(addr)[0] is not used
        assert (h.nr_huge_pages, h.free_huge_pages) == (8, 7)
        in_range = [f for f in h.free_list if pfn <= f.pfn < pfn + 512]
        assert len(in_range) == (1 if expect else 0)
        if expect == 0:
            k.free_contig_range(pfn, 512)
        assert k.warnings == []

    def test_cma_alloc_of_whole_area_with_pool(self):
        """cma_alloc over an area holding a hugetlb pool succeeds once the pool can be
        replaced elsewhere (6.17): the replacements come from ZONE_NORMAL."""
        k2 = FakeMM(MMConfig(ram="1GiB", cma="512MiB", hugetlb={"2MiB": 4}))
        h, area = k2.hstate("2MiB"), k2.cma_areas[0]
        assert all(f.is_cma for f in h.free_list)
        page = k2.cma_alloc(area, area.count, 0)
        assert page is not None
        assert not any(f.is_cma for f in h.free_list) and h.free_huge_pages == 4
        assert {f.zone for f in h.free_list} <= {"Normal", "DMA32", "DMA"}
        k2.cma_release(area, page, area.count)

    def test_no_replacement_memory_is_enomem(self):
        """No memory for the replacement: -ENOMEM, the pool folio stays in the pool."""
        k = FakeMM(MMConfig(**POOL))
        h = k.hstate("2MiB")
        victim = h.free_list[0]
        balloons = [k.fill_zone(z.name) for z in k.zones.values() if z.present_pages]
        assert k.alloc_contig_range(victim.pfn, victim.pfn + 512, MIGRATE_CMA) == -errno.ENOMEM
        assert victim in h.free_list and not victim.freed
        assert (h.nr_huge_pages, h.free_huge_pages) == (8, 8)
        for b in balloons:
            b.release()
        assert k.alloc_contig_range(victim.pfn, victim.pfn + 512, MIGRATE_CMA) == 0

    def test_gigantic_folio_is_enomem(self):
        """A 1 GiB pool folio in the range: isolate_or_dissolve_huge_page fences off
        gigantic folios with -ENOMEM, and alloc_contig_range gives up at once."""
        k = FakeMM(MMConfig(ram="4GiB", hugetlb={"1GiB": 1}))
        (giga,) = k.hstate("1GiB").free_list
        assert k.alloc_contig_range(giga.pfn, giga.pfn + 512) == -errno.ENOMEM
        assert giga in k.hstate("1GiB").free_list and not giga.freed

    def test_isolate_or_dissolve_returns(self):
        """The function itself: 0 for a non-hugetlb folio, isolation of an in-use one,
        -ENOMEM for a gigantic one."""
        k = FakeMM(MMConfig(kernel="6.12", **POOL))
        _, _, used = _in_use_hugetlb(k)
        lst: list = []
        assert k.isolate_or_dissolve_huge_page(k.zero_folio, lst) == 0 and lst == []
        assert k.isolate_or_dissolve_huge_page(used, lst) == 0 and lst == [used]
        k.putback_movable_pages(lst)
        g = FakeMM(MMConfig(ram="4GiB", hugetlb={"1GiB": 1}))
        assert g.isolate_or_dissolve_huge_page(g.hstate("1GiB").free_list[0], []) == -errno.ENOMEM
        # another machine's folio: a recorded warning, nothing done
        assert k.isolate_or_dissolve_huge_page(g.hstate("1GiB").free_list[0], []) == 0
        assert [w.site for w in k.warnings] == ["foreign_object"]

    def test_replace_free_hugepage_folios_absent_before_6_12(self):
        """The 6.1 branch has no replace_free_hugepage_folios (6.1.192)."""
        assert not hasattr(FakeMM(MMConfig(kernel="6.1")), "replace_free_hugepage_folios")
        k = FakeMM(MMConfig(kernel="6.12", **POOL))
        h = k.hstate("2MiB")
        assert k.replace_free_hugepage_folios(0, 1 << 40) == 0
        assert (h.nr_huge_pages, h.free_huge_pages) == (8, 8)



class TestUnpinNullEntries:
    """mm/gup.c:unpin_user_pages(_dirty_lock): v6.13 skips NULL entries; 6.12.118 skips
    them in unpin_user_pages only; 6.1.192 has no check (page_folio(NULL) oopses), which
    the model records as a null_pointer_dereference warning."""

    @pytest.mark.parametrize("kernel,dirty,warns", [
        ("6.1", False, True), ("6.6", False, True), ("6.12", False, False), ("6.17", False, False),
        ("6.1", True, True), ("6.12", True, True), ("6.17", True, False)])
    def test_null_entry(self, kernel, dirty, warns):
        k = machine(thp="never", kernel=kernel)
        addr = anon(k, 2)
        pages: list = []
        assert k.pin_user_pages(addr, 2, FOLL_LONGTERM, pages) == 2
        arr = [pages[0], None, pages[1]]
        k.unpin_user_pages_dirty_lock(arr, 3, dirty)
        assert [w.site for w in k.warnings] == (["null_pointer_dereference"] if warns else [])
        assert_nothing_held(k)         # the real pins are released either way


def _sparse(kernel: str, block_type: int = MIGRATE_MOVABLE):
    """DMA32 full of kernel memory but for single free buddies, each alone in its
    pageblock: order 4 in the lowest, order 7 in the next but one, order 6 in enough
    pageblocks above to keep the zone over its min watermark.  Those pageblocks get
    *block_type*.  No pageblock is half free."""
    mm = FakeMM(MMConfig(ram="2GiB", kernel=kernel))
    z = mm.zones["DMA32"]
    mm.fill_zone("DMA", leave=0)
    balloon = mm.fill_zone("DMA32", leave=0)
    nr_big = -(-(z.wmark_min + 200) // 64)
    nr_big += nr_big % 2
    base = 16384
    end = base + 512 * (4 + nr_big)
    for f in [f for f in balloon.folios if base <= f.pfn < end]:
        mm.folio_put(f)
    small, mid = base, base + 1024
    free = [(small, 16), (mid + 128, 128)] + [(base + 512 * (4 + i) + 64, 64) for i in range(nr_big)]
    keep, p = [], base
    for a, n in free:
        keep += mm._take_exact(z, MIGRATE_MOVABLE, p, a - p)
        p = a + n
    keep += mm._take_exact(z, MIGRATE_MOVABLE, p, end - p)
    mm.drain_all_pages()
    if block_type != MIGRATE_MOVABLE:
        for pb in range(base >> 9, end >> 9):
            mm._set_pageblock_migratetype(z, pb, block_type)
    assert z.free[block_type].nr_free == z.free_pages == 16 + 128 + 64 * nr_big
    return mm, small, mid, keep


class TestBuddyFallback:
    """__rmqueue_fallback (6.1.192; 6.6.y the same) serves an unclaimable fallback from
    the largest buddy; 6.12.118 and v6.15+ (__rmqueue_claim, then __rmqueue_steal) from
    the smallest.  docs/kernel-map.md, "Kernel versions"."""

    @pytest.mark.parametrize("kernel,where", [("6.1", "largest"), ("6.6", "largest"),
                                              ("6.12", "smallest"), ("6.17", "smallest")])
    def test_unclaimable_fallback(self, kernel, where):
        """A movable request falling back to UNMOVABLE pageblocks that hold no LRU
        pages (nothing alike) and are less than half free claims none of them."""
        mm, small, mid, _keep = _sparse(kernel, MIGRATE_UNMOVABLE)
        f = mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 4)        # order 4: no per-cpu list
        assert f is not None
        if where == "largest":
            assert mid <= f.pfn < mid + 512                # the order-7 buddy's pageblock
        else:
            assert f.pfn == small                          # the order-4 buddy, whole
        assert mm.stats.pageblock_claimed == 0
        assert mm.get_pageblock_migratetype(f.pfn) == MIGRATE_UNMOVABLE

    @pytest.mark.parametrize("kernel", KERNELS)
    def test_claim_when_half_free(self, kernel):
        """Every version claims the pageblock of a large enough buddy when half of it
        is free; the request is then served from it."""
        mm, small, mid, keep = _sparse(kernel, MIGRATE_UNMOVABLE)
        blk = next(f for f in keep if f.pfn == mid)       # the order-7 block below the free one
        mm.folio_put(blk)
        f = mm.folio_alloc(GFP_HIGHUSER_MOVABLE, 4)
        assert mid <= f.pfn < mid + 512
        assert mm.get_pageblock_migratetype(mid) == MIGRATE_MOVABLE
        assert mm.stats.pageblock_claimed == 1

    @pytest.mark.parametrize("kernel", KERNELS)
    def test_kernel_pages_are_alike_for_unmovable_requests(self, kernel):
        """An unmovable request falling back to a MOVABLE pageblock counts its in-use
        pages that are not on the LRU (here kernel memory) as alike
        (``alike_pages``), so a pageblock a quarter free is claimed: the largest
        buddy's."""
        mm, small, mid, _keep = _sparse(kernel)
        f = mm.folio_alloc(GFP_KERNEL, 4)
        assert mid <= f.pfn < mid + 512
        assert mm.get_pageblock_migratetype(mid) == MIGRATE_UNMOVABLE
        assert mm.stats.pageblock_claimed == 1

    @pytest.mark.parametrize("kernel,where", [("6.1", "largest"), ("6.6", "largest"),
                                              ("6.12", "smallest"), ("6.17", "smallest")])
    def test_lru_pages_are_not_alike_for_unmovable_requests(self, kernel, where):
        """In-use LRU pages (``PageLRU``) are movable, not alike, for an unmovable
        request: with every in-use page of the MOVABLE pageblocks on the LRU nothing is
        claimed, and each version takes its own buddy."""
        mm, small, mid, keep = _sparse(kernel)
        for f in keep:
            f.flags |= PG_lru                             # as if they were user memory
        f = mm.folio_alloc(GFP_KERNEL, 4)
        assert f is not None and mm.stats.pageblock_claimed == 0
        if where == "largest":
            assert mid <= f.pfn < mid + 512
        else:
            assert f.pfn == small
        assert mm.get_pageblock_migratetype(f.pfn) == MIGRATE_MOVABLE



def _refill_layout(kernel: str, b_step: int):
    """DMA32 full of memory but for single free pages, in MOVABLE pageblocks whose pages
    in use are all on the LRU (so an unmovable request finds nothing alike in them):
    at the top, pageblock A with one free page (the first buddy every search meets,
    never claimable); below it pageblock B with every *b_step*-th page free; below
    that enough pageblocks a quarter free to keep the zone over its min watermark.
    Returns the machine, the zone, B's first pfn and A's free pfn."""
    mm = FakeMM(MMConfig(ram="2GiB", kernel=kernel))
    z = mm.zones["DMA32"]
    mm.fill_zone("DMA", leave=0)
    balloon = mm.fill_zone("DMA32", leave=0)
    nr_c = -(-(z.wmark_min + 512) // 128)
    nr_c += nr_c % 2                                      # C..., B, A: 1024-aligned
    base = 16384
    b, a = base + 512 * nr_c, base + 512 * (nr_c + 1)
    end = a + 512
    for f in [f for f in balloon.folios if base <= f.pfn < end]:
        mm.folio_put(f)
    free = list(range(base, b, 4)) + list(range(b, a, b_step)) + [a + 300]
    keep, p = [], base
    for pfn in free:
        if pfn > p:
            keep += mm._take_exact(z, MIGRATE_MOVABLE, p, pfn - p)
        p = pfn + 1
    keep += mm._take_exact(z, MIGRATE_MOVABLE, p, end - p)
    for f in keep:
        f.flags |= PG_lru                                 # as if they were user memory
    mm.drain_all_pages()
    assert z.free_pages == len(free) and not z.free[MIGRATE_UNMOVABLE].nr_free
    return mm, z, b, a + 300


class TestRmqueueMode:
    """6.12.118 and v6.15+ carry an ``rmqueue_mode`` through one per-cpu refill
    (mm/page_alloc.c:rmqueue_bulk, __rmqueue): once a call had to steal, the rest of
    the refill steals without trying a claim.  6.1 and 6.6 have no such mode (and
    another fallback).  docs/kernel-map.md, "Kernel versions"."""

    @pytest.mark.parametrize("kernel,mode", [("6.1", False), ("6.6", False),
                                             ("6.12", True), ("6.17", True)])
    def test_claim_is_not_retried_within_a_refill(self, kernel, mode):
        """B is half free, so a claim of it succeeds; but the refill's first search
        meets A's page first, fails to claim A and steals that page.  With the mode the
        refill then steals B's pages one by one and B keeps its type until the next
        refill claims it; without it, the refill's second call claims B at once."""
        mm, z, b, a_page = _refill_layout(kernel, 2)
        pcp = z.pcp[mm.current.cpu]
        batch = pcp.batch
        first = mm.alloc_pages(GFP_KERNEL, 0)
        assert first is not None
        if not mode:
            assert mm.stats.pageblock_claimed == 1
            assert mm.get_pageblock_migratetype(b) == MIGRATE_UNMOVABLE
            return
        assert first.pfn == a_page                        # stolen first, served last
        assert mm.stats.pageblock_claimed == 0
        assert mm.get_pageblock_migratetype(b) == MIGRATE_MOVABLE
        # the other batch - 1 pages were stolen from B, the highest first
        assert z.free[MIGRATE_MOVABLE].count_range(b, b + 512) == 256 - (batch - 1)
        assert pcp.lists[MIGRATE_UNMOVABLE] == list(range(b + 510 - 2 * (batch - 2), b + 512, 2))
        for _ in range(batch - 1):                        # empty the per-cpu list
            assert mm.alloc_pages(GFP_KERNEL, 0) is not None
        assert mm.stats.pageblock_claimed == 0
        mm.alloc_pages(GFP_KERNEL, 0)                     # the next refill claims B
        assert mm.stats.pageblock_claimed == 1
        assert mm.get_pageblock_migratetype(b) == MIGRATE_UNMOVABLE

    @pytest.mark.parametrize("kernel", ["6.12", "6.17"])
    def test_one_claim_attempt_per_refill(self, kernel, monkeypatch):
        """No pageblock can be claimed (B is only a quarter free): a refill of batch
        pages tries one claim (``try_to_steal_block`` on A's buddy) and then only
        steals, where a claim per page would be tried without the mode."""
        mm, z, b, _a = _refill_layout(kernel, 4)
        batch = z.pcp[mm.current.cpu].batch
        tries = []
        real = mm._try_claim_block
        monkeypatch.setattr(mm, "_try_claim_block", lambda *args: tries.append(args[1]) or real(*args))
        for _ in range(batch):                            # exactly one refill
            assert mm.alloc_pages(GFP_KERNEL, 0) is not None
        assert len(tries) == 1 and mm.stats.pageblock_claimed == 0
        mm.alloc_pages(GFP_KERNEL, 0)                     # the second refill
        assert len(tries) == 2

    @pytest.mark.parametrize("kernel", KERNELS)
    def test_a_refill_that_reached_cma_stays_there(self, kernel):
        """A movable refill whose own list is empty, with CMA holding less than half of
        the free pages, takes its first page from CMA and (RMQUEUE_CMA where the mode
        exists) the rest too: no pageblock of the plentiful UNMOVABLE free memory is
        claimed and none of it is taken."""
        mm = FakeMM(MMConfig(ram="1GiB", cma="16MiB", kernel=kernel))
        mm.drain_all_pages()
        z = next(z for z in mm._zone_list if z.nr_free_cma)
        fl = z.free[MIGRATE_MOVABLE]
        s0, e0 = max(fl.extents(), key=lambda x: x[1] - x[0])
        lo = (s0 + 511) & ~511
        for pb in range(lo >> 9, (lo >> 9) + 32):         # 64 MiB of free UNMOVABLE pageblocks
            mm._set_pageblock_migratetype(z, pb, MIGRATE_UNMOVABLE)
        for s, e in list(fl.extents()):                  # the rest of the movable list in use
            mm._take_exact(z, MIGRATE_MOVABLE, s, e - s)
        assert not fl.nr_free and 2 * z.nr_free_cma <= z.nr_free
        unmovable = z.free[MIGRATE_UNMOVABLE].nr_free
        pcp = z.pcp[mm.current.cpu]
        page = mm.alloc_pages(GFP_HIGHUSER_MOVABLE, 0)
        assert page is not None and mm.get_pageblock_migratetype(page.pfn) == MIGRATE_CMA
        refill = pcp.lists[MIGRATE_MOVABLE]
        assert len(refill) == pcp.batch - 1
        assert all(mm.get_pageblock_migratetype(pfn) == MIGRATE_CMA for pfn in refill)
        assert z.free[MIGRATE_UNMOVABLE].nr_free == unmovable and mm.stats.pageblock_claimed == 0

    @pytest.mark.parametrize("seed", range(20))
    def test_steal_search_finds_the_block_the_full_search_finds(self, seed):
        """The steal step searches only for the smallest fallback buddy and stops at the
        first extent holding one of the request's order; on random free lists of two
        fallback types it names the block the full search (every order) names last."""
        import random

        from pytest_pinfault.mm.gfp import MIGRATE_RECLAIMABLE
        from pytest_pinfault.mm.mmzone import FreeList
        rng = random.Random(seed)
        mm = FakeMM(MMConfig(ram="512MiB"))
        z = mm.zones["DMA32"]
        saved = z.free[:]
        try:
            for mt in (MIGRATE_RECLAIMABLE, MIGRATE_MOVABLE):
                fl = FreeList()
                p = rng.randrange(1 << 12)
                for _ in range(rng.randrange(1, 200)):
                    n = rng.choice([1, 2, 3, 8, 24, 512, 1500, 4096])
                    fl.put(p, n)
                    p += n + rng.randrange(1, 3000)
                z.free[mt] = fl
            for order in range(0, 6):
                full = mm._fallback_blocks(z, order, MIGRATE_UNMOVABLE)
                short = mm._fallback_blocks(z, order, MIGRATE_UNMOVABLE, smallest_only=True)
                assert bool(full) == bool(short)
                if full:
                    assert short[-1] == full[-1], order
        finally:
            z.free[:] = saved


def test_bound_present_functions_follow_the_class(monkeypatch):
    """bind_present works out once per class and version which functions a machine has;
    a function replaced on the class afterwards is what the next machine binds, and a
    version without it still has none."""
    from pytest_pinfault.mm.versions import VersionedFunction
    old = FakeMM(MMConfig(kernel="6.12"))
    assert "memfd_pin_folios" in old.__dict__

    def replacement(self, *args):
        return "replaced"

    monkeypatch.setattr(FakeMM, "memfd_pin_folios",
                        VersionedFunction("memfd_pin_folios", replacement, "6.11", "mm/gup.c", "test"))
    assert FakeMM(MMConfig(kernel="6.12")).memfd_pin_folios() == "replaced"
    assert old.memfd_pin_folios is not None and old.memfd_pin_folios.__func__ is not replacement
    assert not hasattr(FakeMM(MMConfig(kernel="6.1")), "memfd_pin_folios")
    monkeypatch.undo()
    assert FakeMM(MMConfig(kernel="6.12")).memfd_pin_folios.__func__ is not replacement
