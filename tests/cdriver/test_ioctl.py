"""The ioctl number encoding: one definition (the uapi <asm-generic/ioctl.h>) shared by
the kernel side drivers build against and the uapi pass behind ``drv.const()``; both agree
with each other, with the Python udmabuf example's numbers and with the kernel's encoding,
and the kernel side checks its size argument as the kernel does."""

import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_pinfault.cdriver import CDriverBuildError, build_driver
from pytest_pinfault.cdriver.build import BASE_CFLAGS, INCLUDE_DIR, _gcc
from pytest_pinfault.cdriver.uapi import _read_consts, uapi_ffi

ROOT = Path(__file__).resolve().parents[2]

# the numbers user space sees for these (dir << 30 | size << 16 | type << 8 | nr)
UAPI = """\
#include <linux/types.h>
#include <linux/ioctl.h>
struct udmabuf_create { __u32 memfd; __u32 flags; __u64 offset; __u64 size; };
struct udmabuf_create_list { __u32 flags; __u32 count; };
#define UDMABUF_CREATE _IOW('u', 0x42, struct udmabuf_create)
#define UDMABUF_CREATE_LIST _IOW('u', 0x43, struct udmabuf_create_list)
#define PROBE_NONE _IO('p', 1)
#define PROBE_READ _IOR('p', 2, __u64)
#define PROBE_RW _IOWR('p', 3, struct udmabuf_create)
#define PROBE_BAD _IOW_BAD('p', 4, 8)
"""
EXPECTED = {"UDMABUF_CREATE": 0x40187542, "UDMABUF_CREATE_LIST": 0x40087543, "PROBE_NONE": 0x00007001,
            "PROBE_READ": 0x80087002, "PROBE_RW": 0xC0187003, "PROBE_BAD": 0x40047004}
# decoding UDMABUF_CREATE and the in-place masks
DECODED = {"_IOC_DIR(UDMABUF_CREATE)": 1, "_IOC_TYPE(UDMABUF_CREATE)": ord("u"),
           "_IOC_NR(UDMABUF_CREATE)": 0x42, "_IOC_SIZE(UDMABUF_CREATE)": 24,
           "_IOC_DIR(PROBE_RW)": 3, "IOC_IN": 0x40000000, "IOC_OUT": 0x80000000, "IOC_INOUT": 0xC0000000,
           "IOCSIZE_MASK": 0x3FFF0000, "IOCSIZE_SHIFT": 16, "_IOC_DIRBITS": 2, "_IOC_SIZEBITS": 14}


def _kernel_side_consts(tmp_path, exprs):
    """Each expression evaluated by gcc with the flags and include path a driver builds with."""
    names = {f"c{i}": e for i, e in enumerate(exprs)}
    src = tmp_path / "k.c"
    src.write_text("#include <linux/kernel.h>\n" + UAPI.replace("#include <linux/types.h>\n", "")
                   + "".join(f"unsigned long long pf_const_{n} = (unsigned long long)({e});\n"
                             for n, e in names.items()))
    asm = tmp_path / "k.s"
    r = subprocess.run([_gcc(), *BASE_CFLAGS, "-nostdinc", "-I", str(INCLUDE_DIR), "-S", "-o", str(asm), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = _read_consts(asm.read_text())
    return {e: got[n] for n, e in names.items()}


def _example_driver():
    spec = importlib.util.spec_from_file_location("pf_example_udmabuf_driver",
                                                  ROOT / "examples" / "udmabuf" / "driver.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # its dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[spec.name]
    return mod


def test_the_encoding_is_defined_once():
    defs = [p.relative_to(INCLUDE_DIR).as_posix() for p in INCLUDE_DIR.rglob("*.h")
            if re.search(r"^#define\s+_IOC\(", p.read_text(), re.M)]
    assert defs == ["uapi/asm-generic/ioctl.h"]
    kapi = (INCLUDE_DIR / "pinfault" / "kapi.h").read_text()
    assert '#include "../uapi/asm-generic/ioctl.h"' in kapi
    assert not re.search(r"^#define\s+_IOC_(NR|TYPE|SIZE|DIR)(BITS|SHIFT|MASK)?\b", kapi, re.M)


def test_kernel_side_uapi_side_and_python_agree(tmp_path):
    header = tmp_path / "linux" / "probe_ioctl.h"
    header.parent.mkdir()
    header.write_text(UAPI)
    _, uapi = uapi_ffi([header])
    kernel = _kernel_side_consts(tmp_path, [*EXPECTED, *DECODED])
    assert {n: uapi[n] for n in EXPECTED} == EXPECTED
    assert {n: kernel[n] for n in EXPECTED} == EXPECTED
    assert {e: kernel[e] for e in DECODED} == DECODED
    example = _example_driver()
    assert example.UDMABUF_CREATE == EXPECTED["UDMABUF_CREATE"]
    assert example.UDMABUF_CREATE_LIST == EXPECTED["UDMABUF_CREATE_LIST"]


@pytest.mark.parametrize("arg", ["8", "char[1 << 14]"], ids=["a-value", "too-large"])
def test_the_kernel_side_rejects_a_bad_size_argument(tmp_path, arg):
    """A value where a type belongs, or a type of 16 KiB or more, is not a valid number in
    a driver (as with the kernel's checked _IOC_TYPECHECK); the unchecked _IOW_BAD is."""
    src = tmp_path / "bad.c"
    body = f"""
        #include <linux/module.h>
        #include <linux/ioctl.h>
        long bad_ioctl(unsigned int cmd)
        {{
        	switch (cmd) {{
        	case _IOW('p', 1, {arg}):
        		return 0;
        	}}
        	return -ENOTTY;
        }}
        """
    src.write_text(textwrap.dedent(body).lstrip())
    with pytest.raises(CDriverBuildError, match="does not compile"):
        build_driver(src, cache_dir=tmp_path / "cache")
    src.write_text(src.read_text().replace("_IOW(", "_IOW_BAD("))
    assert build_driver(src, cache_dir=tmp_path / "cache").compiled


def test_the_uapi_side_takes_the_size_as_it_is(tmp_path):
    """User space has no check: _IOC_TYPECHECK(t) is sizeof(t)."""
    header = tmp_path / "linux" / "p.h"
    header.parent.mkdir()
    header.write_text("#include <linux/ioctl.h>\n#define P _IOC_TYPECHECK(8)\n#define Q _IOW('p', 1, 8)\n")
    _, consts = uapi_ffi([header])
    assert consts["P"] == 4 and consts["Q"] == 0x40047001
