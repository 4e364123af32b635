#!/usr/bin/env python
"""Every benchmark of the project in one run, one table of figures and ratios.

    python benchmarks/run_all.py            # full sizes (several minutes)
    python benchmarks/run_all.py --quick    # small sizes, under a minute on 2 cores (CI)

It imports the measurement functions of bench_mm.py, bench_gup.py, bench_faults.py and
bench_plugin.py (each still runs on its own, with its own detailed output), times the
udmabuf example's fault matrix in a subprocess and, when the plugin has the error-path
coverage option (``--pinfault-errpaths``), the coverage overhead of that mode over plain
coverage.  Every figure and ratio comes from this one run.  The targets from the issue
tracker are printed next to the figures, never asserted (design.md section 9): the exit
status is non-zero only when a benchmark itself fails (a wrong result, a crash).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (HERE, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import bench_faults  # noqa: E402
import bench_gup  # noqa: E402
import bench_mm  # noqa: E402
import bench_plugin  # noqa: E402

MATRIX_CMD = ["-m", "pytest", "examples/udmabuf", "-q", "-p", "no:cacheprovider", "-k", "matrix"]
ERRPATHS_OPTION = "--pinfault-errpaths"
ERRPATHS_PKG = "udmabuf"          # how the example imports its driver (rootdir-relative)

# Every row run_all prints, in order (tests/test_benchmarks.py checks they all appear).
ROWS = [
    "construction 4 GiB vs 1 TiB, time",
    "construction 4 GiB vs 1 TiB, peak memory",
    "allocate 4KiB folio in CMA (+folio_add_lru)",
    "isolate+migrate 4KiB folio out of CMA",
    "memory per allocated 4KiB folio",
    "order-0 unmovable alloc, claims failing (rmqueue_mode)",
    "order-0 unmovable alloc, claims failing, machine size",
    "memfd_pin_folios 4KiB, no migration",
    "memfd_pin_folios 4KiB, migrated out of CMA",
    "pin_user_pages 4KiB, no migration",
    "pin_user_pages 4KiB, migrated out of CMA",
    "memfd_pin_folios 2MiB, no migration",
    "memfd_pin_folios 2MiB, migrated out of ZONE_MOVABLE",
    "pin_user_pages 2MiB, no migration",
    "pin_user_pages 2MiB, migrated out of ZONE_MOVABLE",
    "fixture fake_mm overhead vs bare test",
    "fixture fs (pyfakefs) overhead vs bare test",
    "fixture fake_mm vs fs",
    "engine idle site lines, share of pin (nothing armed)",
    "engine recording vs nothing armed",
    "engine armed (unrelated site) vs nothing armed",
    "engine armed (reached, never fires) vs nothing armed",
    "udmabuf example matrix, wall time",
    "coverage overhead of the error-path mode vs plain --cov",
]


class Table:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str, str]] = {}

    def add(self, name: str, figure: str, ratio: str = "", target: str = "") -> None:
        assert name in ROWS, name
        self.rows[name] = (figure, ratio, target)

    def print(self) -> None:
        w = max(len(r) for r in ROWS)
        fw = max([len("figure")] + [len(v[0]) for v in self.rows.values()])
        rw = max([len("ratio")] + [len(v[1]) for v in self.rows.values()])
        print(f"{'benchmark':<{w}}  {'figure':>{fw}}  {'ratio':<{rw}}  target")
        print(f"{'-' * w}  {'-' * fw}  {'-' * rw}  ------")
        for name in ROWS:
            figure, ratio, target = self.rows.get(name, ("NOT MEASURED", "", ""))
            print(f"{name:<{w}}  {figure:>{fw}}  {ratio:<{rw}}  {target}")


def _quietly(fn, *args, **kw):
    """Run a bench function with its own printout captured; show it if it fails."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            return fn(*args, **kw)
    except BaseException:
        sys.stderr.write(buf.getvalue())
        raise


def _meets(value: float, target: float) -> str:
    return "(meets)" if value <= target else "(MISSED)"


def _run(cmd: list[str], cwd: str = ROOT, env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t, proc


# ---------------------------------------------------------------------- sections
def mm_rows(tab: Table, quick: bool) -> None:
    c = _quietly(bench_mm.bench_construction, 5 if quick else bench_mm.CONSTRUCT_REPEATS)
    tgt = f"<= {bench_mm.TARGET_CONSTRUCT_RATIO:g}x"
    tab.add("construction 4 GiB vs 1 TiB, time", f"{c['t4'] * 1e3:.3f} vs {c['t1'] * 1e3:.3f} ms",
            f"{c['rt']:.2f}x", f"{tgt} {_meets(c['rt'], bench_mm.TARGET_CONSTRUCT_RATIO)}")
    tab.add("construction 4 GiB vs 1 TiB, peak memory", f"{c['m4'] / 1024:.1f} vs {c['m1'] / 1024:.1f} KiB",
            f"{c['rm']:.2f}x", f"{tgt} {_meets(c['rm'], bench_mm.TARGET_CONSTRUCT_RATIO)}")
    n = bench_mm.FULL_FOLIOS // 16 if quick else bench_mm.FULL_FOLIOS
    m = _quietly(bench_mm.bench_migration, n, 1 if quick else 3)
    tab.add("allocate 4KiB folio in CMA (+folio_add_lru)", f"{m['alloc_us']:.2f} us/folio",
            f"{m['alloc_us'] / m['ref_us']:.1f}x bare object")
    tab.add("isolate+migrate 4KiB folio out of CMA",
            f"{m['migrate_us']:.2f} us/folio", f"{m['migrate_us_notrace']:.2f} us with trace off",
            f"<= {bench_mm.TARGET_MIGRATE_US:g} us {_meets(m['migrate_us'], bench_mm.TARGET_MIGRATE_US)}")
    tab.add("memory per allocated 4KiB folio", f"{m['bytes_per_folio']:.1f} B/folio",
            f"{m['bytes_per_folio'] / m['ref_bytes']:.2f}x bare object",
            f"<= {bench_mm.TARGET_BYTES_PER_FOLIO} B {_meets(m['bytes_per_folio'], bench_mm.TARGET_BYTES_PER_FOLIO)}")
    small, large = ("128MiB", "512MiB") if quick else ("1GiB", "4GiB")
    fb = _quietly(bench_mm.bench_fallback, 512 if quick else 4096, (small, large), ("6.6", "6.17"))
    tab.add("order-0 unmovable alloc, claims failing (rmqueue_mode)",
            f"{fb[('6.17', small)]:.2f} us (6.17) vs {fb[('6.6', small)]:.2f} us (6.6)",
            f"{fb[('6.6', small)] / fb[('6.17', small)]:.1f}x", f"at {small}")
    tab.add("order-0 unmovable alloc, claims failing, machine size",
            f"{fb[('6.17', small)]:.2f} vs {fb[('6.17', large)]:.2f} us", f"{fb['ratio']:.2f}x",
            f"{large} / {small}, kernel 6.17")


GUP_ROWS = {
    # bench_gup case -> (table row, target us per folio or None); the migration targets
    # are issue 16's (8 us, down from 10)
    "memfd_pin_folios shmem 4KiB, no migration": ("memfd_pin_folios 4KiB, no migration", 3.0),
    "memfd_pin_folios shmem 4KiB, all migrated out of CMA": ("memfd_pin_folios 4KiB, migrated out of CMA", 8.0),
    "pin_user_pages(LONGTERM) shared 4KiB, no migration": ("pin_user_pages 4KiB, no migration", 3.0),
    "pin_user_pages(LONGTERM) shared 4KiB, all migrated out of CMA": ("pin_user_pages 4KiB, migrated out of CMA", 8.0),
    "memfd_pin_folios hugetlb 2MiB, no migration": ("memfd_pin_folios 2MiB, no migration", None),
    "memfd_pin_folios hugetlb 2MiB, all migrated out of ZONE_MOVABLE":
        ("memfd_pin_folios 2MiB, migrated out of ZONE_MOVABLE", None),
    "pin_user_pages(LONGTERM) hugetlb 2MiB, no migration": ("pin_user_pages 2MiB, no migration", None),
    "pin_user_pages(LONGTERM) hugetlb 2MiB, all migrated out of ZONE_MOVABLE":
        ("pin_user_pages 2MiB, migrated out of ZONE_MOVABLE", None),
}


def gup_rows(tab: Table, quick: bool) -> None:
    size = (64 << 20) if quick else (1 << 30)
    ref, rows = bench_gup.measure(size, huge_extra=True)
    for case, dt, n in rows:
        row, target = GUP_ROWS[case]
        per = dt * 1e6 / n
        per4k = dt * 1e6 / (size >> 12)
        ratio = f"{per / ref:.1f}x bare object" if target else f"{per4k:.3f} us per 4 KiB"
        tab.add(row, f"{per:.2f} us/folio", ratio,
                f"<= {target:g} us {_meets(per, target)}" if target else "")


def plugin_rows(tab: Table, quick: bool) -> None:
    n, repeats = (100, 1) if quick else (500, 3)
    o = bench_plugin.measure(n, repeats)
    tgt = bench_plugin.TARGET_OVERHEAD_MS
    tab.add("fixture fake_mm overhead vs bare test", f"{o['fake_mm']:.3f} ms/test",
            f"loop only {o['fake_mm loop']:.3f} ms", f"<= {tgt} ms {_meets(o['fake_mm'], tgt)}")
    tab.add("fixture fs (pyfakefs) overhead vs bare test", f"{o['fs']:.3f} ms/test",
            f"loop only {o['fs loop']:.3f} ms", f"reference about {bench_plugin.REFERENCE_FS_MS} ms")
    tab.add("fixture fake_mm vs fs", f"{n} tests x {repeats} rounds",
            f"{o['fake_mm'] / o['fs']:.2f}x" if o["fs"] > 0 else "n/a (fs overhead <= 0)")


def faults_rows(tab: Table, quick: bool) -> None:
    size, repeat = ((16 << 20), 2) if quick else ((64 << 20), 5)
    r = bench_faults.measure(size, repeat)
    site_us = r["site_us"]
    shares, ratios = [], {"(b) record(True)": [], "(c) armed, unrelated site": [],
                          "(d) armed, reached, never fires": []}
    for wname in bench_faults.WORKLOADS:
        best, hits = r[wname]["best"], r[wname]["hits"]
        base = best["(a) nothing armed"]
        shares.append(100 * hits * site_us / base)
        for s in ratios:
            ratios[s].append(best[s] / base)
    tab.add("engine idle site lines, share of pin (nothing armed)", f"{max(shares):.1f} %",
            "memfd+CMA " + " / ".join(f"{s:.1f}" for s in shares) + " % pin_user_pages",
            f"<= 5 % {_meets(max(shares), 5.0)}")
    labels = {"(b) record(True)": "engine recording vs nothing armed",
              "(c) armed, unrelated site": "engine armed (unrelated site) vs nothing armed",
              "(d) armed, reached, never fires": "engine armed (reached, never fires) vs nothing armed"}
    for s, row in labels.items():
        a, b = ratios[s]
        tab.add(row, f"{a:.2f}x / {b:.2f}x", "memfd+CMA / pin_user_pages")


def matrix_row(tab: Table) -> None:
    dt, proc = _run(MATRIX_CMD)
    if proc.returncode != 0:
        sys.exit(f"udmabuf matrix failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    summary = summary.strip("= ").split(" in ")[0]
    tab.add("udmabuf example matrix, wall time", f"{dt:.2f} s", summary)


def errpaths_available() -> bool:
    _, proc = _run(["-m", "pytest", "--help"])
    return ERRPATHS_OPTION in proc.stdout


def errpaths_row(tab: Table) -> None:
    row = "coverage overhead of the error-path mode vs plain --cov"
    if not errpaths_available():
        tab.add(row, "not available", f"(no {ERRPATHS_OPTION} in pytest --help)")
        return
    have_cov_plugin = importlib.util.find_spec("pytest_cov") is not None
    with tempfile.TemporaryDirectory(prefix="bench_errpaths_") as tmp:
        env = dict(os.environ, COVERAGE_FILE=os.path.join(tmp, ".coverage"))
        if have_cov_plugin:
            plain = [*MATRIX_CMD, f"--cov={ERRPATHS_PKG}", "--cov-report="]
            how = "pytest-cov --cov"
        else:
            plain = ["-m", "coverage", "run", "--source", ERRPATHS_PKG, *MATRIX_CMD]
            how = "coverage run (pytest-cov not installed)"
        errp = [*plain, f"{ERRPATHS_OPTION}={ERRPATHS_PKG}"]
        t_plain, p1 = _run(plain, env=env)
        t_err, p2 = _run(errp, env=env)
    for cmd, proc in ((plain, p1), (errp, p2)):
        if proc.returncode != 0:
            sys.exit(f"error-path coverage benchmark failed ({proc.returncode}): python {' '.join(cmd)}\n"
                     f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    report = "" if "error-path" in p2.stdout else ", NO error-path report in the output"
    tab.add(row, f"{t_err:.2f} vs {t_plain:.2f} s", f"{t_err / t_plain:.2f}x (errpaths / plain), {how}{report}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, under a minute (CI)")
    args = ap.parse_args(argv)
    import pytest
    t0 = time.perf_counter()
    tab = Table()
    mm_rows(tab, args.quick)
    gup_rows(tab, args.quick)
    plugin_rows(tab, args.quick)
    faults_rows(tab, args.quick)
    matrix_row(tab)
    errpaths_row(tab)
    sizes = ("quick: 16384 folios, 64 MiB pins, 16 MiB engine runs, 100 tests per fixture variant"
             if args.quick else "full: 262144 folios, 1 GiB pins, 64 MiB engine runs, 500 tests per fixture variant")
    print(f"pytest-pinfault benchmarks ({sizes}); Python {sys.version.split()[0]}, pytest "
          f"{pytest.__version__}, {os.cpu_count()} CPUs; targets are printed, never asserted")
    tab.print()
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
