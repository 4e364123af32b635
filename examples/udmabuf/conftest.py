"""udmabuf example: the driver's fault sites and the shared fixtures."""

import pytest

from pytest_pinfault.mm import (F_SEAL_FUTURE_WRITE, F_SEAL_SHRINK, F_SEAL_WRITE, MAP_SHARED, MFD_ALLOW_SEALING, MFD_HUGETLB, PAGE_SIZE,
                                PROT_READ, PROT_WRITE)

from .driver import SITES, UdmabufDevice

_WRITE_SEALS = F_SEAL_WRITE | F_SEAL_FUTURE_WRITE


def pytest_pinfault_declare_sites(config, declare):
    for name, (errnos, meaning) in SITES.items():
        declare(name, errnos, meaning=meaning)


class MemfdHelper:
    """Creates memfds the way the kernel selftest does (memfd_create, F_ADD_SEALS,
    ftruncate; memfd_create installs each in the process's descriptor table) and closes
    every descriptor above 2 at teardown."""

    def __init__(self, k):
        self.k = k
        self.maps = []

    def create(self, size, huge=False, seals=F_SEAL_SHRINK, allow_sealing=True, name="udmabuf-test"):
        """A memfd of *size* bytes: ``(fd, memfile)``."""
        flags = (MFD_ALLOW_SEALING if allow_sealing else 0) | (MFD_HUGETLB if huge else 0)
        memfile = self.k.memfd_create(name, flags)
        assert not isinstance(memfile, int), memfile
        if seals:
            assert memfile.add_seals(seals & ~_WRITE_SEALS) == 0    # write seals after the truncate
        assert memfile.ftruncate(size) == 0
        if seals & _WRITE_SEALS:
            assert memfile.add_seals(seals & _WRITE_SEALS) == 0
        return memfile.fd, memfile

    def map(self, memfile, size):
        """mmap(MAP_SHARED) of the memfd in the test task: the address."""
        mm = self.k.current.mm
        addr = mm.mmap(size, PROT_READ | PROT_WRITE, MAP_SHARED, file=memfile)
        assert addr >= 0, addr
        self.maps.append((addr, size))
        return addr

    def fill(self, addr, size, ch, step=PAGE_SIZE):
        """write_to_memfd(): *ch* at the start of every page."""
        mm = self.k.current.mm
        for off in range(0, size, step):
            assert mm.write(addr + off, ch) == 1

    def teardown(self):
        for fd in sorted(self.k.files().fdt):
            if fd > 2:
                self.k.close_fd(fd)
        mm = self.k.current.mm
        for addr, size in self.maps:
            mm.munmap(addr, size)


@pytest.fixture
def files(fake_mm):
    """The test task's descriptor table."""
    return fake_mm.files()


@pytest.fixture
def memfds(fake_mm):
    helper = MemfdHelper(fake_mm)
    yield helper
    helper.teardown()


@pytest.fixture
def udmabuf_dev(fake_mm, files, memfds):
    """``/dev/udmabuf`` with the default module parameters (size_limit_mb=64, list_limit=1024)."""
    return UdmabufDevice(fake_mm)
