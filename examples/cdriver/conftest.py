"""pinbuf example: load the C driver (a -D flag selects a buggy variant) and open it."""

import shutil
from pathlib import Path

import pytest

pytest.importorskip("cffi", reason="the C-driver bridge needs the [c] extra: pip install 'pytest-pinfault[c]'")
if shutil.which("gcc") is None:
    pytest.skip("the C-driver bridge needs gcc on PATH", allow_module_level=True)

HERE = Path(__file__).parent
UAPI = HERE / "uapi"
HEADER = UAPI / "linux" / "pinbuf.h"


class Pinbuf:
    """The loaded driver, one open /dev/pinbuf, and helpers that build the uapi struct."""

    def __init__(self, drv):
        self.drv = drv
        self.file = drv.open("pinbuf")
        self.arg = drv.user_alloc(4096)            # where ioctl arguments are written
        self.REGISTER = drv.const("PINBUF_REGISTER")
        self.UNREGISTER = drv.const("PINBUF_UNREGISTER")

    def register(self, addr, length, flags=0):
        """PINBUF_REGISTER: (return code, the struct as the driver left it)."""
        self.drv.put_user(self.arg, "struct pinbuf_region", {"addr": addr, "len": length, "flags": flags})
        rc = self.file.ioctl(self.REGISTER, self.arg)
        return rc, self.drv.get_user(self.arg, "struct pinbuf_region")

    def unregister(self, region_id):
        self.drv.fake_mm.current.mm.write(self.arg, region_id.to_bytes(4, "little"))
        return self.file.ioctl(self.UNREGISTER, self.arg)


@pytest.fixture
def pinbuf_loader(load_c_driver):
    def load(source="pinbuf.c", **defines):
        drv = load_c_driver(HERE / source, include_dirs=[UAPI], uapi_headers=[HEADER], defines=defines)
        return Pinbuf(drv)
    return load


@pytest.fixture
def pinbuf(pinbuf_loader):
    return pinbuf_loader()


@pytest.fixture
def user_buf(fake_mm):
    """Map and fault in *npages* of anonymous memory (in CMA with cma=True, else in
    ZONE_NORMAL): the address."""
    from pytest_pinfault.mm import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE

    def make(npages, cma=False):
        mm = fake_mm.current.mm
        addr = mm.mmap(npages * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        with fake_mm.steer("cma" if cma else "normal"):
            for i in range(npages):
                assert mm.write(addr + i * PAGE_SIZE, bytes([65 + i % 26])) == 1
        return addr
    return make
