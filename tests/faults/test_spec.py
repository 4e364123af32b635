"""The fault-spec grammar: valid specs parse into the documented fields, bad ones are
refused with the exact column, what was expected and what was found."""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault.faults.sites import BUILTIN_SITES, Site
from pytest_pinfault.faults.spec import (FaultSpec, FaultSpecError, Term, parse_errno, parse_spec,
                                         parse_specs, validate_spec)

T = Term

VALID = [
    ("folio_isolate_lru=return",
     FaultSpec("folio_isolate_lru", (), 1, 1, None, (T(None, None, "return"),))),
    ("folio_isolate_lru=1*return",
     FaultSpec("folio_isolate_lru", (), 1, 1, None, (T(None, 1, "return"),))),
    ("folio_isolate_lru[nth=2]=1*return",
     FaultSpec("folio_isolate_lru", (), 2, 1, None, (T(None, 1, "return"),))),
    ("folio_isolate_lru[nth=2]=return",
     FaultSpec("folio_isolate_lru", (), 2, 1, None, (T(None, None, "return"),))),
    ("alloc_pages[order=0,zone=Normal]=25%return",
     FaultSpec("alloc_pages", (("order", "0"), ("zone", "Normal")), 1, 1, None, (T(25.0, None, "return"),))),
    ("alloc_pages[zone=dma32,migratetype=cma]=return",
     FaultSpec("alloc_pages", (("zone", "DMA32"), ("migratetype", "CMA")), 1, 1, None,
               (T(None, None, "return"),))),
    ("migrate_folio=3*off->2*return",
     FaultSpec("migrate_folio", (), 1, 1, None, (T(None, 3, "off"), T(None, 2, "return")))),
    ("migrate_folio=hold(5)",
     FaultSpec("migrate_folio", (), 1, 1, None, (T(None, None, "hold", 5),))),
    ("migrate_folio=hold",
     FaultSpec("migrate_folio", (), 1, 1, None, (T(None, None, "hold"),))),
    ("memfd_alloc_folio=return(EEXIST)",
     FaultSpec("memfd_alloc_folio", (), 1, 1, None, (T(None, None, "return", errno.EEXIST),))),
    ("memfd_alloc_folio=return(-ENOSPC)",
     FaultSpec("memfd_alloc_folio", (), 1, 1, None, (T(None, None, "return", errno.ENOSPC),))),
    ("memfd_alloc_folio=return(12)",
     FaultSpec("memfd_alloc_folio", (), 1, 1, None, (T(None, None, "return", errno.ENOMEM),))),
    ("kmalloc[caller=udmabuf_create,times=1]=return",
     FaultSpec("kmalloc", (("caller", "udmabuf_create"),), 1, 1, 1, (T(None, None, "return"),))),
    ("kmalloc[every=3,kind=anon]=call(race)",
     FaultSpec("kmalloc", (("kind", "anon"),), 1, 3, None, (T(None, None, "call", "race"),))),
    ("udmabuf.sg_alloc = 12.5% 2*return(ENOMEM) -> off",
     FaultSpec("udmabuf.sg_alloc", (), 1, 1, None, (T(12.5, 2, "return", errno.ENOMEM), T(None, None, "off")))),
    ("  x [ nth = 3 , every = 2 , times = 4 ] = 100%return  ",
     FaultSpec("x", (), 3, 2, 4, (T(100.0, None, "return"),))),
    ("a[order=09]=0%return",
     FaultSpec("a", (("order", "9"),), 1, 1, None, (T(0.0, None, "return"),))),
]


@pytest.mark.parametrize("text, want", VALID, ids=[v[0].strip() for v in VALID])
def test_valid_specs(text, want):
    got = parse_spec(text)
    assert got == FaultSpec(want.site, want.filters, want.nth, want.every, want.times, want.terms,
                            text.strip())
    assert got.text == str(got) == text.strip()


BAD = [
    # text, column, expected, got
    ("", 1, "a fault site name", "end of spec"),
    ("[nth=1]=return", 1, "a fault site name", "["),
    ("9site=return", 1, "a fault site name", "9site"),
    ("site.=return", 1, "a fault site name", "site."),
    ("folio_isolate_lru", 18, "'[' or '='", "end of spec"),
    ("folio_isolate_lru return", 19, "'[' or '='", "return"),
    ("a[", 3, "an attribute (zone, migratetype, order, kind, caller, nth, every, times)", "end of spec"),
    ("a[]=return", 3, "an attribute (zone, migratetype, order, kind, caller, nth, every, times)", "]"),
    ("a[foo=1]=return", 3, "an attribute (zone, migratetype, order, kind, caller, nth, every, times)", "foo"),
    ("a[nth]=return", 6, "'=' after nth", "]"),
    ("a[nth=0]=return", 7, "a positive integer for nth", "0"),
    ("a[nth=two]=return", 7, "a positive integer for nth", "two"),
    ("a[every=1.5]=return", 9, "a positive integer for every", "1.5"),
    ("a[nth=1,nth=2]=return", 9, "each attribute at most once (nth is given twice)", "nth"),
    ("a[nth=1;times=2]=return", 8, "',' or ']'", ";"),
    ("a[nth=1]return", 9, "'='", "return"),
    ("a[zone=High]=return", 8, "a zone (DMA, DMA32, Normal, Movable)", "High"),
    ("a[migratetype=Pinned]=return", 15,
     "a migratetype (Unmovable, Movable, Reclaimable, HighAtomic, CMA, Isolate)", "Pinned"),
    ("a[order=x]=return", 9, "an integer order (0, 1, 9 ...)", "x"),
    ("a[caller=1]=return", 10, "a function name", "1"),
    ("a=", 3, "an action (return, off, hold, call)", "end of spec"),
    ("a=fail", 3, "an action (return, off, hold, call)", "fail"),
    ("a=12return", 3, "a probability or a count", "12return"),
    ("a=12 return", 6, "'%' or '*' after a number", "return"),
    ("a=0*return", 3, "a positive integer count", "0"),
    ("a=1.5*return", 3, "a positive integer count", "1.5"),
    ("a=150%return", 3, "a percentage between 0 and 100", "150%"),
    ("a=50%2 return", 8, "'*' after the count", "return"),
    ("a=return(EFOO)", 10, "an errno (ENOMEM, -ENOMEM or 12)", "EFOO"),
    ("a=return(-enomem)", 10, "an errno (ENOMEM, -ENOMEM or 12)", "-enomem"),
    ("a=return(ENOMEM", 16, "')'", "end of spec"),
    ("a=off(1)", 6, "'->', ';' or end of spec (off takes no argument)", "("),
    ("a=hold(0)", 8, "a positive number of migration attempts", "0"),
    ("a=call", 7, "'(' and a callback name after call", "end of spec"),
    ("a=call()", 8, "a callback name", ")"),
    ("a=return->", 11, "an action (return, off, hold, call)", "end of spec"),
    ("a=return x", 10, "'->' or end of spec", "x"),
    ("a=return;b=return", 9, "'->' or end of spec", ";"),
]


@pytest.mark.parametrize("text, column, expected, got", BAD, ids=[b[0] or "<empty>" for b in BAD])
def test_bad_specs(text, column, expected, got):
    with pytest.raises(FaultSpecError) as ei:
        parse_spec(text)
    e = ei.value
    assert (e.spec, e.column, e.expected, e.got) == (text.strip(), column, expected, got)
    assert str(e) == f"bad fault spec {text.strip()!r} at column {column}: expected {expected}, got {got!r}"
    assert isinstance(e, ValueError)


def test_parse_specs_splits_on_semicolons_and_newlines():
    specs = parse_specs("a=return; b[nth=2]=1*return\n\n  c=off ;\n")
    assert [s.text for s in specs] == ["a=return", "b[nth=2]=1*return", "c=off"]
    assert parse_specs("") == [] and parse_specs(" ;\n ") == []


def test_parse_specs_reports_the_column_inside_the_bad_spec():
    with pytest.raises(FaultSpecError) as ei:
        parse_specs("a=return;  b=bogus")
    assert (ei.value.spec, ei.value.column, ei.value.got) == ("b=bogus", 3, "bogus")


def test_parse_errno_forms():
    assert parse_errno("ENOMEM") == parse_errno("-ENOMEM") == parse_errno("12") == parse_errno("-12") == 12
    assert parse_errno("EFOO") is None and parse_errno("0") is None and parse_errno("enomem") is None


def test_validate_unknown_site_names_the_known_ones():
    spec = parse_spec("folio_isolate_lrx=return")
    with pytest.raises(FaultSpecError) as ei:
        validate_spec(spec, BUILTIN_SITES)
    e = ei.value
    assert e.column == 1 and e.got == "folio_isolate_lrx"
    assert e.expected == f"a known fault site ({', '.join(sorted(BUILTIN_SITES))})"
    assert str(e).startswith("bad fault spec 'folio_isolate_lrx=return' at column 1: expected a known fault site (")


def test_validate_errno_the_site_cannot_return_names_both():
    spec = parse_spec("folio_isolate_lru=2*off->return(ENOMEM)")
    with pytest.raises(FaultSpecError) as ei:
        validate_spec(spec, BUILTIN_SITES)
    assert str(ei.value) == ("bad fault spec 'folio_isolate_lru=2*off->return(ENOMEM)' at column 33: "
                             "expected an errno folio_isolate_lru may return (-EBUSY), got '-ENOMEM'")


def test_validate_accepts_allowed_errnos_and_user_sites():
    validate_spec(parse_spec("memfd_alloc_folio=return(EEXIST)->return(ENOSPC)"), BUILTIN_SITES)
    user = {"udmabuf.sg_alloc": Site("udmabuf.sg_alloc", "driver", "", "", (errno.ENOMEM, errno.EINVAL), True)}
    validate_spec(parse_spec("udmabuf.sg_alloc=return(-EINVAL)"), user)
    with pytest.raises(FaultSpecError, match=r"expected an errno udmabuf.sg_alloc may return "
                                             r"\(-ENOMEM, -EINVAL\), got '-EIO'"):
        validate_spec(parse_spec("udmabuf.sg_alloc=return(EIO)"), user)


def test_specs_are_frozen_hashable_values():
    a, b = parse_spec("a[nth=2]=1*return"), parse_spec("a[nth=2]=1*return")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.nth = 3  # type: ignore[misc]


# ---------------------------------------------------------------------------- docs
DOC = __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _fault_specs_section() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Fault specs")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_doc_ebnf_is_the_module_ebnf():
    import textwrap

    import pytest_pinfault.faults.spec as spec_mod
    section = _fault_specs_section()
    doc_ebnf = section.split("```ebnf\n", 1)[1].split("```", 1)[0]
    mod = spec_mod.__doc__
    block = mod.split("``(* *)`` are comments)::\n\n", 1)[1].split("\n\n", 1)[0]
    assert textwrap.dedent(block).strip() == doc_ebnf.strip()


def test_doc_examples_parse_and_fit_the_catalogue():
    rows = [line for line in _fault_specs_section().splitlines() if line.startswith("| ")]
    examples = [r.split("`")[1] for r in rows if r.count("|") == 4 and r.split("|")[2].strip().startswith("`")]
    assert len(examples) >= 15
    for text in examples:
        for spec in parse_specs(text):
            validate_spec(spec, BUILTIN_SITES)
