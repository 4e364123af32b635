"""Matrix cases: stable ids, replay from the id, the spec each case arms."""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.faults.matrix import MODES, MatrixCase, matrix_cases, parse_case_id, sized_cases
from pytest_pinfault.faults.spec import parse_spec


def test_modes():
    assert MODES == ("transient", "persistent")


def test_id_and_spec():
    t, p = MatrixCase("folio_isolate_lru", 2, "transient"), MatrixCase("folio_isolate_lru", 2, "persistent")
    assert (t.id, p.id) == ("folio_isolate_lru-2-transient", "folio_isolate_lru-2-persistent")
    assert t.label == "folio_isolate_lru#2"
    assert t.spec == "folio_isolate_lru[nth=2]=1*return"
    assert p.spec == "folio_isolate_lru[nth=2]=return"
    assert str(t) == t.id
    for case in (t, p):
        assert parse_spec(case.spec).nth == 2


@pytest.mark.parametrize("case", matrix_cases(["kmalloc", "udmabuf.sg_alloc"], 3), ids=lambda c: c.id)
def test_parse_case_id_round_trips(case):
    assert parse_case_id(case.id) == case


@pytest.mark.parametrize("bad", ["kmalloc", "kmalloc#2", "kmalloc#0-transient", "kmalloc#x-transient",
                                 "kmalloc#2-sometimes", "#2-transient", "bad site#1-transient", "",
                                 "kmalloc-2", "kmalloc-0-transient", "kmalloc-x-transient",
                                 "kmalloc-2-sometimes", "-2-transient", "bad site-1-transient"])
def test_parse_case_id_refuses_malformed(bad):
    with pytest.raises(ValueError, match="bad matrix case id"):
        parse_case_id(bad)


def test_matrix_cases_order():
    cases = matrix_cases(["a", "b"], 2)
    assert [c.id for c in cases] == ["a-1-transient", "a-1-persistent", "a-2-transient", "a-2-persistent",
                                     "b-1-transient", "b-1-persistent", "b-2-transient", "b-2-persistent"]
    assert [c.id for c in matrix_cases({"a": None}, 2, modes=("persistent",))] == ["a-1-persistent",
                                                                                  "a-2-persistent"]


@pytest.mark.parametrize("kwargs", [dict(max_nth=0), dict(max_nth=2, modes=("sometimes",))])
def test_matrix_cases_refuses_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        matrix_cases(["a"], **kwargs)


def test_case_validates_fields():
    with pytest.raises(ValueError, match="mode"):
        MatrixCase("a", 1, "sometimes")
    with pytest.raises(ValueError, match="occurrence"):
        MatrixCase("a", 0, "transient")


@pytest.mark.parametrize("mode, want", [("transient", [2]), ("persistent", [2, 3, 4])])
def test_case_spec_arms_the_documented_fault(mode, want):
    k = FakeMM(MMConfig(ram="256MiB"))
    k.faults.arm_spec(MatrixCase("kmalloc", 2, mode).spec)
    got = [i for i in range(1, 5) if k.faults.hit("kmalloc", size=8) == -errno.ENOMEM]
    assert got == want


def test_ids_use_only_characters_pytest_k_accepts():
    import re
    for case in matrix_cases(["kmalloc", "udmabuf.sg_alloc"], 12):
        assert re.fullmatch(r"[\w.\-]+", case.id), case.id


def test_parse_case_id_reads_the_earlier_spelling():
    assert parse_case_id("kmalloc#2-persistent") == MatrixCase("kmalloc", 2, "persistent")


def test_sized_cases_follow_the_reach_and_report_the_cap():
    plan = sized_cases(["kmalloc", "folio_isolate_lru", "alloc_pages"], {"kmalloc": 5, "alloc_pages": 40},
                       cap=32, modes=("transient",))
    assert [c.id for c in plan.cases] == [f"kmalloc-{n}-transient" for n in range(1, 6)] + \
        [f"alloc_pages-{n}-transient" for n in range(1, 33)]
    assert plan.capped == {"alloc_pages": 40}
    assert plan.unreached == ("folio_isolate_lru",)
    assert plan.reach == {"kmalloc": 5, "folio_isolate_lru": 0, "alloc_pages": 40}
    assert plan.as_dict()["cases"] == 37
    empty = sized_cases(["folio_isolate_lru"], {}, cap=3)
    assert empty.cases == () and empty.unreached == ("folio_isolate_lru",) and empty.capped == {}
    with pytest.raises(ValueError):
        sized_cases(["a"], {"a": 1}, cap=0)
