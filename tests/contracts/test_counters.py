"""The checker judges the model's named counters (``fake_mm.counters``) and the ones a
driver registers: rule 2 on an error return, rules 4/9 at teardown, probes on demand."""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault.contracts import Checker, expect_violation, pin_entry_point
from pytest_pinfault.mm import GFP_KERNEL
from pytest_pinfault.mm.scatterlist import SgTable

from .helpers import machine


class Driver:
    def __init__(self, k):
        self.k = k
        self.buffers = 0


@pin_entry_point
def leaky_fail(drv: Driver) -> int:
    drv.buffers += 1
    return -errno.ENOMEM


@pin_entry_point
def honest_fail(drv: Driver) -> int:
    drv.buffers += 1
    drv.buffers -= 1
    return -errno.ENOMEM


@pin_entry_point
def charge_user_then_fail(drv: Driver) -> int:
    drv.k.current_user().locked_vm += 4
    return -errno.EFAULT


def _ids(vs):
    return sorted({v.rule.id for v in vs})


def test_builtin_counters_registered():
    k = machine()
    names = {c.name for c in k.counters}
    assert {"user.locked_vm", "user.refs", "mm.mm_count", "mm.mm_users", "scatterlist.chunks"} <= names


def test_driver_counter_rule2_on_error_return():
    k = machine()
    drv = Driver(k)
    k.counters.register("drv.buffers", lambda: drv.buffers)
    ck = Checker(k)
    assert honest_fail(drv) == -errno.ENOMEM and ck.violations == []
    leaky_fail(drv)
    assert [v.rule.id for v in ck.violations] == ["error-nothing-held"]
    assert "drv.buffers +1" in ck.violations[0].message


def test_driver_counter_rule4_at_teardown():
    k = machine()
    drv = Driver(k)
    k.counters.register("drv.buffers", lambda: drv.buffers, doc="driver buffers")
    ck = Checker(k)
    drv.buffers = 2
    with expect_violation(ck, "pin-balance") as vs:
        pass
    assert any("drv.buffers is 2, baseline 0" in v.message for v in vs)
    drv.buffers = 0
    assert ck.check(final=True) == []


def test_counter_registered_after_baseline_uses_its_initial_value():
    k = machine()
    drv = Driver(k)
    drv.buffers = 3
    ck = Checker(k)
    k.counters.register("drv.buffers", lambda: drv.buffers)
    assert ck.check(final=True) == []


def test_user_locked_vm_leak_is_rule9_and_rule2():
    k = machine()
    ck = Checker(k)
    charge_user_then_fail(Driver(k))
    assert _ids(ck.violations) == ["error-nothing-held"]
    assert "user.locked_vm" in ck.violations[0].message
    vs = ck.check(final=True)
    assert _ids(vs) == ["accounting"] and "uid=1000" in vs[0].message


def test_mmgrab_without_mmdrop_is_rule4():
    k = machine()
    ck = Checker(k)
    mm = k.current.mm
    k.mmgrab(mm)
    assert _ids(ck.check(final=True)) == ["pin-balance"]
    k.mmdrop(mm)
    assert ck.check(final=True) == []


def test_sg_table_never_freed_is_rule4():
    k = machine()
    ck = Checker(k)
    t = SgTable()
    assert k.sg_alloc_table(t, 3, GFP_KERNEL) == 0
    vs = ck.check(final=True)
    assert any("scatterlist.chunks is 1" in v.message for v in vs)
    k.sg_free_table(t)


def test_probe_reports_under_its_rule():
    k = machine()
    bad = [("device sees stale data", (), "x")]
    k.counters.register_probe("drv.view", lambda: list(bad), rule="coherence")
    ck = Checker(k)
    assert _ids(ck.check()) == ["coherence"]
    bad.clear()
    assert ck.check() == []


@pytest.mark.parametrize("kw, exc", [(dict(rule="nope"), ValueError), (dict(read=5), TypeError)])
def test_register_rejects_bad_arguments(kw, exc):
    k = machine()
    args = dict(read=lambda: 0)
    args.update(kw)
    read = args.pop("read")
    with pytest.raises(exc):
        k.counters.register("x", read, **args)


def test_register_twice_and_bad_values():
    k = machine()
    k.counters.register("x", lambda: 0)
    with pytest.raises(ValueError, match="already registered"):
        k.counters.register("x", lambda: 0)
    with pytest.raises(TypeError, match="'y'"):
        k.counters.register("y", lambda: "oops")
