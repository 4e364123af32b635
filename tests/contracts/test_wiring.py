"""The model side of the checker wiring: ``fake_mm._checker`` judges every core pinning
call's return (rules 1-3), ``fake_mm.check()`` judges state on demand, and
``fake_mm.faults.enabled`` is a live switch.

Plain FakeMM + Checker, no plugin fixtures.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from pytest_pinfault.contracts import Checker, checker_for
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ,
                                PROT_WRITE, FakeMM, KernelHang, MMConfig, Out)

from tests.contracts.helpers import NPAGES, PAGE, anon_buffer, machine

QUIRK = ("gup_keep_pins_on_isolation_failure",)


def memfd_buffer(k, where="cma", npages=NPAGES):
    fd = k.memfd_create("buf", 0)
    assert fd.ftruncate(npages * PAGE) == 0
    with k.steer(where):
        assert fd.pwrite(b"x" * (npages * PAGE), 0) == npages * PAGE
    return fd


def attach(k) -> Checker:
    k._checker = Checker(k)           # baseline now, as the plugin's fixture does
    return k._checker


def ids(violations):
    return [v.rule.id for v in violations]


# ---------------------------------------------------------------- rule 1 at core return
PIN_CALLS = {
    "pin_user_pages": lambda k, a, f, p: k.pin_user_pages(a, NPAGES, f, p),
    "pin_user_pages_fast": lambda k, a, f, p: k.pin_user_pages_fast(a, NPAGES, f, p),
    "pin_user_pages_unlocked": lambda k, a, f, p: k.pin_user_pages_unlocked(a, NPAGES, p, f),
    "pin_user_pages_remote": lambda k, a, f, p: k.pin_user_pages_remote(k.current.mm, a, NPAGES, f, p),
}


@pytest.mark.parametrize("call", sorted(PIN_CALLS))
def test_quirk_longterm_pin_left_in_cma_is_flagged_at_the_pins_return(call):
    k = machine(quirks=QUIRK)
    addr = anon_buffer(k, "cma")
    ck = attach(k)
    k.faults.arm("folio_isolate_lru", times=-1)
    pages: list = []
    ret = PIN_CALLS[call](k, addr, FOLL_LONGTERM | FOLL_WRITE, pages)
    assert ret == NPAGES
    # judged at the return itself: nothing but the pin call ran since
    bad = [v for v in ck.violations if v.rule.id == "longterm-placement"]
    assert len(bad) == 1, "\n\n".join(map(str, ck.violations))   # one splat per call
    assert ids(ck.violations) == ["longterm-placement"]
    text = str(bad[0])
    assert f"{NPAGES} long-term holds sit in CMA (taken by {call})" in text
    assert len(bad[0].folios) == NPAGES
    assert "mt=CMA" in text
    assert f"call: {call} (called from test_wiring.py:" in text      # the caller, not gup.py
    k.faults.disarm()
    k.unpin_user_pages(pages, ret)
    assert ck.check(final=True) == []


@pytest.mark.parametrize("call", sorted(PIN_CALLS))
def test_fixed_default_config_migrates_and_is_not_flagged(call):
    k = machine()
    addr = anon_buffer(k, "cma")
    ck = attach(k)
    k.faults.arm("folio_isolate_lru", times=2)        # transient: the fixed kernel retries
    pages: list = []
    ret = PIN_CALLS[call](k, addr, FOLL_LONGTERM | FOLL_WRITE, pages)
    assert ret == NPAGES
    assert ck.violations == [], "\n\n".join(map(str, ck.violations))
    assert all(k.folio_is_longterm_pinnable(p.folio) for p in pages)
    k.faults.disarm()
    k.unpin_user_pages(pages, ret)
    assert ck.check(final=True) == []


def test_short_term_pin_in_cma_is_not_a_longterm_violation_at_core_return():
    k = machine()
    addr = anon_buffer(k, "cma")
    ck = attach(k)
    pages: list = []
    assert k.pin_user_pages(addr, NPAGES, FOLL_WRITE, pages) == NPAGES
    assert ck.violations == []
    k.unpin_user_pages(pages, NPAGES)
    assert ck.check(final=True) == []


def test_no_checker_attached_means_no_judging():
    """Checker(k) alone (registered for entry points, not attached) leaves core calls
    unjudged, as before the wiring."""
    k = machine(quirks=QUIRK)
    addr = anon_buffer(k, "cma")
    ck = Checker(k)
    assert k._checker is None
    k.faults.arm("folio_isolate_lru", times=-1)
    pages: list = []
    assert k.pin_user_pages(addr, NPAGES, FOLL_LONGTERM | FOLL_WRITE, pages) == NPAGES
    assert ck.violations == []
    k.faults.disarm()
    k.unpin_user_pages(pages, NPAGES)


def test_get_user_pages_counts_are_honest_and_zero_folio_pins_count_nothing():
    k = machine()
    mm = k.current.mm
    ck = attach(k)
    addr = mm.mmap(NPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    pages: list = []
    assert k.get_user_pages(addr, NPAGES, 0, pages) == NPAGES      # read faults: zero folio
    assert k.get_user_pages_fast(addr, NPAGES, 0, []) == NPAGES
    pins: list = []
    assert k.pin_user_pages(addr, NPAGES, 0, pins) == NPAGES       # read-only pins
    assert ck.violations == [], "\n\n".join(map(str, ck.violations))
    for p in pages:
        k.put_page(p)
    k.unpin_user_pages(pins, NPAGES)
    assert ck.check(final=True) == []


def test_invalid_flags_return_is_judged_without_violation():
    k = machine()
    addr = anon_buffer(k, "movable")
    ck = attach(k)
    assert k.pin_user_pages(addr, NPAGES, FOLL_LONGTERM, None) == 0      # pages == NULL: WARN, 0
    assert ids(ck.violations) == []
    assert ids(ck.check()) == ["kernel-warnings"]


# ---------------------------------------------------------------- rule 2 at core return
def test_failing_memfd_pin_folios_leaves_nothing_held():
    k = machine()
    fd = memfd_buffer(k, "movable")
    ck = attach(k)
    k.faults.arm("try_grab_folio", nth=3)          # fails after two folios were pinned
    folios: list = []
    ret = k.memfd_pin_folios(fd, 0, NPAGES * PAGE - 1, folios, NPAGES, Out())
    assert ret == -errno.EINVAL
    assert [v for v in ck.violations if v.rule.id == "error-nothing-held"] == []
    assert ck.violations == [], "\n\n".join(map(str, ck.violations))
    k.faults.disarm()
    assert ck.check(final=True) == []


def test_memfd_pin_folios_kernel_hang_leaves_nothing_held():
    """Persistent isolation failure on CMA: memfd_pin_folios would never return (no
    fatal-signal check in its loop): KernelHang, every pin dropped, no violation."""
    k = machine()
    fd = memfd_buffer(k, "cma")
    ck = attach(k)
    k.faults.arm("folio_isolate_lru", times=-1)
    folios: list = []
    with pytest.raises(KernelHang):
        k.memfd_pin_folios(fd, 0, NPAGES * PAGE - 1, folios, NPAGES, Out())
    assert ck.violations == [], "\n\n".join(map(str, ck.violations))
    assert ck.check() == [] and not k.livelocks
    k.faults.disarm()


def test_memfd_pin_folios_success_is_counted_and_placed():
    k = machine()
    fd = memfd_buffer(k, "cma")
    ck = attach(k)
    folios: list = []
    ret = k.memfd_pin_folios(fd, 0, NPAGES * PAGE - 1, folios, NPAGES, Out())
    assert ret == NPAGES
    assert ck.violations == []
    k.unpin_folios(folios, ret)
    assert ck.check(final=True) == []


# ---------------------------------------------------------------- fake_mm.check()
def test_fake_mm_check_reports_a_double_unpin():
    k = machine()
    addr = anon_buffer(k, "movable", npages=1)
    pages: list = []
    assert k.pin_user_pages(addr, 1, FOLL_WRITE, pages) == 1
    assert k.check() == []
    k.unpin_user_pages(pages, 1)
    k.unpin_user_pages(pages, 1)                 # double unpin
    vs = k.check()
    assert ids(vs) == ["kernel-warnings"]
    assert "unpinning a small folio with refcount < 1024" in str(vs[0])
    assert k.check() == [vs[0]]                  # state is judged again, reported once
    assert k._checker is None                    # the private checker is not attached
    assert checker_for(k) is None                # nor registered for entry points


def test_fake_mm_check_uses_the_attached_checker():
    k = machine()
    ck = attach(k)
    k.unpin_user_pages([None], -1)               # errno-valued npages: WARN
    assert ids(k.check()) == ["kernel-warnings"]
    assert ids(ck.violations) == ["kernel-warnings"]
    assert k._own_checker is None


@pytest.mark.parametrize("cfg", [
    dict(),
    dict(ram="1GiB", cma="64MiB", movablecore="128MiB"),
    dict(ram="2GiB", hugetlb={2 << 20: 8, 1 << 30: 1}),
    dict(ram="1GiB", hugetlb={2 << 20: 100000}),                  # short pool at boot
])
def test_boot_baseline_equals_a_baseline_taken_after_construction(cfg):
    k = FakeMM(MMConfig(**cfg))
    now = Checker(k, register=False)
    boot = Checker(k, register=False, at_boot=True)
    for name in ("_b_pins", "_b_isolated", "_b_warnings", "_b_livelocks", "_b_seq", "_b_hugetlb",
                 "_b_isolated_folios"):
        assert getattr(boot, name) == getattr(now, name), name
    assert {z: n for z, n in now._b_isolate_pb.items() if n} == {}
    assert {p for p, f in now._b_task_flags.items() if f} == set()
    assert all(lv == pv == 0 for _, lv, pv in now._b_mm.values())
    assert all(p == r == 0 for _, p, r in now._b_folios.values())


def test_fake_mm_check_works_without_pytest():
    code = textwrap.dedent("""
        import sys
        sys.modules["pytest"] = None          # importing pytest now fails
        from pytest_pinfault.mm import FOLL_WRITE, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, FakeMM
        k = FakeMM()
        mm = k.current.mm
        addr = mm.mmap(4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        assert mm.write(addr, b"x") == 1
        pages = []
        assert k.pin_user_pages(addr, 1, FOLL_WRITE, pages) == 1
        k.unpin_user_pages(pages, 1)
        k.unpin_user_pages(pages, 1)
        vs = k.check()
        assert [v.rule.id for v in vs] == ["kernel-warnings"], vs
        assert "_pytest" not in sys.modules
        print(vs[0])
    """)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("pin contract violation: [kernel-warnings] WARNING: unpin:")


def test_mm_imports_contracts_only_lazily():
    """No module of pytest_pinfault.mm imports the contracts package at import time
    (contracts imports mm: a module-level import back would be a cycle)."""
    import ast

    import pytest_pinfault.mm as mm_pkg
    d = os.path.dirname(mm_pkg.__file__)
    for name in sorted(os.listdir(d)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(d, name)) as fh:
            tree = ast.parse(fh.read())
        for node in tree.body:                  # module level only
            if isinstance(node, ast.ImportFrom):
                assert "contracts" not in (node.module or ""), f"{name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any("contracts" in a.name for a in node.names), name


# ---------------------------------------------------------------- injector switch
def test_faults_enabled_setter_recomputes_active():
    k = machine()
    fi = k.faults
    fi.arm("folio_isolate_lru", times=-1)
    assert fi.active and fi.enabled
    fi.enabled = False
    assert not fi.active and not fi.enabled
    fi.enabled = True
    assert fi.active
    fi.disarm()
    assert not fi.active
    fi.enabled = False
    fi.arm("folio_isolate_lru")                   # arming while disabled stays inactive
    assert not fi.active
    fi.enabled = True
    assert fi.active
