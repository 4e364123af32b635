"""The checker-cost benchmark runs (quick sizes), so it never rots; its figures are
printed, never asserted (design.md section 9)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_checker_quick_prints_every_figure():
    env = dict(os.environ)
    env.pop("PINFAULT_FAULTS", None)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_checker.py"), "--quick"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for row in ("pin+unpin 1 page, empty machine", "pin+unpin 1 page, 64 MiB populated",
                "pin+unpin 1 page, no checker", "teardown check, 128 MiB buffer (32768 folios)"):
        assert row in proc.stdout, proc.stdout
