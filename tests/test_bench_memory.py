"""benchmarks/bench_memory.py runs with the tests (``--quick``) so it never rots; its
figures are printed, never asserted (design.md section 9)."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_memory_quick_prints_every_case():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_memory.py"), "--quick"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    for case in ("anon mapping, mm.write, one repeated byte", "anon mapping, mm.write, distinct pages",
                 "shmem memfd, pwrite, one repeated byte", "shmem memfd, pwrite, distinct pages"):
        line = next(ln for ln in out.splitlines() if ln.startswith(case))
        assert float(line.split()[-2]) > 0, line


def test_bench_cma_fail_quick_runs():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_cma_fail.py"), "--quick"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "whole cma_alloc:" in out and "(result None)" in out
