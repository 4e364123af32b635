"""Building drivers: the cache (one compile per source/headers/flags), atomic landing
under concurrent builds, and missing kernel APIs reported by symbol and driver line."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_pinfault.cdriver import CDriverBuildError, MissingKernelAPI, build_driver, default_cache_dir

PROBE = Path(__file__).parent / "drivers" / "probe.c"


def test_first_build_compiles_and_the_second_comes_from_the_cache(tmp_path):
    first = build_driver(PROBE, cache_dir=tmp_path)
    second = build_driver(PROBE, cache_dir=tmp_path)
    assert first.compiled and not second.compiled
    assert first.so_path == second.so_path and first.so_path.is_file()
    assert "probe_ioctl" in first.symbols.values()


def test_flags_and_source_are_part_of_the_key(tmp_path):
    base = build_driver(PROBE, cache_dir=tmp_path)
    other = build_driver(PROBE, cache_dir=tmp_path, defines={"PROBE_NO_DEREGISTER": 1})
    assert other.compiled and other.key != base.key
    copy = tmp_path / "src" / "probe.c"
    copy.parent.mkdir()
    copy.write_text(PROBE.read_text() + "\n/* changed */\n")
    assert build_driver(copy, cache_dir=tmp_path).key != base.key


def test_concurrent_builds_land_one_complete_entry(tmp_path):
    code = ("import sys; from pytest_pinfault.cdriver import build_driver; "
            f"b = build_driver({str(PROBE)!r}, cache_dir={str(tmp_path)!r}); print(b.so_path)")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate()[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1 and Path(outs[0]).is_file()
    entries = [p.name for p in tmp_path.iterdir()]
    assert len(entries) == 1 and not entries[0].startswith("."), entries     # no half-built leftovers


def test_default_cache_dir_is_outside_the_repo_and_configurable(monkeypatch, tmp_path):
    monkeypatch.setenv("PINFAULT_CDRIVER_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PINFAULT_CDRIVER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "pytest-pinfault" / "cdriver"


def _driver(tmp_path, body):
    src = tmp_path / "drv.c"
    src.write_text(textwrap.dedent(body).lstrip())
    return src


def test_missing_kernel_apis_are_named_with_the_driver_line(tmp_path):
    src = _driver(tmp_path, """
        #include <linux/mm.h>
        #include <linux/slab.h>
        static long f(unsigned long addr)
        {
                struct page *p;
                long n = frobnicate_user_pages(addr, 1, &p);
                return n + FOLL_FROBNICATE;
        }
        static long g(struct sg_table *t)
        {
                return t->frob_count;
        }
        int use(void) { return f(0) + g(0); }
        """)
    with pytest.raises(MissingKernelAPI) as e:
        build_driver(src, cache_dir=tmp_path / "cache")
    got = {(m.symbol, m.kind, Path(m.file).name, m.line) for m in e.value.missing}
    assert ("frobnicate_user_pages", "function", "drv.c", 6) in got
    assert ("FOLL_FROBNICATE", "identifier", "drv.c", 7) in got
    assert ("struct sg_table.frob_count", "member", "drv.c", 11) in got
    msg = str(e.value)
    assert "frobnicate_user_pages (function) used at" in msg and "drv.c:6" in msg
    assert len(msg.splitlines()) < 10                     # a report, not gcc's output
    assert "implicit declaration" in e.value.diagnostics  # which is still there


def test_a_missing_header_is_named(tmp_path):
    src = _driver(tmp_path, """
        #include <linux/vfio_pci_core.h>
        int x;
        """)
    with pytest.raises(MissingKernelAPI) as e:
        build_driver(src, cache_dir=tmp_path / "cache")
    assert [(m.symbol, m.kind, m.line) for m in e.value.missing] == [("linux/vfio_pci_core.h", "header", 1)]


def test_a_plain_compile_error_is_a_build_error_not_a_missing_api(tmp_path):
    src = _driver(tmp_path, """
        #include <linux/kernel.h>
        int broken( { return 0; }
        """)
    with pytest.raises(CDriverBuildError) as e:
        build_driver(src, cache_dir=tmp_path / "cache")
    assert not isinstance(e.value, MissingKernelAPI)
    assert "drv.c:2" in str(e.value)


def test_a_missing_source_is_a_build_error(tmp_path):
    with pytest.raises(CDriverBuildError, match="not found"):
        build_driver(tmp_path / "nope.c", cache_dir=tmp_path)
