"""Address spaces: mmap/munmap/mprotect, faults, COW, mlock and locked_vm, tasks.

Kernel: mm/mmap.c, mm/mprotect.c, mm/memory.c, mm/mlock.c, mm/util.c
(__account_locked_vm), kernel/fork.c (see docs/kernel-contract §1, §10).
"""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.mm import (F_SEAL_FUTURE_WRITE, F_SEAL_WRITE, MADV_HUGEPAGE, MADV_NOHUGEPAGE,
                                MAP_ANONYMOUS, MAP_FIXED, VM_HUGEPAGE, VM_NOHUGEPAGE,
                                MAP_PRIVATE, MAP_SHARED, MAP_SHARED_VALIDATE, MFD_ALLOW_SEALING,
                                MLOCK_ONFAULT, PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE,
                                VM_LOCKED, VM_LOCKONFAULT, VM_MAYWRITE, VM_SHARED, VM_WRITE)
from pytest_pinfault.mm.folio import PG_anon_exclusive, PG_mlocked

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
MiB = 1 << 20
FIXED = 0x40000000           # a 2 MiB aligned address far below the mmap base


@pytest.fixture
def k() -> FakeMM:
    return FakeMM(MMConfig(ram="1GiB", thp="never"))


@pytest.fixture
def mm(k):
    return k.current.mm


def memfd(k, size=64 << 10, flags=MFD_ALLOW_SEALING):
    f = k.memfd_create("t", flags)
    assert f.ftruncate(size) == 0
    return f


class TestMadvise:
    """madvise(MADV_HUGEPAGE / MADV_NOHUGEPAGE) and what THP mode makes of it."""

    @staticmethod
    def fault(thp, advice=None, length=2 * MiB, advise_len=None):
        k = FakeMM(MMConfig(ram="1GiB", thp=thp))
        mm = k.current.mm
        addr = mm.mmap(length, RW, ANON | MAP_FIXED, addr=FIXED)
        rc = mm.madvise(addr, advise_len or length, advice) if advice is not None else 0
        assert mm.write(addr, b"x") == 1
        return rc, mm, addr, mm.lookup(addr)[0].order

    @pytest.mark.parametrize("thp, advice, order", [
        ("madvise", None, 0), ("madvise", MADV_HUGEPAGE, 9), ("always", None, 9),
        ("always", MADV_NOHUGEPAGE, 0), ("never", MADV_HUGEPAGE, 0)])
    def test_advice_decides_the_first_fault(self, thp, advice, order):
        rc, _, _, got = self.fault(thp, advice)
        assert (rc, got) == (0, order)

    def test_flags_are_exclusive_and_split_the_vma(self):
        rc, mm, addr, _ = self.fault("madvise", MADV_HUGEPAGE, length=4 * MiB, advise_len=2 * MiB)
        assert rc == 0
        assert mm.madvise(addr, 2 * MiB, MADV_NOHUGEPAGE) == 0
        v = mm.find_vma(addr)
        assert (v.start, v.end) == (addr, addr + 2 * MiB)
        assert v.flags & VM_NOHUGEPAGE and not v.flags & VM_HUGEPAGE
        assert not mm.find_vma(addr + 2 * MiB).flags & (VM_HUGEPAGE | VM_NOHUGEPAGE)

    def test_errors(self, mm):
        addr = mm.mmap(2 * PAGE_SIZE, RW, ANON)
        assert mm.madvise(addr + 1, PAGE_SIZE, MADV_HUGEPAGE) == -errno.EINVAL
        assert mm.madvise(addr, PAGE_SIZE, 4) == -errno.EINVAL           # MADV_DONTNEED: not modelled
        assert mm.madvise(addr, 3 * PAGE_SIZE, MADV_HUGEPAGE) == -errno.ENOMEM
        assert mm.find_vma(addr).flags & VM_HUGEPAGE                     # the mapped part was advised


# ---------------------------------------------------------------------------- mmap
class TestMmap:
    @pytest.mark.parametrize("length, flags, offset", [
        (0, ANON, 0),
        (PAGE_SIZE, MAP_ANONYMOUS, 0),
        (PAGE_SIZE, MAP_ANONYMOUS | 0x04, 0),
    ], ids=["length-0", "neither-shared-nor-private", "bad-map-type"])
    def test_einval_anonymous(self, mm, length, flags, offset):
        """Zero length and a MAP_TYPE other than SHARED/PRIVATE/SHARED_VALIDATE give -EINVAL."""
        assert mm.mmap(length, RW, flags, offset=offset) == -errno.EINVAL
        assert mm.vmas == []

    def test_unaligned_file_offset(self, k, mm):
        """A file offset that is not page aligned gives -EINVAL."""
        f = memfd(k)
        assert mm.mmap(PAGE_SIZE, PROT_READ, MAP_SHARED, file=f, offset=100) == -errno.EINVAL
        assert f._mappers == 0

    def test_shared_validate_is_shared(self, k, mm):
        """MAP_SHARED_VALIDATE maps like MAP_SHARED."""
        f = memfd(k)
        addr = mm.mmap(PAGE_SIZE, RW, MAP_SHARED_VALIDATE, file=f)
        assert addr > 0
        assert mm.find_vma(addr).flags & VM_SHARED
        assert mm.write(addr, b"v") == 1 and f.pread(1, 0) == b"v"

    def test_length_rounded_to_pages(self, mm):
        """The VMA covers whole pages."""
        addr = mm.mmap(PAGE_SIZE + 1, RW, ANON)
        vma = mm.find_vma(addr)
        assert (vma.start, vma.end) == (addr, addr + 2 * PAGE_SIZE)

    def test_map_fixed_honoured(self, mm):
        """MAP_FIXED maps exactly at the requested address."""
        assert mm.mmap(PAGE_SIZE, RW, ANON | MAP_FIXED, addr=FIXED) == FIXED
        assert mm.find_vma(FIXED).start == FIXED

    def test_map_fixed_unaligned(self, mm):
        """MAP_FIXED with an address that is not page aligned gives -EINVAL."""
        assert mm.mmap(PAGE_SIZE, RW, ANON | MAP_FIXED, addr=FIXED + 1) == -errno.EINVAL
        assert mm.vmas == []

    def test_map_fixed_replaces(self, k, mm):
        """MAP_FIXED over an existing mapping unmaps it first (fresh zeroed memory)."""
        mm.mmap(PAGE_SIZE, RW, ANON | MAP_FIXED, addr=FIXED)
        assert mm.write(FIXED, b"old") == 3
        folio = mm.lookup(FIXED)[0]
        assert mm.mmap(PAGE_SIZE, RW, ANON | MAP_FIXED, addr=FIXED) == FIXED
        assert [v.start for v in mm.vmas] == [FIXED]
        assert mm.lookup(FIXED) is None
        assert (folio.refcount, folio.mapcount) == (1, 0)      # only the LRU batch's
        k.lru_add_drain()
        assert folio.freed
        assert mm.read(FIXED, 3) == b"\0\0\0"

    @pytest.mark.parametrize("thp, aligned", [("always", True), ("madvise", True), ("never", False)])
    def test_thp_alignment_of_large_anonymous(self, thp, aligned):
        """Anonymous mappings of 2 MiB or more are 2 MiB aligned unless THP is "never"."""
        k = FakeMM(MMConfig(ram="1GiB", thp=thp))
        mm = k.current.mm
        mm.mmap(PAGE_SIZE, RW, ANON)                    # knock the top off alignment
        addr = mm.mmap(4 * MiB, RW, ANON)
        assert (addr % (2 * MiB) == 0) is aligned

    def test_length_not_a_multiple_of_2mib_not_aligned(self):
        """Since v6.12 only lengths that are multiples of 2 MiB get THP alignment."""
        k = FakeMM(MMConfig(ram="1GiB", thp="always"))
        mm = k.current.mm
        mm.mmap(PAGE_SIZE, RW, ANON)
        addr = mm.mmap(3 * MiB, RW, ANON)
        assert addr % PAGE_SIZE == 0 and addr % (2 * MiB) != 0

    def test_small_anonymous_not_aligned(self):
        """Anonymous mappings under 2 MiB are only page aligned even with THP."""
        k = FakeMM(MMConfig(ram="1GiB", thp="always"))
        mm = k.current.mm
        mm.mmap(PAGE_SIZE, RW, ANON)
        addr = mm.mmap(MiB, RW, ANON)
        assert addr % PAGE_SIZE == 0 and addr % (2 * MiB) != 0

    @pytest.mark.parametrize("seal", [F_SEAL_WRITE, F_SEAL_FUTURE_WRITE])
    def test_shared_writable_of_sealed_memfd(self, k, mm, seal):
        """A shared writable mapping of a write-sealed memfd gives -EPERM."""
        f = memfd(k)
        assert f.add_seals(seal) == 0
        assert mm.mmap(PAGE_SIZE, RW, MAP_SHARED, file=f) == -errno.EPERM
        assert mm.vmas == []

    @pytest.mark.parametrize("seal", [F_SEAL_WRITE, F_SEAL_FUTURE_WRITE])
    def test_sealed_memfd_readonly_and_private_allowed(self, k, mm, seal):
        """Read-only shared and private writable mappings of a sealed memfd are allowed."""
        f = memfd(k)
        assert f.add_seals(seal) == 0
        ro = mm.mmap(PAGE_SIZE, PROT_READ, MAP_SHARED, file=f)
        priv = mm.mmap(PAGE_SIZE, RW, MAP_PRIVATE, file=f)
        assert ro > 0 and priv > 0
        assert not mm.find_vma(ro).flags & VM_MAYWRITE


# ---------------------------------------------------------------------------- munmap / mprotect
class TestMunmapMprotect:
    def test_munmap_unaligned(self, mm):
        """munmap of an unaligned address or of length 0 gives -EINVAL."""
        addr = mm.mmap(PAGE_SIZE, RW, ANON)
        assert mm.munmap(addr + 1, PAGE_SIZE) == -errno.EINVAL
        assert mm.munmap(addr, 0) == -errno.EINVAL
        assert len(mm.vmas) == 1

    def test_munmap_hole_is_ok(self, mm):
        """munmap of a range with nothing mapped succeeds (as in the kernel)."""
        assert mm.munmap(FIXED, PAGE_SIZE) == 0

    def test_munmap_middle_splits(self, mm):
        """Unmapping the middle page leaves two VMAs and frees the page."""
        mm.mmap(3 * PAGE_SIZE, RW, ANON | MAP_FIXED, addr=FIXED)
        assert mm.write(FIXED, b"a" * 3 * PAGE_SIZE) == 3 * PAGE_SIZE
        mid = mm.lookup(FIXED + PAGE_SIZE)[0]
        assert mm.munmap(FIXED + PAGE_SIZE, PAGE_SIZE) == 0
        assert [(v.start, v.end) for v in mm.vmas] == [
            (FIXED, FIXED + PAGE_SIZE), (FIXED + 2 * PAGE_SIZE, FIXED + 3 * PAGE_SIZE)]
        assert mm.read(FIXED + PAGE_SIZE, 1) == -errno.EFAULT
        assert mm.read(FIXED + 2 * PAGE_SIZE, 1) == b"a"
        mm._k.lru_add_drain()
        assert mid.freed

    def test_munmap_first_half_of_thp(self):
        """Unmapping part of a PMD-mapped THP splits it; the rest keeps its data."""
        k = FakeMM(MMConfig(ram="1GiB", thp="always"))
        mm = k.current.mm
        addr = mm.mmap(2 * MiB, RW, ANON | MAP_FIXED, addr=FIXED)
        assert mm.write(addr, b"x" * 2 * MiB) == 2 * MiB
        thp = mm.lookup(addr)[0]
        assert thp.order == 9
        assert mm.munmap(addr, MiB) == 0
        assert mm.read(addr + MiB, 4) == b"xxxx"
        assert mm.lookup(addr + MiB)[0] is thp and mm.lookup(addr) is None
        assert (thp.refcount, thp.mapcount) == (256, 256)        # one per remaining PTE
        assert mm.munmap(addr + MiB, MiB) == 0
        assert thp.freed and k.warnings == []

    def test_munmap_second_half_of_thp(self):
        """After unmapping the tail of a THP nothing maps there, not even after MAP_FIXED."""
        k = FakeMM(MMConfig(ram="1GiB", thp="always"))
        mm = k.current.mm
        addr = mm.mmap(2 * MiB, RW, ANON | MAP_FIXED, addr=FIXED)
        mm.write(addr, b"y" * 2 * MiB)
        assert mm.munmap(addr + MiB, MiB) == 0
        assert mm.lookup(addr + MiB) is None and mm.read(addr, 1) == b"y"
        assert mm.mmap(PAGE_SIZE, RW, ANON | MAP_FIXED, addr=addr + MiB) == addr + MiB
        assert mm.read(addr + MiB, 1) == b"\0"

    def test_mprotect_hole(self, mm):
        """mprotect over a range with a hole gives -ENOMEM and changes nothing."""
        mm.mmap(PAGE_SIZE, RW, ANON | MAP_FIXED, addr=FIXED)
        mm.mmap(PAGE_SIZE, RW, ANON | MAP_FIXED, addr=FIXED + 2 * PAGE_SIZE)
        assert mm.mprotect(FIXED, 3 * PAGE_SIZE, PROT_READ) == -errno.ENOMEM
        assert all(v.flags & VM_WRITE for v in mm.vmas)

    def test_mprotect_unaligned(self, mm):
        """mprotect of an unaligned address gives -EINVAL."""
        mm.mmap(PAGE_SIZE, RW, ANON | MAP_FIXED, addr=FIXED)
        assert mm.mprotect(FIXED + 1, PAGE_SIZE, PROT_READ) == -errno.EINVAL

    def test_mprotect_read_only(self, mm):
        """After mprotect(PROT_READ) writes fault with -EFAULT, reads still work."""
        mm.mmap(2 * PAGE_SIZE, RW, ANON | MAP_FIXED, addr=FIXED)
        assert mm.write(FIXED, b"x") == 1
        assert mm.mprotect(FIXED, PAGE_SIZE, PROT_READ) == 0
        assert len(mm.vmas) == 2
        assert mm.write(FIXED, b"y") == -errno.EFAULT
        assert mm.read(FIXED, 1) == b"x"
        assert mm.write(FIXED + PAGE_SIZE, b"z") == 1

    def test_mprotect_write_on_sealed_shared(self, k, mm):
        """PROT_WRITE on a read-only shared mapping of a write-sealed memfd gives -EACCES."""
        f = memfd(k)
        assert f.add_seals(F_SEAL_WRITE) == 0
        addr = mm.mmap(PAGE_SIZE, PROT_READ, MAP_SHARED, file=f)
        assert mm.mprotect(addr, PAGE_SIZE, RW) == -errno.EACCES
        assert mm.write(addr, b"x") == -errno.EFAULT

    def test_split_vmas_keep_file_mapped(self, k, mm):
        """Each piece of a split file VMA counts as a mapper until it is unmapped."""
        f = memfd(k, 2 * PAGE_SIZE)
        addr = mm.mmap(2 * PAGE_SIZE, RW, MAP_SHARED, file=f)
        assert mm.mprotect(addr, PAGE_SIZE, PROT_READ) == 0
        assert (f._mappers, f._writable_maps) == (2, 2)
        assert mm.munmap(addr, 2 * PAGE_SIZE) == 0
        assert (f._mappers, f._writable_maps) == (0, 0)

    def test_close_then_munmap_releases_page_cache(self, k, mm):
        """A closed memfd's page cache goes away with its last mapping."""
        f = memfd(k, PAGE_SIZE)
        addr = mm.mmap(PAGE_SIZE, RW, MAP_SHARED, file=f)
        assert mm.write(addr, b"x") == 1
        folio = mm.lookup(addr)[0]
        f.close()
        assert len(f.mapping) == 1
        assert mm.munmap(addr, PAGE_SIZE) == 0
        k.lru_add_drain()
        assert len(f.mapping) == 0 and folio.freed


# ---------------------------------------------------------------------------- faults
class TestUserAccess:
    def test_read_untouched_anonymous_maps_zero_folio(self, k, mm):
        """A read of untouched private anonymous memory maps the shared zero folio."""
        addr = mm.mmap(2 * PAGE_SIZE, RW, ANON)
        before = k.nr_allocated_pages
        assert mm.read(addr, 16) == bytes(16)
        assert mm.lookup(addr)[0] is k.zero_folio
        assert k.nr_allocated_pages == before

    def test_write_after_zero_read_allocates(self, k, mm):
        """Writing a zero-folio PTE allocates a private exclusive anonymous folio."""
        addr = mm.mmap(PAGE_SIZE, RW, ANON)
        mm.read(addr, 1)
        assert mm.write(addr + 5, b"hi") == 2
        folio, idx = mm.lookup(addr)
        assert folio is not k.zero_folio and idx == 0
        assert folio.kind == "anon" and folio.flags & PG_anon_exclusive
        assert (folio.mapcount, folio.refcount) == (1, 2)     # mapping + LRU batch
        assert mm.read(addr, 8) == b"\0\0\0\0\0hi\0"

    def test_write_spanning_pages(self, mm):
        """A write crossing a page boundary lands in both pages."""
        addr = mm.mmap(2 * PAGE_SIZE, RW, ANON)
        assert mm.write(addr + PAGE_SIZE - 2, b"abcd") == 4
        assert mm.lookup(addr)[0] is not mm.lookup(addr + PAGE_SIZE)[0]
        assert mm.read(addr + PAGE_SIZE - 2, 4) == b"abcd"

    def test_thp_for_aligned_write(self):
        """With thp="always" a write into an untouched aligned 2 MiB range maps one THP."""
        k = FakeMM(MMConfig(ram="1GiB", thp="always"))
        mm = k.current.mm
        addr = mm.mmap(4 * MiB, RW, ANON)
        assert mm.write(addr + 3 * PAGE_SIZE, b"t") == 1
        folio, idx = mm.lookup(addr + 3 * PAGE_SIZE)
        assert (folio.order, idx) == (9, 3)
        assert mm.lookup(addr)[0] is folio and mm.lookup(addr + 2 * MiB - PAGE_SIZE)[0] is folio
        assert (folio.refcount, folio.mapcount) == (1, 1)
        assert k.folio_test_lru(folio)

    @pytest.mark.parametrize("thp", ["never", "madvise"])
    def test_no_thp_without_always(self, thp):
        """Without thp="always" (and no MADV_HUGEPAGE) faults map small folios."""
        k = FakeMM(MMConfig(ram="1GiB", thp=thp))
        mm = k.current.mm
        addr = mm.mmap(4 * MiB, RW, ANON | MAP_FIXED, addr=FIXED)
        assert mm.write(addr, b"t") == 1
        assert mm.lookup(addr)[0].order == 0
        assert mm.lookup(addr + PAGE_SIZE) is None

    def test_no_thp_for_partial_range(self):
        """A VMA that does not cover the whole aligned 2 MiB range gets small folios."""
        k = FakeMM(MMConfig(ram="1GiB", thp="always"))
        mm = k.current.mm
        addr = mm.mmap(MiB, RW, ANON | MAP_FIXED, addr=FIXED)
        assert mm.write(addr, b"t") == 1
        assert mm.lookup(addr)[0].order == 0

    def test_efault_unmapped(self, mm):
        """Access to an unmapped address gives -EFAULT."""
        assert mm.read(FIXED, 1) == -errno.EFAULT
        assert mm.write(FIXED, b"x") == -errno.EFAULT

    def test_efault_prot_none(self, mm):
        """Access to a PROT_NONE mapping gives -EFAULT and maps nothing."""
        addr = mm.mmap(PAGE_SIZE, PROT_NONE, ANON)
        assert mm.read(addr, 1) == -errno.EFAULT
        assert mm.write(addr, b"x") == -errno.EFAULT
        assert mm.lookup(addr) is None

    def test_write_to_read_only_mapping(self, mm):
        """A write to a PROT_READ mapping gives -EFAULT."""
        addr = mm.mmap(PAGE_SIZE, PROT_READ, ANON)
        assert mm.write(addr, b"x") == -errno.EFAULT

    def test_shared_file_mapping_writes_through(self, k, mm):
        """A MAP_SHARED memfd mapping and pread/pwrite see the same page cache."""
        f = memfd(k, PAGE_SIZE)
        addr = mm.mmap(PAGE_SIZE, RW, MAP_SHARED, file=f)
        assert mm.write(addr, b"shared") == 6
        assert f.pread(6, 0) == b"shared"
        assert mm.lookup(addr)[0] is f.mapping.lookup(0)
        assert f.pwrite(b"S", 0) == 1
        assert mm.read(addr, 6) == b"Shared"

    def test_file_fault_beyond_eof(self, k, mm):
        """Touching a shared file mapping beyond i_size gives -EFAULT (SIGBUS)."""
        f = memfd(k, PAGE_SIZE)
        addr = mm.mmap(2 * PAGE_SIZE, RW, MAP_SHARED, file=f)
        assert mm.read(addr + PAGE_SIZE, 1) == -errno.EFAULT


# ---------------------------------------------------------------------------- COW
class TestCopyOnWrite:
    def test_private_file_read_maps_page_cache(self, k, mm):
        """Reading a MAP_PRIVATE file mapping maps the page-cache folio itself."""
        f = memfd(k, PAGE_SIZE)
        f.pwrite(b"file", 0)
        addr = mm.mmap(PAGE_SIZE, RW, MAP_PRIVATE, file=f)
        assert mm.read(addr, 4) == b"file"
        assert mm.lookup(addr)[0] is f.mapping.lookup(0)

    def test_private_file_write_copies(self, k, mm):
        """Writing a MAP_PRIVATE file mapping copies the page; the file is unchanged."""
        f = memfd(k, PAGE_SIZE)
        f.pwrite(b"file", 0)
        cache = f.mapping.lookup(0)
        addr = mm.mmap(PAGE_SIZE, RW, MAP_PRIVATE, file=f)
        mm.read(addr, 1)
        assert mm.write(addr, b"priv") == 4
        folio = mm.lookup(addr)[0]
        assert folio is not cache and folio.kind == "anon"
        assert mm.read(addr, 4) == b"priv" and f.pread(4, 0) == b"file"
        assert cache.mapcount == 0

    def test_private_file_write_without_read(self, k, mm):
        """A first-touch write to a private file mapping copies the file's data."""
        f = memfd(k, PAGE_SIZE)
        f.pwrite(b"abcdef", 0)
        addr = mm.mmap(PAGE_SIZE, RW, MAP_PRIVATE, file=f)
        assert mm.write(addr, b"X") == 1
        assert mm.read(addr, 6) == b"Xbcdef" and f.pread(6, 0) == b"abcdef"

    def test_fork_child_keeps_old_data(self, k, mm):
        """After fork a parent write gets a new folio; the child still sees the old data."""
        addr = mm.mmap(PAGE_SIZE, RW, ANON)
        mm.write(addr, b"old")
        shared = mm.lookup(addr)[0]
        child = k.fork(mm)
        assert child.lookup(addr)[0] is shared and shared.mapcount == 2
        assert not shared.flags & PG_anon_exclusive
        assert mm.write(addr, b"new") == 3
        assert mm.lookup(addr)[0] is not shared
        assert child.read(addr, 3) == b"old" and mm.read(addr, 3) == b"new"
        assert shared.mapcount == 1

    def test_fork_child_write_copies(self, k, mm):
        """A child write copies too and leaves the parent's data alone."""
        addr = mm.mmap(PAGE_SIZE, RW, ANON)
        mm.write(addr, b"old")
        child = k.fork(mm)
        assert child.write(addr, b"kid") == 3
        assert mm.read(addr, 3) == b"old" and child.read(addr, 3) == b"kid"

    def test_fork_shared_mapping_not_copied(self, k, mm):
        """MAP_SHARED memory stays shared between parent and child after fork."""
        f = memfd(k, PAGE_SIZE)
        addr = mm.mmap(PAGE_SIZE, RW, MAP_SHARED, file=f)
        mm.write(addr, b"one")
        child = k.fork(mm)
        assert child.write(addr, b"two") == 3
        assert mm.read(addr, 3) == b"two"
        assert f._mappers == 2

    def test_fork_copies_pinned_pages_eagerly(self, k, mm):
        """In an mm with MMF_HAS_PINNED a maybe-pinned anon page is copied at fork."""
        addr = mm.mmap(PAGE_SIZE, RW, ANON)
        mm.write(addr, b"dma")
        pages = []
        assert k.pin_user_pages(addr, 1, 0, pages) == 1
        child = k.fork(mm)
        assert child.lookup(addr)[0] is not pages[0].folio
        assert mm.lookup(addr)[0] is pages[0].folio
        assert child.read(addr, 3) == b"dma"
        assert pages[0].folio.flags & PG_anon_exclusive
        k.unpin_user_pages(pages, 1)


# ---------------------------------------------------------------------------- mlock
class TestMlock:
    def test_mlock_populates_and_charges(self, k, mm):
        """mlock faults the range in (real pages, not the zero folio) and charges locked_vm."""
        addr = mm.mmap(8 * PAGE_SIZE, RW, ANON)
        assert mm.mlock(addr, 4 * PAGE_SIZE) == 0
        assert mm.locked_vm == 4
        for i in range(4):
            folio = mm.lookup(addr + i * PAGE_SIZE)[0]
            assert folio is not k.zero_folio and folio.flags & PG_mlocked
        assert mm.lookup(addr + 4 * PAGE_SIZE) is None
        assert mm.find_vma(addr).flags & VM_LOCKED

    def test_mlock2_onfault_does_not_populate(self, mm):
        """mlock2(MLOCK_ONFAULT) charges locked_vm but maps nothing."""
        addr = mm.mmap(4 * PAGE_SIZE, RW, ANON)
        assert mm.mlock2(addr, 4 * PAGE_SIZE, MLOCK_ONFAULT) == 0
        assert mm.locked_vm == 4
        assert all(mm.lookup(addr + i * PAGE_SIZE) is None for i in range(4))
        assert mm.find_vma(addr).flags & (VM_LOCKED | VM_LOCKONFAULT) == VM_LOCKED | VM_LOCKONFAULT

    def test_mlock_twice_charges_once(self, mm):
        """Locking an already locked range does not charge it again."""
        addr = mm.mmap(4 * PAGE_SIZE, RW, ANON)
        assert mm.mlock(addr, 2 * PAGE_SIZE) == 0
        assert mm.mlock(addr, 4 * PAGE_SIZE) == 0
        assert mm.locked_vm == 4

    def test_mlock2_bad_flags(self, mm):
        """mlock2 with an unknown flag gives -EINVAL."""
        addr = mm.mmap(PAGE_SIZE, RW, ANON)
        assert mm.mlock2(addr, PAGE_SIZE, 0x4) == -errno.EINVAL
        assert mm.locked_vm == 0

    def test_mlock_hole(self, mm):
        """mlock over unmapped memory gives -ENOMEM."""
        assert mm.mlock(FIXED, PAGE_SIZE) == -errno.ENOMEM

    def test_rlimit_memlock(self, mm):
        """Locking beyond RLIMIT_MEMLOCK (8 MiB default) gives -ENOMEM and charges nothing."""
        assert mm.rlimit_memlock == 8 * MiB
        addr = mm.mmap(16 * MiB, RW, ANON)
        assert mm.mlock(addr, 8 * MiB + PAGE_SIZE) == -errno.ENOMEM
        assert mm.locked_vm == 0
        assert mm.mlock2(addr, 8 * MiB, MLOCK_ONFAULT) == 0
        assert mm.locked_vm == 2048

    def test_cap_ipc_lock_bypasses_limit(self, k, mm):
        """A task with CAP_IPC_LOCK may lock beyond RLIMIT_MEMLOCK."""
        k.current.cap_ipc_lock = True
        addr = mm.mmap(16 * MiB, RW, ANON)
        assert mm.mlock2(addr, 16 * MiB, MLOCK_ONFAULT) == 0
        assert mm.locked_vm == 4096

    def test_munmap_uncharges(self, mm):
        """Unmapping a locked range gives its pages back to locked_vm."""
        addr = mm.mmap(4 * PAGE_SIZE, RW, ANON)
        mm.mlock2(addr, 4 * PAGE_SIZE, MLOCK_ONFAULT)
        assert mm.munmap(addr, 4 * PAGE_SIZE) == 0
        assert mm.locked_vm == 0

    def test_memlock_config(self):
        """MMConfig(memlock=...) sets the RLIMIT_MEMLOCK of new address spaces."""
        k = FakeMM(MMConfig(ram="1GiB", memlock="64KiB"))
        mm = k.create_mm()
        assert mm.rlimit_memlock == 64 << 10
        addr = mm.mmap(32 * PAGE_SIZE, RW, ANON)
        assert mm.mlock2(addr, 16 * PAGE_SIZE, MLOCK_ONFAULT) == 0
        assert mm.mlock2(addr + 16 * PAGE_SIZE, PAGE_SIZE, MLOCK_ONFAULT) == -errno.ENOMEM


class TestAccountLockedVm:
    def test_charge_and_uncharge(self, k, mm):
        """account_locked_vm charges and uncharges pages."""
        assert k.account_locked_vm(mm, 100, True) == 0
        assert mm.locked_vm == 100
        assert k.account_locked_vm(mm, 40, False) == 0
        assert mm.locked_vm == 60
        assert k.warnings == []

    def test_limit(self, k, mm):
        """A charge beyond RLIMIT_MEMLOCK gives -ENOMEM and charges nothing."""
        assert k.account_locked_vm(mm, 2048, True) == 0
        assert k.account_locked_vm(mm, 1, True) == -errno.ENOMEM
        assert mm.locked_vm == 2048

    def test_limit_counts_mlock(self, k, mm):
        """mlock'ed pages and account_locked_vm charges share one budget."""
        addr = mm.mmap(1024 * PAGE_SIZE, RW, ANON)
        assert mm.mlock2(addr, 1024 * PAGE_SIZE, MLOCK_ONFAULT) == 0
        assert k.account_locked_vm(mm, 1025, True) == -errno.ENOMEM
        assert k.account_locked_vm(mm, 1024, True) == 0

    def test_cap_ipc_lock(self, k, mm):
        """CAP_IPC_LOCK bypasses the limit."""
        k.current.cap_ipc_lock = True
        assert k.account_locked_vm(mm, 4096, True) == 0
        assert mm.locked_vm == 4096

    def test_zero_pages_or_no_mm(self, k, mm):
        """pages == 0 or mm == NULL is a successful no-op."""
        assert k.account_locked_vm(mm, 0, True) == 0
        assert k.account_locked_vm(None, 10, True) == 0
        assert mm.locked_vm == 0

    def test_uncharge_underflow_warns(self, k, mm):
        """Uncharging more than is charged records a KernelWarning."""
        assert k.account_locked_vm(mm, 3, True) == 0
        assert k.account_locked_vm(mm, 5, False) == 0
        assert len(k.warnings) == 1
        w = k.warnings[0]
        assert w.site == "account_locked_vm" and "pages > locked_vm" in w.message
        assert "test_mm_types.py" in w.caller


# ---------------------------------------------------------------------------- tasks
class TestTasks:
    def test_init_task(self, k):
        """The machine starts with an init task that owns an address space."""
        assert k.current.comm == "init" and k.current.pid == 1 and k.current.cpu == 0
        assert k.current.mm is not None and k.current.flags == 0

    def test_create_task_round_robin_cpus(self, k):
        """New tasks get their own mm and the next cpu in turn."""
        t1, t2 = k.create_task("a"), k.create_task("b")
        assert (t1.pid, t1.cpu, t2.pid, t2.cpu) == (2, 1, 3, 0)
        assert t1.mm is not k.current.mm and t1.mm is not t2.mm

    def test_create_task_sharing_mm(self, k):
        """create_task(mm=...) makes a thread of an existing address space."""
        t = k.create_task("thread", mm=k.current.mm)
        assert t.mm is k.current.mm

    def test_run_as_switches_current(self, k):
        """run_as makes the task current inside the block and restores afterwards."""
        init = k.current
        t = k.create_task("worker")
        with k.run_as(t) as got:
            assert got is t and k.current is t
        assert k.current is init

    def test_run_as_restores_on_exception(self, k):
        """run_as restores current when the block raises."""
        init = k.current
        with pytest.raises(RuntimeError):
            with k.run_as(k.create_task()):
                raise RuntimeError
        assert k.current is init

    def test_lru_batch_is_per_cpu(self, k):
        """A folio faulted by a task sits in its own cpu's LRU add batch."""
        t = k.create_task("worker")
        with k.run_as(t):
            mm = t.mm
            addr = mm.mmap(PAGE_SIZE, RW, ANON)
            mm.write(addr, b"x")
            folio = mm.lookup(addr)[0]
        assert folio.lru_batch == t.cpu == 1
        k.lru_add_drain()                          # init's cpu 0: not this batch
        assert folio.lru_batch == 1 and not k.folio_test_lru(folio)
        k.lru_add_drain_all()
        assert folio.lru_batch == -1 and k.folio_test_lru(folio)
        assert folio.refcount == 1
