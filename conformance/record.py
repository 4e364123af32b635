#!/usr/bin/env python3
"""Record how real Linux kernels pin pages: build a small kernel per series, boot it
under QEMU (TCG) with the guest probe, and write ``tests/conformance/linux-<series>.json``.

    python conformance/record.py [--series 6.1 6.12] [--work DIR] [--no-install]
                                 [--keep-going] [--timeout SECONDS] [--check]
                                 [--source-version SERIES=VERSION]

Per series: install the pinned ``linux-source-<series>`` and the build/boot tools with
apt-get (unless ``--no-install``); unpack the source into ``<work>/src-<series>-<version>``;
``make tinyconfig`` + ``conformance/kernel.config`` + ``olddefconfig``; ``make bzImage``
(skipped when the .config hash matches the tree's stamp); build the static probe and an
initramfs (busybox + ``conformance/guest/init`` + ``/probe``); boot it; parse the ``PF``
lines (docs/conformance.md); print the qualitative diff against the committed file and
overwrite it (``--check``: compare only).

Exit status: 0 recorded (or unchanged with ``--check``); 1 a failed recording or, with
``--check``, a qualitative difference; 77 skipped (no apt-get / mirror / QEMU, install
failed: the environment cannot record, nothing was wrong with the kernel); 2 bad usage.
Python 3 standard library only; the work dir defaults to
``~/.cache/pytest-pinfault-conformance`` (``$PINFAULT_CONFORMANCE_WORK`` overrides).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from pytest_pinfault.conformance import (ConformanceError, diff_results, dump_result,  # noqa: E402
                                         load_result, parse_console)

# The pinned kernel sources, one per series (docs/conformance.md "Recording" lists them too).
PINS = {
    "6.1": ("linux-source-6.1", "6.1.176-1"),
    "6.12": ("linux-source-6.12", "6.12.117-1~deb12u1"),
}
TOOLS = ["qemu-system-x86", "busybox-static", "flex", "bison", "cpio", "libelf-dev", "bc", "xz-utils",
         "gcc", "make", "libc6-dev"]
MEMORY, SMP, ACCEL = "4G", 1, "tcg"
APPEND = ("console=ttyS0 movablecore=512M cma=128M@256M-1G transparent_hugepage=madvise "
          "panic=-1 quiet loglevel=4")
QEMU = ["qemu-system-x86_64", "-accel", ACCEL, "-machine", "pc", "-cpu", "qemu64", "-smp", str(SMP),
        "-m", MEMORY, "-nographic", "-no-reboot"]
FRAGMENT = REPO / "conformance" / "kernel.config"
GUEST = REPO / "conformance" / "guest"
BUSYBOX = Path("/bin/busybox")
APPLETS = ["sh", "mount", "mkdir", "reboot", "cat", "echo", "sleep"]
EXIT_SKIP = 77


class Skip(Exception):
    """The environment cannot record (exit 77)."""


class Failure(Exception):
    """A recording failed (exit 1)."""


def say(msg: str) -> None:
    print(msg, flush=True)


def tail(text: str, n: int = 40) -> str:
    return "\n".join(text.splitlines()[-n:])


def run(cmd, timeout: float, *, log: Path | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd`` bounded by ``timeout``; output to ``log`` (appended) or captured as text."""
    try:
        if log is not None:
            with open(log, "a") as fh:
                fh.write(f"\n$ {' '.join(map(str, cmd))}\n")
                fh.flush()
                proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=timeout, **kw)
        else:
            proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                  timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise Failure(f"timed out after {timeout:.0f}s: {' '.join(map(str, cmd))}") from None
    except OSError as exc:
        raise Failure(f"cannot run {cmd[0]}: {exc}") from None
    if check and proc.returncode != 0:
        out = tail(log.read_text(errors="replace")) if log is not None else tail(proc.stdout + proc.stderr)
        raise Failure(f"exit {proc.returncode}: {' '.join(map(str, cmd))}\n{out}")
    return proc


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- packages -----------------------------------------------------------------------------

def installed_version(pkg: str) -> str | None:
    proc = run(["dpkg-query", "-W", "-f=${Status} ${Version}", pkg], 60, check=False)
    words = proc.stdout.split()
    return words[-1] if proc.returncode == 0 and "installed" in words[:3] else None


def pick_version(pkg: str, pinned: str) -> str:
    """The pinned version if apt knows it, else the candidate (said out loud)."""
    out = run(["apt-cache", "policy", pkg], 120, check=False).stdout
    known = re.findall(r"^\s+(?:\*\*\*\s+)?(\S+)\s+\d+\s*$", out, re.M)
    if pinned in known:
        return pinned
    cand = re.search(r"Candidate:\s*(\S+)", out)
    if not cand or cand.group(1) == "(none)":
        raise Failure(f"apt knows no version of {pkg}")
    say(f"NOTE: {pkg}={pinned} is not available; using the candidate {cand.group(1)} "
        f"(the diff against the committed result shows whether anything changed)")
    return cand.group(1)


def install(series: list[str]) -> None:
    wanted = {PINS[s][0]: PINS[s][1] for s in series}
    if not (shutil.which("apt-get") and shutil.which("dpkg-query")):
        raise Skip("apt-get not found (install the tools by hand and use --no-install)")
    if all(installed_version(p) for p in TOOLS) and all(installed_version(p) == v for p, v in wanted.items()):
        say("packages: all installed at the pinned versions")
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in ("install", "update+install"):
        try:
            if attempt == "update+install":
                say("packages: install failed, running apt-get update")
                run(["apt-get", "update"], 900, env=env)
            pkgs = [f"{p}={pick_version(p, v)}" for p, v in wanted.items()]
            say(f"packages: apt-get install {' '.join(TOOLS + pkgs)}")
            run(["apt-get", "install", "-y", "--no-install-recommends", "--allow-downgrades", *TOOLS, *pkgs], 1800,
                env=env)
            return
        except Failure as exc:
            last = exc
    raise Skip(f"apt-get install failed: {last}")


def require_tools(series: list[str]) -> None:
    missing = [t for t in ("qemu-system-x86_64", "gcc", "make", "flex", "bison", "bc", "xz", "timeout", "dpkg-query")
               if not shutil.which(t)]
    missing += [str(p) for p in [BUSYBOX] + [tarball(s) for s in series] if not p.exists()]
    if missing:
        raise Skip(f"missing: {', '.join(missing)}")


def tarball(series: str) -> Path:
    return Path(f"/usr/src/linux-source-{series}.tar.xz")


# --- kernel -------------------------------------------------------------------------------

def make_running_in(src: Path) -> bool:
    proc = run(["pgrep", "-f", "make.*bzImage"], 30, check=False)
    real = str(src.resolve())
    for pid in proc.stdout.split():
        try:
            cwd = os.path.realpath(f"/proc/{pid}/cwd")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd == real or real in cmdline:
            return True
    return False


def fragment_assignments() -> list[str]:
    return [ln.strip() for ln in FRAGMENT.read_text().splitlines() if re.match(r"\s*CONFIG_\w+=", ln)]


def build_kernel(series: str, version: str, work: Path) -> tuple[Path, str, str]:
    """Unpack/configure/build; returns (bzImage, config sha256, make kernelrelease)."""
    src = work / f"src-{series}-{version}"
    if not src.exists():
        say(f"[{series}] unpacking {tarball(series)} into {src}")
        tmp = work / f".unpack-{series}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        run(["tar", "-xJf", str(tarball(series)), "-C", str(tmp)], 1200)
        (top,) = tmp.iterdir()
        top.rename(src)
        tmp.rmdir()
    if make_running_in(src):
        raise Failure(f"a 'make bzImage' is running in {src}; wait for it to finish")
    log = work / f"build-{series}.log"
    log.write_text("")
    config = src / ".config"
    old = (config.read_bytes(), config.stat()) if config.exists() else None
    run(["make", "tinyconfig"], 600, cwd=src, log=log)
    run(["scripts/kconfig/merge_config.sh", "-m", ".config", str(FRAGMENT)], 600, cwd=src, log=log)
    run(["make", "olddefconfig"], 600, cwd=src, log=log)
    data = config.read_bytes()
    unchanged = old is not None and old[0] == data
    if unchanged:   # keep the old timestamp so that make sees nothing new
        os.utime(config, ns=(old[1].st_atime_ns, old[1].st_mtime_ns))
    have = set(data.decode().splitlines())
    missing = [a for a in fragment_assignments() if a not in have]
    if missing:
        raise Failure(f"[{series}] .config lacks (dependencies not met?): {' '.join(missing)}")
    digest = sha256(data)
    bz, stamp = src / "arch/x86/boot/bzImage", src / ".pinfault-config.sha256"
    fresh = bz.exists() and ((stamp.exists() and stamp.read_text().strip() == digest)
                             or (not stamp.exists() and unchanged and bz.stat().st_mtime >= config.stat().st_mtime))
    if fresh:
        say(f"[{series}] bzImage up to date for .config {digest[:12]}")
    else:
        say(f"[{series}] make -j{os.cpu_count()} bzImage (3-4 minutes on 2 cores; log {log})")
        t0 = time.monotonic()
        stamp.unlink(missing_ok=True)
        run(["make", f"-j{os.cpu_count() or 1}", "bzImage"], 3600, cwd=src, log=log)
        say(f"[{series}] built in {time.monotonic() - t0:.0f}s")
    stamp.write_text(digest + "\n")
    release = run(["make", "-s", "kernelrelease"], 120, cwd=src).stdout.strip()
    return bz, digest, release


# --- guest --------------------------------------------------------------------------------

def cpio_newc(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """A newc archive of (name, mode, data, (rdev major, minor)); root-owned, mtime 0."""
    out = io.BytesIO()

    def pad():
        out.write(b"\0" * (-out.tell() % 4))

    for ino, (name, mode, data, rdev) in enumerate(entries + [("TRAILER!!!", 0, b"", (0, 0))], 1):
        fields = [ino, mode, 0, 0, 2 if mode & 0o040000 else 1, 0, len(data), 0, 0, *rdev, len(name) + 1, 0]
        out.write(b"070701" + "".join(f"{f:08x}" for f in fields).encode() + name.encode() + b"\0")
        pad()
        out.write(data)
        pad()
    return out.getvalue()


def build_guest(work: Path) -> Path:
    probe_c, init = GUEST / "probe.c", GUEST / "init"
    for f in (probe_c, init):
        if not f.exists():
            raise Failure(f"{f} is missing")
    probe = work / "probe"
    run(["gcc", "-static", "-O2", "-Wall", "-o", str(probe), str(probe_c)], 300)
    listed = run([str(BUSYBOX), "--list"], 30, check=False).stdout.split()
    applets = sorted(set(APPLETS) | {a for a in listed if re.fullmatch(r"[\w.\[-]+", a)} - {"busybox"})
    entries = [(d, 0o040755, b"", (0, 0)) for d in ("bin", "dev", "proc", "sys", "tmp")]
    entries.append(("dev/console", 0o020600, b"", (5, 1)))
    entries.append(("bin/busybox", 0o100755, BUSYBOX.read_bytes(), (0, 0)))
    entries += [(f"bin/{a}", 0o120777, b"busybox", (0, 0)) for a in applets]
    entries.append(("init", 0o100755, init.read_bytes(), (0, 0)))
    entries.append(("probe", 0o100755, probe.read_bytes(), (0, 0)))
    initrd = work / "initramfs.cpio.gz"
    initrd.write_bytes(gzip.compress(cpio_newc(entries), mtime=0))
    return initrd


def qemu_version() -> str:
    out = run(["qemu-system-x86_64", "--version"], 30).stdout
    return out.splitlines()[0].removeprefix("QEMU emulator version ").strip()


def boot(series: str, bz: Path, initrd: Path, work: Path, timeout: int) -> str:
    log = work / f"console-{series}.log"
    cmd = ["timeout", str(timeout), *QEMU, "-kernel", str(bz), "-initrd", str(initrd), "-append", APPEND]
    say(f"[{series}] booting (console log {log})")
    t0 = time.monotonic()
    with open(log, "wb") as fh:
        try:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=timeout + 60)
        except subprocess.TimeoutExpired:
            raise Failure(f"[{series}] QEMU did not exit") from None
    text = log.read_bytes().decode(errors="replace")
    say(f"[{series}] QEMU exited {proc.returncode} after {time.monotonic() - t0:.1f}s")
    if proc.returncode != 0 or not re.search(r"^PF done\r?$", text, re.M):
        why = "timed out" if proc.returncode == 124 else f"exit {proc.returncode}"
        raise Failure(f"[{series}] boot failed ({why}, 'PF done' {'seen' if 'PF done' in text else 'missing'}); "
                      f"console tail:\n{tail(text)}")
    return text


# --- one series ---------------------------------------------------------------------------

def record(series: str, work: Path, timeout: int, check: bool, initrd: Path) -> bool:
    """Record one series; returns False when --check found a difference."""
    pkg = PINS[series][0]
    version = installed_version(pkg)
    if version is None:
        raise Skip(f"{pkg} is not installed")
    if version != PINS[series][1]:
        say(f"NOTE: {pkg} {version} installed, pinned {PINS[series][1]}")
    bz, config_sha, kernelrelease = build_kernel(series, version, work)
    text = boot(series, bz, initrd, work, timeout)
    try:
        result = parse_console(text)
    except ConformanceError as exc:
        raise Failure(f"[{series}] {exc}") from None
    banner = re.search(r"Linux version (\S+)", text)
    result["kernel"] = {"series": series, "release": banner.group(1) if banner else kernelrelease,
                        "source_package": f"{pkg} {version}", "config_sha256": config_sha,
                        "fragment_sha256": sha256(FRAGMENT.read_bytes()), "cmdline": APPEND}
    result["machine"] = {"qemu": qemu_version(), "memory": MEMORY, "smp": SMP, "accel": ACCEL}
    result["probe"] = {"probe_c_sha256": sha256((GUEST / "probe.c").read_bytes()),
                       "init_sha256": sha256((GUEST / "init").read_bytes())}
    path = REPO / "tests" / "conformance" / f"linux-{series}.json"
    if path.exists():
        diff = diff_results(load_result(path), result)
        say(f"[{series}] against {path.relative_to(REPO)}: "
            + ("qualitatively unchanged" if not diff else "\n  " + "\n  ".join(diff)))
    else:
        diff = ["(no committed result)"]
        say(f"[{series}] no committed {path.relative_to(REPO)}")
    if check:
        return not diff
    path.parent.mkdir(parents=True, exist_ok=True)
    dump_result(result, path)
    say(f"[{series}] wrote {path.relative_to(REPO)}")
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Record real-kernel pinning behaviour under QEMU into tests/conformance/linux-<series>.json.",
        epilog="Exit status: 0 ok, 1 failure (or a --check difference), 77 skipped (environment cannot record).")
    ap.add_argument("--series", nargs="+", choices=sorted(PINS), default=list(PINS), help="kernel series")
    ap.add_argument("--work", type=Path,
                    default=Path(os.environ.get("PINFAULT_CONFORMANCE_WORK",
                                                Path.home() / ".cache" / "pytest-pinfault-conformance")),
                    help="work dir for sources, builds and logs (env PINFAULT_CONFORMANCE_WORK)")
    ap.add_argument("--no-install", action="store_true", help="do not run apt-get; skip if something is missing")
    ap.add_argument("--keep-going", action="store_true", help="record the other series after a failure")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per QEMU boot (default 900)")
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 when the new recording differs qualitatively from the committed one")
    ap.add_argument("--source-version", action="append", default=[], metavar="SERIES=VERSION",
                    help="record another Debian version of a series' linux-source package than the pinned "
                         "one (for example 6.1=6.1.192-2, a newer point release); combine with --check to "
                         "see whether it behaves the same")
    args = ap.parse_args(argv)
    for item in args.source_version:
        series, sep, version = item.partition("=")
        if not sep or series not in PINS or not version:
            ap.error(f"--source-version: expected SERIES=VERSION with SERIES one of {sorted(PINS)}, got {item!r}")
        PINS[series] = (PINS[series][0], version)
    work = args.work.expanduser()
    t0 = time.monotonic()
    ok = True
    try:
        if not args.no_install:
            install(args.series)
        require_tools(args.series)
        work.mkdir(parents=True, exist_ok=True)
        initrd = build_guest(work)
        for series in args.series:
            try:
                ok = record(series, work, args.timeout, args.check, initrd) and ok
            except Failure as exc:
                say(f"FAIL: {exc}")
                ok = False
                if not args.keep_going:
                    break
    except Skip as exc:
        say(f"SKIP: {exc}")
        return EXIT_SKIP
    except Failure as exc:
        say(f"FAIL: {exc}")
        return 1
    say(f"done in {time.monotonic() - t0:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
