"""Injector.arm / arm_spec argument checks and the ``caller=`` filter's qualified names
(issue 17: ``co_qualname`` exists only from Python 3.11; issue 18: ``every=0`` was
accepted and the next hit divided by zero)."""

import errno
import sys

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.faults import injector as injector_mod
from pytest_pinfault.faults.injector import Injector
from pytest_pinfault.faults.spec import MAX_INT, FaultSpec, FaultSpecError, Term
from pytest_pinfault.mm import GFP_KERNEL


@pytest.fixture
def k():
    return FakeMM(MMConfig(ram="512MiB"))


# ---------------------------------------------------------------------------- arm()
@pytest.mark.parametrize("kwargs, exc, words", [
    ({"every": 0}, ValueError, "every: expected an integer from 1"),
    ({"every": -3}, ValueError, "every: expected an integer from 1"),
    ({"nth": 0}, ValueError, "nth: expected an integer from 1"),
    ({"nth": MAX_INT + 1}, ValueError, "nth: expected an integer from 1 to"),
    ({"times": 0}, ValueError, "times: expected -1 (unlimited) or an integer from 1"),
    ({"times": -2}, ValueError, "times: expected -1 (unlimited)"),
    ({"every": 1.5}, TypeError, "every: expected an integer, got 1.5"),
    ({"nth": True}, TypeError, "nth: expected an integer, got True"),
    ({"times": "1"}, TypeError, "times: expected an integer, got '1'"),
    ({"errno": "ENOMEM"}, TypeError, "errno: expected None or an errno"),
    ({"predicate": 3}, TypeError, "predicate: expected None or a callable"),
    ({"callback": "f"}, TypeError, "callback: expected None or a callable"),
])
def test_arm_refuses_bad_arguments_naming_them(k, kwargs, exc, words):
    with pytest.raises(exc) as info:
        k.faults.arm("kmalloc", **kwargs)
    assert words in str(info.value)
    assert not k.faults.armed                     # nothing half-armed
    assert k.kmalloc(8, GFP_KERNEL) is not None   # and the next hit is an ordinary one


def test_arm_site_must_be_a_string(k):
    with pytest.raises(TypeError, match="site: expected a fault site name"):
        k.faults.arm(None)


def test_arm_every_still_works_in_range(k):
    k.faults.arm("kmalloc", every=2, times=-1)      # arm(): counted from nth, so hits 1, 3, 5
    got = [k.kmalloc(8, GFP_KERNEL) is None for _ in range(6)]
    assert got == [True, False, True, False, True, False]


# ---------------------------------------------------------------------------- arm_spec()
def test_arm_spec_refuses_non_spec_and_bad_callbacks(k):
    with pytest.raises(TypeError, match="spec: expected a fault spec string or a FaultSpec, got 42"):
        k.faults.arm_spec(42)
    with pytest.raises(TypeError, match=r"callbacks\['f'\]: expected a callable"):
        k.faults.arm_spec("kmalloc=call(f)", {"f": 1})
    with pytest.raises(TypeError, match="callbacks: expected a mapping"):
        k.faults.arm_spec("kmalloc=return", [1])
    assert not k.faults.armed


@pytest.mark.parametrize("fields, words", [
    ({"every": 0}, "every an integer from 1"),
    ({"nth": -1}, "nth an integer from 1"),
    ({"times": 0}, "times None (unlimited) or an integer from 1"),
    ({"terms": ()}, "at least one term"),
    ({"terms": (Term(None, 0, "return"),)}, "a count from 1"),
    ({"terms": (Term(101.0, None, "return"),)}, "a percentage between 0 and 100"),
    ({"terms": (Term(None, None, "explode"),)}, "a Term with an action"),
    ({"terms": (Term(None, None, "hold", 0),)}, "hold attempts from 1"),
    ({"filters": (("colour", "red"),)}, "filters as (name, value) pairs"),
])
def test_a_hand_built_faultspec_is_held_to_the_grammar(k, fields, words):
    base = {"site": "kmalloc", "terms": (Term(None, None, "return"),), "text": "hand-built"}
    base.update(fields)
    with pytest.raises(FaultSpecError) as info:
        k.faults.arm_spec(FaultSpec(**base))
    assert words in info.value.expected
    assert not k.faults.armed


# ---------------------------------------------------------------------------- caller=
class Driver:
    def __init__(self, k):
        self.k = k

    def probe(self):
        return self.k.kmalloc(8, GFP_KERNEL)

    @classmethod
    def class_probe(cls, k):
        return k.kmalloc(8, GFP_KERNEL)


class OtherDriver(Driver):
    def probe(self):          # same plain name, other class
        return self.k.kmalloc(8, GFP_KERNEL)


def module_probe(k):
    return k.kmalloc(8, GFP_KERNEL)


def test_caller_filter_matches_qualified_names(k):
    k.faults.arm_spec("kmalloc[caller=Driver.probe]=return")
    assert Driver(k).probe() is None
    assert OtherDriver(k).probe() is not None     # OtherDriver.probe is not Driver.probe
    assert k.kmalloc(8, GFP_KERNEL) is not None


def test_caller_filter_plain_name_matches_any_class(k):
    k.faults.arm_spec("kmalloc[caller=probe]=return")
    assert Driver(k).probe() is None
    assert OtherDriver(k).probe() is None


def test_caller_filter_classmethod_and_module_function(k):
    k.faults.arm_spec("kmalloc[caller=Driver.class_probe]=1*return")
    k.faults.arm_spec("kmalloc[caller=module_probe]=1*return(ENOMEM)")
    assert Driver.class_probe(k) is None
    assert module_probe(k) is None
    assert [r.errno for r in k.faults.fired] == [-errno.ENOMEM, -errno.ENOMEM]


def test_qualname_fallback_without_co_qualname():
    """What Python 3.10 takes (no ``co_qualname``), checked on every interpreter."""
    frames = {}

    class Probe:
        def method(self):
            frames["method"] = sys._getframe()

        @classmethod
        def cmethod(cls):
            frames["cmethod"] = sys._getframe()

    class Sub(Probe):
        pass

    Sub().method()
    Sub.cmethod()
    frames["module"] = _capture_module_frame()
    qual = injector_mod._qualname_from_frame
    assert qual(frames["method"]).endswith("Probe.method")      # defined in Probe, called on Sub
    assert qual(frames["cmethod"]).endswith("Probe.cmethod")
    assert qual(frames["module"]) == "_capture_module_frame"
    if sys.version_info >= (3, 11):
        assert qual(frames["method"]) == frames["method"].f_code.co_qualname


def _capture_module_frame():
    return sys._getframe()


def test_injector_is_importable_and_usable_without_a_machine():
    inj = Injector()
    with pytest.raises(ValueError, match="every"):
        inj.arm("kmalloc", every=0)
