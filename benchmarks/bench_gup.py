"""Pin + unpin throughput of the fake mm (figures and ratios from one run).

    python benchmarks/bench_gup.py [--quick]

Measures, for a 1 GiB range (--quick: 64 MiB):
  * memfd_pin_folios + unpin_folios on a shmem memfd, 4 KiB folios, nothing to migrate;
  * the same with every folio in CMA, so each one is migrated out first;
  * the same on a hugetlbfs memfd with 2 MiB folios (outside and inside ZONE_MOVABLE...
    here: pool outside ZONE_MOVABLE, so nothing moves);
  * pin_user_pages(FOLL_LONGTERM) + unpin_user_pages over a 1 GiB shared mapping of the
    shmem memfd (populated beforehand), without and with migration out of CMA.
Each line gives microseconds per folio (or per page) and the ratio to a bare Python
object allocation measured in the same run.  No thresholds: the issue tracker holds the
targets.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Callable

from pytest_pinfault import FakeMM, MMConfig, Out
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, MAP_POPULATE, MAP_SHARED, MFD_ALLOW_SEALING,
                                MFD_HUGETLB, PROT_READ, PROT_WRITE)


class _Bare:
    __slots__ = ("a", "b", "c")

    def __init__(self) -> None:
        self.a = self.b = self.c = 0


def bare_us(n: int) -> float:
    t = time.perf_counter()
    objs = [_Bare() for _ in range(n)]
    dt = time.perf_counter() - t
    del objs
    return dt * 1e6 / n


def shmem_memfd(k: FakeMM, size: int, where: str | None):
    f = k.memfd_create("bench", MFD_ALLOW_SEALING)
    assert f.ftruncate(size) == 0
    if where:
        with k.steer(where):
            assert f.fallocate(0, 0, size) == 0
    else:
        assert f.fallocate(0, 0, size) == 0
    k.lru_add_drain_all()
    return f


def pin_memfd(k: FakeMM, f, size: int, nr: int) -> tuple[float, int]:
    folios: list = []
    t = time.perf_counter()
    n = k.memfd_pin_folios(f, 0, size - 1, folios, nr, Out(0))
    k.unpin_folios(folios, n)
    dt = time.perf_counter() - t
    assert n == nr, n
    return dt, n


def pin_mapping(k: FakeMM, f, size: int) -> tuple[float, int]:
    mm = k.current.mm
    addr = mm.mmap(size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, file=f)
    pages: list = []
    nr = size >> 12
    t = time.perf_counter()
    n = k.pin_user_pages(addr, nr, FOLL_LONGTERM | FOLL_WRITE, pages)
    k.unpin_user_pages(pages, n)
    dt = time.perf_counter() - t
    assert n == nr, n
    mm.munmap(addr, size)
    return dt, n


def pin_mapping_huge(k: FakeMM, h, size: int) -> tuple[float, int]:
    """pin_user_pages over a populated shared mapping of a hugetlbfs memfd; returns the
    time and the number of 2 MiB folios."""
    dt, _ = pin_mapping(k, h, size)
    return dt, size >> 21


def hugetlb_memfd(k: FakeMM, size: int):
    h = k.memfd_create("bench-huge", MFD_HUGETLB)
    assert h.ftruncate(size) == 0 and h.fallocate(0, 0, size) == 0
    return h


def _case_memfd_nomig(size: int) -> list[tuple[str, float, int]]:
    k = FakeMM(MMConfig(ram="8GiB", cma="2GiB"))
    f = shmem_memfd(k, size, None)
    dt, n = pin_memfd(k, f, size, size >> 12)
    rows = [("memfd_pin_folios shmem 4KiB, no migration", dt, n)]
    dt, n = pin_mapping(k, f, size)
    rows.append(("pin_user_pages(LONGTERM) shared 4KiB, no migration", dt, n))
    return rows


def _case_memfd_cma(size: int) -> list[tuple[str, float, int]]:
    k = FakeMM(MMConfig(ram="8GiB", cma="2GiB"))
    f = shmem_memfd(k, size, "cma")
    dt, n = pin_memfd(k, f, size, size >> 12)
    assert k.stats.pgmigrate_success == size >> 12
    return [("memfd_pin_folios shmem 4KiB, all migrated out of CMA", dt, n)]


def _case_pup_cma(size: int) -> list[tuple[str, float, int]]:
    k = FakeMM(MMConfig(ram="8GiB", cma="2GiB"))
    f = shmem_memfd(k, size, "cma")
    dt, n = pin_mapping(k, f, size)
    assert k.stats.pgmigrate_success == size >> 12
    return [("pin_user_pages(LONGTERM) shared 4KiB, all migrated out of CMA", dt, n)]


def _case_hugetlb(size: int, huge_extra: bool) -> list[tuple[str, float, int]]:
    hp = size >> 21
    k = FakeMM(MMConfig(ram="8GiB", hugetlb={"2MiB": hp}))
    h = hugetlb_memfd(k, size)
    dt, n = pin_memfd(k, h, size, hp)
    rows = [("memfd_pin_folios hugetlb 2MiB, no migration", dt, n)]
    if huge_extra:
        dt, n = pin_mapping_huge(k, h, size)
        assert k.stats.pgmigrate_success == 0
        rows.append(("pin_user_pages(LONGTERM) hugetlb 2MiB, no migration", dt, n))
    return rows


def _case_hugetlb_movable(size: int, pup: bool) -> list[tuple[str, float, int]]:
    hp = size >> 21
    k = FakeMM(MMConfig(ram="8GiB", movablecore="4GiB", hugetlb={"2MiB": hp}))
    h = hugetlb_memfd(k, size)
    if pup:
        dt, n = pin_mapping_huge(k, h, size)
        case = "pin_user_pages(LONGTERM) hugetlb 2MiB, all migrated out of ZONE_MOVABLE"
    else:
        dt, n = pin_memfd(k, h, size, hp)
        case = "memfd_pin_folios hugetlb 2MiB, all migrated out of ZONE_MOVABLE"
    assert k.stats.pgmigrate_success == size >> 12, k.stats.pgmigrate_success
    return [(case, dt, n)]


def measure(size: int, huge_extra: bool = False) -> tuple[float, list[tuple[str, float, int]]]:
    """Pin+unpin *size* bytes in each case; returns (bare object us, [(case, seconds, folios)]).

    With *huge_extra* it also measures 2 MiB hugetlb folios migrated out of ZONE_MOVABLE
    (the pool allocated there, movablecore=4GiB) and pin_user_pages over hugetlb mappings.

    Each case builds its own machine and drops it before the next one starts: a machine
    is freed by the host's cyclic collector (its folios point back at it), so the
    collector runs between cases, and no case is timed over the previous cases' unfreed
    gigabytes (which cost up to a quarter more per folio, in fresh host memory).
    """
    gc.collect()                  # the reference, too, is not timed over earlier garbage
    ref = bare_us(size >> 12)
    cases: list[Callable[[], list[tuple[str, float, int]]]] = [
        lambda: _case_memfd_nomig(size), lambda: _case_memfd_cma(size),
        lambda: _case_pup_cma(size), lambda: _case_hugetlb(size, huge_extra)]
    if huge_extra:
        cases += [lambda: _case_hugetlb_movable(size, False), lambda: _case_hugetlb_movable(size, True)]
    rows = []
    for case in cases:
        gc.collect()
        rows += case()
    gc.collect()
    return ref, rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="64 MiB instead of 1 GiB")
    args = ap.parse_args()
    size = (64 << 20) if args.quick else (1 << 30)
    nr = size >> 12
    ref, rows = measure(size)

    print(f"pin+unpin of {size >> 20} MiB; bare __slots__ object: {ref:.3f} us each")
    print(f"{'case':64s} {'folios':>8s} {'us/folio':>9s} {'x bare':>8s} {'us/4KiB':>8s}")
    for name, dt, n in rows:
        per = dt * 1e6 / n
        print(f"{name:64s} {n:8d} {per:9.2f} {per / ref:8.1f} {dt * 1e6 / nr:8.3f}")


if __name__ == "__main__":
    main()
