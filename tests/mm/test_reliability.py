"""Regression tests for the reliability defects of issue 18: wrong answers, corruption and
driver misuse the model used to absorb.  Each test names the defect it pins down."""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import FakeMM, MMConfig, Out
from pytest_pinfault.mm import GFP_HIGHUSER_MOVABLE, Page
from pytest_pinfault.mm import __GFP_NOWARN as GFP_NOWARN
from pytest_pinfault.mm import (FOLL_WRITE, GFP_KERNEL, MADV_HUGEPAGE, MAP_ANONYMOUS,
                                MAP_FIXED, MAP_PRIVATE, MAP_SHARED, MFD_HUGETLB, PROT_NONE,
                                PROT_READ, PROT_WRITE, VM_LOCKED)

MiB = 1 << 20
PAGE = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def sites(k) -> list[str]:
    return [w.site for w in k.warnings]


# ---------------------------------------------------------------- hugetlb VMA splits
@pytest.fixture
def huge():
    k = FakeMM(MMConfig(ram="1GiB", hugetlb={"2MiB": 8}))
    f = k.memfd_create("h", MFD_HUGETLB)
    assert f.ftruncate(4 * 2 * MiB) == 0
    mm = k.current.mm
    addr = mm.mmap(4 * 2 * MiB, RW, MAP_SHARED, file=f)
    assert addr > 0
    return k, mm, addr


class TestHugetlbSplit:
    def test_munmap_off_boundary_is_einval(self, huge):
        """munmap of 351 pages of a hugetlb mapping: -EINVAL (hugetlb_vm_op_split),
        the VMA stays whole and a later write neither corrupts nor leaks to a new mapping."""
        k, mm, addr = huge
        assert mm.munmap(addr, 351 * PAGE) == -errno.EINVAL
        assert [(v.start, v.end) for v in mm.vmas] == [(addr, addr + 8 * MiB)]
        assert mm.write(addr, b"huge") == 4
        other = mm.mmap(2 * MiB, RW, ANON)
        assert mm.read(other, 4) == bytes(4)
        assert mm.munmap(addr + 2 * MiB, 2 * MiB) == 0          # aligned: allowed

    def test_munmap_unaligned_start(self, huge):
        k, mm, addr = huge
        assert mm.munmap(addr + PAGE, 2 * MiB) == -errno.EINVAL

    @pytest.mark.parametrize("call", ["mprotect", "madvise"])
    def test_sub_range_is_einval(self, huge, call):
        """mprotect/madvise of a sub-range not on a 2 MiB boundary: -EINVAL, no split."""
        k, mm, addr = huge
        if call == "mprotect":
            rc = mm.mprotect(addr + PAGE, PAGE, PROT_READ)
        else:
            rc = mm.madvise(addr, 3 * PAGE, MADV_HUGEPAGE)
        assert rc == -errno.EINVAL
        assert len(mm.vmas) == 1

    def test_mlock_skips_hugetlb(self, huge):
        """mlock of a sub-range returns 0 as the kernel's mlock_fixup does: the hugetlb
        VMA is neither split nor VM_LOCKED nor counted in locked_vm."""
        k, mm, addr = huge
        assert mm.mlock(addr + PAGE, PAGE) == 0
        assert len(mm.vmas) == 1 and not mm.vmas[0].flags & VM_LOCKED
        assert mm.locked_vm == 0

    def test_map_fixed_over_part_refused(self, huge):
        """MAP_FIXED over part of a hugetlb VMA: the implicit munmap fails, so does mmap."""
        k, mm, addr = huge
        assert mm.mmap(PAGE, RW, ANON | MAP_FIXED, addr=addr + PAGE) == -errno.EINVAL
        assert len(mm.vmas) == 1


# ---------------------------------------------------------------- THP split with the VMA
class TestThpSplitWithVma:
    def test_mprotect_part_of_thp_splits_pmd(self):
        """mprotect(PROT_NONE) of all but 16 pages of a PMD-mapped THP splits the PMD
        (vma_adjust_trans_huge): pin_user_pages(a, 512, FOLL_WRITE) pins 16, not 512."""
        k = FakeMM(MMConfig(ram="1GiB", thp="always"))
        mm = k.current.mm
        a = mm.mmap(2 * MiB, RW, ANON)
        assert mm.write(a, b"x") == 1
        assert (a >> 12) in mm.huge
        assert mm.mprotect(a + 16 * PAGE, 2 * MiB - 16 * PAGE, PROT_NONE) == 0
        assert (a >> 12) not in mm.huge
        pages: list = []
        assert k.pin_user_pages(a, 512, FOLL_WRITE, pages) == 16
        k.unpin_user_pages(pages, 16)
        assert k.warnings == []

    @pytest.mark.parametrize("call", ["mlock", "madvise"])
    def test_other_splits(self, call):
        k = FakeMM(MMConfig(ram="1GiB", thp="always"))
        mm = k.current.mm
        a = mm.mmap(2 * MiB, RW, ANON)
        mm.write(a, b"x")
        if call == "mlock":
            assert mm.mlock(a + 8 * PAGE, PAGE) == 0
        else:
            assert mm.madvise(a + 8 * PAGE, PAGE, MADV_HUGEPAGE) == 0
        assert (a >> 12) not in mm.huge
        for vpn in mm.pte:                          # every leaf inside its VMA
            vma = mm.find_vma(vpn << 12)
            assert vma is not None
        assert mm.read(a, 1) == b"x"


# ---------------------------------------------------------------- mmap limits
class TestMmapLimits:
    def test_length_beyond_task_size(self):
        k = FakeMM(MMConfig(ram="1GiB"))
        mm = k.current.mm
        assert mm.mmap(1 << 47, RW, ANON) == -errno.ENOMEM
        assert mm.vmas == []

    def test_address_space_exhausted(self):
        """Mappings that no longer fit below the mmap base give -ENOMEM, never an
        address below mmap_min_addr."""
        k = FakeMM(MMConfig(ram="1GiB"))
        mm = k.current.mm
        assert mm.mmap(1 << 46, PROT_NONE, ANON) > 0
        assert mm.mmap(1 << 46, PROT_NONE, ANON) == -errno.ENOMEM
        assert all(v.start >= 0x10000 for v in mm.vmas)

    def test_file_offset_overflow(self):
        k = FakeMM(MMConfig(ram="1GiB"))
        f = k.memfd_create("f", 0)
        f.ftruncate(PAGE)
        mm = k.current.mm
        assert mm.mmap(PAGE, RW, MAP_SHARED, file=f, offset=1 << 63) == -errno.EOVERFLOW
        assert mm.mmap(PAGE, RW, MAP_SHARED, file=f, offset=-PAGE) == -errno.EOVERFLOW


# ---------------------------------------------------------------- driver misuse
def mapped_page(k):
    mm = k.current.mm
    a = mm.mmap(PAGE, RW, ANON)
    assert mm.write(a, b"d") == 1
    k.lru_add_drain()
    return mm, a, mm.lookup(a)[0]


def small_folio(k):
    page = k.alloc_pages(GFP_KERNEL, 0)
    return page.folio


class TestDriverMisuse:
    @pytest.fixture
    def k(self):
        return FakeMM(MMConfig(ram="1GiB"))

    @pytest.mark.parametrize("count", [0, -1])
    def test_unpin_user_folio_on_freed_folio(self, k, count):
        """unpin_user_folio(freed, 0) used to free the folio again (two allocations got
        the same pfn); with -1 it added a pin's worth of references.  Now: a warning
        naming the use-after-free and the caller, nothing changes."""
        folio = small_folio(k)
        k.folio_put(folio)
        free_before = k.zones[folio.zone].free_pages
        k.unpin_user_folio(folio, count)
        assert folio.refcount == 0 and k.zones[folio.zone].free_pages == free_before
        (w,) = k.warnings
        assert "use-after-free" in w.message and "test_reliability.py" in w.caller
        a, b = k.alloc_pages(GFP_KERNEL, 0), k.alloc_pages(GFP_KERNEL, 0)
        assert a.pfn != b.pfn

    @pytest.mark.parametrize("count", [0, -1])
    def test_unpin_zero_or_negative_count(self, k, count):
        mm, a, folio = mapped_page(k)
        pages: list = []
        assert k.pin_user_pages(a, 1, 0, pages) == 1
        before = folio.refcount
        k.unpin_user_folio(folio, count)
        assert folio.refcount == before
        assert sites(k) == ["unpin"] and ("zero" if count == 0 else "negative") in k.warnings[0].message
        k.unpin_user_pages(pages, 1)

    def test_folio_add_pins_negative(self, k):
        mm, a, folio = mapped_page(k)
        pages: list = []
        k.pin_user_pages(a, 1, 0, pages)
        before = folio.refcount
        assert k.folio_add_pins(folio, -3) == -errno.EINVAL
        assert folio.refcount == before and sites(k) == ["folio_add_pins"]
        k.unpin_user_pages(pages, 1)

    def test_put_page_too_many_on_mapped_page(self, k):
        """One put_page too many on a page still mapped: "Bad page state" warning, the
        page is not freed, its PTE still maps live memory."""
        mm, a, folio = mapped_page(k)
        pages: list = []
        assert k.get_user_pages(a, 1, 0, pages) == 1
        k.put_page(pages[0])
        k.put_page(pages[0])                       # one too many
        assert sites(k) == ["bad_page_state"]
        assert "put_page" in k.warnings[0].message and not folio.freed
        assert mm.lookup(a)[0] is folio and mm.read(a, 1) == b"d"
        assert mm.munmap(a, PAGE) == 0 and folio.freed
        assert len(k.warnings) == 1

    def test_put_page_too_many_on_a_page_cache_page(self, k):
        """A put that would take the page cache's own reference: "Bad page state", the
        folio stays in the cache and keeps its data (it used to be freed on unmap while
        the cache still pointed at it)."""
        f = k.memfd_create("c", 0)
        assert f.pwrite(b"cache", 0) == 5
        mm = k.current.mm
        a = mm.mmap(PAGE, RW, MAP_SHARED, file=f)
        assert mm.read(a, 5) == b"cache"
        k.lru_add_drain()
        folio = f.mapping.lookup(0)
        k.put_page(folio)                       # the driver never took this reference
        assert sites(k) == ["bad_page_state"] and "page-cache" in k.warnings[0].message
        assert mm.munmap(a, PAGE) == 0
        assert not folio.freed and f.mapping.lookup(0) is folio and f.pread(5, 0) == b"cache"

    def test_unpin_never_pinned(self, k):
        mm, a, folio = mapped_page(k)
        before = folio.refcount
        k.unpin_user_page(Page(folio, folio.pfn))
        assert sites(k) == ["unpin"] and not folio.freed and folio.refcount == before

    def test_other_machines_objects(self, k):
        other = FakeMM(MMConfig(ram="1GiB"))
        folio = small_folio(other)
        k.folio_put(folio)
        k.put_page(folio)
        k.unpin_user_folio(folio, 1)
        assert k.folio_add_pins(folio, 1) == -errno.EFAULT
        assert folio.refcount == 1 and not folio.freed
        f = other.memfd_create("x", 0)
        f.ftruncate(PAGE)
        assert k.memfd_pin_folios(f, 0, PAGE - 1, [], 1, Out(0)) == -errno.EINVAL
        assert k.memfd_alloc_folio(f, 0) == -errno.EINVAL
        assert k.current.mm.mmap(PAGE, RW, MAP_SHARED, file=f) == -errno.EBADF
        assert k.pin_user_pages_remote(other.current.mm, 0x10000, 1, 0, []) == 0
        assert k.fork(other.current.mm) is None
        assert set(sites(k)) == {"foreign_object"} and len(k.warnings) == 9
        assert all("another FakeMM" in w.message for w in k.warnings)
        assert other.warnings == [] and f.mapping.nrpages == 0

    def test_unpin_pages_past_array(self, k):
        mm, a, folio = mapped_page(k)
        pages: list = []
        k.pin_user_pages(a, 1, 0, pages)
        k.unpin_user_pages(pages, 5)
        assert sites(k) == ["unpin_user_pages"] and "out-of-bounds" in k.warnings[0].message
        assert not k.folio_maybe_dma_pinned(folio)          # the one real entry was unpinned

    def test_warning_fails_through_contract_rule(self, k):
        """The recorded misuse is what the kernel-warnings rule reports."""
        folio = small_folio(k)
        k.folio_put(folio)
        k.unpin_user_folio(folio, 0)
        found = k.check()
        assert any(v.rule == 11 or "kernel-warnings" in str(v) for v in found)

    @pytest.mark.parametrize("bad", ["x", 1.5, None])
    def test_wrong_types_name_the_parameter(self, k, bad):
        with pytest.raises(TypeError, match="folio"):
            k.unpin_user_folio(bad, 1)
        with pytest.raises(TypeError, match="start"):
            k.pin_user_pages(bad, 1, 0, [])


# ---------------------------------------------------------------- memory hotplug ranges
class TestOfflineRanges:
    def test_offline_from_inside_a_block(self):
        """offline_pages(0x8200, 0x7e00) used to return 0 and mark block 1 offline; a
        later online freed 512 still-free pages twice.  Now -EINVAL with the WARN and
        nothing changes."""
        k = FakeMM(MMConfig(ram="1GiB"))
        free = {n: z.free_pages for n, z in k.zones.items()}
        assert k.offline_pages(0x8200, 0x7e00) == -errno.EINVAL
        assert sites(k) == ["offline_pages"]
        assert k.memory_blocks[1].state == "online"
        assert k.online_pages(0x8000, 0x8000) == -errno.EINVAL          # not offline
        assert {n: z.free_pages for n, z in k.zones.items()} == free
        seen = set()
        for _ in range(2048):
            page = k.alloc_pages(GFP_KERNEL, 0)
            assert page.pfn not in seen
            seen.add(page.pfn)

    def test_online_part_of_a_block_warns(self):
        k = FakeMM(MMConfig(ram="1GiB", movablecore="256MiB"))
        block = k.memory_blocks.in_zone("Movable")[0]
        assert block.offline() == 0
        assert k.online_pages(block.start_pfn + 512, block.nr_pages - 512) == -errno.EINVAL
        assert sites(k) == ["online_pages"] and block.state == "offline"
        assert block.online() == 0

    @pytest.mark.parametrize("start", [-(1 << 63), (1 << 63) - (1 << 15), -(1 << 15)])
    def test_pfns_near_the_int64_limits(self, start):
        """Range functions given pfns near +-2**63 answer at once (their walks follow
        the machine's memory, not the numbers)."""
        k = FakeMM(MMConfig(ram="1GiB"))
        k.alloc_pages(GFP_KERNEL, 0)
        end = start + (1 << 15) if start < 0 else start + (1 << 40)
        assert k.offline_pages(start, 1 << 15) == -errno.EINVAL
        assert k.alloc_contig_range(start, end) == -errno.EINVAL
        assert k.test_pages_isolated(start, end) == 0            # no memory there
        assert list(k.folios_in_range(start, end)) == []
        assert k.has_unmovable_pages(start, end, 1) == -1
        assert k.start_isolate_page_range(start, end, 1) == 0
        k.undo_isolate_page_range(start, end, 1)
        assert len(list(k.folios_in_range(-(1 << 62), 1 << 62))) == k.nr_allocated_pages


# ---------------------------------------------------------------- memfd limits
class TestMemfdLimits:
    @pytest.fixture
    def k(self):
        return FakeMM(MMConfig(ram="256MiB"))

    def test_failed_fallocate_frees_what_it_allocated(self, k):
        """fallocate(0, 0, 1 << 62) runs out of memory: -ENOMEM and every page this
        call allocated is freed again (shmem_undo_range); pages already there stay."""
        f = k.memfd_create("f", 0)
        assert f.pwrite(b"keep", 0) == 4
        before = k.nr_allocated_pages
        assert f.fallocate(0, 0, 1 << 62) == -errno.ENOMEM
        k.lru_add_drain_all()                  # the LRU batch held the last few
        assert k.nr_allocated_pages == before
        assert f.mapping.nrpages == 1 and f.pread(4, 0) == b"keep"
        assert f.i_size == 4
        assert f.fallocate(0, 0, 16 * PAGE) == 0                      # memory is back

    @pytest.mark.parametrize("offset", [1 << 63, (1 << 64) - 1])
    def test_offsets_past_loff_t(self, k, offset):
        """File offsets of 2**63 and more are negative loff_t values: -EINVAL."""
        f = k.memfd_create("f", 0)
        assert f.pwrite(b"x", offset) == -errno.EINVAL
        assert f.pread(1, offset) == -errno.EINVAL
        assert f.ftruncate(offset) == -errno.EINVAL
        assert f.fallocate(0, offset, PAGE) == -errno.EINVAL
        assert f.mapping.nrpages == 0 and f.i_size == 0

    def test_end_past_max_lfs_filesize(self, k):
        f = k.memfd_create("f", 0)
        top = (1 << 63) - 1
        assert f.fallocate(0, top - PAGE, 2 * PAGE) == -errno.EFBIG
        assert f.pwrite(b"xy", top - 1) == -errno.EFBIG
        assert f.mapping.nrpages == 0


# ---------------------------------------------------------------- bad values, kernel answers
class TestBadValues:
    @pytest.fixture
    def k(self):
        return FakeMM(MMConfig(ram="512MiB", cma="64MiB"))

    @pytest.mark.parametrize("order", [11, 18, -1, 1 << 40])
    def test_alloc_pages_order_above_max(self, k, order):
        """Order 11 used to succeed; now NULL with WARN_ON_ONCE_GFP, nothing allocated."""
        before = k.nr_allocated_pages
        assert k.alloc_pages(GFP_KERNEL, order) is None
        assert k.folio_alloc(GFP_KERNEL, order) is None
        assert k.nr_allocated_pages == before
        assert sites(k) == ["alloc_pages", "folio_alloc"]

    def test_alloc_pages_order_nowarn(self, k):
        assert k.alloc_pages(GFP_KERNEL | GFP_NOWARN, 11) is None
        assert k.warnings == []

    @pytest.mark.parametrize("size", [-1, (4 << 20) + 1, 1 << 70])
    def test_kmalloc_bad_sizes(self, k, size):
        assert k.kmalloc(size, GFP_KERNEL) is None
        assert sites(k) == ["kmalloc"] and k.slab_live == []

    @pytest.mark.parametrize("n, size", [(-1, 8), (8, -1), (1 << 62, 1 << 62)])
    def test_kvmalloc_array_bad(self, k, n, size):
        assert k.kvmalloc_array(n, size, GFP_KERNEL) is None
        assert k.kmalloc_array(n, size, GFP_KERNEL) is None

    @pytest.mark.parametrize("count, align", [(1, -1), (1, 64), (1, 10**9), (-5, 0), (1 << 40, 0)])
    def test_cma_alloc_bad_count_or_align(self, k, count, align):
        assert k.cma_alloc(k.cma_areas[0], count, align) is None
        assert k.cma_areas[0].available_count == k.cma_areas[0].count

    def test_failing_cma_alloc_skips_slots_holding_the_busy_pfn(self, k):
        """A pinned page in the area: the failing cma_alloc does not retry every
        one-page-shifted slot that still holds it (cost follows the busy pages)."""
        area = k.cma_areas[0]
        with k.steer("cma"):                   # not on the LRU: unmovable kernel pages
            held = [k.alloc_pages(GFP_HIGHUSER_MOVABLE, 0).folio for _ in range(200)]
        low = min(f.pfn for f in held) - area.base_pfn
        calls = []
        real = k.alloc_contig_range
        k.alloc_contig_range = lambda *a: calls.append(a) or real(*a)
        count = area.count - 100              # 101 slots, one page apart
        assert 100 <= low < count             # every slot holds the lowest held page
        assert k.cma_alloc(area, count, 0, no_warn=True) is None
        assert len(calls) == 1                # the kernel tries all 101, each fails alike
        for f in held:
            k.folio_put(f)
        assert k.cma_alloc(area, area.count, 0) is not None

    @pytest.mark.parametrize("cpu", [-1, 2, 10**9])
    def test_lru_add_drain_cpu_out_of_range(self, k, cpu):
        k.lru_add_drain_cpu(cpu)
        assert sites(k) == ["lru_add_drain_cpu"]

    @pytest.mark.parametrize("mt", [-1, 5, 6, 1 << 40])
    def test_out_of_range_migratetype(self, k, mt):
        """An out-of-range migratetype used to corrupt the free lists: now a warning and
        -EINVAL, every free list as it was."""
        free = [[fl.nr_free for fl in z.free] for z in k.zones.values()]
        z = k.zones["Normal"] if "Normal" in k.zones else k.zones["DMA32"]
        lo = z.zone_start_pfn + 4096
        assert k.alloc_contig_range(lo, lo + 512, mt) == -errno.EINVAL
        assert k.start_isolate_page_range(lo, lo + 512, mt) == -errno.EINVAL
        k.undo_isolate_page_range(lo, lo + 512, mt)
        assert [[fl.nr_free for fl in z.free] for z in k.zones.values()] == free
        assert len(k.warnings) == 3

    def test_nr_cpus_huge_is_a_config_error(self):
        from pytest_pinfault.mm import ConfigError
        with pytest.raises(ConfigError, match="nr_cpus: expected an integer from 1 to 8192"):
            MMConfig(nr_cpus=10**8)


# ---------------------------------------------------------------- compact page contents
class TestCompactContents:
    def test_single_byte_pages_are_one_int_and_read_back(self):
        k = FakeMM(MMConfig(ram="256MiB"))
        folio = k.alloc_pages(GFP_KERNEL, 2).folio
        folio.write(0, b"x" * (2 * PAGE))
        assert folio._data == {0: ord("x"), 1: ord("x")}
        folio.write(PAGE + 5, b"ab")                      # a partial write over it
        assert type(folio._data[1]) is bytearray
        assert folio.read(PAGE, 8) == b"xxxxxabx"
        folio.write(0, bytes(PAGE))                       # all zero: nothing stored
        assert 0 not in folio._data and folio.read(0, 4) == bytes(4)
        page = bytes(range(256)) * 16
        folio.write(2 * PAGE, page)
        assert type(folio._data[2]) is bytes and folio.read(2 * PAGE, PAGE) == page
        folio.write(3 * PAGE + PAGE - 1, b"z")
        assert folio.read(3 * PAGE, PAGE) == bytes(PAGE - 1) + b"z"

    def test_contents_survive_migration_and_fork(self):
        k = FakeMM(MMConfig(ram="512MiB", cma="64MiB", thp="never"))
        mm = k.current.mm
        a = mm.mmap(4 * PAGE, RW, ANON)
        with k.steer("cma"):
            assert mm.write(a, b"q" * (4 * PAGE)) == 4 * PAGE
        pages: list = []
        from pytest_pinfault.mm import FOLL_LONGTERM
        assert k.pin_user_pages(a, 4, FOLL_LONGTERM, pages) == 4      # migrated out of CMA
        assert all(not p.folio.is_cma for p in pages)
        child = k.fork(mm)
        assert mm.read(a, 4 * PAGE) == b"q" * (4 * PAGE) == child.read(a, 4 * PAGE)
        k.unpin_user_pages(pages, 4)
