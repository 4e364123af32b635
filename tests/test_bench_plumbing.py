"""benchmarks/bench_plumbing.py runs (--quick) and prints its three lines; figures are
never asserted (design.md section 9)."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_plumbing_quick():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_plumbing.py"), "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in ("sg_alloc_table+free", "dma map/unmap", "judged no-op entry point"):
        assert line in proc.stdout, proc.stdout
