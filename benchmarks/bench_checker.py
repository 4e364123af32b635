#!/usr/bin/env python
"""What the contract checker costs a call, under the plugin.

    python benchmarks/bench_checker.py            # 512 MiB populated, 1 GiB teardown buffer
    python benchmarks/bench_checker.py --quick    # 64 MiB populated, 128 MiB teardown buffer

It runs one in-process pytest session (``pytest.main``, plugin autoload off, ``-p
pytest_pinfault.plugin``) over a generated test module, so every figure is taken under
the plugin's own attached checker, from a real test function (the checker finds the
root call of every model call the test makes, as in any test):

* ``pin+unpin, empty``: ``pin_user_pages(FOLL_LONGTERM)`` + ``unpin_user_pages`` of one
  faulted-in anonymous page, mean of the fastest batch of 50 calls (machine noise is
  one-sided), on a 4 GiB machine with nothing else allocated;
* ``pin+unpin, populated``: the same with a shmem memfd of POPULATED bytes allocated and
  written to first (512 MiB: 131,072 folios the checker must never walk);
* ``pin+unpin, no checker``: the same call on a machine without an observer, in the same
  test, the two machines taking turns batch by batch;
* ``teardown check``: the final check (``check(final=True)``, rules 1-11 with the
  contiguity probes) after a test pinned and unpinned a TEARDOWN-byte memfd (1 GiB).

Targets (issue 15): populated within 2x of empty; with the checker within 3x of no
checker; teardown check of a 1 GiB buffer under 1 s.  Figures and ratios are from this
one run, never asserted (design.md section 9).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TARGET_POPULATED = 2.0
TARGET_CHECKER = 3.0
TARGET_TEARDOWN_S = 1.0

_MODULE = textwrap.dedent('''
    import json, os, time
    import pytest
    from pytest_pinfault import FakeMM, MMConfig
    from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, MAP_ANONYMOUS, MAP_PRIVATE,
                                    PROT_READ, PROT_WRITE)

    OUT = os.environ["PINFAULT_BENCH_OUT"]
    POPULATED = int(os.environ["PINFAULT_BENCH_POPULATED"])
    TEARDOWN = int(os.environ["PINFAULT_BENCH_TEARDOWN"])
    REPEAT = int(os.environ["PINFAULT_BENCH_REPEAT"])
    BATCH = 50                 # calls per timed batch; the fastest batch's mean is kept

    def save(key, value):
        data = json.load(open(OUT)) if os.path.exists(OUT) else {{}}
        data[key] = value
        json.dump(data, open(OUT, "w"))

    def populate(k, nbytes):
        f = k.memfd_create("bulk", 0)
        assert f.ftruncate(nbytes) == 0
        chunk = b"p" * (1 << 20)
        for off in range(0, nbytes, 1 << 20):
            assert f.pwrite(chunk, off) == 1 << 20
        return f

    def one_page(k):
        mm = k.current.mm
        addr = mm.mmap(4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        assert mm.write(addr, b"x") == 1
        return addr

    # The loop is written out in each test: every model call is then made by the test
    # function itself, a root call of its own, as in a real test.
    @pytest.mark.mm_config(ram="4GiB")
    def test_empty(fake_mm):
        assert fake_mm._checker is not None
        machines = (("empty_us", fake_mm), ("none_us", FakeMM(MMConfig(ram="4GiB"))))
        addrs = [one_page(k) for _, k in machines]
        best = [float("inf")] * len(machines)
        for _ in range(REPEAT // BATCH):
            # the two machines take turns batch by batch: a burst of load from other
            # work on the host slows both figures alike instead of one
            for j, (name, k) in enumerate(machines):
                addr = addrs[j]
                t = time.perf_counter()
                for _ in range(BATCH):
                    pages = []
                    n = k.pin_user_pages(addr, 1, FOLL_LONGTERM | FOLL_WRITE, pages)
                    k.unpin_user_pages(pages, n)
                best[j] = min(best[j], (time.perf_counter() - t) / BATCH)
                assert n == 1
        for j, (name, _) in enumerate(machines):
            save(name, best[j] * 1e6)

    @pytest.mark.mm_config(ram="4GiB")
    def test_populated(fake_mm):
        keep = populate(fake_mm, POPULATED)
        save("populated_folios", fake_mm.nr_allocated_pages)
        k = fake_mm
        addr = one_page(k)
        best = float("inf")
        for _ in range(REPEAT // BATCH):
            t = time.perf_counter()
            for _ in range(BATCH):
                pages = []
                n = k.pin_user_pages(addr, 1, FOLL_LONGTERM | FOLL_WRITE, pages)
                k.unpin_user_pages(pages, n)
            best = min(best, (time.perf_counter() - t) / BATCH)
            assert n == 1
        save("populated_us", best * 1e6)

    @pytest.mark.mm_config(ram="4GiB")
    def test_teardown(fake_mm):
        f = fake_mm.memfd_create("buf", 0)
        assert f.ftruncate(TEARDOWN) == 0
        assert f.fallocate(0, 0, TEARDOWN) == 0
        folios = []
        from pytest_pinfault import Out
        n = fake_mm.memfd_pin_folios(f, 0, TEARDOWN - 1, folios, TEARDOWN >> 12, Out(0))
        assert n == TEARDOWN >> 12
        fake_mm.unpin_folios(folios, n)
        t = time.perf_counter()
        assert fake_mm._checker.check(final=True) == []
        save("teardown_s", time.perf_counter() - t)
        save("teardown_folios", n)
''')


def measure(populated: int, teardown: int, repeat: int) -> dict:
    import pytest
    with tempfile.TemporaryDirectory() as d:
        mod = os.path.join(d, "test_checker_cost.py")
        with open(mod, "w") as fh:
            fh.write(_MODULE.format())
        out = os.path.join(d, "out.json")
        env = {"PINFAULT_BENCH_OUT": out, "PINFAULT_BENCH_POPULATED": str(populated),
               "PINFAULT_BENCH_TEARDOWN": str(teardown), "PINFAULT_BENCH_REPEAT": str(repeat)}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        old_autoload = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        try:
            rc = pytest.main([mod, "-q", "-p", "pytest_pinfault.plugin", "-p", "no:cacheprovider",
                              "--rootdir", d, "-o", "addopts="])
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            if old_autoload is None:
                os.environ.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
            else:
                os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = old_autoload
        if rc != 0:
            raise RuntimeError(f"the benchmark's pytest session failed (exit {rc})")
        with open(out) as fh:
            r = json.load(fh)
    r["populated_ratio"] = r["populated_us"] / r["empty_us"]
    r["checker_ratio"] = r["empty_us"] / r["none_us"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    populated = (64 << 20) if a.quick else (512 << 20)
    teardown = (128 << 20) if a.quick else (1 << 30)
    r = measure(populated, teardown, 200 if a.quick else 1000)
    mib = populated >> 20
    print(f"\npin+unpin 1 page, empty machine       {r['empty_us']:9.1f} us")
    print(f"pin+unpin 1 page, {mib} MiB populated  {r['populated_us']:9.1f} us   "
          f"{r['populated_ratio']:.2f}x empty (target <= {TARGET_POPULATED:g}x)")
    print(f"pin+unpin 1 page, no checker          {r['none_us']:9.1f} us   "
          f"checker {r['checker_ratio']:.2f}x (target <= {TARGET_CHECKER:g}x)")
    print(f"teardown check, {teardown >> 20} MiB buffer ({r['teardown_folios']} folios)  "
          f"{r['teardown_s']:.3f} s (target < {TARGET_TEARDOWN_S:g} s for 1 GiB)")


if __name__ == "__main__":
    main()
