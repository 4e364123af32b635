"""User memory access (include/linux/uaccess.h, mm/util.c:memdup_user, v6.12): the
bytes-not-copied convention, -EFAULT, faulting pages in, zero-filled tails."""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import FakeMM, MMConfig, Out
from pytest_pinfault.mm import (MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_NONE, PROT_READ,
                                PROT_WRITE, KmallocObject)


@pytest.fixture
def k() -> FakeMM:
    return FakeMM(MMConfig(ram="512MiB"))


def _buf(k, npages=2, prot=PROT_READ | PROT_WRITE):
    return k.current.mm.mmap(npages * PAGE_SIZE, prot, MAP_PRIVATE | MAP_ANONYMOUS)


def test_round_trip_faults_pages_in(k):
    addr = _buf(k)
    assert k.copy_to_user(addr + 100, b"hello", 5) == 0
    assert k.current.mm.lookup(addr + 100) is not None          # write fault allocated
    dst = bytearray(5)
    assert k.copy_from_user(dst, addr + 100, 5) == 0 and dst == b"hello"


def test_read_of_untouched_memory_is_zeros(k):
    addr = _buf(k)
    dst = bytearray(b"\xff" * 8)
    assert k.copy_from_user(dst, addr, 8) == 0 and dst == bytes(8)
    assert k.current.mm.lookup(addr)[0] is k.zero_folio


def test_partial_copy_returns_bytes_left_and_zero_fills(k):
    """The second page is unmapped: half the copy is done, the rest zero-filled."""
    mm = k.current.mm
    addr = _buf(k)
    mm.write(addr, b"a" * PAGE_SIZE)
    mm.munmap(addr + PAGE_SIZE, PAGE_SIZE)
    dst = bytearray(b"\xff" * (2 * PAGE_SIZE))
    assert k.copy_from_user(dst, addr, 2 * PAGE_SIZE) == PAGE_SIZE
    assert dst == b"a" * PAGE_SIZE + bytes(PAGE_SIZE)
    assert k.copy_to_user(addr + PAGE_SIZE - 2, b"wxyz", 4) == 2


def test_protection_and_range(k):
    ro = _buf(k, 1, PROT_READ)
    assert k.copy_to_user(ro, b"x", 1) == 1
    none = _buf(k, 1, PROT_NONE)
    assert k.copy_from_user(bytearray(1), none, 1) == 1
    assert k.copy_from_user(bytearray(4), (1 << 47) - 2, 4) == 4       # beyond TASK_SIZE


def test_get_put_user(k):
    addr = _buf(k)
    assert k.put_user(0x1122334455667788, addr, 8) == 0
    x = Out(0)
    assert k.get_user(x, addr, 4) == 0 and x.value == 0x55667788
    assert k.get_user(x, 0x10, 8) == -errno.EFAULT and x.value == 0
    assert k.get_user(x, addr, 3) == -errno.EFAULT and "3-byte" in k.warnings[-1].message


def test_memdup_user(k):
    addr = _buf(k)
    k.copy_to_user(addr, b"iovec!", 6)
    obj = k.memdup_user(addr, 6)
    assert isinstance(obj, KmallocObject) and bytes(obj.data) == b"iovec!"
    k.kfree(obj)
    assert k.memdup_user(0x10, 6) == -errno.EFAULT and k.slab_live == []
    k.faults.arm("kmalloc")
    assert k.memdup_user(addr, 6) == -errno.ENOMEM


def test_memdup_user_negative_length(k):
    assert k.memdup_user(0x1000, -1) == -errno.ENOMEM and k.slab_live == []
