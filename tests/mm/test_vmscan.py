"""Direct reclaim, the fake swap device, swap-in and direct compaction (mm/vmscan.py).

Kernel (v6.12): mm/vmscan.c:shrink_folio_list (what is kept: unevictable, mlocked,
maybe-DMA-pinned folios; anon only with swap space), mm/memory.c:do_swap_page,
mm/shmem.c:shmem_swapin_folio, mm/swapfile.c:folio_alloc_swap, mm/page_io.c:
swap_read_folio, mm/compaction.c:try_to_compact_pages.

The machines are small; ``squeeze`` balloons all free memory but a few hundred pages, so
that the test's own anonymous and shmem memory is what reclaim must work with.
"""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import FakeMM, MMConfig, Out
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, GFP_HIGHUSER_MOVABLE, MAP_ANONYMOUS,
                                MAP_FIXED, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE, PROT_READ,
                                PROT_WRITE, ConfigError, MigrationTargetControl)
from pytest_pinfault.mm.folio import KIND_FILE
from pytest_pinfault.mm.mm_types import MADV_HUGEPAGE

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
BASE = 0x40000000
OTHER = 0x50000000
LEAVE = 2048                     # free DMA32 pages left by squeeze()


def machine(swap="64MiB", **kw) -> FakeMM:
    cfg = dict(ram="256MiB", thp="never", swap=swap)
    cfg.update(kw)
    return FakeMM(MMConfig(**cfg))


def squeeze(k, leave=LEAVE):
    """Balloon every zone but *leave* free pages of DMA32 (the DMA zone entirely)."""
    return [k.fill_zone("DMA", 0), k.fill_zone("DMA32", leave)]


def usable(k) -> int:
    z = k.zones["DMA32"]
    return z.free_pages - z.wmark_min


def write_pages(mm, addr, n, start=0, fill=True):
    """Map and write *n* private anonymous pages at *addr*: page i holds byte i%251+1."""
    assert mm.mmap(n * PAGE_SIZE, RW, ANON | MAP_FIXED, addr=addr) == addr
    if not fill:
        return []
    return [mm.write(addr + i * PAGE_SIZE, bytes([(start + i) % 251 + 1]) * 8) for i in range(n)]


def intact(mm, addr, n, start=0) -> bool:
    return all(mm.read(addr + i * PAGE_SIZE, 8) == bytes([(start + i) % 251 + 1]) * 8 for i in range(n))


def swapped(mm, addr, n) -> int:
    first = addr >> 12
    return sum(1 for v in range(first, first + n) if v in mm.swap_pte)


# ---------------------------------------------------------------------------- config
def test_swap_size_is_parsed_and_checked():
    assert MMConfig(swap="1GiB").swap == 1 << 30
    assert MMConfig().swap == 0
    with pytest.raises(ConfigError, match="swap: expected a multiple of 4KiB"):
        MMConfig(swap=4097)
    with pytest.raises(ConfigError, match="swap"):
        MMConfig(swap="lots")
    k = machine(swap="8MiB")
    assert (k.nr_swap_pages, k.nr_swap_used) == (2048, 0)


# ---------------------------------------------------------------------------- anon
class TestAnonReclaim:
    def test_without_swap_anon_is_not_scanned_and_the_fault_fails(self):
        """No swap device: get_scan_count leaves the anon LRU alone, so an anonymous
        fault beyond free memory fails with OOM as before."""
        k = machine(swap=0)
        mm = k.current.mm
        squeeze(k)
        n = usable(k) + 64
        results = write_pages(mm, BASE, n)
        assert -errno.EFAULT in results
        assert k.stats.pgscan_anon == 0 and k.stats.pswpout == 0 and k.stats.oom > 0

    def test_with_swap_the_fault_reclaims_and_the_data_comes_back(self):
        k = machine()
        mm = k.current.mm
        squeeze(k)
        n = usable(k) + 256
        assert write_pages(mm, BASE, n) == [8] * n
        s = k.stats
        assert s.allocstall > 0 and s.pswpout >= 256 and s.pgsteal_anon == s.pswpout
        out = swapped(mm, BASE, n)
        assert out == k.nr_swap_used > 0
        assert intact(mm, BASE, n)                       # every swapped page faulted back
        assert s.pswpin >= out
        assert mm.munmap(BASE, n * PAGE_SIZE) == 0
        assert k.nr_swap_used == 0 and not mm.swap_pte   # zap frees the slots

    def test_oldest_pages_go_first(self):
        k = machine()
        mm = k.current.mm
        squeeze(k)
        n = usable(k)
        write_pages(mm, BASE, n)
        write_pages(mm, OTHER, 64)
        assert swapped(mm, OTHER, 64) == 0
        assert swapped(mm, BASE, 32) == 32

    def test_pinned_folios_are_not_reclaimed(self):
        """folio_maybe_dma_pinned: shrink_folio_list keeps them; the next folios on the
        LRU are taken instead."""
        k = machine()
        mm = k.current.mm
        squeeze(k)
        n = usable(k) // 2
        write_pages(mm, BASE, n)
        before = [mm.lookup(BASE + i * PAGE_SIZE)[0] for i in range(n)]
        pages = []
        assert k.pin_user_pages(BASE, n, FOLL_LONGTERM | FOLL_WRITE, pages) == n
        m = usable(k) + 128
        assert write_pages(mm, OTHER, m) == [8] * m
        assert k.stats.pswpout > 0
        assert swapped(mm, BASE, n) == 0
        assert [mm.lookup(BASE + i * PAGE_SIZE)[0] for i in range(n)] == before
        k.unpin_user_pages(pages, n)

    def test_mlocked_memory_is_not_reclaimed(self):
        k = machine(memlock="64MiB")
        mm = k.current.mm
        squeeze(k)
        n = usable(k) // 2
        write_pages(mm, BASE, n)
        assert mm.mlock(BASE, n * PAGE_SIZE) == 0
        m = usable(k) + 128
        assert write_pages(mm, OTHER, m) == [8] * m
        assert k.stats.pswpout > 0 and swapped(mm, BASE, n) == 0

    def test_allocation_fails_when_only_pinned_memory_is_left(self):
        """Nothing reclaimable: the allocation fails after scanning, freeing nothing."""
        k = machine()
        mm = k.current.mm
        squeeze(k)
        n = usable(k)
        write_pages(mm, BASE, n)
        pages = []
        assert k.pin_user_pages(BASE, n, FOLL_LONGTERM | FOLL_WRITE, pages) == n
        scanned, stolen = k.stats.pgscan_anon, k.stats.pgsteal_anon
        assert k.alloc_pages(GFP_HIGHUSER_MOVABLE, 0) is None
        assert k.stats.pgscan_anon > scanned and k.stats.pgsteal_anon == stolen
        k.unpin_user_pages(pages, n)
        assert k.alloc_pages(GFP_HIGHUSER_MOVABLE, 0) is not None   # reclaimable again

    def test_swap_full_stops_reclaim(self):
        k = machine(swap="128KiB")                       # 32 slots
        mm = k.current.mm
        squeeze(k)
        n = usable(k) + 64
        results = write_pages(mm, BASE, n)
        assert k.nr_swap_used == 32 and k.stats.pswpout == 32
        assert -errno.EFAULT in results

    def test_fork_shares_swap_entries(self):
        k = machine()
        mm = k.current.mm
        squeeze(k)
        n = usable(k)
        write_pages(mm, BASE, n)
        write_pages(mm, OTHER, 64)
        out = swapped(mm, BASE, n)
        assert out > 0
        child = k.fork(mm)
        assert swapped(child, BASE, n) == out and k.nr_swap_used == out   # swap_duplicate
        assert child.write(BASE + 2, b"child") == 5      # the child's copy only
        assert intact(mm, BASE, 64) and intact(child, BASE + PAGE_SIZE, 63, start=1)
        assert child.read(BASE, 8) == b"\x01\x01child\x01"
        k.mmput(child)
        mm.munmap(BASE, n * PAGE_SIZE)
        mm.munmap(OTHER, 64 * PAGE_SIZE)
        assert k.nr_swap_used == 0


# ---------------------------------------------------------------------------- pinning
class TestPinUnderPressure:
    def _setup(self, swap):
        """A buffer in CMA; non-CMA memory full of anonymous pages (or nothing free)."""
        k = machine(swap=swap, cma="16MiB")
        mm = k.current.mm
        with k.steer("cma"):
            write_pages(mm, BASE, 16)
        area = k.cma_areas[0]
        z = k.zones["DMA32"]
        squeeze(k, leave=z.free_cma_pages + 600)
        filler = []
        addr = OTHER
        while True:                                     # fill what non-CMA memory is left
            with k.steer("normal"):
                r = write_pages(mm, addr, 1)
            if r != [8] or area.base_pfn <= mm.lookup(addr)[0].pfn < area.base_pfn + area.count:
                break
            filler.append(addr)
            addr += PAGE_SIZE
        return k, mm, filler

    def test_the_long_term_pin_succeeds_under_memory_pressure(self):
        """Migration targets out of CMA come from reclaimed memory."""
        k, mm, filler = self._setup("64MiB")
        pages = []
        assert k.pin_user_pages(BASE, 16, FOLL_LONGTERM | FOLL_WRITE, pages) == 16
        assert all(k.folio_is_longterm_pinnable(p.folio) for p in pages)
        assert k.stats.pswpout > 0 and k.stats.pgmigrate_success == 16
        assert intact(mm, BASE, 16)
        k.unpin_user_pages(pages, 16)

    @pytest.mark.parametrize("swap", ["64MiB", 0])
    def test_memfd_pin_folios_under_memory_pressure(self, swap):
        """udmabuf's path: shmem folios in CMA migrate into reclaimed memory; with
        nothing reclaimable memfd_pin_folios returns -ENOMEM."""
        k = machine(swap=swap, cma="16MiB")
        memfd = k.memfd_create("buf", 0)
        assert memfd.ftruncate(16 * PAGE_SIZE) == 0
        with k.steer("cma"):
            for i in range(16):
                assert memfd.pwrite(bytes([i + 1]) * 8, i * PAGE_SIZE) == 8
        k.lru_add_drain()
        mm = k.current.mm
        z = k.zones["DMA32"]
        squeeze(k, leave=z.free_cma_pages + 600)
        area = k.cma_areas[0]
        addr = OTHER
        while True:                                     # fill what non-CMA memory is left
            with k.steer("normal"):
                r = write_pages(mm, addr, 1)
            if r != [8] or area.base_pfn <= mm.lookup(addr)[0].pfn < area.base_pfn + area.count:
                break
            addr += PAGE_SIZE
        folios = []
        ret = k.memfd_pin_folios(memfd, 0, 16 * PAGE_SIZE - 1, folios, 16, Out(0))
        if not swap:
            assert ret == -errno.ENOMEM and k.stats.pswpout == 0
            return
        assert ret == 16 and k.stats.pswpout > 0
        assert all(not area.base_pfn <= f.pfn < area.base_pfn + area.count for f in folios)
        assert [f.read(0, 8) for f in folios] == [bytes([i + 1]) * 8 for i in range(16)]
        k.unpin_folios(folios, 16)

    def test_without_anything_reclaimable_the_pin_fails(self):
        k, mm, filler = self._setup(0)
        pages = []
        assert k.pin_user_pages(BASE, 16, FOLL_LONGTERM | FOLL_WRITE, pages) == -errno.ENOMEM
        assert k.stats.pswpout == 0

    @pytest.mark.parametrize("swap", ["64MiB", 0])
    def test_migration_targets_fail_only_when_nothing_is_reclaimable(self, swap):
        """alloc_migration_target under PF_MEMALLOC_PIN (no CMA) reclaims for its page."""
        k, mm, filler = self._setup(swap)
        src = mm.lookup(BASE)[0]
        area = k.cma_areas[0]
        saved = k.memalloc_pin_save()
        dst = k.alloc_migration_target(src, MigrationTargetControl())
        k.memalloc_pin_restore(saved)
        if not swap:
            assert dst is None and k.stats.pgsteal_anon == 0
            return
        assert dst is not None and not area.base_pfn <= dst.pfn < area.base_pfn + area.count
        assert k.stats.pswpout > 0
        k.folio_put(dst)


# ---------------------------------------------------------------------------- shmem
class TestShmem:
    def _swapped_memfd(self, k, pages=16):
        memfd = k.memfd_create("buf", 0)
        assert memfd.ftruncate(pages * PAGE_SIZE) == 0
        for i in range(pages):
            assert memfd.pwrite(bytes([i + 1]) * 16, i * PAGE_SIZE) == 16
        mm = k.current.mm
        squeeze(k)
        write_pages(mm, OTHER, usable(k) + pages + 64)
        assert len(memfd.mapping.swapped) == pages and memfd.mapping.nrpages == 0
        return memfd

    def test_memfd_pin_folios_swaps_shmem_back_in(self):
        k = machine()
        memfd = self._swapped_memfd(k)
        mm = k.current.mm
        mm.munmap(OTHER, (usable(k) + 1) * PAGE_SIZE)       # room to swap in
        folios, off = [], Out(0)
        assert k.memfd_pin_folios(memfd, 0, 16 * PAGE_SIZE - 1, folios, 16, off) == 16
        assert [f.read(0, 16) for f in folios] == [bytes([i + 1]) * 16 for i in range(16)]
        assert not memfd.mapping.swapped and k.stats.pswpin >= 16
        k.unpin_folios(folios, 16)

    def test_read_and_mapping_fault_swap_in(self):
        k = machine()
        memfd = self._swapped_memfd(k, 4)
        mm = k.current.mm
        mm.munmap(OTHER, (usable(k) + 1) * PAGE_SIZE)
        assert memfd.pread(16, 0) == bytes([1]) * 16
        addr = mm.mmap(4 * PAGE_SIZE, RW, MAP_SHARED, memfd)
        assert mm.read(addr + 3 * PAGE_SIZE, 16) == bytes([4]) * 16
        assert set(memfd.mapping.swapped) == {1, 2}

    def test_swap_entries_keep_a_large_folio_from_covering_them(self):
        """shmem_alloc_and_add_folio needs the whole aligned range empty, and a swap
        entry is an entry of the mapping: a fault next to swapped pages gets order 0,
        and the swapped pages still read back (mm/shmem.c, v6.12)."""
        k = machine(shmem_enabled="advise")
        memfd = self._swapped_memfd(k)
        mm = k.current.mm
        mm.munmap(OTHER, (usable(k) + 1) * PAGE_SIZE)
        assert memfd.ftruncate(2 << 20) == 0
        addr = 0x60000000                                # 2 MiB aligned
        assert mm.mmap(2 << 20, RW, MAP_SHARED | MAP_FIXED, memfd, addr=addr) == addr
        assert mm.madvise(addr, 2 << 20, MADV_HUGEPAGE) == 0
        assert mm.read(addr + 100 * PAGE_SIZE, 4) == bytes(4)
        assert memfd.mapping.lookup(100).order == 0
        assert memfd.pread(16, 3 * PAGE_SIZE) == bytes([4]) * 16
        assert len(memfd.mapping.swapped) == 15

    def test_truncate_frees_swap_slots(self):
        k = machine()
        memfd = self._swapped_memfd(k, 8)
        used = k.nr_swap_used
        assert memfd.ftruncate(4 * PAGE_SIZE) == 0
        assert k.nr_swap_used == used - 4 and set(memfd.mapping.swapped) == {0, 1, 2, 3}
        memfd.close()
        assert not memfd.mapping.swapped


# ---------------------------------------------------------------------------- fault sites
class TestFaultSites:
    def test_folio_alloc_swap_failure_keeps_the_folio(self):
        k = machine()
        mm = k.current.mm
        squeeze(k)
        k.faults.arm("folio_alloc_swap", times=-1)
        results = write_pages(mm, BASE, usable(k) + 16)
        assert -errno.EFAULT in results and k.stats.pswpout == 0 and k.nr_swap_used == 0

    def test_add_to_swap_cache_failure_gives_the_slot_back(self):
        k = machine()
        mm = k.current.mm
        squeeze(k)
        k.faults.arm("add_to_swap_cache", times=-1)
        results = write_pages(mm, BASE, usable(k) + 16)
        assert -errno.EFAULT in results and k.nr_swap_used == 0

    def test_swap_read_error_fails_the_fault_and_keeps_the_entry(self):
        k = machine()
        mm = k.current.mm
        squeeze(k)
        write_pages(mm, BASE, usable(k) + 32)
        assert BASE >> 12 in mm.swap_pte
        mm.munmap(BASE + 64 * PAGE_SIZE, 64 * PAGE_SIZE)
        k.faults.arm("swap_read_folio")
        assert mm.read(BASE, 8) == -errno.EFAULT
        assert BASE >> 12 in mm.swap_pte
        k.faults.arm("swap_read_folio")
        pages = []
        assert k.pin_user_pages(BASE, 1, FOLL_WRITE, pages) == -errno.EFAULT
        assert mm.read(BASE, 8) == bytes([1]) * 8

    def test_shmem_swap_read_error_is_eio_for_memfd_pin_folios(self):
        k = machine()
        memfd = TestShmem()._swapped_memfd(k, 4)
        k.current.mm.munmap(OTHER, (usable(k) + 1) * PAGE_SIZE)
        k.faults.arm("swap_read_folio")
        folios = []
        assert k.memfd_pin_folios(memfd, 0, 4 * PAGE_SIZE - 1, folios, 4, Out(0)) == -errno.EIO
        assert len(memfd.mapping.swapped) == 4
        k.faults.arm("swap_read_folio")
        assert memfd.pread(4, 0) == -errno.EIO
        assert memfd.pread(4, 0) == bytes([1]) * 4


# ---------------------------------------------------------------------------- clean page cache
def test_clean_page_cache_is_dropped_without_swap():
    """A clean, unmapped page-cache folio is freed by reclaim even with no swap."""
    k = machine(swap=0)
    squeeze(k)
    holder = type("Mapping", (), {})()
    holder.pages = {}
    holder.nrpages = 0
    cached = []
    for i in range(8):
        f = k._alloc_folio(GFP_HIGHUSER_MOVABLE, 0, KIND_FILE)
        f.mapping, f.index = holder, i
        f._refcount += 1
        holder.pages[i] = f
        holder.nrpages += 1
        k.folio_add_lru(f)
        k.folio_put(f)
        cached.append(f)
    k.lru_add_drain()
    assert len(k.lru_folios("DMA32", "file")) == 8
    room, got = usable(k), 0
    while k.alloc_pages(GFP_HIGHUSER_MOVABLE, 0) is not None:
        got += 1
    assert got >= room + 8
    assert k.stats.pgsteal_file == 8 and holder.nrpages == 0 and not holder.pages
    assert all(f.freed for f in cached)
    assert k.lru_folios("DMA32", "file") == []


# ---------------------------------------------------------------------------- compaction
class TestCompaction:
    def _fragmented(self, k):
        """DMA32 holds only anonymous pages and the free pages between them: every
        other page of a 4096-page run unmapped, so no 2 MiB block is free."""
        mm = k.current.mm
        z = k.zones["DMA32"]
        k.fill_zone("DMA", 0)
        k.fill_zone("DMA32", 4096 + z.wmark_min)
        write_pages(mm, BASE, 4096)
        for i in range(0, 4096, 2):
            mm.munmap(BASE + i * PAGE_SIZE, PAGE_SIZE)
        k.drain_all_pages()
        return mm

    def test_order_9_allocation_compacts(self):
        k = machine(swap=0)
        mm = self._fragmented(k)
        page = k.alloc_pages(GFP_HIGHUSER_MOVABLE, 9)
        assert page is not None and page.pfn % 512 == 0
        s = k.stats
        assert (s.compact_stall, s.compact_success, s.compact_fail) == (1, 1, 0)
        assert s.pgmigrate_success >= 1
        assert all(mm.read(BASE + i * PAGE_SIZE, 8) == bytes([i % 251 + 1]) * 8 for i in range(1, 4096, 2))

    def test_pinned_pages_make_compaction_fail_and_defer(self):
        k = machine(swap=0)
        mm = self._fragmented(k)
        pins = []
        for i in range(1, 4096, 2):
            pages = []
            assert k.pin_user_pages(BASE + i * PAGE_SIZE, 1, FOLL_LONGTERM, pages) == 1
            pins += pages
        assert k.alloc_pages(GFP_HIGHUSER_MOVABLE, 9) is None
        s = k.stats
        assert (s.compact_stall, s.compact_success, s.compact_fail) == (1, 0, 1)
        assert k.alloc_pages(GFP_HIGHUSER_MOVABLE, 9) is None
        assert s.compact_stall == 1                      # deferred: not rescanned at once
        k.unpin_user_pages(pins, len(pins))


def test_split_tails_join_the_lru_lists():
    """A large folio split without a list leaves every piece on the LRU (reclaim sees
    them), as lru_add_split_folio does (mm/huge_memory.c, v6.12)."""
    k = machine(thp="always")
    mm = k.current.mm
    assert mm.mmap(2 << 20, RW, ANON | MAP_FIXED, addr=BASE) == BASE
    assert mm.write(BASE, b"t") == 1
    k.lru_add_drain()
    thp = mm.lookup(BASE)[0]
    assert thp.order == 9 and k.lru_folios("DMA32") == [thp]
    k.folio_get(thp)
    assert k.split_folio_to_list(thp, None) == 0
    k.folio_put(thp)
    lru = k.lru_folios("DMA32")
    assert len(lru) == 512 and all(f.order == 0 and k.folio_test_lru(f) for f in lru)


def test_lru_folios_lists_each_type_oldest_first_and_checks_its_arguments():
    k = machine()
    mm = k.current.mm
    write_pages(mm, BASE, 40)
    k.lru_add_drain()
    memfd = k.memfd_create("m", 0)
    memfd.pwrite(b"s", 0)
    k.lru_add_drain()
    anon = k.lru_folios("DMA32", "anon")
    assert anon[0] is mm.lookup(BASE)[0] and anon[-1] is memfd.mapping.lookup(0)
    assert k.lru_folios("DMA32", "file") == [] and k.lru_folios("DMA") == []
    k.folio_isolate_lru(anon[0])                         # isolation takes it off the list
    assert anon[0] not in k.lru_folios("DMA32")
    with pytest.raises(ValueError, match="lru must be 'anon' or 'file'"):
        k.lru_folios("DMA32", "active")
    with pytest.raises(ValueError):
        k.lru_folios("HighMem")
    with pytest.raises(TypeError):
        k.lru_folios(3)
