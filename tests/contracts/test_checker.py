"""Rules lookup, the violation format, entry-point discovery and purity."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_pinfault.contracts import (RULES, Checker, Violation, checker_for, get_rule,
                                       pin_entry_point)
from pytest_pinfault.contracts.violation import FolioSnapshot
from pytest_pinfault.mm import FakeMM, MMConfig

IDS = ["longterm-placement", "error-nothing-held", "count-honesty", "pin-balance", "termination",
       "coherence", "isolation-hygiene", "scope-hygiene", "accounting", "contiguity",
       "kernel-warnings"]


def test_eleven_rules_with_stable_ids_and_numbers():
    assert [r.id for r in RULES] == IDS
    assert [r.number for r in RULES] == list(range(1, 12))
    for r in RULES:
        assert get_rule(r.number) is r and get_rule(r.id) is r and get_rule(r) is r
        assert get_rule(str(r.number)) is r and get_rule(r.id.upper()) is r
        assert r.meaning and "\n" not in r.meaning


@pytest.mark.parametrize("bad", [0, 12, "pin_balance", "", True, None, 4.0])
def test_unknown_rule_lists_the_valid_ones(bad):
    with pytest.raises(ValueError, match=r"unknown contract rule .*valid rules: 1=longterm-placement, "
                                         r"2=error-nothing-held.*11=kernel-warnings"):
        get_rule(bad)


def test_violation_reads_like_a_splat():
    f = FolioSnapshot(pfn=0x3b123, order=0, zone="DMA32", migratetype="CMA", refcount=1025,
                      pincount=1, kind="anon", mapcount=1)
    v = Violation(get_rule(1), "a long-term hold sits in CMA", (f,), "udmabuf_create",
                  "test_x.py:12 test_create", ("[    42] migrate_fail: folio=folio@0x3b123/DMA32",))
    assert str(v) == (
        "pin contract violation: [longterm-placement] a long-term hold sits in CMA\n"
        "  rule 1 (longterm-placement): no folio with a long-term hold is in ZONE_MOVABLE, a CMA or "
        "an isolated pageblock\n"
        "  folio pfn=0x3b123 zone=DMA32 mt=CMA ref=1025 pin=1 map=1 anon\n"
        "  call: udmabuf_create (called from test_x.py:12 test_create)\n"
        "  last events:\n"
        "    [    42] migrate_fail: folio=folio@0x3b123/DMA32")
    with pytest.raises(Exception):
        v.message = "x"                                       # frozen


def test_entry_point_finds_the_fake_mm():
    k = FakeMM(MMConfig(ram="512MiB"))
    ck = Checker(k)
    assert checker_for(k) is ck
    seen = []

    @pin_entry_point
    def direct(x, kk):
        seen.append(kk)
        return -1

    class Drv:
        def __init__(self, attr):
            setattr(self, attr, k)

    @pin_entry_point(name="via_attr")
    def via_attr(drv):
        return 0

    @pin_entry_point
    def via_mm(mm):
        return 0

    assert direct(1, kk=k) == -1
    for attr in ("fake_mm", "k", "mm_k"):
        assert via_attr(Drv(attr)) == 0
    assert via_mm(k.current.mm) == 0
    assert via_attr.__pin_entry_point__ == "via_attr"
    assert ck.violations == []

    @pin_entry_point
    def unrelated(x):
        return -5                                             # no FakeMM: just runs
    assert unrelated(3) == -5


def test_contracts_never_import_pytest():
    code = "import sys, pytest_pinfault.contracts; sys.exit(3 if 'pytest' in sys.modules else 0)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr or "pytest was imported by the contracts"


def test_hold_units_use_the_models_expected_ref_count():
    """split_units writes folio_expected_ref_count out for speed: both must agree on
    every kind of user folio (anon mapped, shmem in the page cache, private flag)."""
    from pytest_pinfault.contracts.units import split_units
    from pytest_pinfault.mm.folio import PG_private
    from tests.contracts.helpers import anon_buffer, machine
    k = machine()
    addr = anon_buffer(k, "normal")
    f = k.memfd_create("u", 0)
    assert f.ftruncate(8192) == 0 and f.pwrite(b"s" * 8192, 0) == 8192
    folios = [k.current.mm.lookup(addr)[0], f.mapping.lookup(0), f.mapping.lookup(1)]
    folios[2].flags |= PG_private
    for folio in folios:
        base = folio._rc - k.folio_expected_ref_count(folio) - (folio.lru_batch != -1)
        assert split_units(k, folio, {}) == (0, max(0, base)), folio
        k.folio_get(folio)
        k.folio_get(folio)
        assert split_units(k, folio, {}) == (0, max(0, base + 2)), folio
        k.folio_put(folio)
        k.folio_put(folio)
    folios[2].flags &= ~PG_private
