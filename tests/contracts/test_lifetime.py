"""Machines are freed when their test ends (issue 18): running the examples many times
in one process keeps no FakeMM alive and the live folio count flat."""

from __future__ import annotations

import gc
import os
import weakref

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.contracts import Checker, checker_for
from pytest_pinfault.mm.folio import Folio

pytest_plugins = ["pytester"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = [os.path.join(ROOT, "examples", name) for name in ("udmabuf", "userptr")]


class Probe:
    """A plugin that keeps a weak reference to every test's machine."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref] = []

    def pytest_pinfault_configure(self, fake_mm, request) -> None:
        self.refs.append(weakref.ref(fake_mm))


def _live(cls: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is cls)


def test_a_checked_machine_is_collected():
    k = FakeMM(MMConfig(ram="1GiB"))
    k._checker = Checker(k)
    assert checker_for(k) is k._checker
    k.check(final=True)
    ref = weakref.ref(k)
    del k
    gc.collect()
    assert ref() is None, "the checker registry keeps its machine alive"


def test_examples_run_many_times_in_one_process_free_their_machines(monkeypatch, tmp_path):
    """pytest.main, not pytester.inline_run: the latter's hook recorder keeps every hook
    call's arguments (each test's machine among them) until the outer test ends."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("PINFAULT_FAULTS", raising=False)
    monkeypatch.chdir(tmp_path)
    probe = Probe()
    folios = []
    machines = []
    for _ in range(4):
        ret = pytest.main([*EXAMPLES, "-q", "-p", "no:cacheprovider", "-p", "pytest_pinfault.plugin",
                           "--rootdir", ROOT, "-o", "addopts=", "-o", "testpaths="], plugins=[probe])
        assert ret == 0
        folios.append(_live(Folio))
        machines.append(sum(1 for r in probe.refs if r() is not None))
    assert len(probe.refs) > 200                      # every test of every round built one
    assert machines == [0, 0, 0, 0], machines          # none outlives its test
    assert folios[-1] <= folios[0], folios             # flat: nothing piles up per round
