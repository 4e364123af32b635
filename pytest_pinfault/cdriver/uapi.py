"""A driver's uapi header as the test sees it: struct layouts (through cffi, from the
preprocessed header) and integer macros (ioctl numbers, flags) evaluated by the C
compiler, so a test builds ioctl arguments from the header itself, never hand-packed bytes.

The header is preprocessed with the bridge's plain uapi types (``include/uapi``, no gcc
extensions) in front of any include directories given.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .build import INCLUDE_DIR, CDriverBuildError, _gcc

__all__ = ["uapi_ffi"]

_DEFINE = re.compile(r"^\s*#\s*define\s+([A-Za-z_][A-Za-z0-9_]*)(?!\()\s+(\S.*)$", re.M)


def uapi_ffi(headers: Iterable[Path], include_dirs: Iterable[Path] = ()) -> tuple[Any, dict[str, int]]:
    """(an FFI with the headers' declarations, {macro: value}) for *headers*."""
    import cffi
    headers = [Path(h).resolve() for h in headers]
    cc = _gcc()
    incs = ["-nostdinc", "-I", str(INCLUDE_DIR / "uapi")]
    for d in include_dirs:
        incs += ["-I", str(d)]
    for h in headers:
        incs += ["-I", str(h.parent.parent)]   # <linux/foo.h> next to the header itself
    ffi = cffi.FFI()
    consts: dict[str, int] = {}
    if not headers:
        return ffi, consts
    with tempfile.TemporaryDirectory(prefix="pinfault-uapi-") as tmp:
        tu = Path(tmp, "uapi.c")
        tu.write_text("".join(f'#include "{h}"\n' for h in headers))
        env = dict(os.environ, LC_ALL="C")
        r = subprocess.run([cc, "-E", "-P", *incs, str(tu)], capture_output=True, text=True, env=env)
        if r.returncode:
            raise CDriverBuildError(f"uapi headers do not preprocess:\n{r.stderr[-2000:]}", r.stderr)
        ffi.cdef(r.stdout, packed=False)
        # integer macros: let the compiler evaluate each; drop the ones that are not integers
        names = []
        for h in headers:
            names += [m.group(1) for m in _DEFINE.finditer(h.read_text()) if not m.group(1).startswith("_")]
        names = list(dict.fromkeys(names))
        while names:
            src = "".join(f'#include "{h}"\n' for h in headers)
            src += "".join(f"unsigned long long pf_const_{n} = (unsigned long long)({n});\n" for n in names)
            tu.write_text(src)
            asm = Path(tmp, "uapi.s")
            r = subprocess.run([cc, "-S", "-o", str(asm), *incs, str(tu)], capture_output=True, text=True, env=env)
            if r.returncode == 0:
                consts.update(_read_consts(asm.read_text()))
                break
            bad = set()
            src_lines = src.splitlines()
            for m in re.finditer(r"uapi\.c:(\d+):", r.stderr):
                ln = int(m.group(1)) - 1
                mm = re.search(r"pf_const_(\w+) =", src_lines[ln]) if 0 <= ln < len(src_lines) else None
                if mm:
                    bad.add(mm.group(1))
            if not bad:
                break
            names = [n for n in names if n not in bad]
    return ffi, consts


def _read_consts(asm: str) -> dict[str, int]:
    out: dict[str, int] = {}
    cur = None
    for ln in asm.splitlines():
        m = re.match(r"^pf_const_(\w+):", ln)
        if m:
            cur = m.group(1)
            continue
        m = re.match(r"^\s*\.quad\s+(-?\d+)", ln)
        if cur and m:
            out[cur] = int(m.group(1)) & 0xFFFFFFFFFFFFFFFF
            cur = None
        elif cur and re.match(r"^\s*\.zero\s+8", ln):
            out[cur] = 0
            cur = None
    return out
