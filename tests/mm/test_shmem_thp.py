"""shmem large folios: THP shmem through ``shmem_enabled`` and per-size mTHP, and what
pinning them does (mm/shmem.c, mm/gup.c, mm/memory.c, v6.12)."""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import FakeMM, MMConfig, Out
from pytest_pinfault.contracts import Checker
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, GUP_PIN_COUNTING_BIAS, MADV_HUGEPAGE,
                                MAP_ANONYMOUS, MAP_SHARED, MFD_ALLOW_SEALING, PAGE_SIZE, PROT_READ,
                                PROT_WRITE)
from pytest_pinfault.mm.config import ConfigError

HPAGE = 2 << 20


def machine(**kw) -> FakeMM:
    cfg = dict(ram="1GiB", cma="256MiB", gup_retry_limit=8, shmem_enabled="always")
    cfg.update(kw)
    return FakeMM(MMConfig(**cfg))


def memfd(k, size):
    f = k.memfd_create("thp", MFD_ALLOW_SEALING)
    assert f.ftruncate(size) == 0
    return f


def orders(f):
    return {head: folio.order for head, folio in sorted(f.mapping.pages.items())}


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize("kw, words", [
    (dict(shmem_enabled="sometimes"), ["shmem_enabled", "'never'", "'force'", "'sometimes'"]),
    (dict(shmem_mthp={"12KiB": "always"}), ["shmem_mthp", "'8KiB'", "'12KiB'"]),
    (dict(shmem_mthp={"4MiB": "always"}), ["shmem_mthp", "'2MiB'", "'4MiB'"]),
    (dict(shmem_mthp={"64KiB": "yes"}), ["shmem_mthp['64KiB']", "'inherit'", "'yes'"]),
    (dict(shmem_mthp=["64KiB"]), ["shmem_mthp", "mapping"]),
])
def test_config_rejects_bad_shmem_settings(kw, words):
    with pytest.raises(ConfigError) as e:
        MMConfig(**kw)
    for w in words:
        assert w in str(e.value)


def test_config_stores_mthp_sizes_in_bytes_read_only():
    cfg = MMConfig(shmem_mthp={"64KiB": "always", "2MiB": "never"})
    assert dict(cfg.shmem_mthp) == {64 << 10: "always", 2 << 20: "never"}
    with pytest.raises(TypeError):
        cfg.shmem_mthp[64 << 10] = "never"      # type: ignore[index]
    assert MMConfig().shmem_enabled == "never"


# ------------------------------------------------------------------ allocation policy


def test_never_is_the_default_and_gives_small_folios():
    k = machine(shmem_enabled="never")
    f = memfd(k, 4 * HPAGE)
    assert f.fallocate(0, 0, 4 * HPAGE) == 0
    assert set(orders(f).values()) == {0} and len(f.mapping) == 2048
    assert k.stats.thp_file_alloc == 0


def test_always_allocates_pmd_sized_folios_at_aligned_indices():
    k = machine()
    f = memfd(k, 4 * HPAGE)
    assert f.pwrite(b"x", HPAGE + 5 * PAGE_SIZE) == 1      # index 517: folio at 512
    assert orders(f) == {512: 9}
    assert f.mapping.lookup(517) is f.mapping.lookup(1023) is f.mapping.pages[512]
    assert f.mapping.lookup(511) is None and f.mapping.lookup(1024) is None
    assert k.stats.thp_file_alloc == 1


def test_existing_small_page_in_the_range_forces_order_0():
    k = machine()
    f = memfd(k, 2 * HPAGE)
    k.faults.arm("alloc_pages", predicate=lambda ctx: ctx["order"] == 9)
    assert f.pwrite(b"x", 7 * PAGE_SIZE) == 1        # fell back to order 0
    assert f.pwrite(b"y", 9 * PAGE_SIZE) == 1        # shmem_suitable_orders: conflict
    assert f.pwrite(b"z", HPAGE) == 1                # the next 2 MiB is empty
    assert orders(f) == {7: 0, 9: 0, 512: 9}
    assert f.pread(1, 7 * PAGE_SIZE) == b"x" and f.pread(1, HPAGE) == b"z"


def test_within_size_needs_the_whole_folio_inside_i_size():
    k = machine(shmem_enabled="within_size")
    f = memfd(k, 3 * HPAGE // 2)                    # 768 pages
    assert f.fallocate(0, 0, 3 * HPAGE // 2) == 0
    got = orders(f)
    assert got[0] == 9 and all(got[i] == 0 for i in range(512, 768))
    g = memfd(k, 0)
    assert g.pwrite(b"a" * 10, HPAGE - 10) == 10        # write_end counts (SGP_WRITE)
    assert orders(g) == {0: 9}


def test_advise_needs_madvise_hugepage_on_the_faulting_vma():
    k = machine(shmem_enabled="advise")
    f = memfd(k, 2 * HPAGE)
    mm = k.current.mm
    addr = mm.mmap(2 * HPAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f)
    assert addr % HPAGE == 0                      # shmem_get_unmapped_area aligns
    assert mm.write(addr, b"a") == 1
    assert orders(f) == {0: 0}
    assert mm.madvise(addr + HPAGE, HPAGE, MADV_HUGEPAGE) == 0
    assert mm.write(addr + HPAGE + 3 * PAGE_SIZE, b"b") == 1
    assert orders(f) == {0: 0, 512: 9}
    assert f.pwrite(b"c", PAGE_SIZE) == 1         # write(2) has no VMA: no hint
    assert orders(f)[1] == 0


def test_deny_overrides_everything_and_force_needs_no_hint():
    k = machine(shmem_enabled="deny", shmem_mthp={"64KiB": "always"})
    mm = k.current.mm
    a = mm.mmap(HPAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS)
    assert mm.write(a, b"a") == 1
    assert mm.lookup(a)[0].order == 0
    k = machine(shmem_enabled="force")
    f = memfd(k, HPAGE)
    assert f.pwrite(b"x", 0) == 1 and orders(f) == {0: 9}


def test_mthp_sizes_apply_to_shared_anonymous_mappings_only():
    k = machine(shmem_enabled="never", shmem_mthp={"64KiB": "always"})
    mm = k.current.mm
    a = mm.mmap(HPAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS)
    assert mm.write(a + 5 * PAGE_SIZE, b"a") == 1
    folio, idx = mm.lookup(a + 5 * PAGE_SIZE)
    assert folio.order == 4 and idx == 5
    # finish_fault maps the whole folio of an anonymous shmem mapping: 16 PTEs
    assert all(mm.lookup(a + i * PAGE_SIZE)[0] is folio for i in range(16))
    assert folio.mapcount == 16 and folio.refcount == 16 + 16
    f = memfd(k, HPAGE)                            # a memfd ignores the per-size knobs
    assert f.pwrite(b"x", 0) == 1 and orders(f) == {0: 0}


def test_inherit_follows_shmem_enabled_for_anonymous_shared_mappings():
    k = machine(shmem_enabled="always", shmem_mthp={"2MiB": "never", "32KiB": "inherit"})
    mm = k.current.mm
    a = mm.mmap(HPAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS)
    assert mm.write(a, b"a") == 1
    assert mm.lookup(a)[0].order == 3


def test_failed_large_allocation_falls_back_to_order_0():
    k = machine()
    f = memfd(k, HPAGE)
    k.faults.arm("alloc_pages", predicate=lambda ctx: ctx["order"] == 9)
    assert f.pwrite(b"x", 0) == 1
    assert orders(f) == {0: 0}
    assert k.stats.thp_file_fallback == 1 and k.stats.thp_file_alloc == 0


def test_fallback_through_mthp_orders_highest_first():
    k = machine(shmem_enabled="never", shmem_mthp={"64KiB": "always", "16KiB": "always"})
    mm = k.current.mm
    a = mm.mmap(HPAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS)
    k.faults.arm("alloc_pages", predicate=lambda ctx: ctx["order"] == 4)
    assert mm.write(a, b"a") == 1
    assert mm.lookup(a)[0].order == 2
    k.faults.arm("alloc_pages", times=-1)
    assert mm.write(a + 64 * PAGE_SIZE, b"b") == -errno.EFAULT   # order 0 fails too: OOM


def test_vma_not_covering_the_aligned_range_gets_small_folios():
    k = machine()
    f = memfd(k, 2 * HPAGE)
    mm = k.current.mm
    addr = mm.mmap(HPAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f, offset=PAGE_SIZE)
    assert mm.write(addr, b"a") == 1               # pgoff 1: not congruent with the address
    assert orders(f) == {1: 0}


def test_partial_truncate_zeroes_the_tail_and_keeps_the_folio():
    k = machine()
    f = memfd(k, HPAGE)
    assert f.pwrite(b"\xff" * HPAGE, 0) == HPAGE
    folio = f.mapping.pages[0]
    assert f.ftruncate(HPAGE // 2) == 0
    assert f.mapping.pages[0] is folio and folio.read(HPAGE // 2, 4) == bytes(4)
    assert f.ftruncate(0) == 0 and len(f.mapping) == 0 and folio.freed


# ------------------------------------------------------------------ mapping and pinning


def test_shared_mapping_maps_a_thp_by_one_pmd():
    k = machine()
    f = memfd(k, 2 * HPAGE)
    mm = k.current.mm
    addr = mm.mmap(2 * HPAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f)
    assert mm.write(addr + HPAGE + 10, b"q") == 1
    folio = f.mapping.pages[512]
    assert mm.huge[(addr + HPAGE) >> 12] is folio
    assert folio.mapcount == 1 and folio.refcount == 512 + 1
    assert mm.munmap(addr + HPAGE + PAGE_SIZE, PAGE_SIZE) == 0    # splitting the PMD zaps it
    assert folio.mapcount == 0 and mm.read(addr + HPAGE + 10, 1) == b"q"
    assert folio.mapcount == 1 and (addr + HPAGE) >> 12 in mm.pte


def test_pin_user_pages_returns_subpages_and_counts_pins_per_page():
    """try_grab_folio on a large folio: one reference and one _pincount per page (the
    bias is only for small folios); unpin_user_pages gives them back folio by folio."""
    k = machine(cma=0)
    f = memfd(k, 2 * HPAGE)
    mm = k.current.mm
    addr = mm.mmap(2 * HPAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f)
    assert mm.write(addr, b"a") == 1 and mm.write(addr + HPAGE, b"b") == 1
    pages = []
    start = addr + HPAGE - 3 * PAGE_SIZE
    assert k.pin_user_pages(start, 8, FOLL_WRITE | FOLL_LONGTERM, pages) == 8
    a, b = f.mapping.pages[0], f.mapping.pages[512]
    assert [p.folio for p in pages] == [a] * 3 + [b] * 5
    assert [p.pfn for p in pages] == [a.pfn + 509, a.pfn + 510, a.pfn + 511] + [b.pfn + i for i in range(5)]
    assert a.pincount == 3 and b.pincount == 5
    assert a.refcount == 512 + 1 + 3 and b.refcount == 512 + 1 + 5
    assert k.folio_maybe_dma_pinned(a) and k.stats.nr_foll_pin_acquired == 8
    assert a.refcount < GUP_PIN_COUNTING_BIAS
    k.unpin_user_pages(pages, 8)
    assert a.pincount == b.pincount == 0 and a.refcount == b.refcount == 513
    assert k.stats.nr_foll_pin_released == 8


def test_memfd_pin_folios_over_a_sub_range_of_one_thp():
    k = machine()
    f = memfd(k, 4 * HPAGE)
    folios, off = [], Out()
    start = HPAGE + 5 * PAGE_SIZE + 7
    n = k.memfd_pin_folios(f, start, start + 100 * PAGE_SIZE, folios, 8, off)
    assert n == 1 and off.value == 5 * PAGE_SIZE + 7
    folio = folios[0]
    assert folio.order == 9 and folio.index == 512 and folio.pincount == 1
    assert folio.refcount == 512 + 1
    assert orders(f) == {512: 9}                  # only the folio the range needed
    k.unpin_folios(folios, n)
    assert folio.pincount == 0 and folio.refcount == 512


def test_memfd_pin_folios_one_entry_per_large_folio_across_folios():
    k = machine()
    f = memfd(k, 4 * HPAGE)
    folios, off = [], Out()
    n = k.memfd_pin_folios(f, HPAGE - PAGE_SIZE, 3 * HPAGE - 1, folios, 8, off)
    assert n == 3 and off.value == HPAGE - PAGE_SIZE
    assert [x.index for x in folios] == [0, 512, 1024]
    folios2, off2 = [], Out()
    assert k.memfd_pin_folios(f, HPAGE - PAGE_SIZE, 3 * HPAGE - 1, folios2, 2, off2) == 2   # max_folios
    k.unpin_folios(folios, n)
    k.unpin_folios(folios2, 2)
    assert all(x.pincount == 0 for x in folios)


def test_longterm_pin_migrates_a_thp_out_of_cma_whole():
    k = machine()
    f = memfd(k, 2 * HPAGE)
    with k.steer("cma"):
        assert f.fallocate(0, 0, 2 * HPAGE) == 0
    assert f.pwrite(b"data", HPAGE + 9) == 4
    old = f.mapping.pages[512]
    assert old.is_cma and old.order == 9
    folios, off = [], Out()
    assert k.memfd_pin_folios(f, HPAGE + 9, 2 * HPAGE - 1, folios, 4, off) == 1
    new = folios[0]
    assert new is not old and old.freed
    assert new.order == 9 and not new.is_cma and new.zone != "Movable"
    assert f.mapping.pages[512] is new and new.read(9, 4) == b"data" and off.value == 9
    assert k.stats.pgmigrate_success == 512
    k.unpin_folios(folios, 1)


def test_pin_user_pages_longterm_migrates_a_pmd_mapped_thp_out_of_cma():
    k = machine()
    f = memfd(k, HPAGE)
    mm = k.current.mm
    addr = mm.mmap(HPAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f)
    with k.steer("cma"):
        assert mm.write(addr + 5, b"z") == 1
    old = f.mapping.pages[0]
    assert old.is_cma and mm.huge[addr >> 12] is old
    pages = []
    assert k.pin_user_pages(addr, 512, FOLL_WRITE | FOLL_LONGTERM, pages) == 512
    new = pages[0].folio
    assert new is not old and not new.is_cma and new.order == 9
    assert mm.huge[addr >> 12] is new and new.pincount == 512 and mm.read(addr + 5, 1) == b"z"
    k.unpin_user_pages(pages, 512)
    assert new.pincount == 0


def test_unpin_folios_batches_repeated_entries_of_one_large_folio():
    k = machine(cma=0)
    f = memfd(k, HPAGE)
    folios, off = [], Out()
    assert k.memfd_pin_folios(f, 0, HPAGE - 1, folios, 4, off) == 1
    folio = folios[0]
    assert k.folio_add_pins(folio, 2) == 0
    assert folio.pincount == 3
    k.unpin_folios([folio, folio, folio], 3)
    assert folio.pincount == 0 and folio.refcount == 512


# ------------------------------------------------------------------ the contract checker


def test_checker_catches_a_leaked_pin_on_a_large_shmem_folio():
    k = machine()
    ck = Checker(k)
    f = memfd(k, HPAGE)
    mm = k.current.mm
    addr = mm.mmap(HPAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f)
    pages = []
    assert k.pin_user_pages(addr + 4 * PAGE_SIZE, 4, FOLL_WRITE | FOLL_LONGTERM, pages) == 4
    k.unpin_user_pages(pages, 3)                    # one page's pin forgotten
    ids = [v.rule.id for v in ck.check(final=True)]
    assert "pin-balance" in ids
    v = next(v for v in ck.check(final=True) if v.rule.id == "pin-balance")
    assert "1 pin(s) never released" in v.message and "1 folio (512 pages)" in v.message
    assert [(x.pfn, x.order, x.pincount) for x in v.folios] == [(pages[0].folio.pfn, 9, 1)]
    k.unpin_user_pages(pages[3:], 1)
    assert ck.check(final=True) == []


def test_checker_clean_over_large_folios_pinned_and_released():
    k = machine()
    ck = Checker(k)
    f = memfd(k, 2 * HPAGE)
    with k.steer("cma"):
        assert f.fallocate(0, 0, 2 * HPAGE) == 0
    folios, off = [], Out()
    assert k.memfd_pin_folios(f, 0, 2 * HPAGE - 1, folios, 4, off) == 2
    assert ck.violations == []
    k.unpin_folios(folios, 2)
    assert ck.check(final=True) == []


def test_unpin_user_pages_releases_each_run_of_a_large_folio_at_once():
    """unpin_user_pages groups consecutive pages of one folio (gup_folio_next): one
    gup_put_folio per run, as the kernel's per-folio batching does."""
    k = machine(cma=0)
    f = memfd(k, 2 * HPAGE)
    mm = k.current.mm
    addr = mm.mmap(2 * HPAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f)
    pages = []
    assert k.pin_user_pages(addr + HPAGE - 2 * PAGE_SIZE, 6, FOLL_WRITE | FOLL_LONGTERM, pages) == 6
    calls = []
    put = k.gup_put_folio

    def spy(folio, refs, flags):
        calls.append((folio.index, refs))
        put(folio, refs, flags)

    k.gup_put_folio = spy
    k.unpin_user_pages(pages, 6)
    assert calls == [(0, 2), (512, 4)]


def test_longterm_pin_migrates_a_thp_out_of_zone_movable():
    k = machine(cma=0, movablecore="512MiB")
    f = memfd(k, HPAGE)
    with k.steer("movable"):
        assert f.pwrite(b"m", 0) == 1
    old = f.mapping.pages[0]
    assert old.order == 9 and old.zone == "Movable"
    folios, off = [], Out()
    assert k.memfd_pin_folios(f, 0, HPAGE - 1, folios, 1, off) == 1
    assert folios[0].order == 9 and folios[0].zone != "Movable" and folios[0].read(0, 1) == b"m"
    k.unpin_folios(folios, 1)
