"""Buggy/fixed twin proofs: for every contract rule, a small driver-style function that
breaks it (the checker names the rule) and its fixed twin (no violation).

Plain FakeMM + Checker, no plugin fixtures.
"""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault.contracts import (Checker, check_core_pin_return, expect_violation,
                                       pin_entry_point)
from pytest_pinfault.mm import (F_SEAL_SHRINK, FOLL_LONGTERM, FOLL_WRITE, GFP_HIGHUSER_MOVABLE,
                                GFP_KERNEL, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MFD_ALLOW_SEALING, PROT_READ,
                                PROT_WRITE, FakeMM, MMConfig, Out)

from tests.contracts.helpers import NPAGES, PAGE, anon_buffer, machine



def memfd_buffer(k, where="cma", npages=NPAGES, seal=False):
    fd = k.memfd_create("buf", MFD_ALLOW_SEALING)
    assert fd.ftruncate(npages * PAGE) == 0
    with k.steer(where):
        assert fd.pwrite(b"x" * (npages * PAGE), 0) == npages * PAGE
    if seal:
        assert fd.add_seals(F_SEAL_SHRINK) == 0
    return fd


def only(violations, rule_id):
    assert [v.rule.id for v in violations] == [rule_id], "\n\n".join(map(str, violations))
    return violations[0]


# ---------------------------------------------------------------- rule 1: placement
class PinDriver:
    """A driver object holding pinned pages; ``k`` is how entry points find the mm."""

    def __init__(self, k):
        self.k = k
        self.pages = []


@pin_entry_point
def buggy_register(drv, addr, npages):
    """Forgot FOLL_LONGTERM: a short-term pin that outlives the call."""
    ret = drv.k.pin_user_pages(addr, npages, FOLL_WRITE, drv.pages)
    return ret if ret < 0 else 0


@pin_entry_point
def fixed_register(drv, addr, npages):
    ret = drv.k.pin_user_pages(addr, npages, FOLL_LONGTERM | FOLL_WRITE, drv.pages)
    return ret if ret < 0 else 0


def test_rule1_forgot_foll_longterm_is_caught_at_entry_point_return():
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "cma")
    drv = PinDriver(k)
    assert buggy_register(drv, addr, NPAGES) == 0
    bad = [v for v in ck.violations if v.rule.id == "longterm-placement"]
    assert len(bad) == 1                       # one splat per call, every folio in it
    text = str(bad[0])
    assert text.startswith(f"pin contract violation: [longterm-placement] {NPAGES} long-term holds sit "
                           "in CMA (taken by buggy_register)")
    assert len(bad[0].folios) == NPAGES
    assert "mt=CMA" in text and "call: buggy_register (called from test_rules.py:" in text
    assert "test_rule1_forgot_foll_longterm" in text
    assert "likely fix: a hold that outlives the entry point is long-term" in text
    # still flagged on demand while held, not reported twice
    assert [v.rule.id for v in ck.check()] == ["longterm-placement"]
    assert len(ck.violations) == 1
    k.unpin_user_pages(drv.pages, NPAGES)
    assert ck.check(final=True) == []


def test_rule1_fixed_twin_migrates_out_of_cma():
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "cma")
    drv = PinDriver(k)
    assert fixed_register(drv, addr, NPAGES) == 0
    assert ck.violations == []
    assert ck.check() == []
    k.unpin_user_pages(drv.pages, NPAGES)
    assert ck.check(final=True) == []


def pin_core(k, ck, addr, flags=FOLL_LONGTERM | FOLL_WRITE):
    pages = []
    before = ck.snapshot_call()
    ret = k.pin_user_pages(addr, NPAGES, flags, pages)
    return ret, pages, check_core_pin_return(ck, "pin_user_pages", ret, pages, before)


def test_rule1_pins_left_in_zone_movable_when_lru_isolation_fails():
    """v5.1..v5.12: if no folio could be isolated, the pins were kept and the call
    succeeded with the pages still in ZONE_MOVABLE."""
    k = machine(quirks=("gup_keep_pins_on_isolation_failure",))
    ck = Checker(k)
    addr = anon_buffer(k, "movable")
    k.faults.arm("folio_isolate_lru", times=-1)
    ret, pages, vs = pin_core(k, ck, addr)
    assert ret == NPAGES
    v = vs[0]
    assert {x.rule.id for x in vs} == {"longterm-placement"}
    assert f"{NPAGES} long-term holds sit in ZONE_MOVABLE (taken by pin_user_pages)" in str(v)
    assert f"injected fault(s) that fired: folio_isolate_lru#1-#{NPAGES} -EBUSY at test_rules.py:" in str(v)
    assert "zone=Movable" in str(v)
    k.faults.disarm()
    k.unpin_user_pages(pages, ret)
    assert ck.check(final=True) == []


def test_rule1_fixed_kernel_retries_after_transient_isolation_failure():
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "movable")
    k.faults.arm("folio_isolate_lru", times=2)
    ret, pages, vs = pin_core(k, ck, addr)
    assert ret == NPAGES and vs == []
    assert all(p.zone != "Movable" for p in pages)
    k.unpin_user_pages(pages, ret)
    assert ck.check(final=True) == []


# ------------------------------------- rules 1 and 10: plain references on memfd pages
class Udmabuf:
    def __init__(self, k):
        self.k = k
        self.folios = []


@pin_entry_point
def buggy_udmabuf_create(buf, memfd, npages):
    """Pre-6.11 udmabuf: a plain reference per page (filemap_get_folio), no migration."""
    for i in range(npages):
        f = buf.k.filemap_get_folio(memfd.mapping, i)
        if isinstance(f, int):
            return f
        buf.folios.append(f)
    return 0


def buggy_udmabuf_release(buf):
    for f in buf.folios[1:]:           # off by one: the first reference is never put
        buf.k.folio_put(f)
    buf.folios = []


@pin_entry_point
def fixed_udmabuf_create(buf, memfd, npages):
    folios = [None] * npages
    ret = buf.k.memfd_pin_folios(memfd, 0, npages * PAGE - 1, folios, npages, Out())
    if ret < 0:
        return ret
    buf.folios = folios[:ret]
    return 0


def fixed_udmabuf_release(buf):
    buf.k.unpin_folios(buf.folios, len(buf.folios))
    buf.folios = []


def test_rules_1_and_10_plain_references_on_memfd_pages():
    k = machine()
    ck = Checker(k)
    fd = memfd_buffer(k, "cma")
    buf = Udmabuf(k)
    assert buggy_udmabuf_create(buf, fd, NPAGES) == 0
    v = ck.violations[0]
    assert v.rule.id == "longterm-placement"
    assert f"{NPAGES} long-term holds sit in CMA (taken by buggy_udmabuf_create)" in str(v)
    buggy_udmabuf_release(buf)
    final = ck.check(final=True)
    ids = [x.rule.id for x in final]
    assert "contiguity" in ids and "pin-balance" in ids
    cont = next(x for x in final if x.rule.id == "contiguity")
    assert "cma_alloc of the whole CMA area 'reserved'" in cont.message
    assert "fails with no holder left" in cont.message
    assert cont.folios and cont.folios[0].migratetype == "CMA"
    bal = next(x for x in final if x.rule.id == "pin-balance")
    assert "1 leaked reference(s) on 1 folio (1 page): pfn " in bal.message


def test_rules_1_and_10_fixed_twin_pins_with_memfd_pin_folios():
    k = machine()
    ck = Checker(k)
    fd = memfd_buffer(k, "cma")
    buf = Udmabuf(k)
    assert fixed_udmabuf_create(buf, fd, NPAGES) == 0
    assert ck.violations == []
    fixed_udmabuf_release(buf)
    assert ck.check(final=True) == []


def test_rule10_offline_fails_after_release_with_plain_refs_in_zone_movable():
    k = machine(boot_reserved="none")         # "auto" reserves the memmap in the top block
    ck = Checker(k)
    fd = memfd_buffer(k, "movable")
    buf = Udmabuf(k)
    buggy_udmabuf_create(buf, fd, NPAGES)
    buggy_udmabuf_release(buf)
    final = ck.check(final=True)
    cont = [x for x in final if x.rule.id == "contiguity"]
    assert cont and "offline_pages of memory block" in cont[0].message
    assert "zone Movable) fails with -EINTR with no holder left" in cont[0].message
    assert cont[0].folios[0].zone == "Movable"


def test_rule10_fixed_twin_offline_succeeds():
    k = machine(boot_reserved="none")
    ck = Checker(k)
    fd = memfd_buffer(k, "movable")
    buf = Udmabuf(k)
    fixed_udmabuf_create(buf, fd, NPAGES)
    fixed_udmabuf_release(buf)
    assert ck.check(final=True) == []
    assert k.faults.enabled and all(b.state == "online" for b in k.memory_blocks.values())


# ---------------------------------------------------------------- rules 2 and 4: error paths
@pin_entry_point
def buggy_pin_buffer(k, addr, npages, pages):
    ret = k.pin_user_pages(addr, npages, FOLL_LONGTERM | FOLL_WRITE, pages)
    if ret < 0:
        return ret
    desc = k.kmalloc(64, GFP_KERNEL)
    if desc is None:
        return -errno.ENOMEM               # forgot unpin_user_pages(pages, ret)
    k.kfree(desc)
    return ret


@pin_entry_point
def fixed_pin_buffer(k, addr, npages, pages):
    ret = k.pin_user_pages(addr, npages, FOLL_LONGTERM | FOLL_WRITE, pages)
    if ret < 0:
        return ret
    desc = k.kmalloc(64, GFP_KERNEL)
    if desc is None:
        k.unpin_user_pages(pages, ret)
        return -errno.ENOMEM
    k.kfree(desc)
    return ret


def test_rule2_error_path_leaks_pins():
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "normal")
    k.faults.arm("kmalloc")
    assert buggy_pin_buffer(k, addr, NPAGES, []) == -errno.ENOMEM
    v = only(ck.violations, "error-nothing-held")
    assert v.message == "buggy_pin_buffer returned -ENOMEM but left 4 new pin(s) and 0 new reference(s) " \
                        "on 4 folios (4 pages): pfn 0x33ffc-0x33fff behind"
    assert len(v.folios) == NPAGES and v.folios[0].pincount == 1


def test_rule2_fixed_twin():
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "normal")
    k.faults.arm("kmalloc")
    assert fixed_pin_buffer(k, addr, NPAGES, []) == -errno.ENOMEM
    assert ck.violations == []
    assert ck.check(final=True) == []


def test_rule4_forgotten_unpin_on_error_path_found_at_teardown():
    """The same bug without an entry-point declaration: pin balance at teardown."""
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "normal")
    k.faults.arm("kmalloc")
    assert buggy_pin_buffer.__wrapped__(k, addr, NPAGES, []) == -errno.ENOMEM
    assert ck.check() == []
    v = only(ck.check(final=True), "pin-balance")
    assert v.message == ("4 pin(s) never released: acquired 4, released 0 since the test started; "
                         "still pinned: 4 folios (4 pages): pfn 0x33ffc-0x33fff")
    assert len(v.folios) == NPAGES


def test_rule4_fixed_twin_and_declared_holder():
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "normal")
    pages = []
    assert fixed_pin_buffer.__wrapped__(k, addr, NPAGES, pages) == NPAGES
    ck.declare_holder("fixture-driver", pages)          # kept alive on purpose
    assert ck.check(final=True) == []
    ck.release_holder("fixture-driver")
    with expect_violation(ck, "pin-balance") as caught:
        pass                                            # the holder is gone: 4 pins outstanding
    assert "4 pin(s) never released" in caught[0].message
    k.unpin_user_pages(pages, NPAGES)
    assert ck.check(final=True) == []


# ---------------------------------------------------------------- rule 3: count honesty
@pin_entry_point
def buggy_pin_some(k, addr, npages, pages):
    """Decides to use one page less but keeps it pinned."""
    ret = k.pin_user_pages(addr, npages, FOLL_LONGTERM | FOLL_WRITE, pages)
    if ret <= 1:
        return ret
    return ret - 1


@pin_entry_point
def fixed_pin_some(k, addr, npages, pages):
    ret = k.pin_user_pages(addr, npages, FOLL_LONGTERM | FOLL_WRITE, pages)
    if ret <= 1:
        return ret
    k.unpin_user_page(pages[ret - 1])
    pages[ret - 1] = None
    return ret - 1


def test_rule3_short_return_with_more_held():
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "normal")
    pages = []
    assert buggy_pin_some(k, addr, NPAGES, pages) == NPAGES - 1
    v = only(ck.violations, "count-honesty")
    assert v.message == "buggy_pin_some returned 3 but 4 entries are held"


def test_rule3_fixed_twin():
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "normal")
    pages = []
    assert fixed_pin_some(k, addr, NPAGES, pages) == NPAGES - 1
    assert ck.violations == []
    k.unpin_user_pages(pages, NPAGES - 1)
    assert ck.check(final=True) == []


def test_rule3_core_return_with_null_entry():
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "normal")
    ret, pages, vs = pin_core(k, ck, addr)
    assert vs == []
    before = ck.snapshot_call()
    vs = check_core_pin_return(ck, "pin_user_pages", 2, [pages[0], None], before)
    v = only(vs, "count-honesty")
    assert v.message == "pin_user_pages returned 2 but entry 1 is NULL"
    k.unpin_user_pages(pages, ret)


# ---------------------------------------------------------------- rule 5: termination
def test_rule5_persistent_injected_isolation_failure_is_the_kernels_outcome_not_a_livelock():
    """The kernel itself never leaves that loop: the task is killed out of it (-EINTR),
    recorded in fake_mm.kernel_outcomes; no termination violation, nothing held."""
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "cma")
    k.faults.arm("folio_isolate_lru", times=-1)
    ret, pages, vs = pin_core(k, ck, addr)
    assert ret == -errno.EINTR and vs == []             # nothing held: rule 2 is fine
    assert not k.livelocks and [o.loop for o in k.kernel_outcomes] == ["__gup_longterm_locked"]
    assert ck.check() == []


def test_rule5_fixed_twin_transient_failure():
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "cma")
    k.faults.arm("folio_isolate_lru", times=3)
    ret, pages, vs = pin_core(k, ck, addr)
    assert ret == NPAGES and vs == [] and not k.livelocks
    k.unpin_user_pages(pages, ret)
    assert ck.check(final=True) == []


def thp_in_cma_with_bait(k):
    """A PMD-mapped THP faulted into CMA, and a free CMA THP waiting on the per-cpu THP
    list (the yangge 2024 set-up)."""
    mm = k.current.mm
    addr = mm.mmap(2 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    with k.steer("cma"):
        assert mm.write(addr, b"T" * (2 << 20)) == 2 << 20
        bait = k.folio_alloc(GFP_HIGHUSER_MOVABLE, 9)
    assert mm.lookup(addr)[0].order == 9 and mm.lookup(addr)[0].is_cma and bait.is_cma
    k.folio_put(bait)                                   # onto the THP pcp list
    return addr


def test_rule5_cma_to_cma_migration_loop_under_the_shared_thp_pcp_quirk():
    """pcp_thp_shared_list: every non-movable THP migration target is the CMA THP just
    freed, so __gup_longterm_locked migrates CMA -> CMA forever; reported as a livelock
    and the call finishes."""
    k = FakeMM(MMConfig(ram="2GiB", cma="512MiB", thp="always", gup_retry_limit=8,
                        quirks=("pcp_thp_shared_list",)))
    ck = Checker(k)
    addr = thp_in_cma_with_bait(k)
    pages = []
    assert k.pin_user_pages(addr, 512, FOLL_LONGTERM | FOLL_WRITE, pages) == -errno.ENOMEM
    assert k.stats.pgmigrate_success == 8 * 512            # migrated every round, into CMA
    assert k.stats.nr_foll_pin_acquired == k.stats.nr_foll_pin_released
    v = only(ck.check(), "termination")
    assert "livelock in __gup_longterm_locked" in str(v) and "mt=CMA" in str(v)


def test_rule5_fixed_twin_separate_thp_pcp_lists():
    """With the fix (separate movable/non-movable THP lists) the target is not CMA."""
    k = FakeMM(MMConfig(ram="2GiB", cma="512MiB", thp="always", gup_retry_limit=8))
    ck = Checker(k)
    addr = thp_in_cma_with_bait(k)
    pages = []
    assert k.pin_user_pages(addr, 512, FOLL_LONGTERM | FOLL_WRITE, pages) == 512
    assert not pages[0].is_cma and not k.livelocks
    k.unpin_user_pages(pages, 512)
    assert ck.check(final=True) == []


# ---------------------------------------------------------------- rule 6: coherence
@pin_entry_point
def buggy_export_memfd(buf, memfd, npages):
    """Does not require F_SEAL_SHRINK: the file can be truncated under the pins."""
    return fixed_udmabuf_create.__wrapped__(buf, memfd, npages)


@pin_entry_point
def fixed_export_memfd(buf, memfd, npages):
    if not memfd.get_seals() & F_SEAL_SHRINK:
        return -errno.EINVAL
    return fixed_udmabuf_create.__wrapped__(buf, memfd, npages)


def truncate_and_refill(fd):
    rc = fd.ftruncate(0)
    if rc == 0:
        fd.ftruncate(NPAGES * PAGE)
        fd.pwrite(b"new!" * 1024, 0)
    return rc


def test_rule6_pinned_page_no_longer_in_the_page_cache_after_truncate_and_refill():
    k = machine()
    ck = Checker(k)
    fd = memfd_buffer(k, "normal")
    buf = Udmabuf(k)
    assert buggy_export_memfd(buf, fd, NPAGES) == 0
    assert truncate_and_refill(fd) == 0
    v = only(ck.check(), "coherence")
    assert "stale page: the held folio pfn=" in v.message
    assert "is no longer what the page cache maps at index 0 of memfd:buf; it now maps pfn=" in v.message
    assert v.call == "buggy_export_memfd"
    fixed_udmabuf_release(buf)


def test_rule6_anon_pin_vs_pte_after_replacement():
    """munmap + MAP_FIXED remap while the pin is held: the pinned page is no longer the
    one user space sees at that address (what a stale DMA target looks like)."""
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "normal")
    drv = PinDriver(k)
    assert fixed_register(drv, addr, NPAGES) == 0
    mm = k.current.mm
    assert mm.munmap(addr, PAGE) == 0                      # the mapping goes away ...
    assert ck.check() == []                                # ... which is no incoherence
    assert mm.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, addr=addr) == addr
    mm.write(addr, b"fresh")                               # a different page now
    v = only(ck.check(), "coherence")
    assert "stale page: the held anonymous folio pfn=" in v.message
    assert f"is no longer what the page table maps at {addr:#x}; it now maps pfn=" in v.message
    assert "copy-on-write" in v.message
    assert v.call == "fixed_register"
    k.unpin_user_pages(drv.pages, NPAGES)


def test_rule6_fixed_twin_requires_the_seal():
    k = machine()
    ck = Checker(k)
    fd = memfd_buffer(k, "normal", seal=True)
    buf = Udmabuf(k)
    assert fixed_export_memfd(buf, fd, NPAGES) == 0
    assert truncate_and_refill(fd) == -errno.EPERM
    assert ck.check() == []
    fixed_udmabuf_release(buf)
    assert ck.check(final=True) == []


# ---------------------------------------------------------------- rule 7: isolation
@pin_entry_point
def buggy_isolate_for_move(k, folio):
    if not k.folio_isolate_lru(folio):
        return -errno.EBUSY
    k.node_stat_mod_isolated(folio, folio.nr_pages)
    if k.kmalloc(64, GFP_KERNEL) is None:
        return -errno.ENOMEM               # forgot putback_movable_pages
    return 0


@pin_entry_point
def fixed_isolate_for_move(k, folio):
    if not k.folio_isolate_lru(folio):
        return -errno.EBUSY
    k.node_stat_mod_isolated(folio, folio.nr_pages)
    if k.kmalloc(64, GFP_KERNEL) is None:
        k.putback_movable_pages([folio])
        return -errno.ENOMEM
    k.putback_movable_pages([folio])
    return 0


def lru_folio(k, addr):
    k.lru_add_drain_all()
    return k.current.mm.lookup(addr)[0]


def test_rule7_isolated_folio_left_behind():
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "normal")
    folio = lru_folio(k, addr)
    k.faults.arm("kmalloc")
    assert buggy_isolate_for_move(k, folio) == -errno.ENOMEM
    assert only(ck.violations, "error-nothing-held").message.endswith("1 isolated folio(s) behind")
    vs = ck.check()
    assert {v.rule.id for v in vs} == {"isolation-hygiene"}
    assert "1 folio(s) left isolated from the LRU" in str(vs[0])
    assert "NR_ISOLATED not back to baseline: nr_isolated_anon=1" in str(vs[1])


def test_rule7_fixed_twin():
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "normal")
    folio = lru_folio(k, addr)
    k.faults.arm("kmalloc")
    assert fixed_isolate_for_move(k, folio) == -errno.ENOMEM
    assert ck.violations == [] and ck.check(final=True) == []


# ---------------------------------------------------------------- rule 8: scope
def buggy_pin_scope(k, fail):
    saved = k.memalloc_pin_save()
    if fail:
        return -errno.EINVAL               # early return skips memalloc_pin_restore
    k.memalloc_pin_restore(saved)
    return 0


def fixed_pin_scope(k, fail):
    saved = k.memalloc_pin_save()
    try:
        if fail:
            return -errno.EINVAL
        return 0
    finally:
        k.memalloc_pin_restore(saved)


def test_rule8_pf_memalloc_pin_left_set():
    k = machine()
    ck = Checker(k)
    buggy_pin_scope(k, fail=True)
    v = only(ck.check(), "scope-hygiene")
    assert v.message.startswith("PF_MEMALLOC_PIN left set on task init[1]")


def test_rule8_fixed_twin():
    k = machine()
    ck = Checker(k)
    fixed_pin_scope(k, fail=True)
    fixed_pin_scope(k, fail=False)
    assert ck.check(final=True) == []


# ---------------------------------------------------------------- rule 9: accounting
class Vfio:
    def __init__(self, k):
        self.k = k
        self.pages = []

    def map_dma(self, addr, npages):
        mm = self.k.current.mm
        rc = self.k.account_locked_vm(mm, npages, True)
        if rc:
            return rc
        ret = self.k.pin_user_pages(addr, npages, FOLL_LONGTERM | FOLL_WRITE, self.pages)
        if ret != npages:
            self.k.unpin_user_pages(self.pages, max(ret, 0))
            self.k.account_locked_vm(mm, npages, False)
            return -errno.EFAULT
        return 0

    def buggy_unmap_dma(self):
        self.k.unpin_user_pages(self.pages, len(self.pages))   # forgets locked_vm
        self.pages = []

    def fixed_unmap_dma(self):
        n = len(self.pages)
        self.k.unpin_user_pages(self.pages, n)
        self.k.account_locked_vm(self.k.current.mm, n, False)
        self.pages = []


def test_rule9_locked_vm_not_returned():
    k = machine()
    k.current.cap_ipc_lock = True
    ck = Checker(k)
    addr = anon_buffer(k, "normal")
    v = Vfio(k)
    assert v.map_dma(addr, NPAGES) == 0
    v.buggy_unmap_dma()
    with expect_violation(ck, "accounting") as caught:
        pass
    assert caught[0].message == "locked_vm of init[1]'s mm is 4 pages, baseline 0 (+4 not returned)"
    assert ck.check(final=True) == []                      # reported once, expected


def test_rule9_fixed_twin():
    k = machine()
    k.current.cap_ipc_lock = True
    ck = Checker(k)
    addr = anon_buffer(k, "normal")
    v = Vfio(k)
    assert v.map_dma(addr, NPAGES) == 0
    v.fixed_unmap_dma()
    assert ck.check(final=True) == []


# ---------------------------------------------------------------- rule 11: warnings
def buggy_release(k, pages, n):
    k.unpin_user_pages(pages, n)
    k.unpin_user_pages(pages, n)           # the error path released them already


def test_rule11_double_unpin():
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "normal")
    ret, pages, _ = pin_core(k, ck, addr)
    buggy_release(k, pages, ret)
    vs = ck.check()
    assert {v.rule.id for v in vs} == {"kernel-warnings"} and len(vs) == NPAGES
    assert "WARNING: unpin: unpinning a small folio with refcount < 1024 (not pinned)" in str(vs[0])
    assert "test_rules.py" in vs[0].caller and "buggy_release" in vs[0].caller


def test_rule11_fixed_twin():
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "normal")
    ret, pages, _ = pin_core(k, ck, addr)
    k.unpin_user_pages(pages, ret)
    assert ck.check(final=True) == []


def test_errno_valued_count_passed_to_unpin_is_a_warning():
    k = machine()
    ck = Checker(k)
    k.unpin_user_pages([], -errno.EFAULT)
    v = only(ck.check(), "kernel-warnings")
    assert "npages=-14" in v.message


# ---------------------------------------------------------------- expect_violation
def test_expect_violation_fails_when_nothing_breaks():
    k = machine()
    ck = Checker(k)
    with pytest.raises(AssertionError, match=r"rule 8 \(scope-hygiene"):
        with expect_violation(ck, 8):
            fixed_pin_scope(k, fail=True)


def test_expect_violation_swallows_only_its_rule():
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "normal")
    with expect_violation(ck, "scope-hygiene"):
        buggy_pin_scope(k, fail=True)
        ret, pages, _ = pin_core(k, ck, addr)
        buggy_release(k, pages, ret)
    assert {v.rule.id for v in ck.violations} == {"kernel-warnings"}
    assert all(v.rule.id != "scope-hygiene" for v in ck.check())


def test_rule1_migration_failure_returns_success_with_cma_pages_pinned():
    """v5.1..v5.12 "pin anyway": migration fails, the retry pins the CMA pages again."""
    k = machine(quirks=("gup_keep_pins_on_isolation_failure",))
    ck = Checker(k)
    addr = anon_buffer(k, "cma")
    k.faults.arm("alloc_migration_target", times=-1)
    ret, pages, vs = pin_core(k, ck, addr)
    assert ret == NPAGES
    assert {v.rule.id for v in vs} == {"longterm-placement"} and len(vs) == 1
    assert f"{NPAGES} long-term holds sit in CMA (taken by pin_user_pages)" in str(vs[0])
    assert "alloc_migration_target#1" in str(vs[0])
    k.faults.disarm()
    k.unpin_user_pages(pages, ret)


def test_rule1_fixed_kernel_fails_the_pin_instead():
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "cma")
    k.faults.arm("alloc_migration_target", times=-1)
    ret, pages, vs = pin_core(k, ck, addr)
    assert ret == -errno.ENOMEM and vs == []
    k.faults.disarm()
    assert ck.check(final=True) == []


def test_rule6_declared_device_mapping_that_missed_an_invalidation():
    """A driver's declared device view that still points at a migrated-away page is a
    coherence violation; once the view follows the page table, there is none."""
    k = machine()
    ck = Checker(k)
    addr = anon_buffer(k, "cma", npages=1)
    mm = k.current.mm
    folio, idx = mm.lookup(addr)
    device = {addr: folio.pfn + idx}
    ck.declare_device_mapping("drv", lambda: [(mm, a, p) for a, p in device.items()])
    assert ck.check() == []
    area = k.cma_areas[0]
    page = k.cma_alloc(area, area.count, 0)                 # migrates the buffer out
    assert page is not None
    v = only(ck.check(), "coherence")
    assert "device mapping of 'drv'" in str(v) and "missed mmu notifier invalidation" in str(v)
    new, idx = mm.lookup(addr)
    device[addr] = new.pfn + idx                            # the fixed driver re-faults
    assert ck.check() == []
    ck.release_device_mapping("drv")
    assert k.cma_release(area, page, area.count)
