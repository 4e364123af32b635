"""Files and descriptors (fs/file.c, fs/file_table.c v6.12): the per-task table,
fget/fput/close references, -EBADF, and memfds as files: a closed memfd answers -EBADF
and its pages go when its last reference does (issue 18's closed-memfd defect)."""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.contracts import Checker
from pytest_pinfault.mm import MAP_SHARED, MFD_CLOEXEC, PAGE_SIZE, PROT_READ, PROT_WRITE
from pytest_pinfault.mm.file import O_CLOEXEC


@pytest.fixture
def k() -> FakeMM:
    return FakeMM(MMConfig(ram="512MiB"))


class Fops:
    def __init__(self):
        self.released = []

    def release(self, file):
        self.released.append(file)


def test_lowest_free_descriptor_and_ebadf(k):
    ops = Fops()
    a = k.anon_inode_getfile("[a]", ops, None, 0)
    fd = k.get_unused_fd_flags(O_CLOEXEC)
    assert fd == 3                                              # 0-2: stdin, stdout, stderr
    k.fd_install(fd, a)
    assert k.get_unused_fd_flags(0) == 4
    k.put_unused_fd(4)
    assert k.fget(fd) is a and a.f_count == 2
    assert k.close_fd(fd) == 0 and ops.released == []          # the fget reference keeps it
    assert k.fget(fd) is None and k.close_fd(fd) == -errno.EBADF
    k.fput(a)
    assert ops.released == [a] and a.closed


def test_emfile(k):
    k.files().nofile = 5
    k.get_unused_fd_flags(0)
    k.get_unused_fd_flags(0)
    assert k.get_unused_fd_flags(0) == -errno.EMFILE
    assert k.memfd_create("x", 0) == -errno.EMFILE


def test_misuse_is_recorded(k):
    f = k.anon_inode_getfile("[a]", None, None, 0)
    k.fd_install(7, f)
    assert "not reserved" in k.warnings[-1].message
    k.fput(f)
    k.fput(f)
    assert "no references" in k.warnings[-1].message
    k.put_unused_fd(3)
    assert "not reserved" in k.warnings[-1].message


def test_memfd_create_yields_an_fd(k):
    f = k.memfd_create("buf", MFD_CLOEXEC)
    assert f.fd >= 0 and k.fd_file(f.fd) is f and f.fd in k.files().cloexec


def test_closed_memfd_is_unusable_and_its_pages_go(k):
    f = k.memfd_create("buf", 0)
    f.ftruncate(4 * PAGE_SIZE)
    f.pwrite(b"x" * (4 * PAGE_SIZE), 0)
    fd = f.fd
    before = k.nr_allocated_pages
    f.close()
    assert k.fget(fd) is None
    for rc in (f.pwrite(b"y", 0), f.pread(1, 0), f.ftruncate(0), f.fallocate(0, 0, PAGE_SIZE),
               f.add_seals(0), f.get_seals(),
               k.current.mm.mmap(PAGE_SIZE, PROT_READ, MAP_SHARED, file=f)):
        assert rc == -errno.EBADF
    k.lru_add_drain_all()                     # the LRU add batch held the last references
    assert f.mapping.nrpages == 0 and k.nr_allocated_pages == before - 4


def test_memfd_pages_stay_while_a_reference_does(k):
    """A driver's fget reference and a mapping each keep the page cache."""
    f = k.memfd_create("buf", 0)
    f.ftruncate(PAGE_SIZE)
    f.pwrite(b"x", 0)
    held = k.fget(f.fd)
    mm = k.current.mm
    addr = mm.mmap(PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, file=f)
    f.close()
    assert f.mapping.nrpages == 1 and held.pread(1, 0) == b"x"
    k.fput(held)
    assert f.closed and f.mapping.nrpages == 1                 # still mapped
    assert mm.read(addr, 1) == b"x"
    mm.munmap(addr, PAGE_SIZE)
    assert f.mapping.nrpages == 0


def test_checker_file_refs_and_error_path_fds(k):
    from pytest_pinfault.contracts import pin_entry_point

    class Drv:
        def __init__(self, k):
            self.k = k

    @pin_entry_point
    def open_then_fail(drv):
        fd = drv.k.get_unused_fd_flags(0)
        drv.k.fd_install(fd, drv.k.anon_inode_getfile("[x]", None, None, 0))
        return -errno.ENOMEM

    ck = Checker(k)
    f = k.memfd_create("buf", 0)
    k.fget(f.fd)
    open_then_fail(Drv(k))
    assert [v.rule.id for v in ck.violations] == ["error-nothing-held"]
    assert "fd.open" in ck.violations[0].message
    vs = ck.check(final=True)
    assert any(v.rule.id == "pin-balance" and "file.refs" in v.message for v in vs)
    assert not any("fd.open" in v.message for v in vs)        # open descriptors are the test's
