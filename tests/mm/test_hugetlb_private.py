"""MAP_PRIVATE hugetlb mappings fault, COW and pin as in mm/hugetlb.c (v6.12):
hugetlb_reserve_pages, hugetlb_no_page, hugetlb_wp, hugetlb_vm_op_close."""

from __future__ import annotations

import errno

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.contracts import Checker
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, MAP_ANONYMOUS, MAP_HUGETLB, MAP_PRIVATE,
                                MAP_SHARED, MFD_ALLOW_SEALING, MFD_HUGETLB, PROT_READ, PROT_WRITE)

HPAGE = 2 << 20
RW = PROT_READ | PROT_WRITE


def machine(**kw) -> FakeMM:
    cfg = dict(ram="1GiB", hugetlb={"2MiB": 4}, gup_retry_limit=8)
    cfg.update(kw)
    return FakeMM(MMConfig(**cfg))


def pool(h):
    return h.nr_huge_pages, h.free_huge_pages, h.resv_huge_pages


def test_private_anonymous_hugetlb_faults_pins_and_gives_reservations_back():
    """QEMU's guest RAM on hugetlbfs with share=off: mapped, written, long-term pinned."""
    k = machine()
    ck = Checker(k)
    h = k.hstate()
    mm = k.current.mm
    addr = mm.mmap(3 * HPAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB)
    assert addr > 0 and addr % HPAGE == 0
    assert pool(h) == (4, 4, 3)                      # hugetlb_reserve_pages: all 3
    assert mm.write(addr + 5, b"guest") == 5
    folio = mm.huge[addr >> 12]
    assert folio.mapping is None and k.folio_test_hugetlb(folio)   # anonymous
    assert pool(h) == (4, 3, 2)                      # one reservation used
    pages = []
    assert k.pin_user_pages(addr, 1024, FOLL_WRITE | FOLL_LONGTERM, pages) == 1024
    assert pages[0].folio is folio and folio.pincount == 512
    second = pages[512].folio
    assert second is not folio and pool(h) == (4, 2, 1)
    assert mm.read(addr + 5, 5) == b"guest"
    k.unpin_user_pages(pages, 1024)
    assert mm.munmap(addr, 3 * HPAGE) == 0
    assert pool(h) == (4, 4, 0)                      # the unused reservation went back too
    assert ck.check(final=True) == []


def test_private_mapping_needs_the_pool_to_promise_every_page():
    k = machine()
    mm = k.current.mm
    assert mm.mmap(5 * HPAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB) == -errno.ENOMEM
    assert pool(k.hstate()) == (4, 4, 0)


def test_read_fault_maps_the_page_cache_and_a_write_copies_it():
    k = machine()
    h = k.hstate()
    mm = k.current.mm
    f = k.memfd_create("guest", MFD_HUGETLB | MFD_ALLOW_SEALING)
    assert f.ftruncate(2 * HPAGE) == 0
    shared = mm.mmap(2 * HPAGE, RW, MAP_SHARED, f)
    assert mm.write(shared, b"shared") == 6
    cached = f.mapping.pages[0]
    priv = mm.mmap(2 * HPAGE, RW, MAP_PRIVATE, f)
    assert mm.read(priv, 6) == b"shared"
    assert mm.huge[priv >> 12] is cached and cached.mapcount == 2     # read-only, not copied
    pages = []
    assert k.pin_user_pages(priv, 1, FOLL_LONGTERM, pages) == 1       # R/O: no unshare for
    assert pages[0].folio is cached                                    # hugetlb page cache
    k.unpin_user_pages(pages, 1)
    before = h.free_huge_pages
    assert k.pin_user_pages(priv, 1, FOLL_WRITE | FOLL_LONGTERM, pages) == 1
    copy = pages[0].folio
    assert copy is not cached and copy.mapping is None and h.free_huge_pages == before - 1
    assert mm.huge[priv >> 12] is copy and cached.mapcount == 1
    assert mm.write(priv, b"PRIV") == 4
    assert mm.read(priv, 6) == b"PRIVed" and mm.read(shared, 6) == b"shared"
    assert f.pread(1, 0) == b"s"                    # the file itself is unchanged
    k.unpin_user_pages(pages, 1)
    mm.munmap(priv, 2 * HPAGE)
    mm.munmap(shared, 2 * HPAGE)
    f.close()
    assert pool(h) == (4, 4, 0)


def test_a_hole_beyond_eof_is_sigbus_and_an_empty_pool_too():
    k = machine(hugetlb={"2MiB": 1})
    mm = k.current.mm
    f = k.memfd_create("g", MFD_HUGETLB)
    assert f.ftruncate(HPAGE) == 0
    priv = mm.mmap(2 * HPAGE, RW, MAP_PRIVATE, f)
    assert priv == -errno.ENOMEM                    # 2 reservations, 1 page
    priv = mm.mmap(HPAGE, RW, MAP_PRIVATE, f)
    assert f.ftruncate(0) == 0
    assert mm.write(priv, b"x") == -errno.EFAULT    # beyond i_size: SIGBUS


def test_fork_shares_cow_and_the_child_copies_without_a_reservation():
    k = machine(hugetlb={"2MiB": 2})
    h = k.hstate()
    mm = k.current.mm
    addr = mm.mmap(HPAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB)
    assert mm.write(addr, b"parent") == 6
    folio = mm.huge[addr >> 12]
    child = k.fork(mm)
    assert child.huge[addr >> 12] is folio and folio.mapcount == 2
    assert child.write(addr, b"CHILD!") == 6        # COW from the free pool
    assert child.huge[addr >> 12] is not folio and mm.read(addr, 6) == b"parent"
    assert pool(h) == (2, 0, 0)
    assert mm.write(addr, b"again!") == 6           # mapcount 1 again: reused
    assert mm.huge[addr >> 12] is folio
    k.mmput(child)
    assert mm.munmap(addr, HPAGE) == 0 and pool(h) == (2, 2, 0)


def test_longterm_pin_migrates_a_private_hugetlb_page_out_of_zone_movable():
    k = machine(movablecore="512MiB", hugetlb={"2MiB": 2})
    h = k.hstate()
    mm = k.current.mm
    addr = mm.mmap(HPAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB)
    assert mm.write(addr + 7, b"vm") == 2
    old = mm.huge[addr >> 12]
    assert old.zone == "Movable"                    # the boot pool sits in ZONE_MOVABLE
    pages = []
    assert k.pin_user_pages(addr, 512, FOLL_WRITE | FOLL_LONGTERM, pages) == 512
    new = pages[0].folio
    assert new is not old and new.zone != "Movable" and mm.huge[addr >> 12] is new
    assert mm.read(addr + 7, 2) == b"vm" and new.mapping is None
    assert mm.write(addr, b"w") == 1 and mm.huge[addr >> 12] is new     # still exclusive
    k.unpin_user_pages(pages, 512)
    assert mm.munmap(addr, HPAGE) == 0 and h.resv_huge_pages == 0


def test_map_noreserve_reserves_nothing_and_faults_from_the_free_pool():
    k = machine(hugetlb={"2MiB": 1})
    h = k.hstate()
    mm = k.current.mm
    from pytest_pinfault.mm import MAP_NORESERVE, VM_NORESERVE
    addr = mm.mmap(3 * HPAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_NORESERVE)
    assert addr > 0 and pool(h) == (1, 1, 0)        # more than the pool: no reservation
    assert mm.find_vma(addr).flags & VM_NORESERVE and mm.find_vma(addr).resv is None
    assert mm.write(addr, b"a") == 1 and pool(h) == (1, 0, 0)
    assert mm.write(addr + HPAGE, b"b") == -errno.EFAULT     # SIGBUS: the pool is empty
    assert mm.munmap(addr, 3 * HPAGE) == 0 and pool(h) == (1, 1, 0)
    f = k.memfd_create("s", MFD_HUGETLB)
    assert f.ftruncate(2 * HPAGE) == 0
    s = mm.mmap(2 * HPAGE, RW, MAP_SHARED | MAP_NORESERVE, f)
    assert s > 0 and pool(h) == (1, 1, 0)
    assert mm.write(s, b"x") == 1 and mm.write(s + HPAGE, b"y") == -errno.EFAULT
