"""Host memory per written 4 KiB page of the fake machine.

    python benchmarks/bench_memory.py            # 256 MiB written per case
    python benchmarks/bench_memory.py --quick    # 16 MiB (for CI)

Each case writes every page of a range once and reports the Python heap growth
(tracemalloc) per page, next to the 4,096 bytes the page's contents would take stored
verbatim.  Cases: an anonymous mapping written through ``mm.write`` (page tables, rmap,
folio, contents) with one repeated byte and with distinct bytes per page, and a shmem
memfd filled with ``pwrite`` the same two ways.  Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tracemalloc
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pytest_pinfault import FakeMM, MMConfig  # noqa: E402
from pytest_pinfault.mm import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE  # noqa: E402

PAGE = 4096
CHUNK = 1 << 20


def _distinct(i: int) -> bytes:
    """A megabyte whose every page differs from every other one (not compressible to
    one byte, not all zero)."""
    return b"".join(i.to_bytes(8, "little") + j.to_bytes(8, "little") + bytes(PAGE - 16)
                    for j in range(CHUNK // PAGE))


def _measure(size: int, write: Callable[[FakeMM, int], None]) -> float:
    k = FakeMM(MMConfig(ram="2GiB", thp="never"))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        write(k, size)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / (size // PAGE)


def anon(pattern: str) -> Callable[[FakeMM, int], None]:
    def run(k: FakeMM, size: int) -> None:
        mm = k.current.mm
        a = mm.mmap(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        for off in range(0, size, CHUNK):
            mm.write(a + off, b"x" * CHUNK if pattern == "same" else _distinct(off))
        k.lru_add_drain_all()
    return run


def memfd(pattern: str) -> Callable[[FakeMM, int], None]:
    def run(k: FakeMM, size: int) -> None:
        f = k.memfd_create("bench", 0)
        for off in range(0, size, CHUNK):
            f.pwrite(b"x" * CHUNK if pattern == "same" else _distinct(off), off)
        k.lru_add_drain_all()
        run.keep = f            # type: ignore[attr-defined]
    return run


CASES = [
    ("anon mapping, mm.write, one repeated byte", anon("same")),
    ("anon mapping, mm.write, distinct pages", anon("distinct")),
    ("shmem memfd, pwrite, one repeated byte", memfd("same")),
    ("shmem memfd, pwrite, distinct pages", memfd("distinct")),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 MiB per case (for CI)")
    args = ap.parse_args(argv)
    size = (16 if args.quick else 256) << 20
    print(f"host memory per written 4 KiB page ({size >> 20} MiB per case, tracemalloc)")
    print(f"{'case':48} {'bytes/page':>10} {'x 4096':>7}")
    for name, fn in CASES:
        per = _measure(size, fn)
        print(f"{name:48} {per:10.0f} {per / PAGE:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
