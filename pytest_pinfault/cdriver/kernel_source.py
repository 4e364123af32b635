"""Kernel source files for tests, from Debian's ``linux-source-X.Y`` packages.

``kernel_tree("6.12", ["drivers/dma-buf/udmabuf.c", "include/uapi/linux/udmabuf.h"])``
extracts just those files from ``/usr/src/linux-source-6.12.tar.xz`` (installed by
``apt-get install linux-source-6.12``) into the bridge's cache directory, once per tarball
(keyed by its size and mtime; landed by an atomic rename), and returns the directory that
holds them at their tree paths.  Nothing is ever copied into the project.  When the
package is not installed, :class:`KernelSourceUnavailable` says what to install.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable

from .build import default_cache_dir

__all__ = ["KernelSourceUnavailable", "kernel_tree", "SOURCE_DIR"]

SOURCE_DIR = Path(os.environ.get("PINFAULT_KERNEL_SOURCE_DIR", "/usr/src"))


class KernelSourceUnavailable(Exception):
    """The Debian source package is not installed (or lacks a file)."""


def kernel_tree(version: str, files: Iterable[str], cache_dir: str | os.PathLike[str] | None = None) -> Path:
    files = list(files)
    tarball = SOURCE_DIR / f"linux-source-{version}.tar.xz"
    if not tarball.is_file():
        raise KernelSourceUnavailable(
            f"{tarball} not found: install Debian's linux-source-{version} package "
            f"(apt-get update && apt-get install -y linux-source-{version})")
    st = tarball.stat()
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir().parent / "kernel-source"
    tag = hashlib.sha256("\0".join(sorted(files)).encode()).hexdigest()[:8]
    final = base / f"linux-source-{version}-{st.st_size:x}-{int(st.st_mtime):x}-{tag}"
    top = final / f"linux-source-{version}"
    if all((top / f).is_file() for f in files):
        return top
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".linux-source-{version}-", dir=base))
    try:
        r = subprocess.run(["tar", "-xJf", str(tarball), "-C", str(tmp),
                            *[f"linux-source-{version}/{f}" for f in files]], capture_output=True, text=True)
        if r.returncode:
            raise KernelSourceUnavailable(f"{tarball}: cannot extract {files}: {r.stderr.strip()[-500:]}")
        if all((top / f).is_file() for f in files):    # another worker finished first
            return top
        if final.exists():                                # a broken earlier attempt: move it aside
            os.rename(final, Path(tempfile.mkdtemp(prefix=".stale-", dir=base)) / "old")
        try:
            os.rename(tmp, final)
        except OSError:
            if not all((top / f).is_file() for f in files):   # pragma: no cover
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return top
