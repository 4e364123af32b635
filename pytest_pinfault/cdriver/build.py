"""Compile a driver's C source against the bridge's kernel headers, with a cache.

The driver ``.c`` file is compiled unmodified with the system ``gcc`` (``-nostdinc``,
our ``include/`` first, the caller's include directories after it), linked with the two
runtime halves into one shared object, and stored in a cache directory keyed by a hash of
the source, every header the build can see, the runtime sources, the flags and the
compiler's version: a run compiles each driver once.  Builds land by an atomic rename,
so concurrent pytest-xdist workers never see half a cache entry.

Cache directory: the ``cache_dir`` argument, else ``$PINFAULT_CDRIVER_CACHE``, else
``$XDG_CACHE_HOME/pytest-pinfault/cdriver`` (``~/.cache/...``).

A kernel API the headers lack is a :class:`MissingKernelAPI` naming each symbol and the
driver line that used it (parsed from gcc's and ld's diagnostics), not gcc's output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["CDriverBuildError", "MissingKernelAPI", "MissingSymbol", "Built", "build_driver",
           "default_cache_dir", "INCLUDE_DIR", "RUNTIME_DIR"]

HERE = Path(__file__).resolve().parent
INCLUDE_DIR = HERE / "include"
RUNTIME_DIR = HERE / "runtime"

#: flags every driver is built with: debug info for crash lines (DWARF 4: addr2line of
#: binutils 2.40 misnames header files in gcc 12's DWARF 5 line tables), frame pointers for the
#: crash backtrace, no optimisation so lines are exact
BASE_CFLAGS = ("-D__KERNEL__", "-O0", "-g", "-gdwarf-4", "-fPIC", "-fno-omit-frame-pointer", "-fno-strict-aliasing",
               "-fno-common", "-std=gnu11", "-Wno-unused-function", "-Wno-unused-variable",
               "-Werror=implicit-function-declaration", "-Werror=implicit-int",
               "-Werror=incompatible-pointer-types", "-Werror=int-conversion")


class CDriverBuildError(Exception):
    """The driver did not compile or link; ``diagnostics`` holds gcc's errors."""

    def __init__(self, message: str, diagnostics: str = "") -> None:
        super().__init__(message)
        self.diagnostics = diagnostics


@dataclasses.dataclass(frozen=True)
class MissingSymbol:
    """One kernel API the bridge lacks: ``symbol``, what it is (``function``,
    ``identifier``, ``type``, ``struct``, ``member``, ``header``), and where the driver
    used it."""

    symbol: str
    kind: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.symbol} ({self.kind}) used at {self.file}:{self.line}"


class MissingKernelAPI(CDriverBuildError):
    """The driver uses kernel API the bridge does not provide; ``missing`` lists each."""

    def __init__(self, source: str, missing: list[MissingSymbol], diagnostics: str) -> None:
        lines = "\n".join(f"  {m}" for m in missing)
        super().__init__(
            f"{source}: the C-driver bridge lacks {len(missing)} kernel API(s) this driver uses:\n{lines}\n"
            f"(add them to pytest_pinfault/cdriver/include/pinfault/kapi.h and the runtime; see docs/cdriver.md)",
            diagnostics)
        self.missing = missing


@dataclasses.dataclass(frozen=True)
class Built:
    """A built driver: the shared object, its function symbols (offset -> name), the
    module glue's data symbols (``__pf_*`` name -> offset) and whether this call
    compiled it (False: taken from the cache)."""

    so_path: Path
    source: Path
    symbols: dict[int, str]
    compiled: bool
    key: str
    data_symbols: dict[str, int] = dataclasses.field(default_factory=dict)


def default_cache_dir() -> Path:
    """Where compiled drivers are cached: ``$PINFAULT_CDRIVER_CACHE``, else
    ``$XDG_CACHE_HOME/pytest-pinfault/cdriver`` (``~/.cache`` when unset)."""
    env = os.environ.get("PINFAULT_CDRIVER_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-pinfault" / "cdriver"


def _gcc() -> str:
    cc = os.environ.get("PINFAULT_CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise CDriverBuildError("no C compiler: the C-driver bridge needs gcc on PATH (or PINFAULT_CC)")
    return cc


_VERSION_CACHE: dict[str, str] = {}


def _cc_version(cc: str) -> str:
    v = _VERSION_CACHE.get(cc)
    if v is None:
        v = _VERSION_CACHE[cc] = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    return v


def _hash_tree(h: "hashlib._Hash", root: Path, suffixes: tuple[str, ...]) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in suffixes:
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(p.read_bytes())


def _flags(defines: Mapping[str, object], cflags: Iterable[str]) -> list[str]:
    out = list(BASE_CFLAGS)
    for k, v in sorted(defines.items()):
        out.append(f"-D{k}" if v is None or v is True else f"-D{k}={v}")
    out.extend(cflags)
    return out


def build_driver(source: str | os.PathLike[str], *, defines: Mapping[str, object] | None = None,
                 include_dirs: Iterable[str | os.PathLike[str]] = (), cflags: Iterable[str] = (),
                 cache_dir: str | os.PathLike[str] | None = None, coverage: bool = False) -> Built:
    """Build (or fetch from the cache) the shared object for *source*.

    ``defines`` become ``-D`` flags (``None``/``True``: defined without a value);
    ``include_dirs`` are searched after the bridge's own headers (a driver's uapi
    header, for instance).  ``coverage`` builds the driver with gcc's line coverage
    (``--coverage``; ``driver.gcno`` lands next to the object) for the error-path
    report.  Raises :class:`MissingKernelAPI` or
    :class:`CDriverBuildError`."""
    src = Path(source).resolve()
    if not src.is_file():
        raise CDriverBuildError(f"C driver source not found: {source}")
    incs = [Path(d).resolve() for d in include_dirs]
    flags = _flags(defines or {}, cflags) + (["--coverage"] if coverage else [])
    cc = _gcc()
    h = hashlib.sha256()
    h.update(b"pinfault-cdriver-3\0" + _cc_version(cc).encode())
    h.update("\0".join(flags).encode())
    h.update(src.read_bytes())
    _hash_tree(h, INCLUDE_DIR, (".h",))
    _hash_tree(h, RUNTIME_DIR, (".h", ".c"))
    for d in incs:
        h.update(str(d).encode())
        if d.is_dir():
            _hash_tree(h, d, (".h",))
    key = h.hexdigest()[:24]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = cache / f"{src.stem}-{key}"
    so = final / "driver.so"
    if so.is_file() and (final / "symbols.json").is_file() and (final / "lines.json").is_file():
        return Built(so, src, _load_symbols(final), False, key, _load_data_symbols(final))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{src.stem}-", dir=cache))
    try:
        _compile(cc, src, incs, flags, tmp, coverage)
        functions, data = _nm(tmp / "driver.so")
        (tmp / "lines.json").write_text(json.dumps(_line_table(tmp / "driver.so", src)))
        (tmp / "symbols.json").write_text(json.dumps({"functions": {str(k): v for k, v in functions.items()},
                                                      "data": data}))
        try:
            os.rename(tmp, final)
        except OSError:
            if not (so.is_file() and (final / "symbols.json").is_file()):   # pragma: no cover
                raise
            shutil.rmtree(tmp, ignore_errors=True)      # another worker won the race
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Built(so, src, _load_symbols(final), True, key, _load_data_symbols(final))


def _load_symbols(d: Path) -> dict[int, str]:
    return {int(k): v for k, v in json.loads((d / "symbols.json").read_text())["functions"].items()}


def _load_data_symbols(d: Path) -> dict[str, int]:
    return dict(json.loads((d / "symbols.json").read_text())["data"])


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LC_ALL="C", LANG="C")
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)


def _compile(cc: str, src: Path, incs: list[Path], flags: list[str], out: Path, coverage: bool = False) -> None:
    kinc = ["-nostdinc", "-I", str(INCLUDE_DIR)] + [a for d in incs for a in ("-I", str(d))]
    rt = ["-I", str(RUNTIME_DIR)]
    steps = [
        ([cc, *flags, *kinc, "-c", str(src), "-o", str(out / "driver.o")], True),
        ([cc, *BASE_CFLAGS, "-nostdinc", "-I", str(INCLUDE_DIR), *rt, "-c", str(RUNTIME_DIR / "kruntime.c"),
          "-o", str(out / "kruntime.o")], False),
        ([cc, "-O1", "-g", "-gdwarf-4", "-fPIC", "-fno-omit-frame-pointer", *rt,
          *(["-DPF_COVERAGE"] if coverage else []), "-c", str(RUNTIME_DIR / "trampoline.c"),
          "-o", str(out / "trampoline.o")], False),
    ]
    for cmd, is_driver in steps:
        r = _run(cmd, out)
        if r.returncode:
            if is_driver:
                missing = parse_missing(r.stderr, src)
                if missing:
                    raise MissingKernelAPI(str(src), missing, r.stderr)
                raise CDriverBuildError(f"{src}: does not compile against the bridge's headers:\n"
                                        + _first_errors(r.stderr), r.stderr)
            raise CDriverBuildError(f"the C-driver runtime does not compile:\n{_first_errors(r.stderr)}",
                                    r.stderr)   # pragma: no cover - a broken install
    r = _run([cc, "-shared", "-o", str(out / "driver.so"), str(out / "driver.o"), str(out / "kruntime.o"),
              str(out / "trampoline.o"), "-Wl,-z,defs", "-ldl", *(["--coverage"] if coverage else [])], out)
    if r.returncode:
        missing = parse_missing(r.stderr, src)
        if missing:
            raise MissingKernelAPI(str(src), missing, r.stderr)
        raise CDriverBuildError(f"{src}: does not link:\n{_first_errors(r.stderr)}", r.stderr)


def _first_errors(stderr: str, n: int = 12) -> str:
    lines = [ln for ln in stderr.splitlines() if "error" in ln]
    return "\n".join(lines[:n]) or stderr[-2000:]


_LOC = r"(?P<file>[^:\s][^:]*):(?P<line>\d+):(?:\d+:)? "
_PATTERNS = [
    (re.compile(_LOC + r"(?:error|warning): implicit declaration of function '(?P<sym>[^']+)'"), "function"),
    (re.compile(_LOC + r"error: '(?P<sym>[^']+)' undeclared"), "identifier"),
    (re.compile(_LOC + r"error: unknown type name '(?P<sym>[^']+)'"), "type"),
    (re.compile(_LOC + r"error: invalid use of undefined type '(?P<sym>struct [^']+)'"), "struct"),
    (re.compile(_LOC + r"error: dereferencing pointer to incomplete type '(?P<sym>struct [^']+)'"), "struct"),
    (re.compile(_LOC + r"error: field '[^']+' has incomplete type"), "struct"),
    (re.compile(_LOC + r"error: storage size of '[^']+' isn't known"), "struct"),
    (re.compile(_LOC + r"error: '(?P<sym>(?:struct|union) [^']+)' has no member named '(?P<member>[^']+)'"), "member"),
    (re.compile(_LOC + r"fatal error: (?P<sym>[^:]+\.h): No such file or directory"), "header"),
    (re.compile(_LOC + r"undefined reference to [`'](?P<sym>[^'`]+)'"), "function"),
    (re.compile(_LOC + r"error: '(?P<sym>[^']+)' declared as function returning"), "type"),
]
_LD_NOLINE = re.compile(r"undefined reference to [`'](?P<sym>[^'`]+)'")


def parse_missing(stderr: str, src: Path) -> list[MissingSymbol]:
    """The kernel APIs gcc/ld reported missing, each with the first driver line using it."""
    out: dict[tuple[str, str], MissingSymbol] = {}
    name = src.name
    for ln in stderr.splitlines():
        for pat, kind in _PATTERNS:
            m = pat.search(ln)
            if not m:
                continue
            gd = m.groupdict()
            sym = gd.get("sym") or "?"
            if kind == "member":
                sym = f"{sym}.{gd['member']}"
            if kind == "struct" and sym == "?":
                sym = "(a struct the bridge does not define)"
            file = gd["file"]
            if Path(file).name != name and kind != "header":
                # a bridge header reported it: keep looking for the driver's line
                file = file
            out.setdefault((sym, kind), MissingSymbol(sym, kind, file, int(gd["line"])))
            break
        else:
            m = _LD_NOLINE.search(ln)
            if m and (m.group("sym"), "function") not in out:
                out[(m.group("sym"), "function")] = MissingSymbol(m.group("sym"), "function", name, 0)
    return list(out.values())


def _line_table(so: Path, src: Path) -> list[list[Any]]:
    """The driver's own line table, ``[[offset, line], ...]`` sorted by offset, for lines
    of the driver's source file (objdump's decoded DWARF line program); lines of the
    bridge's headers inlined into the driver are left out."""
    r = _run(["objdump", "--dwarf=decodedline", str(so)], so.parent)
    out: list[list[Any]] = []
    cu = ""
    for ln in r.stdout.splitlines():
        parts = ln.split()
        if len(parts) == 1 and ln.endswith(":"):
            cu = Path(ln[:-1]).name
            continue
        if cu != src.name or len(parts) < 3 or not parts[1].isdigit() or not parts[2].startswith("0x"):
            continue
        if parts[0] == src.name:
            out.append([int(parts[2], 16), int(parts[1])])
    out.sort()
    return out


def load_line_table(so: Path) -> list[list[Any]]:
    p = so.parent / "lines.json"
    return json.loads(p.read_text()) if p.is_file() else []


def _nm(so: Path) -> tuple[dict[int, str], dict[str, int]]:
    """Function symbols (local ones too) by offset, for naming entry points and frames;
    the module glue's data symbols (``__pf_*``) by name."""
    r = _run(["nm", "--defined-only", str(so)], so.parent)
    funcs: dict[int, str] = {}
    data: dict[str, int] = {}
    for ln in r.stdout.splitlines():
        parts = ln.split()
        if len(parts) != 3:
            continue
        if parts[1] in "tT":
            funcs.setdefault(int(parts[0], 16), parts[2])
        elif parts[2].startswith("__pf_"):
            data[parts[2]] = int(parts[0], 16)
    return funcs, data
