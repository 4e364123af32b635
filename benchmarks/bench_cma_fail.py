"""Cost of a cma_alloc that cannot succeed.

    python benchmarks/bench_cma_fail.py [--quick]

A 256 MiB CMA area (--quick: 32 MiB) whose top 4,096 pages are unmovable
kernel pages (--quick: 2,048); ``cma_alloc(area, count - 2000, 0)`` has 2,001 one-page-shifted slots and
every one holds a busy page.  The kernel tries each slot; the model skips the slots that
hold the pfn the last attempt found busy, so the call costs one attempt.  Prints the
time of the call and, for reference, of one ``alloc_contig_range`` attempt on the same
range.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pytest_pinfault import FakeMM, MMConfig  # noqa: E402
from pytest_pinfault.mm import GFP_HIGHUSER_MOVABLE, MIGRATE_CMA  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    cma, busy = ("32MiB", 2048) if args.quick else ("256MiB", 4096)
    k = FakeMM(MMConfig(ram="2GiB", cma=cma))
    area = k.cma_areas[0]
    with k.steer("cma"):
        held = [k.alloc_pages(GFP_HIGHUSER_MOVABLE, 0) for _ in range(busy)]
    count = area.count - 2000
    t = time.perf_counter()
    one = k.alloc_contig_range(area.base_pfn, area.base_pfn + count, MIGRATE_CMA)
    t_one = time.perf_counter() - t
    t = time.perf_counter()
    page = k.cma_alloc(area, count, 0, no_warn=True)
    t_all = time.perf_counter() - t
    print(f"failing cma_alloc of {count} pages, 2001 slots, {len(held)} busy pages")
    print(f"  one alloc_contig_range attempt: {t_one * 1e3:8.2f} ms (ret {one})")
    print(f"  whole cma_alloc:                {t_all * 1e3:8.2f} ms (result {page})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
