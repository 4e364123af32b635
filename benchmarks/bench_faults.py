"""Cost of the fault engine on the pin benchmark (figures and ratios from one run).

    python benchmarks/bench_faults.py [--size MiB] [--repeat N]

Two pin workloads (default 64 MiB of 4 KiB folios):
  * memfd_pin_folios + unpin_folios of a shmem memfd whose folios all sit in CMA, so each
    one is isolated and migrated out first (sites: folio_isolate_lru, alloc_pages,
    alloc_migration_target, migrate_folio, try_grab_folio ...);
  * pin_user_pages(FOLL_LONGTERM) + unpin_user_pages of a populated shared mapping,
    nothing to migrate (sites: try_grab_folio ...);
each run in four injector states:
  (a) nothing armed: every site is one attribute read (``fi.active`` is False);
  (b) ``fake_mm.faults.record(True)``: every hit is counted and logged;
  (c) one spec armed on a declared site the workload never reaches: the injector is
      active, so every site call goes through ``Injector.hit`` (count, budget, lookup);
  (d) one spec armed on a site the workload does reach, filtered so that it never fires
      (``folio_isolate_lru[nth=1000000000]=return``): (c) plus one arming evaluation.
The figure is microseconds per folio (best of --repeat runs, states interleaved) and the
ratio to (a).  The model cannot be run with its site lines removed, so (a) itself is the
"nothing armed" baseline and the ratios show what turning the engine on costs.  What the
idle site lines cost in (a) is estimated instead: site hits per folio (counted in (b))
times the measured cost of one idle site line (``fi = self.faults; if fi.active and
...``, timed against the same function without it), as a share of (a).  No thresholds:
the issue tracker holds the targets.
"""

from __future__ import annotations

import argparse
import time
import timeit
from typing import Callable

from pytest_pinfault import FakeMM, MMConfig, Out
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, MAP_POPULATE, MAP_SHARED,
                                PROT_READ, PROT_WRITE)

STATES: dict[str, Callable[[FakeMM], None]] = {}


def _state(name: str):
    def deco(fn: Callable[[FakeMM], None]) -> Callable[[FakeMM], None]:
        STATES[name] = fn
        return fn
    return deco


@_state("(a) nothing armed")
def _idle(k: FakeMM) -> None:
    assert not k.faults.active


@_state("(b) record(True)")
def _record(k: FakeMM) -> None:
    k.faults.record(True)


@_state("(c) armed, unrelated site")
def _unrelated(k: FakeMM) -> None:
    k.faults.declare_site("bench.unused", ["ENOMEM"])
    k.faults.arm_spec("bench.unused=return")


@_state("(d) armed, reached, never fires")
def _filtered(k: FakeMM) -> None:
    k.faults.arm_spec("folio_isolate_lru[nth=1000000000]=return")


class _Site:
    __slots__ = ("faults",)

    def __init__(self, faults) -> None:
        self.faults = faults

    def with_site(self, x: int) -> int:
        fi = self.faults
        if fi.active and fi.hit("kmalloc", size=x) is not None:
            return 0
        return x

    def without_site(self, x: int) -> int:
        return x


def idle_site_us() -> float:
    """Cost of one idle site line, in microseconds (best of 7)."""
    obj = _Site(FakeMM(MMConfig(ram="256MiB")).faults)
    n = 200_000
    with_ = min(timeit.repeat(lambda: obj.with_site(1), number=n, repeat=7))
    without = min(timeit.repeat(lambda: obj.without_site(1), number=n, repeat=7))
    return max(0.0, with_ - without) * 1e6 / n


from bench_gup import shmem_memfd  # noqa: E402  (a sibling script: same setup)

HITS: dict[str, float] = {}


def run_memfd_cma(size: int, state: Callable[[FakeMM], None]) -> tuple[float, int]:
    k = FakeMM(MMConfig(ram="4GiB", cma=f"{2 * size >> 20}MiB"))
    f = shmem_memfd(k, size, "cma")
    nr = size >> 12
    state(k)
    k.faults.budget = 1 << 62
    folios: list = []
    t = time.perf_counter()
    n = k.memfd_pin_folios(f, 0, size - 1, folios, nr, Out(0))
    k.unpin_folios(folios, n)
    dt = time.perf_counter() - t
    assert n == nr and k.stats.pgmigrate_success == nr, (n, k.stats.pgmigrate_success)
    assert not k.faults.fired
    if k.faults.recording:
        HITS["memfd"] = sum(k.faults.hits.values()) / n
    return dt, n


def run_pin_mapping(size: int, state: Callable[[FakeMM], None]) -> tuple[float, int]:
    k = FakeMM(MMConfig(ram="4GiB"))
    f = shmem_memfd(k, size, None)
    mm = k.current.mm
    addr = mm.mmap(size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, file=f)
    nr = size >> 12
    state(k)
    k.faults.budget = 1 << 62
    pages: list = []
    t = time.perf_counter()
    n = k.pin_user_pages(addr, nr, FOLL_LONGTERM | FOLL_WRITE, pages)
    k.unpin_user_pages(pages, n)
    dt = time.perf_counter() - t
    assert n == nr and k.stats.pgmigrate_success == 0
    assert not k.faults.fired
    if k.faults.recording:
        HITS["mapping"] = sum(k.faults.hits.values()) / n
    return dt, n


WORKLOADS = {
    "memfd_pin_folios shmem 4KiB, migrated out of CMA": ("memfd", run_memfd_cma),
    "pin_user_pages(LONGTERM) shared 4KiB, no migration": ("mapping", run_pin_mapping),
}


def measure(size: int, repeat: int) -> dict:
    """Returns {"site_us": cost of one idle site line, workload: {"best": {state: us/folio},
    "hits": site hits per folio}} for pin+unpin of *size* bytes, best of *repeat* runs."""
    out: dict = {"site_us": idle_site_us()}
    for wname, (key, run) in WORKLOADS.items():
        best: dict[str, float] = {}
        for _ in range(repeat):
            for sname, state in STATES.items():
                dt, n = run(size, state)
                per = dt * 1e6 / n
                best[sname] = min(best.get(sname, per), per)
        out[wname] = {"best": best, "hits": HITS[key]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64, help="MiB pinned per run (default 64)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per state; the best counts (default 5)")
    args = ap.parse_args()
    res = measure(args.size << 20, args.repeat)
    site_us = res["site_us"]
    print(f"pin+unpin of {args.size} MiB, best of {args.repeat} runs per state (states interleaved)")
    print(f"{'workload / injector state':60s} {'us/folio':>9s} {'vs (a)':>8s}")
    for wname in WORKLOADS:
        best, hits = res[wname]["best"], res[wname]["hits"]
        print(wname)
        base = best["(a) nothing armed"]
        for sname, per in best.items():
            print(f"  {sname:58s} {per:9.3f} {per / base:8.3f}")
        print(f"  idle site lines in (a): {hits:.1f} hits/folio x {site_us * 1000:.0f} ns = "
              f"{hits * site_us:.3f} us/folio, {100 * hits * site_us / base:.1f}% of (a)")


if __name__ == "__main__":
    main()
