"""mmu interval notifiers, the non-pinning alternative: registration, the read side, and
which core-mm operations invalidate a registered range.

Kernel: mm/mmu_notifier.c, include/linux/mmu_notifier.h (docs/kernel-contract §10).
"""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE,
                                MAP_SHARED, MFD_ALLOW_SEALING, PAGE_SIZE, PROT_READ, PROT_WRITE,
                                MIGRATE_SYNC, MR_SYSCALL, NR_MAX_MIGRATE_PAGES_RETRY,
                                MMUIntervalNotifier, MMUNotifierRange, MigrationTargetControl)

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
BASE = 0x40000000
MiB = 1 << 20


class Recorder:
    """ops with ``invalidate``: records each call and what the mm still maps then."""

    def __init__(self, set_seq: bool = True, ret: bool = True) -> None:
        self.calls: list[tuple[str, int, int, int]] = []
        self.seen: list[object] = []
        self.set_seq = set_seq
        self.ret = ret

    def invalidate(self, sub, rng, cur_seq):
        assert isinstance(rng, MMUNotifierRange) and rng.mm is sub.mm
        assert cur_seq % 2 == 1 and sub.invalidate_seq == cur_seq     # odd while running
        self.calls.append((rng.event, rng.start, rng.end, cur_seq))
        ent = rng.mm.lookup(rng.start)
        self.seen.append(None if ent is None else ent[0])
        if self.set_seq:
            sub.set_seq(cur_seq)
        return self.ret

    @property
    def events(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.fixture
def k() -> FakeMM:
    return FakeMM(MMConfig(ram="1GiB", cma="64MiB", movablecore="256MiB", boot_reserved="none",
                           thp="never"))


def anon(mm, pages=4, addr=BASE):
    assert mm.mmap(pages * PAGE_SIZE, RW, ANON | MAP_FIXED, addr=addr) == addr
    return addr


def register(k, mm, start, length, **kw):
    ops = Recorder(**kw)
    sub = k.mmu_interval_notifier_insert(mm, start, length, ops)
    assert isinstance(sub, MMUIntervalNotifier)
    return sub, ops


class TestRegistration:
    def test_insert(self, k):
        """insert registers an inclusive [start, last] range on the mm."""
        mm = k.current.mm
        sub, ops = register(k, mm, BASE, 4 * PAGE_SIZE)
        assert mm.notifiers == [sub]
        assert (sub.start, sub.last, sub.mm, sub.ops) == (BASE, BASE + 4 * PAGE_SIZE - 1, mm, ops)

    @pytest.mark.parametrize("length", [0, -PAGE_SIZE])
    def test_insert_bad_length(self, k, length):
        """A zero or negative length gives -EINVAL."""
        mm = k.current.mm
        assert k.mmu_interval_notifier_insert(mm, BASE, length, Recorder()) == -errno.EINVAL
        assert mm.notifiers == []

    def test_insert_overflow(self, k):
        """A range wrapping past the end of the address space gives -EINVAL."""
        mm = k.current.mm
        assert k.mmu_interval_notifier_insert(mm, (1 << 64) - PAGE_SIZE, 2 * PAGE_SIZE,
                                              Recorder()) == -errno.EINVAL

    def test_remove(self, k):
        """After remove the notifier hears nothing more; removing twice is harmless."""
        mm = k.current.mm
        addr = anon(mm)
        sub, ops = register(k, mm, addr, 4 * PAGE_SIZE)
        k.mmu_interval_notifier_remove(sub)
        k.mmu_interval_notifier_remove(sub)
        assert mm.notifiers == []
        mm.munmap(addr, 4 * PAGE_SIZE)
        assert ops.calls == []

    def test_other_ranges_not_called(self, k):
        """Only notifiers overlapping the changed range are invalidated."""
        mm = k.current.mm
        addr = anon(mm, 8)
        low, low_ops = register(k, mm, addr, 2 * PAGE_SIZE)
        high, high_ops = register(k, mm, addr + 6 * PAGE_SIZE, 2 * PAGE_SIZE)
        assert mm.munmap(addr + 6 * PAGE_SIZE, PAGE_SIZE) == 0
        assert low_ops.calls == [] and high_ops.events == ["unmap"]

    def test_range_edges(self, k):
        """A change ending at start or beginning after last does not touch the range."""
        mm = k.current.mm
        addr = anon(mm, 3)
        sub, ops = register(k, mm, addr + PAGE_SIZE, PAGE_SIZE)
        mm.mprotect(addr, PAGE_SIZE, PROT_READ)
        mm.mprotect(addr + 2 * PAGE_SIZE, PAGE_SIZE, PROT_READ)
        assert ops.calls == []
        mm.mprotect(addr + PAGE_SIZE, PAGE_SIZE, PROT_READ)
        assert ops.events == ["protection"]


class TestReadSide:
    def test_begin_is_even_and_stable(self, k):
        """read_begin gives an even sequence; no invalidation means no retry."""
        mm = k.current.mm
        sub, _ = register(k, mm, anon(mm), 4 * PAGE_SIZE)
        seq = k.mmu_interval_read_begin(sub)
        assert seq % 2 == 0
        assert k.mmu_interval_read_retry(sub, seq) is False
        assert k.mmu_interval_check_retry(sub, seq) is False

    def test_retry_after_invalidation(self, k):
        """An invalidation between begin and retry forces a retry; a new begin clears it."""
        mm = k.current.mm
        addr = anon(mm)
        sub, ops = register(k, mm, addr, 4 * PAGE_SIZE)
        seq = k.mmu_interval_read_begin(sub)
        assert mm.mprotect(addr, PAGE_SIZE, PROT_READ) == 0
        assert k.mmu_interval_read_retry(sub, seq) is True
        assert k.mmu_interval_check_retry(sub, seq) is True
        seq2 = k.mmu_interval_read_begin(sub)
        assert seq2 % 2 == 0 and seq2 == ops.calls[0][3] + 1
        assert k.mmu_interval_read_retry(sub, seq2) is False

    def test_sequences_increase(self, k):
        """Every invalidation hands out a new, larger odd sequence."""
        mm = k.current.mm
        addr = anon(mm)
        sub, ops = register(k, mm, addr, 4 * PAGE_SIZE)
        mm.mprotect(addr, PAGE_SIZE, PROT_READ)
        mm.mprotect(addr, PAGE_SIZE, RW)
        seqs = [c[3] for c in ops.calls]
        assert len(seqs) == 2 and seqs[0] < seqs[1]


class TestInvalidation:
    def test_munmap(self, k):
        """munmap invalidates the unmapped range before the pages go away."""
        mm = k.current.mm
        addr = anon(mm)
        mm.write(addr + PAGE_SIZE, b"x")
        folio = mm.lookup(addr + PAGE_SIZE)[0]
        sub, ops = register(k, mm, addr, 4 * PAGE_SIZE)
        assert mm.munmap(addr + PAGE_SIZE, 2 * PAGE_SIZE) == 0
        assert ops.calls[0][:3] == ("unmap", addr + PAGE_SIZE, addr + 3 * PAGE_SIZE)
        assert ops.seen == [folio]
        assert k.warnings == []

    def test_mprotect(self, k):
        """mprotect invalidates the changed range."""
        mm = k.current.mm
        addr = anon(mm)
        sub, ops = register(k, mm, addr, 4 * PAGE_SIZE)
        assert mm.mprotect(addr, 2 * PAGE_SIZE, PROT_READ) == 0
        assert ops.calls[0][:3] == ("protection", addr, addr + 2 * PAGE_SIZE)

    def test_cow_after_fork(self, k):
        """fork write-protects the range; the parent's COW write invalidates its page."""
        mm = k.current.mm
        addr = anon(mm)
        mm.write(addr, b"old")
        old = mm.lookup(addr)[0]
        sub, ops = register(k, mm, addr, 4 * PAGE_SIZE)
        child = k.fork(mm)
        assert ops.calls[0][:3] == ("protection", addr, addr + 4 * PAGE_SIZE)
        assert mm.write(addr, b"new") == 3
        assert ops.calls[1][:3] == ("cow", addr, addr + PAGE_SIZE)
        assert ops.seen[1] is old                       # called before the PTE moved
        assert child.read(addr, 3) == b"old"

    def test_cow_of_zero_page(self, k):
        """Writing over a mapped zero page replaces the PTE and invalidates it."""
        mm = k.current.mm
        addr = anon(mm)
        mm.read(addr, 1)
        sub, ops = register(k, mm, addr, 4 * PAGE_SIZE)
        mm.write(addr, b"x")
        assert ops.events == ["cow"] and ops.seen == [k.zero_folio]

    def test_first_touch_does_not_invalidate(self, k):
        """Faulting in a page where nothing was mapped needs no invalidation."""
        mm = k.current.mm
        addr = anon(mm)
        sub, ops = register(k, mm, addr, 4 * PAGE_SIZE)
        mm.write(addr, b"x")
        mm.read(addr + PAGE_SIZE, 1)
        assert ops.calls == []

    def test_truncation(self, k):
        """Truncating a mapped memfd invalidates the mappings of the dropped pages."""
        mm = k.current.mm
        f = k.memfd_create("t", MFD_ALLOW_SEALING)
        f.ftruncate(4 * PAGE_SIZE)
        addr = mm.mmap(4 * PAGE_SIZE, RW, MAP_SHARED, file=f)
        mm.write(addr, b"a" * 4 * PAGE_SIZE)
        sub, ops = register(k, mm, addr, 4 * PAGE_SIZE)
        assert f.ftruncate(2 * PAGE_SIZE) == 0
        assert sorted(c[1] for c in ops.calls) == [addr + 2 * PAGE_SIZE, addr + 3 * PAGE_SIZE]
        assert set(ops.events) == {"unmap"}
        assert mm.lookup(addr + 2 * PAGE_SIZE) is None and mm.lookup(addr) is not None

    def test_cma_alloc_migration(self, k):
        """cma_alloc migrating the folios under the range invalidates each page first."""
        mm = k.current.mm
        addr = anon(mm)
        with k.steer("cma"):
            mm.write(addr, b"c" * 4 * PAGE_SIZE)
        old = [mm.lookup(addr + i * PAGE_SIZE)[0] for i in range(4)]
        assert all(f.is_cma for f in old)
        sub, ops = register(k, mm, addr, 4 * PAGE_SIZE)
        area = k.cma_areas[0]
        page = k.cma_alloc(area, area.count, 0)
        assert page is not None
        assert sorted(c[1] for c in ops.calls) == [addr + i * PAGE_SIZE for i in range(4)]
        assert set(ops.events) == {"migrate"}
        assert set(map(id, ops.seen)) == set(map(id, old))
        assert all(not mm.lookup(addr + i * PAGE_SIZE)[0].is_cma for i in range(4))
        assert mm.read(addr, 4 * PAGE_SIZE) == b"c" * 4 * PAGE_SIZE
        assert k.cma_release(area, page, area.count) is True

    def test_offline_pages_migration(self, k):
        """Offlining the memory block under the range migrates and invalidates."""
        mm = k.current.mm
        addr = anon(mm, 1)
        with k.steer("movable"):
            mm.write(addr, b"hot")
        folio = mm.lookup(addr)[0]
        assert folio.zone == "Movable"
        sub, ops = register(k, mm, addr, PAGE_SIZE)
        blocks = [k.memory_blocks[i] for i in k.memory_blocks]
        (blk,) = [b for b in blocks if b.start_pfn <= folio.pfn < b.start_pfn + b.nr_pages]
        assert k.offline_pages(blk.start_pfn, blk.nr_pages) == 0
        assert ops.calls[0][:3] == ("migrate", addr, addr + PAGE_SIZE) and ops.seen == [folio]
        assert mm.lookup(addr)[0] is not folio and mm.read(addr, 3) == b"hot"

    def test_longterm_pin_from_another_mm(self, k):
        """A long-term pin by another process migrates a shared page and invalidates here."""
        f = k.memfd_create("shared", MFD_ALLOW_SEALING)
        f.ftruncate(2 * PAGE_SIZE)
        with k.steer("cma"):
            f.pwrite(b"s" * 2 * PAGE_SIZE, 0)
        mirror = k.current.mm                                 # the HMM-style user
        addr = mirror.mmap(2 * PAGE_SIZE, RW, MAP_SHARED, file=f)
        mirror.read(addr, 2 * PAGE_SIZE)
        old = mirror.lookup(addr)[0]
        sub, ops = register(k, mirror, addr, 2 * PAGE_SIZE)
        pinner = k.create_task("vfio")
        with k.run_as(pinner):
            paddr = pinner.mm.mmap(2 * PAGE_SIZE, RW, MAP_SHARED, file=f)
            pages = []
            assert k.pin_user_pages(paddr, 2, FOLL_LONGTERM | FOLL_WRITE, pages) == 2
        assert set(ops.events) == {"migrate"} and len(ops.calls) == 2
        assert old in ops.seen
        assert mirror.lookup(addr)[0] is pages[0].folio is f.mapping.lookup(0)
        assert k.mmu_interval_read_retry(sub, 0) is True
        k.unpin_user_pages(pages, 2)

    def test_invalidate_dropping_reference_lets_migration_succeed(self, k):
        """A driver holding a plain page reference (get_user_pages, no pin) that drops it in
        invalidate() lets migration succeed: the unmap invalidates before the reference
        count is judged.  Kernel: mm/rmap.c:try_to_migrate_one (mmu_notifier_invalidate_
        range_start before the PTE walk), mm/migrate.c:migrate_folio_unmap then
        migrate_folio_move, v6.12.117."""
        mm = k.current.mm
        f = k.memfd_create("dev", MFD_ALLOW_SEALING)     # page cache: compaction isolates
        f.ftruncate(PAGE_SIZE)                            # it despite the extra reference
        with k.steer("cma"):
            f.pwrite(b"d", 0)
        addr = mm.mmap(PAGE_SIZE, RW, MAP_SHARED, file=f)
        mm.read(addr, 1)
        old = mm.lookup(addr)[0]
        assert old.is_cma
        held = []
        assert k.get_user_pages(addr, 1, FOLL_WRITE, held) == 1

        class Dropper(Recorder):
            def invalidate(self, sub, rng, cur_seq):
                while held:
                    k.put_page(held.pop())
                return super().invalidate(sub, rng, cur_seq)

        ops = Dropper()
        sub = k.mmu_interval_notifier_insert(mm, addr, PAGE_SIZE, ops)
        area = k.cma_areas[0]
        page = k.cma_alloc(area, area.count, 0)
        assert page is not None
        assert held == [] and ops.seen == [old] and ops.events == ["migrate"]
        assert mm.lookup(addr)[0] is not old and mm.read(addr, 1) == b"d"
        assert k.cma_release(area, page, area.count) is True

    def test_every_attempt_invalidates_again(self, k):
        """A driver that keeps its reference hears one invalidation per migration attempt
        (NR_MAX_MIGRATE_PAGES_RETRY of them), each with a fresh odd sequence, so its
        handling of repeated invalidations is exercised.  Kernel: mm/migrate.c:
        migrate_pages_batch/migrate_pages_sync retry loops calling migrate_folio_unmap ->
        mm/rmap.c:try_to_migrate_one, v6.12.117."""
        mm = k.current.mm
        addr = anon(mm, 1)
        with k.steer("cma"):
            mm.write(addr, b"k")
        held = []
        assert k.get_user_pages(addr, 1, FOLL_WRITE, held) == 1
        sub, ops = register(k, mm, addr, PAGE_SIZE)
        folio = mm.lookup(addr)[0]
        k.lru_add_drain()
        assert k.folio_isolate_lru(folio)
        k.node_stat_mod_isolated(folio, 1)
        lst = [folio]
        k.faults.record()
        rc = k.migrate_pages(lst, k.alloc_migration_target, None,
                             MigrationTargetControl(reason=MR_SYSCALL), MIGRATE_SYNC, MR_SYSCALL)
        assert rc == 1 and lst == [folio]
        assert len(ops.calls) == k.faults.hits["migrate_folio"] == NR_MAX_MIGRATE_PAGES_RETRY
        seqs = [c[3] for c in ops.calls]
        assert len(set(seqs)) == len(seqs) and all(q % 2 for q in seqs)
        assert mm.lookup(addr)[0] is folio and mm.read(addr, 1) == b"k"
        assert k.mmu_interval_read_retry(sub, 0) is True
        k.putback_movable_pages(lst)
        k.put_page(held.pop())

    def test_pin_without_migration_is_silent(self, k):
        """Pinning pinnable memory changes no PTE and invalidates nothing."""
        mm = k.current.mm
        addr = anon(mm)
        with k.steer("normal"):
            mm.write(addr, b"n" * 4 * PAGE_SIZE)
        sub, ops = register(k, mm, addr, 4 * PAGE_SIZE)
        pages = []
        assert k.pin_user_pages(addr, 4, FOLL_LONGTERM | FOLL_WRITE, pages) == 4
        assert ops.calls == []
        k.unpin_user_pages(pages, 4)


class TestDriverMisuse:
    def test_missing_set_seq_warns(self, k):
        """An invalidate callback that forgets mmu_interval_set_seq records a warning."""
        mm = k.current.mm
        addr = anon(mm)
        sub, ops = register(k, mm, addr, 4 * PAGE_SIZE, set_seq=False)
        mm.mprotect(addr, PAGE_SIZE, PROT_READ)
        assert [w.site for w in k.warnings] == ["mmu_interval_set_seq"]
        assert "mmu_interval_set_seq" in k.warnings[0].message

    def test_set_seq_no_warning(self, k):
        """A callback that sets the sequence records nothing."""
        mm = k.current.mm
        addr = anon(mm)
        register(k, mm, addr, 4 * PAGE_SIZE)
        mm.mprotect(addr, PAGE_SIZE, PROT_READ)
        assert k.warnings == []

    def test_returning_false_warns(self, k):
        """Returning false for a blockable invalidation records a warning."""
        mm = k.current.mm
        addr = anon(mm)
        register(k, mm, addr, 4 * PAGE_SIZE, ret=False)
        mm.munmap(addr, PAGE_SIZE)
        assert [w.site for w in k.warnings] == ["mmu_notifier"]
