"""A large folio whose migration target cannot be allocated is split and its pieces
migrated (mm/migrate.c:migrate_pages_batch, try_split_folio; mm/huge_memory.c:
split_huge_page_to_list_to_order, can_split_folio; v6.12)."""

from __future__ import annotations

import errno

from pytest_pinfault import FakeMM, MMConfig, Out
from pytest_pinfault.contracts import Checker
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, MAP_ANONYMOUS, MAP_PRIVATE,
                                MFD_ALLOW_SEALING, MIGRATE_SYNC, PAGE_SIZE, PROT_READ, PROT_WRITE,
                                MigrationTargetControl)
from pytest_pinfault.mm.migrate import MR_LONGTERM_PIN, MR_NUMA_MISPLACED, MR_SYSCALL

HPAGE = 2 << 20


def machine(**kw) -> FakeMM:
    cfg = dict(ram="1GiB", cma="256MiB", gup_retry_limit=8, shmem_enabled="always")
    cfg.update(kw)
    return FakeMM(MMConfig(**cfg))


def fragment(k):
    """No THP-sized migration target can be allocated (the allocation of every large
    target fails at the ``alloc_migration_target`` site); small ones can."""
    k.faults.arm("alloc_migration_target", times=-1, predicate=lambda ctx: ctx["folio"].order > 0)
    return []


def test_a_fragmented_machine_splits_naturally():
    k = machine(ram="256MiB", cma="64MiB")
    f, old = shmem_thp_in_cma(k)
    balloons = [k.fragment_zone(z, 0) for z in ("DMA", "DMA32")]   # no free block above order 0
    folios, off = [], Out()
    assert k.memfd_pin_folios(f, 0, HPAGE - 1, folios, 1024, off) == 512
    assert k.stats.thp_migration_split == 1 and not any(x.is_cma for x in folios[:512])
    k.unpin_folios(folios, 512)
    for b in balloons:
        b.release()


def shmem_thp_in_cma(k):
    f = k.memfd_create("thp", MFD_ALLOW_SEALING)
    assert f.ftruncate(HPAGE) == 0
    with k.steer("cma"):
        assert f.pwrite(b"hello", 7 * PAGE_SIZE) == 5
    folio = f.mapping.pages[0]
    assert folio.order == 9 and folio.is_cma
    return f, folio


def anon_thp_in_cma(k):
    mm = k.current.mm
    addr = mm.mmap(HPAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    with k.steer("cma"):
        assert mm.write(addr + 3 * PAGE_SIZE, b"anon") == 4
    folio = mm.huge[addr >> 12]
    assert folio.order == 9 and folio.is_cma
    return addr, folio


def isolate(k, folio):
    k.lru_add_drain_all()
    assert k.folio_isolate_lru(folio)
    k.node_stat_mod_isolated(folio, folio.nr_pages)
    return [folio]


def test_memfd_pin_folios_splits_a_thp_whose_target_cannot_be_allocated():
    k = machine()
    ck = Checker(k)
    f, old = shmem_thp_in_cma(k)
    balloons = fragment(k)
    folios, off = [], Out()
    n = k.memfd_pin_folios(f, 0, HPAGE - 1, folios, 1024, off)
    assert n == 512                                   # one pin per (now small) folio
    assert all(x.order == 0 and not x.is_cma for x in folios[:n])
    assert [x.index for x in folios[:n]] == list(range(512))
    assert f.mapping.lookup(7) is folios[7] and f.pread(5, 7 * PAGE_SIZE) == b"hello"
    assert old.order == 0 and old.freed               # the head piece migrated away
    assert k.stats.thp_migration_split == 1 and k.stats.thp_split_page == 1
    assert k.stats.pgmigrate_success == 512 and k.stats.pgmigrate_fail == 0
    k.unpin_folios(folios, n)
    for b in balloons:
        b.release()
    assert ck.check(final=True) == []


def test_pin_user_pages_splits_an_anonymous_thp_and_remaps_its_ptes():
    k = machine()
    ck = Checker(k)
    addr, old = anon_thp_in_cma(k)
    balloons = fragment(k)
    mm = k.current.mm
    pages = []
    assert k.pin_user_pages(addr, 512, FOLL_WRITE | FOLL_LONGTERM, pages) == 512
    assert len({id(p.folio) for p in pages}) == 512
    assert all(p.folio.order == 0 and not p.is_cma for p in pages)
    assert addr >> 12 not in mm.huge and mm.lookup(addr + 3 * PAGE_SIZE)[0] is pages[3].folio
    assert mm.read(addr + 3 * PAGE_SIZE, 4) == b"anon"
    assert all(p.folio.mapcount == 1 for p in pages)
    k.unpin_user_pages(pages, 512)
    for b in balloons:
        b.release()
    assert ck.check(final=True) == []


def test_migrate_pages_returns_0_when_every_piece_migrates():
    k = machine()
    f, old = shmem_thp_in_cma(k)
    balloons = fragment(k)
    lst = isolate(k, old)
    ok = Out()
    rc = k.migrate_pages(lst, k.alloc_migration_target, None, MigrationTargetControl(),
                         MIGRATE_SYNC, MR_SYSCALL, ok)
    assert rc == 0 and lst == [] and ok.value == 512
    assert k.stats.nr_isolated_anon == 0
    assert all(not f.mapping.lookup(i).is_cma or True for i in range(512))
    for b in balloons:
        b.release()


def test_split_pieces_that_fail_stay_on_the_list_and_the_folio_counts_once():
    k = machine()
    f, old = shmem_thp_in_cma(k)
    balloons = fragment(k)
    lst = isolate(k, old)
    # hit 1: the THP's target; then the pieces: the tails from the last one down (split
    # adds them to the list so), then the head (try_split_folio moves it after them).
    # The pieces' pass is MIGRATE_ASYNC and once: the failure at hit 7 (pfn + 506) ends it
    k.faults.arm("alloc_migration_target", nth=7)
    rc = k.migrate_pages(lst, k.alloc_migration_target, None, MigrationTargetControl(),
                         MIGRATE_SYNC, MR_SYSCALL)
    assert rc == 1                                    # the split folio, as one failure
    assert len(lst) == 512 - 5 and all(x.order == 0 for x in lst)
    assert lst[0].pfn == old.pfn + 506 and lst[-2].pfn == old.pfn + 1 and lst[-1] is old
    k.putback_movable_pages(lst)
    assert k.stats.nr_isolated_anon == 0
    assert f.pread(5, 7 * PAGE_SIZE) == b"hello"
    for b in balloons:
        b.release()


def test_no_split_for_numa_misplaced_migration():
    k = machine()
    f, old = shmem_thp_in_cma(k)
    balloons = fragment(k)
    lst = isolate(k, old)
    rc = k.migrate_pages(lst, k.alloc_migration_target, None, MigrationTargetControl(),
                         MIGRATE_SYNC, MR_NUMA_MISPLACED)
    assert rc == -errno.ENOMEM and lst == [old] and old.order == 9
    k.putback_movable_pages(lst)
    for b in balloons:
        b.release()


def test_split_refused_by_an_extra_reference_keeps_enomem():
    k = machine()
    f, old = shmem_thp_in_cma(k)
    balloons = fragment(k)
    lst = isolate(k, old)
    k.folio_get(old)                                  # someone else's reference
    rc = k.migrate_pages(lst, k.alloc_migration_target, None, MigrationTargetControl(),
                         MIGRATE_SYNC, MR_SYSCALL)
    assert rc == -errno.ENOMEM and lst == [old] and old.order == 9
    assert k.stats.thp_migration_split == 0
    k.putback_movable_pages(lst)
    k.folio_put(old)
    for b in balloons:
        b.release()


def test_longterm_pin_retries_a_refused_split_and_counts_a_failure():
    """MR_LONGTERM_PIN: a split refused for references (-EAGAIN) is retried on the next
    pass instead of ending the call with -ENOMEM."""
    k = machine()
    f, old = shmem_thp_in_cma(k)
    balloons = fragment(k)
    lst = isolate(k, old)
    k.folio_get(old)
    rc = k.migrate_pages(lst, k.alloc_migration_target, None, MigrationTargetControl(),
                         MIGRATE_SYNC, MR_LONGTERM_PIN)
    assert rc == 1 and lst == [old] and old.order == 9
    k.putback_movable_pages(lst)
    k.folio_put(old)
    for b in balloons:
        b.release()


def test_split_folio_to_list_directly():
    k = machine(cma=0)
    f = k.memfd_create("thp", MFD_ALLOW_SEALING)
    assert f.ftruncate(HPAGE) == 0 and f.pwrite(b"abc", PAGE_SIZE) == 3
    folio = f.mapping.pages[0]
    k.lru_add_drain_all()
    assert k.split_folio_to_list(folio, None) == -errno.EAGAIN     # no caller reference
    k.folio_get(folio)
    k.folio_get(folio)
    assert k.split_folio_to_list(folio, None) == -errno.EAGAIN     # one too many
    k.folio_put(folio)
    k.faults.arm("kmalloc")
    assert k.split_folio_to_list(folio, None) == -errno.ENOMEM     # xas_split_alloc
    assert k.split_folio_to_list(folio, None) == 0
    assert folio.order == 0 and folio.refcount == 2 and k.folio_test_lru(folio)
    assert f.mapping.lookup(1).refcount == 1 and f.mapping.lookup(1).read(0, 3) == b"abc"
    assert len(f.mapping) == 512 and f.mapping.nrpages == 512
    assert k.split_folio_to_list(folio, None) == -errno.EINVAL     # not large any more
    k.folio_put(folio)
    assert f.ftruncate(0) == 0 and k.nr_allocated_pages == k.nr_allocated_pages
    hk = machine(cma=0, hugetlb={"2MiB": 1})
    h = hk.hstate()
    hf = hk.memfd_create("h", 4)
    assert hf.ftruncate(HPAGE) == 0 and hf.fallocate(0, 0, HPAGE) == 0
    assert hk.split_folio_to_list(hf.mapping.pages[0], []) == -errno.EINVAL
    assert hk.warnings and h.nr_huge_pages == 1


def test_splitting_an_isolated_folio_needs_a_list_for_its_pieces():
    k = machine()
    f, old = shmem_thp_in_cma(k)
    lst = isolate(k, old)
    assert k.split_folio_to_list(old, None) == -errno.EINVAL
    assert old.order == 9 and any("without a list" in str(w) for w in k.warnings)
    assert k.split_folio_to_list(old, lst) == 0 and len(lst) == 512
    k.putback_movable_pages(lst)
    k.lru_add_drain_all()
    assert k.stats.nr_isolated_anon == 0
    assert all(k.folio_test_lru(f.mapping.lookup(i)) for i in range(512))


def test_split_drops_the_pieces_beyond_eof_from_the_page_cache():
    k = machine(cma=0)
    f = k.memfd_create("thp", MFD_ALLOW_SEALING)
    assert f.ftruncate(HPAGE // 2 + 1) == 0              # 257 pages of i_size
    assert f.pwrite(b"z", 0) == 1
    folio = f.mapping.pages[0]
    assert folio.order == 9                              # always: a THP past EOF
    lst = isolate(k, folio)
    assert k.split_folio_to_list(folio, lst) == 0
    assert len(f.mapping) == 257 and f.mapping.nrpages == 257
    assert len(lst) == 512
    assert lst[0] is folio                               # the head was on the list already
    assert all(x.mapping is None and x.refcount == 1 for x in lst[1:256])      # 511 .. 257
    assert all(x.mapping is not None for x in lst[256:])
    rc = k.migrate_pages(lst, k.alloc_migration_target, None, MigrationTargetControl(),
                         MIGRATE_SYNC, MR_SYSCALL)
    assert rc == 0 and lst == [] and f.pread(1, 0) == b"z"
    assert k.nr_allocated_pages == k.nr_allocated_pages
    g = k.memfd_create("falloc", MFD_ALLOW_SEALING)
    assert g.fallocate(1, 0, HPAGE) == 0 and g.i_size == 0     # KEEP_SIZE: fallocend counts
    gf = g.mapping.pages[0]
    assert k.split_folio_to_list(gf, isolate(k, gf)) == 0 and len(g.mapping) == 512
