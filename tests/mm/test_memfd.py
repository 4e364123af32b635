"""memfd on shmem and hugetlbfs: memfd_create, seals, pread/pwrite, fallocate, the page
cache helpers and memfd_alloc_folio.

Kernel: mm/memfd.c, mm/shmem.c, fs/hugetlbfs/inode.c, mm/filemap.c (see
docs/kernel-contract §4.4).
"""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import FakeMM, MMConfig, Out
from pytest_pinfault.mm import (F_SEAL_EXEC, F_SEAL_FUTURE_WRITE, F_SEAL_GROW, F_SEAL_SEAL,
                                F_SEAL_SHRINK, F_SEAL_WRITE, FALLOC_FL_KEEP_SIZE,
                                FALLOC_FL_PUNCH_HOLE, MAP_PRIVATE, MAP_SHARED, MFD_ALLOW_SEALING,
                                MFD_CLOEXEC, MFD_EXEC, MFD_HUGE_1GB, MFD_HUGE_2MB, MFD_HUGETLB,
                                MFD_NOEXEC_SEAL, PAGE_SIZE, PROT_READ, PROT_WRITE, MemFile)

MiB = 1 << 20
HPAGE = 2 * MiB
RW = PROT_READ | PROT_WRITE


@pytest.fixture
def k() -> FakeMM:
    return FakeMM(MMConfig(ram="1GiB", cma="64MiB", movablecore="128MiB"))


@pytest.fixture
def hk() -> FakeMM:
    """A machine with a 4-page 2 MiB hugetlb pool outside ZONE_MOVABLE and CMA."""
    return FakeMM(MMConfig(ram="1GiB", hugetlb={"2MiB": 4}))


def sealable(k, size=4 * PAGE_SIZE):
    f = k.memfd_create("s", MFD_ALLOW_SEALING)
    assert isinstance(f, MemFile) and f.ftruncate(size) == 0
    return f


def pool(k):
    h = k.hstate()
    return h.nr_huge_pages, h.free_huge_pages, h.resv_huge_pages


# ---------------------------------------------------------------------------- memfd_create
class TestMemfdCreate:
    @pytest.mark.parametrize("flags", [
        0x100,
        MFD_HUGE_2MB,
        MFD_ALLOW_SEALING | MFD_HUGE_1GB,
        MFD_EXEC | MFD_NOEXEC_SEAL,
        MFD_HUGETLB | 0x100,
    ], ids=["unknown-flag", "huge-size-without-hugetlb", "sealing-with-huge-size",
            "exec-and-noexec-seal", "hugetlb-unknown-flag"])
    def test_einval_flags(self, k, flags):
        """Unknown flags and a huge page size without MFD_HUGETLB give -EINVAL."""
        assert k.memfd_create("bad", flags) == -errno.EINVAL

    def test_name_length(self, k):
        """Names up to 249 bytes are accepted, longer ones give -EINVAL."""
        assert isinstance(k.memfd_create("x" * 249, 0), MemFile)
        assert k.memfd_create("x" * 250, 0) == -errno.EINVAL

    def test_huge_size_without_hstate(self, k):
        """MFD_HUGETLB with a size the machine has no hstate for gives -ENODEV."""
        assert k.memfd_create("h", MFD_HUGETLB | (16 << 26)) == -errno.ENODEV

    @pytest.mark.parametrize("flags, size", [
        (MFD_HUGETLB, HPAGE),
        (MFD_HUGETLB | MFD_HUGE_2MB, HPAGE),
        (MFD_HUGETLB | MFD_HUGE_1GB, 1 << 30),
    ])
    def test_hugetlb_sizes(self, k, flags, size):
        """MFD_HUGETLB picks the default or the encoded huge page size."""
        f = k.memfd_create("h", flags)
        assert f.is_file_hugepages() and not f.shmem_file()
        assert f.hstate.size == size

    def test_shmem_file(self, k):
        """Without MFD_HUGETLB the file is shmem, empty and unsealed if sealing is allowed."""
        f = k.memfd_create("s", MFD_ALLOW_SEALING | MFD_CLOEXEC)
        assert f.shmem_file() and not f.is_file_hugepages()
        assert (f.i_size, f.get_seals(), len(f.mapping)) == (0, 0, 0)

    def test_no_sealing_sets_seal_seal(self, k):
        """Without MFD_ALLOW_SEALING the file carries F_SEAL_SEAL and refuses seals."""
        f = k.memfd_create("s", 0)
        assert f.get_seals() == F_SEAL_SEAL
        assert f.add_seals(F_SEAL_SHRINK) == -errno.EPERM
        assert f.get_seals() == F_SEAL_SEAL

    def test_noexec_seal(self, k):
        """MFD_NOEXEC_SEAL makes the file sealable and seals F_SEAL_EXEC."""
        f = k.memfd_create("s", MFD_NOEXEC_SEAL)
        assert f.get_seals() == F_SEAL_EXEC
        assert f.add_seals(F_SEAL_GROW) == 0


# ---------------------------------------------------------------------------- seals
class TestSeals:
    def test_shrink_seal(self, k):
        """F_SEAL_SHRINK: shrinking gives -EPERM, growing still works."""
        f = sealable(k)
        assert f.add_seals(F_SEAL_SHRINK) == 0
        assert f.ftruncate(PAGE_SIZE) == -errno.EPERM
        assert f.ftruncate(8 * PAGE_SIZE) == 0
        assert f.i_size == 8 * PAGE_SIZE

    def test_grow_seal(self, k):
        """F_SEAL_GROW: growing by ftruncate or pwrite gives -EPERM, shrinking works."""
        f = sealable(k)
        assert f.add_seals(F_SEAL_GROW) == 0
        assert f.ftruncate(8 * PAGE_SIZE) == -errno.EPERM
        assert f.pwrite(b"x", 4 * PAGE_SIZE) == -errno.EPERM
        assert f.pwrite(b"x", 4 * PAGE_SIZE - 1) == 1
        assert f.ftruncate(PAGE_SIZE) == 0

    @pytest.mark.parametrize("seal", [F_SEAL_WRITE, F_SEAL_FUTURE_WRITE])
    def test_write_seals_block_pwrite(self, k, seal):
        """F_SEAL_WRITE and F_SEAL_FUTURE_WRITE make pwrite and hole punching -EPERM."""
        f = sealable(k)
        assert f.pwrite(b"data", 0) == 4
        assert f.add_seals(seal) == 0
        assert f.pwrite(b"more", 0) == -errno.EPERM
        assert f.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PAGE_SIZE) == -errno.EPERM
        assert f.pread(4, 0) == b"data"

    def test_write_seal_busy_with_writable_mapping(self, k):
        """F_SEAL_WRITE while a shared writable mapping exists gives -EBUSY."""
        f = sealable(k)
        mm = k.current.mm
        addr = mm.mmap(PAGE_SIZE, RW, MAP_SHARED, file=f)
        assert f.add_seals(F_SEAL_WRITE) == -errno.EBUSY
        assert f.get_seals() == 0
        assert mm.munmap(addr, PAGE_SIZE) == 0
        assert f.add_seals(F_SEAL_WRITE) == 0

    def test_write_seal_busy_with_maywrite_shared_mapping(self, k):
        """A read-only shared mapping that may become writable also blocks F_SEAL_WRITE."""
        f = sealable(k)
        mm = k.current.mm
        addr = mm.mmap(PAGE_SIZE, PROT_READ, MAP_SHARED, file=f)
        assert f.add_seals(F_SEAL_WRITE) == -errno.EBUSY
        assert mm.mprotect(addr, PAGE_SIZE, RW) == 0          # which is why
        assert mm.write(addr, b"w") == 1

    def test_write_seal_ignores_private_mapping(self, k):
        """Private mappings do not block F_SEAL_WRITE."""
        f = sealable(k)
        k.current.mm.mmap(PAGE_SIZE, RW, MAP_PRIVATE, file=f)
        assert f.add_seals(F_SEAL_WRITE) == 0

    def test_future_write_ignores_existing_mapping(self, k):
        """F_SEAL_FUTURE_WRITE does not care about existing writable mappings."""
        f = sealable(k)
        mm = k.current.mm
        addr = mm.mmap(PAGE_SIZE, RW, MAP_SHARED, file=f)
        assert f.add_seals(F_SEAL_FUTURE_WRITE) == 0
        assert mm.write(addr, b"old mapping still writes") > 0

    def test_write_seal_busy_with_pinned_page(self, k):
        """F_SEAL_WRITE while a page-cache folio is pinned gives -EBUSY."""
        f = sealable(k)
        f.pwrite(b"p", 0)
        folios = []
        assert k.memfd_pin_folios(f, 0, PAGE_SIZE - 1, folios, 1, Out()) == 1
        assert f.add_seals(F_SEAL_WRITE) == -errno.EBUSY
        k.unpin_folios(folios, 1)
        assert f.add_seals(F_SEAL_WRITE) == 0

    def test_write_seal_busy_with_extra_reference(self, k):
        """An extra folio reference (a short-term GUP) also blocks F_SEAL_WRITE."""
        f = sealable(k)
        f.pwrite(b"p", 0)
        folio = k.filemap_get_folio(f.mapping, 0)
        assert f.add_seals(F_SEAL_WRITE) == -errno.EBUSY
        k.folio_put(folio)
        assert f.add_seals(F_SEAL_WRITE) == 0

    def test_seal_seal(self, k):
        """After F_SEAL_SEAL no more seals can be added (-EPERM)."""
        f = sealable(k)
        assert f.add_seals(F_SEAL_SHRINK | F_SEAL_SEAL) == 0
        assert f.add_seals(F_SEAL_GROW) == -errno.EPERM
        assert f.get_seals() == F_SEAL_SHRINK | F_SEAL_SEAL

    def test_unknown_seal_bits(self, k):
        """Unknown seal bits give -EINVAL, even on a F_SEAL_SEAL'ed file."""
        f = sealable(k)
        assert f.add_seals(0x40) == -errno.EINVAL
        assert f.add_seals(F_SEAL_SEAL) == 0
        assert f.add_seals(0x40) == -errno.EINVAL

    def test_seals_accumulate(self, k):
        """Seals are OR-ed together."""
        f = sealable(k)
        assert f.add_seals(F_SEAL_SHRINK) == 0
        assert f.add_seals(F_SEAL_GROW) == 0
        assert f.get_seals() == F_SEAL_SHRINK | F_SEAL_GROW


# ---------------------------------------------------------------------------- data
class TestReadWrite:
    def test_holes_read_as_zeros(self, k):
        """pread of a never-written range returns zeros without allocating."""
        f = sealable(k)
        assert f.pread(3 * PAGE_SIZE, 0) == bytes(3 * PAGE_SIZE)
        assert len(f.mapping) == 0

    def test_pwrite_then_pread(self, k):
        """Data written across a page boundary reads back; only touched pages exist."""
        f = sealable(k)
        assert f.pwrite(b"abcdef", PAGE_SIZE - 3) == 6
        assert f.pread(8, PAGE_SIZE - 4) == b"\0abcdef\0"
        assert sorted(f.mapping.pages) == [0, 1]
        assert f.mapping.nrpages == 2

    def test_pread_at_eof(self, k):
        """pread is short at EOF and empty beyond it."""
        f = sealable(k, PAGE_SIZE)
        f.pwrite(b"xyz", PAGE_SIZE - 3)
        assert f.pread(10, PAGE_SIZE - 3) == b"xyz"
        assert f.pread(10, PAGE_SIZE) == b""
        assert f.pread(10, 10 * PAGE_SIZE) == b""

    def test_pwrite_extends_size(self, k):
        """pwrite past EOF grows i_size to the end of the write."""
        f = sealable(k, 0)
        assert f.pwrite(b"12345", 100) == 5
        assert f.i_size == 105
        assert f.pread(200, 0) == bytes(100) + b"12345"

    def test_negative_offsets(self, k):
        """Negative offsets give -EINVAL."""
        f = sealable(k)
        assert f.pwrite(b"x", -1) == -errno.EINVAL
        assert f.pread(1, -1) == -errno.EINVAL

    def test_ftruncate_drops_page_cache(self, k):
        """Shrinking drops the folios beyond the new size and their data."""
        f = sealable(k)
        f.pwrite(b"a" * 4 * PAGE_SIZE, 0)
        assert f.ftruncate(PAGE_SIZE + 1) == 0
        assert sorted(f.mapping.pages) == [0, 1]
        assert f.ftruncate(4 * PAGE_SIZE) == 0
        assert f.pread(2, PAGE_SIZE) == b"a\0"       # the cut-off tail was zeroed
        assert f.pread(1, 3 * PAGE_SIZE) == b"\0"

    def test_ftruncate_negative(self, k):
        """A negative size gives -EINVAL."""
        assert sealable(k).ftruncate(-1) == -errno.EINVAL

    def test_fallocate_shmem(self, k):
        """fallocate allocates the page cache and grows i_size unless KEEP_SIZE."""
        f = sealable(k, 0)
        assert f.fallocate(0, 0, 3 * PAGE_SIZE) == 0
        assert (f.i_size, len(f.mapping)) == (3 * PAGE_SIZE, 3)
        assert f.fallocate(FALLOC_FL_KEEP_SIZE, 3 * PAGE_SIZE, PAGE_SIZE) == 0
        assert (f.i_size, len(f.mapping)) == (3 * PAGE_SIZE, 4)

    @pytest.mark.parametrize("mode, offset, length, err", [
        (0, -1, PAGE_SIZE, errno.EINVAL),
        (0, 0, 0, errno.EINVAL),
        (0x80, 0, PAGE_SIZE, errno.EOPNOTSUPP),
        (FALLOC_FL_PUNCH_HOLE, 0, PAGE_SIZE, errno.EOPNOTSUPP),
    ], ids=["negative-offset", "zero-length", "unknown-mode", "punch-without-keep-size"])
    def test_fallocate_errors(self, k, mode, offset, length, err):
        """fallocate rejects bad ranges and unsupported modes."""
        assert sealable(k).fallocate(mode, offset, length) == -err

    def test_punch_hole(self, k):
        """Punching a hole frees whole pages inside the range only."""
        f = sealable(k)
        f.pwrite(b"z" * 4 * PAGE_SIZE, 0)
        assert f.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 3 * PAGE_SIZE) == 0
        assert sorted(f.mapping.pages) == [0, 3]
        assert f.i_size == 4 * PAGE_SIZE
        assert f.pread(1, PAGE_SIZE) == b"\0"

    def test_punch_hole_zeroes_partial_pages(self, k):
        """The partial pages at both ends of a punched hole read as zeros inside it."""
        f = sealable(k)
        f.pwrite(b"z" * 4 * PAGE_SIZE, 0)
        assert f.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 3 * PAGE_SIZE) == 0
        assert f.pread(2, 99) == b"z\0"
        assert f.pread(2, 3 * PAGE_SIZE + 99) == b"\0z"
        assert f.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 3 * PAGE_SIZE + 200, 10) == 0
        assert f.pread(12, 3 * PAGE_SIZE + 199) == b"z" + bytes(10) + b"z"
        assert sorted(f.mapping.pages) == [0, 3]


# ---------------------------------------------------------------------------- placement
class TestShmemPlacement:
    def test_shmem_folios_are_movable(self, k):
        """shmem page cache is allocated movable: it lands in ZONE_MOVABLE by default."""
        f = sealable(k)
        f.pwrite(b"m", 0)
        folio = f.mapping.lookup(0)
        assert folio.zone == "Movable" and folio.kind == "shmem"
        assert not k.folio_is_longterm_pinnable(folio)

    def test_steer_cma(self, k):
        """Under steer("cma") new shmem folios come from the CMA area."""
        f = sealable(k)
        with k.steer("cma"):
            f.pwrite(b"c" * 4 * PAGE_SIZE, 0)
        area = k.cma_areas[0]
        for folio in f.mapping.pages.values():
            assert folio.is_cma and area.base_pfn <= folio.pfn < area.end_pfn

    def test_steer_normal(self, k):
        """Under steer("normal") shmem folios avoid ZONE_MOVABLE and CMA."""
        f = sealable(k)
        with k.steer("normal"):
            f.pwrite(b"n" * 4 * PAGE_SIZE, 0)
        assert all(k.folio_is_longterm_pinnable(x) for x in f.mapping.pages.values())

    def test_pin_context_allocates_pinnable(self, k):
        """Under PF_MEMALLOC_PIN the mapping's movable gfp is masked: no CMA, no Movable."""
        f = sealable(k)
        saved = k.memalloc_pin_save()
        with k.steer("cma"):
            f.pwrite(b"p", 0)
        k.memalloc_pin_restore(saved)
        assert k.folio_is_longterm_pinnable(f.mapping.lookup(0))


# ---------------------------------------------------------------------------- hugetlbfs
class TestHugetlbfs:
    def test_pwrite_einval(self, hk):
        """hugetlbfs has no write(2): pwrite gives -EINVAL."""
        f = hk.memfd_create("h", MFD_HUGETLB)
        assert f.ftruncate(HPAGE) == 0
        assert f.pwrite(b"x", 0) == -errno.EINVAL
        assert len(f.mapping) == 0

    def test_ftruncate_unaligned(self, hk):
        """ftruncate to a size that is not a huge page multiple gives -EINVAL."""
        f = hk.memfd_create("h", MFD_HUGETLB)
        assert f.ftruncate(HPAGE + PAGE_SIZE) == -errno.EINVAL
        assert f.ftruncate(2 * HPAGE) == 0

    def test_fallocate_takes_from_pool(self, hk):
        """fallocate takes huge pages from the pool into the page cache."""
        f = hk.memfd_create("h", MFD_HUGETLB)
        assert pool(hk) == (4, 4, 0)
        assert f.fallocate(0, 0, 2 * HPAGE) == 0
        assert pool(hk) == (4, 2, 0)
        assert f.i_size == 2 * HPAGE and f.mapping.nrpages == 1024
        folio = f.mapping.lookup(0)
        assert folio.order == 9 and folio.kind == "hugetlb"
        assert f.mapping.lookup(511) is folio and f.mapping.lookup(512) is not folio
        assert folio.refcount == 512                 # the page cache's, one per page

    def test_fallocate_partial_huge_page(self, hk):
        """A range touching part of a huge page allocates the whole page."""
        f = hk.memfd_create("h", MFD_HUGETLB)
        assert f.fallocate(0, HPAGE - 1, 2) == 0
        assert sorted(f.mapping.pages) == [0, 512]

    def test_fallocate_enospc_when_pool_empty(self, hk):
        """fallocate gives -ENOSPC once the pool is empty (pages already taken stay)."""
        f = hk.memfd_create("h", MFD_HUGETLB)
        assert f.fallocate(0, 0, 6 * HPAGE) == -errno.ENOSPC
        assert pool(hk) == (4, 0, 0)
        assert len(f.mapping) == 4

    def test_fallocate_reads_zero(self, hk):
        """Allocated huge pages read as zeros through pread."""
        f = hk.memfd_create("h", MFD_HUGETLB)
        f.fallocate(0, 0, HPAGE)
        assert f.pread(8, HPAGE - 8) == bytes(8)

    def test_truncate_restores_pool(self, hk):
        """Truncating the file gives its huge pages back to the pool."""
        f = hk.memfd_create("h", MFD_HUGETLB)
        f.fallocate(0, 0, 3 * HPAGE)
        assert f.ftruncate(HPAGE) == 0
        assert pool(hk) == (4, 3, 0)
        assert f.ftruncate(0) == 0
        assert pool(hk) == (4, 4, 0)

    def test_close_restores_pool(self, hk):
        """Closing an unmapped file frees its pages and reservations."""
        f = hk.memfd_create("h", MFD_HUGETLB)
        f.ftruncate(4 * HPAGE)
        mm = hk.current.mm
        addr = mm.mmap(4 * HPAGE, RW, MAP_SHARED, file=f)
        assert pool(hk) == (4, 4, 4)                 # mmap reserves
        assert mm.write(addr, b"h") == 1
        assert pool(hk) == (4, 3, 3)                 # the fault consumed one reservation
        assert mm.munmap(addr, 4 * HPAGE) == 0
        f.close()
        assert pool(hk) == (4, 4, 0)

    def test_shared_mmap_reservation_failure(self, hk):
        """A shared mapping needing more huge pages than are free gives -ENOMEM."""
        f = hk.memfd_create("h", MFD_HUGETLB)
        f.ftruncate(8 * HPAGE)
        assert hk.current.mm.mmap(8 * HPAGE, RW, MAP_SHARED, file=f) == -errno.ENOMEM
        assert pool(hk) == (4, 4, 0)


# ---------------------------------------------------------------------------- page cache
class TestFilemapGetFolio:
    def test_hole(self, k):
        """A hole gives -ENOENT."""
        f = sealable(k)
        assert k.filemap_get_folio(f.mapping, 0) == -errno.ENOENT

    def test_takes_reference(self, k):
        """A present folio is returned with one more reference."""
        f = sealable(k)
        f.pwrite(b"x", PAGE_SIZE)
        folio = f.mapping.lookup(1)
        before = folio.refcount
        assert k.filemap_get_folio(f.mapping, 1) is folio
        assert folio.refcount == before + 1
        k.folio_put(folio)
        assert folio.refcount == before

    def test_any_index_of_a_huge_folio(self, hk):
        """Every base-page index of a hugetlb folio finds the folio."""
        f = hk.memfd_create("h", MFD_HUGETLB)
        f.fallocate(0, 0, HPAGE)
        head = f.mapping.lookup(0)
        got = hk.filemap_get_folio(f.mapping, 300)
        assert got is head and head.refcount == 513
        hk.folio_put(got)


class TestFilemapGetFoliosContig:
    def test_stops_at_hole_and_advances(self, k):
        """The run stops at the first hole; the cursor moves past what was found."""
        f = sealable(k, 8 * PAGE_SIZE)
        for idx in (0, 1, 2, 4):
            f.pwrite(b"x", idx * PAGE_SIZE)
        batch, cur = [], Out(0)
        assert k.filemap_get_folios_contig(f.mapping, cur, 7, batch) == 3
        assert [x.index for x in batch] == [0, 1, 2] and cur.value == 3
        for x in batch:
            k.folio_put(x)

    def test_starts_at_hole(self, k):
        """Starting on a hole finds nothing and leaves the cursor where it was."""
        f = sealable(k, 8 * PAGE_SIZE)
        f.pwrite(b"x", 4 * PAGE_SIZE)
        batch, cur = [], Out(3)
        assert k.filemap_get_folios_contig(f.mapping, cur, 7, batch) == 0
        assert batch == [] and cur.value == 3

    def test_inclusive_end(self, k):
        """The end index is inclusive."""
        f = sealable(k, 8 * PAGE_SIZE)
        f.pwrite(b"x" * 8 * PAGE_SIZE, 0)
        batch, cur = [], Out(2)
        assert k.filemap_get_folios_contig(f.mapping, cur, 4, batch) == 3
        assert cur.value == 5
        for x in batch:
            k.folio_put(x)

    def test_references_taken(self, k):
        """Each folio in the batch carries one extra reference."""
        f = sealable(k, 2 * PAGE_SIZE)
        f.pwrite(b"xx", PAGE_SIZE - 1)
        before = [f.mapping.lookup(i).refcount for i in (0, 1)]
        batch = []
        k.filemap_get_folios_contig(f.mapping, Out(0), 1, batch)
        assert [x.refcount for x in batch] == [b + 1 for b in before]
        for x in batch:
            k.folio_put(x)

    def test_batch_limit(self, k):
        """At most 31 folios (one folio_batch) are returned per call."""
        f = sealable(k, 40 * PAGE_SIZE)
        f.pwrite(b"y" * 40 * PAGE_SIZE, 0)
        batch, cur = [], Out(0)
        assert k.filemap_get_folios_contig(f.mapping, cur, 39, batch) == 31
        assert cur.value == 31
        for x in batch:
            k.folio_put(x)

    def test_huge_folio_advances_by_folio(self, hk):
        """A hugetlb folio is returned once and the cursor skips its 512 indices."""
        f = hk.memfd_create("h", MFD_HUGETLB)
        f.fallocate(0, 0, 2 * HPAGE)
        batch, cur = [], Out(0)
        assert hk.filemap_get_folios_contig(f.mapping, cur, 1023, batch) == 2
        assert cur.value == 1024 and batch[0] is not batch[1]
        for x in batch:
            hk.folio_put(x)


class TestMemfdAllocFolio:
    def test_allocates_with_reference(self, k):
        """A hole is filled and the new folio returned with a reference for the caller."""
        f = sealable(k)
        folio = k.memfd_alloc_folio(f, 2)
        assert f.mapping.lookup(2) is folio and folio.index == 2
        assert folio.refcount == 3                     # page cache + LRU batch + caller
        k.folio_put(folio)

    def test_shmem_returns_the_cached_folio(self, k):
        """shmem: an index already in the page cache returns that folio, with a reference
        (shmem_read_folio finds it)."""
        f = sealable(k)
        f.pwrite(b"x", 0)
        cached = f.mapping.lookup(0)
        before = cached.refcount
        assert k.memfd_alloc_folio(f, 0) is cached
        assert cached.refcount == before + 1
        k.folio_put(cached)

    def test_hugetlb_eexist_when_present(self, hk):
        """hugetlbfs: an index already populated gives -EEXIST (hugetlb_add_to_page_cache)."""
        f = hk.memfd_create("h", MFD_HUGETLB)
        f.ftruncate(2 * HPAGE)
        folio = hk.memfd_alloc_folio(f, 0)
        assert hk.memfd_alloc_folio(f, 0) == -errno.EEXIST
        hk.folio_put(folio)

    def test_beyond_eof(self, k):
        """An index beyond i_size gives -EINVAL (shmem SGP_CACHE)."""
        f = sealable(k, PAGE_SIZE)
        assert k.memfd_alloc_folio(f, 1) == -errno.EINVAL

    def test_pinnable_under_pin_context(self, k):
        """Under PF_MEMALLOC_PIN (as memfd_pin_folios runs it) the folio is pinnable."""
        f = sealable(k)
        saved = k.memalloc_pin_save()
        with k.steer("cma"):
            folio = k.memfd_alloc_folio(f, 0)
        k.memalloc_pin_restore(saved)
        assert k.folio_is_longterm_pinnable(folio)
        k.folio_put(folio)

    def test_hugetlb(self, hk):
        """For hugetlbfs a pool folio is taken and added at the huge page's first index."""
        f = hk.memfd_create("h", MFD_HUGETLB)
        f.ftruncate(2 * HPAGE)
        folio = hk.memfd_alloc_folio(f, 512)
        assert folio.order == 9 and folio.index == 512
        assert pool(hk) == (4, 3, 0)
        hk.folio_put(folio)
        f.close()
        assert pool(hk) == (4, 4, 0)

    def test_hugetlb_pool_empty(self, hk):
        """hugetlbfs with an empty pool gives -ENOMEM."""
        f = hk.memfd_create("h", MFD_HUGETLB)
        f.fallocate(0, 0, 4 * HPAGE)
        f.ftruncate(6 * HPAGE)
        assert hk.memfd_alloc_folio(f, 4 * 512) == -errno.ENOMEM

    @pytest.mark.parametrize("err", [errno.ENOMEM, errno.ENOSPC])
    def test_fault_site_errors(self, k, err):
        """The memfd_alloc_folio site fails with the armed errno and allocates nothing."""
        f = sealable(k)
        k.faults.arm("memfd_alloc_folio", -err)
        assert k.memfd_alloc_folio(f, 0) == -err
        assert len(f.mapping) == 0
        folio = k.memfd_alloc_folio(f, 0)               # fired once only
        assert folio.index == 0
        k.folio_put(folio)

    def test_fault_site_default_errno(self, k):
        """Armed without an errno the site fails with -ENOMEM."""
        f = sealable(k)
        k.faults.arm("memfd_alloc_folio")
        assert k.memfd_alloc_folio(f, 0) == -errno.ENOMEM

    def test_fault_site_eexist_is_a_lost_race(self, k):
        """An injected -EEXIST means another task's folio is now in the page cache."""
        f = sealable(k)
        k.faults.arm("memfd_alloc_folio", -errno.EEXIST)
        assert k.memfd_alloc_folio(f, 1) == -errno.EEXIST
        winner = f.mapping.lookup(1)
        assert winner is not None and winner.refcount == 2        # page cache + LRU batch
        assert k.memfd_alloc_folio(f, 1) is winner                 # present now
        k.folio_put(winner)

    def test_fault_site_context(self, k):
        """The site reports the file and index it fired for."""
        f = sealable(k)
        k.faults.arm("memfd_alloc_folio")
        k.memfd_alloc_folio(f, 3)
        (rec,) = k.faults.fired
        assert rec.site == "memfd_alloc_folio" and rec.context == {"file": f, "index": 3}

    def test_unknown_errno_refused(self, k):
        """Arming the site with an errno it cannot return is refused."""
        with pytest.raises(ValueError, match="memfd_alloc_folio"):
            k.faults.arm("memfd_alloc_folio", -errno.EIO)
