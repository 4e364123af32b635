"""Regression tests for the reliability defects of issue 18: wrong answers, corruption and
driver misuse the model used to absorb.  Each test names the defect it pins down."""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import FakeMM, MMConfig
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
