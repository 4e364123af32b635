"""The bridge's API surface: every function the header declares is implemented by the
runtime (or libc), and docs/cdriver.md lists exactly what the header provides."""

import re
import subprocess
from pathlib import Path

from pytest_pinfault.cdriver.api_list import render, supported_api
from pytest_pinfault.cdriver.build import INCLUDE_DIR, build_driver

ROOT = Path(__file__).resolve().parents[2]
LIBC = {"memcpy", "memmove", "memset", "memcmp", "strlen", "strcmp", "strncmp", "strchr", "strnlen",
        "snprintf", "sprintf", "vsnprintf"}


def test_every_declared_function_is_implemented(cdriver_cache):
    text = (INCLUDE_DIR / "pinfault" / "kapi.h").read_text()
    declared = set(re.findall(r"^extern\s[^;{(]*?\b([A-Za-z_][A-Za-z0-9_]*)\s*\(", text, re.M))
    built = build_driver(ROOT / "tests" / "cdriver" / "drivers" / "probe.c", cache_dir=cdriver_cache)
    nm = subprocess.run(["nm", "-D", "--defined-only", str(built.so_path)], capture_output=True, text=True).stdout
    defined = {ln.split()[-1] for ln in nm.splitlines()}
    assert sorted(declared - defined - LIBC) == []


def test_the_docs_list_the_supported_api():
    doc = (ROOT / "docs" / "cdriver.md").read_text()
    block = doc.split("<!-- api:begin -->")[1].split("<!-- api:end -->")[0].strip()
    assert block == render(), "regenerate with: python -m pytest_pinfault.cdriver.api_list"


def test_the_api_covers_what_pinning_drivers_use():
    api = supported_api()
    names = set(api["functions"]) | set(api["macros"])
    for n in ("pin_user_pages_fast", "unpin_user_pages_dirty_lock", "unpin_user_page_range_dirty_lock",
              "memfd_pin_folios", "unpin_folios", "kvmalloc_array", "kvcalloc", "kfree", "kvfree",
              "copy_from_user", "copy_to_user", "memdup_user", "fget", "fput", "mutex_lock", "spin_lock",
              "WARN_ON", "BUG_ON", "pr_err", "IS_ERR", "PTR_ERR", "ERR_PTR", "list_add_tail", "container_of",
              "IS_ALIGNED", "PAGE_ALIGNED", "min_t", "check_mul_overflow", "BIT", "sg_alloc_table",
              "dma_map_sgtable", "dma_buf_export", "dma_buf_fd", "vm_map_ram", "account_locked_vm",
              "misc_register", "module_param"):
        assert n in names, n


def test_the_benchmark_runs():
    """benchmarks/bench_cdriver.py --quick prints its three figures (never asserted)."""
    import sys
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_cdriver.py"), "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for row in ("through the bridge", "first compile of", "cached load"):
        assert row in proc.stdout, proc.stdout
