"""Cost of the driver plumbing (figures and ratios from one run).

    python benchmarks/bench_plumbing.py [--quick]

Measures:
  * ``sg_alloc_table`` + ``sg_free_table`` per entry for a small and a 100x larger table
    (the ratio shows the cost follows the entries; what growth remains, 1-4x from run to
    run, is CPython's cyclic collector scanning the larger table's live entry objects --
    with ``gc.disable()`` the ratio is about 1);
  * ``sg_alloc_table_from_pages`` + ``dma_map_sgtable`` + unmap + free per page over
    discontiguous pages;
  * the checker's judging of one ``@pin_entry_point`` call that does nothing, with the
    built-in counters only and with 1,000 extra live DMA mappings and 100 driver counters
    (what the counters add to every judged call).
No thresholds: figures vary with the machine.
"""

from __future__ import annotations

import argparse
import time

from pytest_pinfault import FakeMM, MMConfig, pin_entry_point
from pytest_pinfault.contracts import Checker
from pytest_pinfault.mm import GFP_KERNEL
from pytest_pinfault.mm.dma_mapping import DMA_TO_DEVICE
from pytest_pinfault.mm.folio import Page
from pytest_pinfault.mm.scatterlist import SgTable


def _per(fn, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e6 / n


def bench_sg(small: int, repeat: int) -> dict:
    k = FakeMM(MMConfig(ram="1GiB"))

    def run(n):
        t = SgTable()
        assert k.sg_alloc_table(t, n, GFP_KERNEL) == 0
        k.sg_free_table(t)
    return {"small_us": _per(lambda: run(small), small, repeat),
            "large_us": _per(lambda: run(small * 100), small * 100, repeat)}


def bench_sg_dma(npages: int, repeat: int) -> float:
    k = FakeMM(MMConfig(ram="1GiB"))
    dev = k.create_device()
    heads = [k.alloc_pages(GFP_KERNEL, 1) for _ in range(npages)]
    pages = [Page(h.folio, h.pfn) for h in heads]          # every other pfn: no merging

    def run():
        t = SgTable()
        assert k.sg_alloc_table_from_pages(t, pages, npages, 0, npages * 4096, GFP_KERNEL) == 0
        assert k.dma_map_sgtable(dev, t, DMA_TO_DEVICE, 0) == 0
        k.dma_unmap_sgtable(dev, t, DMA_TO_DEVICE, 0)
        k.sg_free_table(t)
    return _per(run, npages, repeat)


class _Drv:
    def __init__(self, k):
        self.k = k


@pin_entry_point
def _noop(drv) -> int:
    return 0


def bench_judging(calls: int, repeat: int) -> dict:
    out = {}
    for label, extra in (("base_us", False), ("loaded_us", True)):
        k = FakeMM(MMConfig(ram="1GiB"))
        Checker(k)
        if extra:
            dev = k.create_device()
            head = k.alloc_pages(GFP_KERNEL, 10)          # one folio: the folio pass stays the same
            for i in range(1000):
                k.dma_map_page(dev, Page(head.folio, head.pfn + i), 0, 4096, DMA_TO_DEVICE)
            for i in range(100):
                k.counters.register(f"drv.c{i}", lambda: 0)
        d = _Drv(k)

        def run():
            for _ in range(calls):
                _noop(d)
        out[label] = _per(run, calls, repeat)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    small, pages, calls, rep = (64, 256, 100, 2) if a.quick else (128, 4096, 1000, 5)
    sg = bench_sg(small, rep)
    dma = bench_sg_dma(pages, rep)
    j = bench_judging(calls, rep)
    print(f"sg_alloc_table+free, {small} entries: {sg['small_us']:.2f} us/entry; "
          f"{small * 100} entries: {sg['large_us']:.2f} us/entry "
          f"(ratio {sg['large_us'] / sg['small_us']:.2f}x)")
    print(f"sg from {pages} pages + dma map/unmap + free: {dma:.2f} us/page")
    print(f"judged no-op entry point: {j['base_us']:.1f} us/call; with 1000 DMA mappings and "
          f"100 driver counters: {j['loaded_us']:.1f} us/call (ratio {j['loaded_us'] / j['base_us']:.2f}x)")
    return {"sg": sg, "dma": dma, "judging": j}


if __name__ == "__main__":
    main()
