"""Per-user accounting, capabilities, mm references (kernel/user.c, mm/mlock.c,
include/linux/sched/mm.h, kernel/fork.c v6.12) and the GUP leftovers drivers use
(unpin_user_page_range_dirty_lock, page/folio helpers)."""

from __future__ import annotations

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, MAP_ANONYMOUS, MAP_PRIVATE, MADV_HUGEPAGE,
                                PAGE_SIZE, PROT_READ, PROT_WRITE)
from pytest_pinfault.mm.page_flags import (PageCompound, PageHead, PageTail, compound_head, compound_nr,
                                           folio_page, folio_page_idx, nth_page, page_size, page_to_phys)
from pytest_pinfault.mm.user import CAP_IPC_LOCK


@pytest.fixture
def k() -> FakeMM:
    return FakeMM(MMConfig(ram="1GiB", memlock="64KiB", thp="madvise"))


class TestUser:
    def test_per_uid_struct(self, k):
        u = k.current_user()
        assert u.uid == 1000 and u is k.find_user(1000) and u.locked_vm == 0
        other = k.create_task("other")
        other.uid = 1001
        with k.run_as(other):
            assert k.current_user() is not u

    def test_get_uid_free_uid(self, k):
        u = k.get_current_user()
        assert k.counters.snapshot()["user.refs"] == {u: 1}
        k.free_uid(u)
        assert k.counters.snapshot()["user.refs"] == {}
        k.free_uid(u)                                # one too many
        assert "underflow" in k.warnings[-1].message

    def test_capable_and_can_do_mlock(self, k):
        assert not k.capable(CAP_IPC_LOCK) and k.can_do_mlock()
        k.current.mm.rlimit_memlock = 0
        assert not k.can_do_mlock()
        k.current.cap_ipc_lock = True
        assert k.capable(CAP_IPC_LOCK) and k.can_do_mlock()
        k.current.cap_ipc_lock = False
        k.current.uid = 0
        assert k.can_do_mlock()


class TestMMRefs:
    def test_mmgrab_mmdrop(self, k):
        mm = k.current.mm
        k.mmgrab(mm)
        assert mm.mm_count == 2 and k.counters.snapshot()["mm.mm_count"] == {mm: 1}
        k.mmdrop(mm)
        assert k.counters.snapshot()["mm.mm_count"] == {}

    def test_mmget_mmput_last_user_unmaps(self, k):
        mm = k.create_mm()
        addr = mm.mmap(PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        mm.write(addr, b"x")
        assert k.mmget_not_zero(mm) and mm.users == 2
        k.mmput(mm)
        k.mmput(mm)                                  # the owner's: exit_mmap
        assert mm.vmas == [] and mm.users == 0 and mm.mm_count == 0
        assert not k.mmget_not_zero(mm)
        k.mmput(mm)
        assert "underflow" in k.warnings[-1].message


class TestGupLeftovers:
    def test_unpin_range_groups_per_folio(self, k):
        mm = k.current.mm
        addr = mm.mmap(4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        assert mm.madvise(addr, 4 << 20, MADV_HUGEPAGE) == 0
        pages = []
        assert k.pin_user_pages(addr, 512, FOLL_LONGTERM | FOLL_WRITE, pages) == 512
        folio = pages[0].folio
        assert folio.order == 9 and folio.pincount == 512
        k.unpin_user_page_range_dirty_lock(pages[0], 512, True)
        assert folio.pincount == 0 and k.stats.nr_foll_pin_released == 512 and k.warnings == []

    def test_unpin_range_small_pages(self, k):
        mm = k.current.mm
        addr = mm.mmap(2 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        pages = []
        assert k.pin_user_pages(addr, 1, FOLL_LONGTERM | FOLL_WRITE, pages) == 1
        k.unpin_user_page_range_dirty_lock(pages[0], 1, False)
        assert pages[0].folio.pincount == 0

    def test_compound_helpers(self, k):
        from pytest_pinfault.mm import GFP_KERNEL
        folio = k.folio_alloc(GFP_KERNEL, 2)
        tail = folio_page(folio, 3)
        assert PageCompound(tail) and PageTail(tail) and not PageHead(tail)
        assert compound_head(tail).pfn == folio.pfn and folio_page_idx(folio, tail) == 3
        assert page_size(compound_head(tail)) == 4 * PAGE_SIZE and compound_nr(tail) == 1
        assert nth_page(folio, 2).pfn == folio.pfn + 2 and page_to_phys(tail) == (folio.pfn + 3) << 12
        assert k.pfn_to_page(folio.pfn + 1).folio is folio
        with pytest.raises(ValueError):
            nth_page(folio, 4)
