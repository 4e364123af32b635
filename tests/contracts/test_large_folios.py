"""The contract checker over large folios: THP shmem (pinned per page or once per folio),
folios split by migration, and private hugetlb pages."""

from __future__ import annotations

from pytest_pinfault import Out, pin_entry_point
from pytest_pinfault.contracts import Checker
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, MAP_ANONYMOUS, MAP_HUGETLB, MAP_PRIVATE,
                                MAP_SHARED, MFD_ALLOW_SEALING, PROT_READ, PROT_WRITE)

from tests.contracts.helpers import PAGE, machine

HPAGE = 2 << 20
RW = PROT_READ | PROT_WRITE


def thp_memfd(k, where="cma"):
    f = k.memfd_create("thp", MFD_ALLOW_SEALING)
    assert f.ftruncate(2 * HPAGE) == 0
    with k.steer(where):
        assert f.fallocate(0, 0, 2 * HPAGE) == 0
    assert all(x.order == 9 for x in f.mapping.pages.values())
    return f


class Drv:
    def __init__(self, k):
        self.k = k
        self.pages = []


@pin_entry_point
def buggy_register(drv, addr, npages):
    """Forgot FOLL_LONGTERM: short-term pins of THP subpages that outlive the call."""
    ret = drv.k.pin_user_pages(addr, npages, FOLL_WRITE, drv.pages)
    return ret if ret < 0 else 0


@pin_entry_point
def fixed_register(drv, addr, npages):
    ret = drv.k.pin_user_pages(addr, npages, FOLL_WRITE | FOLL_LONGTERM, drv.pages)
    return ret if ret < 0 else 0


def test_placement_rule_names_the_thp_held_in_cma():
    k = machine(shmem_enabled="always", cma="256MiB")
    ck = Checker(k)
    f = thp_memfd(k)
    addr = k.current.mm.mmap(2 * HPAGE, RW, MAP_SHARED, f)
    drv = Drv(k)
    assert buggy_register(drv, addr + HPAGE - 2 * PAGE, 4) == 0
    bad = [v for v in ck.violations if v.rule.id == "longterm-placement"]
    assert len(bad) == 1 and "sit in CMA (taken by buggy_register)" in str(bad[0])
    assert sorted(x.order for x in bad[0].folios) == [9, 9]
    k.unpin_user_pages(drv.pages, 4)
    assert ck.check(final=True) == []


def test_fixed_twin_pins_migrated_thps_cleanly():
    k = machine(shmem_enabled="always", cma="256MiB")
    ck = Checker(k)
    f = thp_memfd(k)
    addr = k.current.mm.mmap(2 * HPAGE, RW, MAP_SHARED, f)
    drv = Drv(k)
    assert fixed_register(drv, addr + HPAGE - 2 * PAGE, 4) == 0
    assert ck.violations == []
    assert {p.folio.order for p in drv.pages} == {9} and not any(p.is_cma for p in drv.pages)
    k.unpin_user_pages(drv.pages, 4)
    assert ck.check(final=True) == []


def test_pin_balance_counts_per_page_pins_of_a_large_folio():
    k = machine(shmem_enabled="always", cma="256MiB")
    ck = Checker(k)
    f = thp_memfd(k, "normal")
    addr = k.current.mm.mmap(2 * HPAGE, RW, MAP_SHARED, f)
    pages = []
    assert k.pin_user_pages(addr, 16, FOLL_WRITE | FOLL_LONGTERM, pages) == 16
    k.unpin_user_pages(pages, 10)
    v = [x for x in ck.check(final=True) if x.rule.id == "pin-balance"]
    assert len(v) == 1 and "6 pin(s) never released" in v[0].message
    assert "1 folio (512 pages)" in v[0].message
    k.unpin_user_pages(pages[10:], 6)
    assert ck.check(final=True) == []


def test_memfd_pin_folios_over_thps_then_a_split_migration_is_clean():
    k = machine(shmem_enabled="always", cma="256MiB")
    ck = Checker(k)
    f = thp_memfd(k)
    k.faults.arm("alloc_migration_target", times=-1,
                 predicate=lambda ctx: ctx["folio"].order > 0)     # no THP-sized targets
    folios = []
    n = k.memfd_pin_folios(f, HPAGE - PAGE, HPAGE + PAGE - 1, folios, 8, Out())
    assert n == 2                        # the two THPs were split: two small folios now
    assert all(x.order == 0 and not x.is_cma for x in folios[:n])
    assert [x.index for x in folios[:n]] == [511, 512] and len(f.mapping) == 1024
    assert ck.violations == []
    k.unpin_folios(folios, n)
    assert ck.check(final=True) == []


def test_private_hugetlb_pin_leak_is_caught():
    k = machine(hugetlb={"2MiB": 2}, movablecore=0, cma=0)
    ck = Checker(k)
    mm = k.current.mm
    addr = mm.mmap(HPAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB)
    pages = []
    assert k.pin_user_pages(addr, 512, FOLL_WRITE | FOLL_LONGTERM, pages) == 512
    k.unpin_user_pages(pages, 511)
    v = [x for x in ck.check(final=True) if x.rule.id == "pin-balance"]
    assert len(v) == 1 and "1 pin(s) never released" in v[0].message
    k.unpin_user_pages(pages[511:], 1)
    assert mm.munmap(addr, HPAGE) == 0
    assert ck.check(final=True) == []
