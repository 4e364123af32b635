"""The error paths of drivers/dma-buf/udmabuf.c that its selftest-based suite
(test_udmabuf_kernel.py) and fault matrix do not drive: a private mmap, end_cpu_access
before begin_cpu_access, vmap's page-array allocation failing, and a faulting
UDMABUF_CREATE_LIST header.  Each returns its errno and leaves nothing held."""

import errno

import pytest

from pytest_pinfault.mm import PAGE_SIZE

from .test_udmabuf_kernel import linux, udmabuf  # noqa: F401  (fixtures)

pytestmark = pytest.mark.mm_config(ram="1GiB", cma=0, movablecore=0)


def _buf(udmabuf):
    fd, _ = udmabuf.memfd(4 * PAGE_SIZE)
    buf = udmabuf.create(fd, 0, 4 * PAGE_SIZE)
    assert buf >= 0
    return buf, udmabuf.drv.dmabuf(buf)


def test_a_private_mmap_is_einval(fake_mm, udmabuf):
    buf, d = _buf(udmabuf)
    assert d.mmap_read(0, 1, flags=0) == -errno.EINVAL       # neither VM_SHARED nor VM_MAYSHARE
    assert udmabuf.drv.close(buf) == 0


def test_end_cpu_access_before_begin_is_einval(fake_mm, udmabuf):
    buf, d = _buf(udmabuf)
    if udmabuf.version == "6.12":
        assert d.end_cpu_access() == -errno.EINVAL           # no sg table yet
    assert d.begin_cpu_access() == 0 and d.end_cpu_access() == 0
    assert udmabuf.drv.close(buf) == 0


def test_vmap_page_array_allocation_failure_is_enomem(fake_mm, pinfault, udmabuf):
    if udmabuf.version != "6.12":
        pytest.skip("6.1's udmabuf has no vmap")
    buf, d = _buf(udmabuf)
    with pinfault.arm("kmalloc[caller=vmap_udmabuf]=1*return"):
        rc, _ = d.vmap()
    assert rc == -errno.ENOMEM and len(pinfault.fired) == 1
    assert udmabuf.drv.close(buf) == 0
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released


def test_create_list_with_a_bad_pointer_is_efault(fake_mm, udmabuf):
    assert udmabuf.dev.ioctl(udmabuf.CREATE_LIST, 0x10) == -errno.EFAULT


def test_a_full_descriptor_table_is_emfile_and_drops_the_buffer(fake_mm, udmabuf):
    """dma_buf_fd() finds no free descriptor: the new dma-buf is put, which unpins its
    folios (6.12) or drops its page references (6.1)."""
    fd, _ = udmabuf.memfd(4 * PAGE_SIZE)
    ft = fake_mm.files()
    ft.nofile = max(ft.fdt) + 1                               # every descriptor in use
    assert udmabuf.create(fd, 0, 4 * PAGE_SIZE) == -errno.EMFILE
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released
