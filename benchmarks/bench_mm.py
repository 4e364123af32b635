#!/usr/bin/env python
"""Benchmarks of the fake mm's core: machine construction, and allocating / migrating
1 GiB of 4 KiB anonymous folios out of CMA.

Run it from a checkout::

    python benchmarks/bench_mm.py            # full size
    python benchmarks/bench_mm.py --quick    # 16x smaller, for CI

It prints figures and ratios measured in this one run and asserts nothing about time
(design.md §9).  The targets it prints next to the figures come from the issue that
asked for them:

* construction of a 1 TiB machine costs at most 2x a 4 GiB one (wall time and peak
  memory): the model is sparse, construction is O(zones + CMA areas);
* migrating a 4 KiB folio out of CMA (isolation + ``migrate_pages``) takes at most 8 us;
* an allocated 4 KiB folio costs at most 500 bytes of Python memory;
* a one-page ``mmap``/``munmap`` costs about the same with 2,000 or 16,000 VMAs in the
  address space (cost follows the work a call does, not the address space's size);
* an order-0 unmovable allocation that falls back to pageblocks full of LRU pages costs
  about the same on a small and a large machine, and with ``rmqueue_mode`` (kernel 6.12
  and 6.17) tries one pageblock claim per per-cpu refill, not one per page.

Next to the allocator figures it measures a bare-Python reference in the same run (one
``__slots__`` object per folio, with the fields of :class:`~pytest_pinfault.mm.Folio`,
kept in a list), so the ratios say how far the model is from the cheapest possible
Python representation on this machine.

After the migration run it checks the outcome: every migrated folio is outside CMA, the
source list is empty, ``pgmigrate_success`` counts every page and NR_ISOLATED is back to 0.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pytest_pinfault.mm import (GFP_HIGHUSER_MOVABLE, GFP_USER, MIGRATE_SYNC,  # noqa: E402
                                MR_LONGTERM_PIN, FakeMM, MigrationTargetControl, MMConfig,
                                gfp_t)
from pytest_pinfault.mm.folio import KIND_ANON  # noqa: E402

FULL_FOLIOS = 262_144          # 1 GiB of 4 KiB folios
CONSTRUCT_REPEATS = 15

TARGET_CONSTRUCT_RATIO = 2.0   # 1 TiB / 4 GiB, time and peak memory
TARGET_MIGRATE_US = 8.0        # isolation + migration, per folio
TARGET_BYTES_PER_FOLIO = 500   # tracemalloc, per allocated 4 KiB folio

MIGRATION_CONFIG = dict(ram="8GiB", cma="2GiB")


# ---------------------------------------------------------------------- helpers
def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak traced memory while *fn* runs (what it allocates, kept or not)."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    del result
    return peak


def _kept_bytes(setup: Callable[[], Any], fn: Callable[[Any], Any]) -> int:
    """Traced memory that *fn(state)* allocates and still holds afterwards."""
    state = setup()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fn(state)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del result, state
    return after - before


def _ok(value: float, target: float) -> str:
    return "ok" if value <= target else "MISSED"


# ---------------------------------------------------------------------- (a) construction
def bench_construction(repeats: int) -> dict:
    """Prints and returns {"t4", "t1" (seconds), "m4", "m1" (peak bytes), "rt", "rm" (ratios)}."""
    print("== construction: FakeMM(MMConfig(ram=..., movablecore='512MiB', cma='128MiB'))")
    rows = {}
    for ram in ("4GiB", "1TiB"):
        def build(ram: str = ram) -> FakeMM:
            return FakeMM(MMConfig(ram=ram, movablecore="512MiB", cma="128MiB"))
        build()                                   # warm imports and caches
        t = _median_time(build, repeats)
        peak = _peak_bytes(build)
        rows[ram] = (t, peak)
        print(f"  ram={ram:>5}: median {t * 1e3:8.3f} ms over {repeats} runs, "
              f"peak {peak / 1024:8.1f} KiB (tracemalloc)")
    (t4, m4), (t1, m1) = rows["4GiB"], rows["1TiB"]
    rt, rm = t1 / t4, m1 / m4
    print(f"  ratio 1TiB/4GiB: time {rt:.2f}x, peak memory {rm:.2f}x  target <= "
          f"{TARGET_CONSTRUCT_RATIO:g}x: {_ok(max(rt, rm), TARGET_CONSTRUCT_RATIO)}")
    return {"t4": t4, "t1": t1, "m4": m4, "m1": m1, "rt": rt, "rm": rm}


# ---------------------------------------------------------------------- (b) CMA migration
def _new_machine(trace: bool) -> FakeMM:
    k = FakeMM(MMConfig(**MIGRATION_CONFIG))
    k.trace.on = trace
    return k


def alloc_in_cma(k: FakeMM, n: int) -> list:
    """*n* anonymous 4 KiB folios in CMA, each mapped once (the mapping holds the
    allocation reference) and queued for the LRU."""
    alloc = k._alloc_folio
    add_lru = k.folio_add_lru
    gfp = int(GFP_HIGHUSER_MOVABLE)
    folios = []
    with k.steer("cma"):
        for _ in range(n):
            f = alloc(gfp, 0, KIND_ANON)
            f._mapcount = 1
            add_lru(f)
            folios.append(f)
    return folios


def isolate_and_migrate(k: FakeMM, folios: list) -> tuple[int, list]:
    """What __gup_longterm_locked does for unpinnable folios: isolate from the LRU and
    migrate under PF_MEMALLOC_PIN."""
    pin = k.memalloc_pin_save()
    try:
        lst = []
        isolate, mod_isolated = k.folio_isolate_lru, k.node_stat_mod_isolated
        for f in folios:
            if isolate(f):
                mod_isolated(f, 1)
                lst.append(f)
        mtc = MigrationTargetControl(gfp_mask=int(GFP_USER | gfp_t.NOWARN), reason=MR_LONGTERM_PIN)
        rc = k.migrate_pages(lst, k.alloc_migration_target, None, mtc, MIGRATE_SYNC, MR_LONGTERM_PIN)
    finally:
        k.memalloc_pin_restore(pin)
    return rc, lst


class _RefFolio:
    """The bare-Python reference: one object with Folio's fields, nothing else."""

    __slots__ = ("pfn", "order", "nr_pages", "_refcount", "_pincount", "_mapcount", "flags",
                 "kind", "mapping", "index", "_zone", "_data", "private", "lru_batch",
                 "rmap", "hstate", "freed", "_mm")

    def __init__(self, pfn: int) -> None:
        self.pfn = pfn
        self.order = 0
        self.nr_pages = 1
        self._refcount = 1
        self._pincount = 0
        self._mapcount = 1
        self.flags = 0
        self.kind = KIND_ANON
        self.mapping = None
        self.index = 0
        self._zone = None
        self._data = None
        self.private = None
        self.lru_batch = -1
        self.rmap = None
        self.hstate = None
        self.freed = False
        self._mm = None


def ref_alloc(n: int) -> list:
    return [_RefFolio(pfn) for pfn in range(n)]


def _verify(k: FakeMM, n: int, rc: int, lst: list, sources: list) -> None:
    problems = []
    if rc != 0 or lst:
        problems.append(f"migrate_pages returned {rc}, {len(lst)} folios left on the list")
    if k.stats.pgmigrate_success != n or k.stats.pgmigrate_fail:
        problems.append(f"pgmigrate_success={k.stats.pgmigrate_success} (want {n}), "
                        f"pgmigrate_fail={k.stats.pgmigrate_fail}")
    if k.stats.nr_isolated_anon or k.stats.nr_isolated_file:
        problems.append(f"NR_ISOLATED not back to 0: {k.stats.nr_isolated_anon}")
    if not all(f.freed for f in sources):
        problems.append(f"{sum(not f.freed for f in sources)} source folios not freed")
    k.lru_add_drain_all()
    anon = [f for f in k.iter_folios() if f.kind == KIND_ANON]
    in_cma = [f for f in anon if f.is_cma or not k.folio_is_longterm_pinnable(f)]
    if len(anon) != n:
        problems.append(f"{len(anon)} anonymous folios after migration, want {n}")
    if in_cma:
        problems.append(f"{len(in_cma)} migrated folios still in CMA/unpinnable, e.g. {in_cma[0]!r}")
    bad_ref = [f for f in anon if f._refcount != 1 or f._mapcount != 1 or not k.folio_test_lru(f)]
    if bad_ref:
        problems.append(f"{len(bad_ref)} migrated folios with unexpected state, e.g. {bad_ref[0]!r}")
    if k.warnings:
        problems.append(f"{len(k.warnings)} kernel warnings, first: {k.warnings[0]}")
    k.drain_all_pages()           # freed CMA pages may sit on the per-cpu lists
    cma = k.cma_areas[0]
    free_cma = sum(z.nr_free_cma for z in k._zone_list)
    if free_cma != cma.count:
        problems.append(f"CMA not free again: {free_cma} of {cma.count} pages")
    if problems:
        print("  VERIFY FAILED:\n    " + "\n    ".join(problems))
        raise SystemExit(1)
    print(f"  verified: migrate_pages returned 0 and emptied the list; all {n} new folios outside CMA "
          f"(refcount 1, mapcount 1, on the LRU); pgmigrate_success={k.stats.pgmigrate_success}, "
          f"pgmigrate_fail=0, NR_ISOLATED back to 0, CMA all free again, no kernel warnings")


def _run_migration(n: int, trace: bool, verify: bool) -> tuple[float, float, float, float]:
    """One machine: allocate *n* folios in CMA, then isolate and migrate them all.
    Returns wall and cpu seconds of both phases."""
    k = _new_machine(trace)
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    folios = alloc_in_cma(k, n)
    k.lru_add_drain_all()
    w1, c1 = time.perf_counter(), time.process_time()
    rc, lst = isolate_and_migrate(k, folios)
    w2, c2 = time.perf_counter(), time.process_time()
    if verify:
        if not all(f.is_cma for f in folios):
            raise SystemExit("steer('cma') did not place every folio in CMA")
        _verify(k, n, rc, lst, folios)
    return w1 - w0, c1 - c0, w2 - w1, c2 - c1


def bench_migration(n: int, repeats: int) -> dict:
    """Prints and returns {"alloc_us", "migrate_us", "migrate_us_notrace", "bytes_per_folio",
    "ref_us", "ref_bytes"} (per folio; wall-clock medians, trace on unless stated)."""
    cfg = ", ".join(f"{k}={v!r}" for k, v in MIGRATION_CONFIG.items())
    print(f"== {n} x 4 KiB anonymous folios ({n * 4 >> 10} MiB) allocated in CMA, then migrated out "
          f"under PF_MEMALLOC_PIN; MMConfig({cfg}); median of {repeats} runs, wall (cpu)")
    us = {}
    for trace in (True, False):
        runs = [_run_migration(n, trace, verify=trace and i == 0) for i in range(repeats)]
        us[trace] = [statistics.median(r[j] for r in runs) / n * 1e6 for j in range(4)]
    for trace, label in ((True, "trace on (default)"), (False, "trace off")):
        aw, ac, mw, mc = us[trace]
        print(f"  {label:18s}: allocate+folio_add_lru {aw:6.2f} us/folio ({ac:5.2f}), "
              f"isolate+migrate {mw:6.2f} us/folio ({mc:5.2f})  "
              f"target <= {TARGET_MIGRATE_US:g} us: {_ok(mw, TARGET_MIGRATE_US)}")

    # memory: what the allocated folios keep alive (folio objects, the pfn index, the list)
    per = _kept_bytes(lambda: _new_machine(True), lambda k: alloc_in_cma(k, n)) / n
    print(f"  memory per allocated folio: {per:6.1f} bytes (tracemalloc)  "
          f"target <= {TARGET_BYTES_PER_FOLIO}: {_ok(per, TARGET_BYTES_PER_FOLIO)}")

    # the bare-Python reference, same run
    ref_t = _median_time(lambda: ref_alloc(n), repeats) / n * 1e6
    ref_b = _kept_bytes(lambda: None, lambda _: ref_alloc(n)) / n
    aw, _, mw, _ = us[True]
    print(f"  reference, a __slots__ object with Folio's fields per folio, in a list: "
          f"{ref_t:5.2f} us/folio, {ref_b:6.1f} bytes/folio")
    print(f"  ratios to the reference: allocation {aw / ref_t:.1f}x, isolation+migration "
          f"{mw / ref_t:.1f}x, memory {per / ref_b:.2f}x")
    return {"alloc_us": aw, "migrate_us": mw, "migrate_us_notrace": us[False][2],
            "bytes_per_folio": per, "ref_us": ref_t, "ref_bytes": ref_b}


def bench_vmas(small: int, large: int) -> dict:
    """One-page anonymous ``mmap`` then ``munmap`` in an address space that grows to
    *small* and to *large* VMAs: microseconds per call at each size, and the ratios."""
    from pytest_pinfault.mm import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
    print(f"== one-page mmap + munmap with {small} vs {large} VMAs")
    out = {}
    for n in (small, large):
        mm = FakeMM(MMConfig(ram="4GiB")).current.mm
        gc.collect()
        t = time.perf_counter()
        addrs = [mm.mmap(4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) for _ in range(n)]
        t1 = time.perf_counter()
        for a in addrs:
            assert mm.munmap(a, 4096) == 0
        t2 = time.perf_counter()
        assert not mm.vmas
        out[n] = ((t1 - t) * 1e6 / n, (t2 - t1) * 1e6 / n)
        print(f"  {n:6d} VMAs: mmap {out[n][0]:6.2f} us, munmap {out[n][1]:6.2f} us per call")
    r = (out[large][0] / out[small][0], out[large][1] / out[small][1])
    print(f"  ratio {large}/{small}: mmap {r[0]:.2f}x, munmap {r[1]:.2f}x (the address space is "
          f"{large // small}x larger)")
    return {"small": out[small], "large": out[large], "ratio": r}


FALLBACK_FREE_EVERY = 8        # one page in 8 free: a pageblock holds 64 free pages, < half
FALLBACK_CHUNK = 256           # allocations per timed chunk (whole refills); the median chunk counts


def _lru_full_zone(kernel: str, ram: str) -> FakeMM:
    """A machine whose memory is all anonymous LRU folios but for one page in
    FALLBACK_FREE_EVERY, so every pageblock is MOVABLE, less than half free and has
    nothing alike an unmovable request: every pageblock claim an unmovable allocation
    tries fails, and the per-cpu lists are empty."""
    k = FakeMM(MMConfig(ram=ram, kernel=kernel))
    alloc = k._alloc_folio
    add_lru = k.folio_add_lru
    gfp = int(GFP_HIGHUSER_MOVABLE)
    folios = []
    while True:
        f = alloc(gfp, 0, KIND_ANON)
        if f is None:
            break
        f._mapcount = 1
        add_lru(f)
        folios.append(f)
    k.lru_add_drain_all()
    for f in folios[::FALLBACK_FREE_EVERY]:
        f._mapcount = 0
        k.folio_put(f)
    k.drain_all_pages()
    return k


def bench_fallback(n: int, sizes: tuple[str, ...] = ("1GiB", "4GiB"),
                   kernels: tuple[str, ...] = ("6.6", "6.17")) -> dict:
    """Order-0 ``GFP_KERNEL`` allocations that must fall back to MOVABLE pageblocks full
    of LRU pages (no claim can succeed): microseconds per allocation for each kernel
    version and machine size.  6.12 and 6.17 carry ``rmqueue_mode`` through a per-cpu
    refill (one claim attempt per refill); 6.1 and 6.6 search and try a claim for every
    page.  Timed in chunks of FALLBACK_CHUNK allocations, the median chunk counting (the
    machine may be busy).  Prints and returns {(kernel, size): us}, plus "ratio": the largest size over
    the smallest for the last kernel (cost must not follow the machine's size)."""
    from pytest_pinfault.mm import GFP_KERNEL
    print(f"== order-0 unmovable allocation, claims failing ({n} per run; one page in "
          f"{FALLBACK_FREE_EVERY} free, the rest anonymous LRU pages)")
    gfp = int(GFP_KERNEL)
    out: dict = {}
    for kernel in kernels:
        for ram in sizes:
            k = _lru_full_zone(kernel, ram)
            claimed = k.stats.pageblock_claimed
            alloc = k._alloc_folio
            chunk = FALLBACK_CHUNK
            times = []
            gc.collect()
            for _ in range(max(1, n // chunk)):
                t = time.perf_counter()
                for _ in range(chunk):
                    if alloc(gfp, 0, "kernel") is None:
                        raise AssertionError(f"kernel={kernel} ram={ram}: the allocation failed")
                times.append(time.perf_counter() - t)
            us = statistics.median(times) * 1e6 / chunk
            assert k.stats.pageblock_claimed == claimed, "a pageblock was claimed"
            out[(kernel, ram)] = us
            print(f"  kernel {kernel:5s} ram {ram:7s}: {us:7.2f} us/allocation")
    last = kernels[-1]
    out["ratio"] = out[(last, sizes[-1])] / out[(last, sizes[0])]
    print(f"  ratio {sizes[-1]}/{sizes[0]} (kernel {last}): {out['ratio']:.2f}x")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="16x smaller counts (for CI)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each migration measurement (default 3)")
    args = ap.parse_args(argv)
    n = FULL_FOLIOS // 16 if args.quick else FULL_FOLIOS
    repeats = max(1, args.repeats)
    print(f"pytest-pinfault mm benchmark ({'quick' if args.quick else 'full'}), "
          f"Python {sys.version.split()[0]}")
    bench_construction(CONSTRUCT_REPEATS if not args.quick else 5)
    bench_migration(n, repeats)
    bench_vmas(500 if args.quick else 2000, 4000 if args.quick else 16000)
    bench_fallback(512 if args.quick else 4096, ("128MiB", "512MiB") if args.quick else ("1GiB", "4GiB"),
                   ("6.6", "6.17"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
