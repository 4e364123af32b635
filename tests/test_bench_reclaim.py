"""benchmarks/bench_reclaim.py runs with the tests (``--quick``) so it never rots; its
figures are printed, never asserted (design.md section 9)."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_reclaim_quick_prints_every_figure():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_reclaim.py"), "--quick"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    for start in ("  writing : ", "  reading : ", "  1 GiB machine: "):
        assert any(ln.startswith(start) for ln in out.splitlines()), out
    assert "swapped in" in out and "ratio" in out
