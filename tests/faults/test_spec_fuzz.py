"""The spec grammar never lets another exception out (issue 18: ``²`` anywhere in a
spec was an INTERNALERROR, because ``str.isdigit`` accepts it and ``int()`` does not).
Any text either parses to a spec the injector arms, or is a FaultSpecError with a
1-based column inside the spec."""

import string

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pytest_pinfault.faults.injector import Injector  # noqa: E402
from pytest_pinfault.faults.spec import FaultSpecError, parse_spec, parse_specs  # noqa: E402

# Grammar pieces, so random texts get deep into the parser, plus characters that
# str.isdigit / isalnum / int() treat differently from ASCII.
PIECES = ["kmalloc", "alloc_pages", "migrate_folio", "folio_isolate_lru", "[", "]", "=", ",", "->",
          "*", "%", "(", ")", ".", "-", ";", " ", "nth", "every", "times", "order", "zone", "kind",
          "caller", "migratetype", "return", "off", "hold", "call", "ENOMEM", "EBUSY", "DMA32", "CMA",
          "0", "1", "12", "100", "99999999999999999999", "1.5", "\u00b2", "\u0663", "\uff11", "\u2167",
          "\u00e9", "\u0130", "_", "\n", "\t"]
ODD = ["\u00b2", "\u0663", "\uff11", "\u2167", "\u00e9", "1", "0", "9" * 25, ".", "-", "%", "*", "(", "]", " "]


@st.composite
def mutated_specs(draw):
    """A well-formed spec with one character or piece inserted or replaced anywhere:
    every column of the grammar gets its turn at a stray non-ASCII digit."""
    site = draw(st.sampled_from(["kmalloc", "alloc_pages", "migrate_folio", "folio_isolate_lru"]))
    attrs = draw(st.lists(st.sampled_from(["nth=2", "every=3", "times=1", "order=0", "zone=DMA32",
                                           "kind=anon", "migratetype=CMA", "caller=f"]),
                          max_size=3, unique_by=lambda a: a.split("=")[0]))
    terms = draw(st.lists(st.sampled_from(["return", "1*return", "50%return", "50%2*return", "off",
                                           "hold(3)", "return(ENOMEM)", "call(cb)", "12.5%off"]),
                          min_size=1, max_size=3))
    text = site + (f"[{','.join(attrs)}]" if attrs else "") + "=" + "->".join(terms)
    pos = draw(st.integers(0, len(text)))
    odd = draw(st.sampled_from(ODD))
    replace = draw(st.booleans())
    return text[:pos] + odd + text[pos + (1 if replace else 0):]


texts = st.one_of(
    mutated_specs(),
    st.lists(st.sampled_from(PIECES), max_size=14).map("".join),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30),
    st.text(alphabet=string.printable, max_size=30),
)
FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(texts)
def test_parse_spec_raises_only_faultspecerror(text):
    try:
        spec = parse_spec(text)
    except FaultSpecError as e:
        assert 1 <= e.column <= len(e.spec) + 1
        return
    inj = Injector()           # a fresh injector for each parsed spec
    try:
        inj.arm_spec(spec, {name: (lambda ctx: None) for name in _callbacks(spec)})
    except FaultSpecError:
        return                 # an unknown site or an errno the site cannot return
    assert inj.armed


@FUZZ
@given(texts)
def test_parse_specs_raises_only_faultspecerror(text):
    try:
        parse_specs(text)
    except FaultSpecError:
        pass


def _callbacks(spec):
    return [t.arg for t in spec.terms if t.action == "call"]
