"""Reclaim end to end: ``mm_config(swap=...)`` through the marker and the ini key, and a
fault matrix over the swap fault sites (mm/vmscan.py, docs/fault-sites.md)."""

pytest_plugins = ["pytester"]

TEST = """
import errno
import pytest
from pytest_pinfault.mm import (FOLL_WRITE, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PAGE_SIZE,
                                PROT_READ, PROT_WRITE)

BASE = 0x40000000


def swap_out_base(k):
    '''Squeeze memory and write pages until the first one at BASE is in swap.'''
    k.fill_zone("DMA", 0)
    z = k.zones["DMA32"]
    k.fill_zone("DMA32", z.wmark_min + 64)
    mm = k.current.mm
    mm.mmap(512 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, addr=BASE)
    for i in range(512):
        mm.write(BASE + i * PAGE_SIZE, bytes([i % 251 + 1]))
    mm.munmap(BASE + 256 * PAGE_SIZE, 256 * PAGE_SIZE)
    return mm


@pytest.mark.mm_config(ram="256MiB", swap="64MiB", thp="never")
@pytest.mark.pinfault_matrix("swap_read_folio", accept=(-errno.EFAULT,))
def test_pin_swapped_page(fake_mm, pinfault):
    mm = swap_out_base(fake_mm)
    assert BASE >> 12 in mm.swap_pte
    pages = []
    ret = fake_mm.pin_user_pages(BASE, 1, FOLL_WRITE, pages)
    pinfault.result(ret)
    if ret > 0:
        assert pages[0].folio.read(0, 1) == bytes([1])
        fake_mm.unpin_user_pages(pages, ret)


def test_ini_swap(fake_mm):
    assert fake_mm.nr_swap_pages_total == 4096
"""


def test_swap_matrix_and_config(pytester, run):
    pytester.makepyfile(test_swapping=TEST)
    pytester.makeini("[pytest]\npinfault_mm_config = ram=256MiB swap=16MiB\n")
    result = run("-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([
        "*test_pin_swapped_page?fault-free? PASSED*",
        "*test_pin_swapped_page?swap_read_folio-1-transient? PASSED*",
        "*test_pin_swapped_page?swap_read_folio-1-persistent? PASSED*",
    ])


def test_a_bad_swap_size_is_a_usage_error(pytester, run):
    pytester.makepyfile(test_bad="""
import pytest

@pytest.mark.mm_config(swap="1KiB")
def test_x(fake_mm):
    pass
""")
    result = run()
    assert result.ret != 0
    result.stderr.fnmatch_lines(["ERROR: test_bad.py::test_x: @pytest.mark.mm_config: swap: expected a "
                                 "multiple of 4KiB, got '1KiB'"])
