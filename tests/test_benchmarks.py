"""The benchmarks run with the tests (``run_all.py --quick``), so they never rot.

Only that the run succeeds and prints every row is checked: figures vary with the machine
and are never asserted (design.md section 9).
"""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_ALL = os.path.join(ROOT, "benchmarks", "run_all.py")

# Every row of the table (benchmarks/run_all.py ROWS); a row that disappears fails here.
ROWS = [
    'construction 4 GiB vs 1 TiB, time',
    'construction 4 GiB vs 1 TiB, peak memory',
    'allocate 4KiB folio in CMA (+folio_add_lru)',
    'isolate+migrate 4KiB folio out of CMA',
    'memory per allocated 4KiB folio',
    'order-0 unmovable alloc, claims failing (rmqueue_mode)',
    'order-0 unmovable alloc, claims failing, machine size',
    'memfd_pin_folios 4KiB, no migration',
    'memfd_pin_folios 4KiB, migrated out of CMA',
    'pin_user_pages 4KiB, no migration',
    'pin_user_pages 4KiB, migrated out of CMA',
    'memfd_pin_folios 2MiB, no migration',
    'memfd_pin_folios 2MiB, migrated out of ZONE_MOVABLE',
    'pin_user_pages 2MiB, no migration',
    'pin_user_pages 2MiB, migrated out of ZONE_MOVABLE',
    'fixture fake_mm overhead vs bare test',
    'fixture fs (pyfakefs) overhead vs bare test',
    'fixture fake_mm vs fs',
    'engine idle site lines, share of pin (nothing armed)',
    'engine recording vs nothing armed',
    'engine armed (unrelated site) vs nothing armed',
    'engine armed (reached, never fires) vs nothing armed',
    'udmabuf example matrix, wall time',
    'coverage overhead of the error-path mode vs plain --cov',
]


def test_run_all_quick():
    proc = subprocess.run([sys.executable, RUN_ALL, "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    missing = [r for r in ROWS if r not in proc.stdout]
    assert not missing, f"rows not printed: {missing}\n{proc.stdout}"
    assert "NOT MEASURED" not in proc.stdout, proc.stdout
