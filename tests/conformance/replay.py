"""Replay the conformance scenarios of docs/conformance.md on the fake mm.

Each ``replay_*`` function builds nothing it does not need, runs one scenario through
the model's public API and returns ``{key: value}`` with the same keys and value
vocabulary as a recording (``ok`` / errno name, ``all`` / ``none`` / ``some``,
``intact`` / ``corrupt``).  No outcome is written down here: the expected values come
from the recordings only.

The machine mirrors the probe's QEMU guest: ``-m 4G movablecore=512M
cma=128M@256M-1G`` on a ``pc`` machine (3 GiB below 4 GiB, 1 GiB above), THP in
``madvise`` mode so the 64-page anonymous buffers are made of 4 KiB pages.
"""

from __future__ import annotations

import errno
from typing import Any, Callable

from pytest_pinfault.mm import (F_SEAL_FUTURE_WRITE, F_SEAL_GROW, F_SEAL_SHRINK, F_SEAL_WRITE,
                                FOLL_LONGTERM, FOLL_WRITE, MADV_HUGEPAGE, MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED,
                                MFD_ALLOW_SEALING, MIGRATE_MOVABLE, PAGE_SHIFT, PAGE_SIZE, PROT_READ,
                                PROT_WRITE, FakeMM, MMConfig)
from pytest_pinfault.mm.folio import KIND_ANON

from examples.udmabuf.buggy import PreV611Device
from examples.udmabuf.driver import (SITES, UDMABUF_CREATE, UdmabufDevice,
                                     udmabuf_create)

#: The probe guest's command line, as an MMConfig.  The probe's offline attempt is cut
#: short by an interval timer: a small retry budget stands for that signal (the outcome,
#: EINTR, does not depend on it; the replay time does).
MACHINE = MMConfig(ram="4GiB", movablecore="512MiB", cma="128MiB@256MiB-1GiB", thp="madvise",
                   firmware="seabios", offline_retry_budget=8)

#: Which model of /dev/udmabuf stands for which kernel series (the only place that says so).
UDMABUF_DEVICES: dict[str, type[UdmabufDevice]] = {
    "6.1": PreV611Device,       # pre-v6.11: a page-cache reference per page, no migration
    "6.12": UdmabufDevice,      # v6.11+: memfd_pin_folios(), migrated out of MOVABLE/CMA
}

NR_PAGES = 64                   # buffer size of the pin scenarios (docs/conformance.md)
THP_PAGES = 512                 # the `thp` buffers: one PMD-mapped THP
THP_MECHANISMS = ("iouring", "vmsplice")   # the mechanisms the probe runs on a THP
ERRNO_MEMFD_PAGES = 16          # memfd size of the udmabuf-errno cases


class PlacementError(RuntimeError):
    """The replay could not put the buffer where the scenario wants it (a harness bug:
    the model is deterministic, unlike the real guest where the probe records skip:)."""


def machine_for(series: str) -> MMConfig:
    """The probe guest at the recording's kernel version: ``MMConfig(kernel=series)``
    (a recording of 6.1.176 replays on kernel="6.1", 6.12.117 on "6.12").  A series
    the model has no version for is a LookupError naming it."""
    from pytest_pinfault.mm.config import KERNELS
    if series not in KERNELS:
        raise LookupError(f"recording of kernel series {series!r}: expected one of {KERNELS} "
                          f"(MMConfig.kernel)")
    return MACHINE.replace(kernel=series)


def new_machine(series: str) -> FakeMM:
    """A fresh fake guest of kernel *series* (construction costs well under a
    millisecond), with the udmabuf driver's fault sites declared (never armed: they
    only have to exist)."""
    k = FakeMM(machine_for(series))
    for name, (errnos, meaning) in SITES.items():
        k.faults.declare_site(name, errnos, meaning=meaning)
    return k


def outcome(rc: int) -> str:
    """0 (or any non-negative return) -> ``ok``; ``-EFOO`` -> ``EFOO``."""
    if rc >= 0:
        return "ok"
    return errno.errorcode.get(-rc, f"errno{-rc}")


def udmabuf_device(series: str) -> type[UdmabufDevice]:
    try:
        return UDMABUF_DEVICES[series]
    except KeyError:
        raise LookupError(f"no udmabuf model chosen for kernel series {series!r}: "
                          f"add it to UDMABUF_DEVICES in {__name__}") from None


# ----------------------------------------------------------------------------- layout

def movable_blocks(k: FakeMM) -> list:
    """ZONE_MOVABLE memory blocks, lowest first."""
    return sorted(k.memory_blocks.in_zone("Movable"), key=lambda b: b.start_pfn)


def baseline(k: FakeMM, block: Any) -> str:
    """The probe's baseline pass on one block: offline, and online again at once."""
    rc = block.offline()
    if rc == 0:
        block.online()
    return outcome(rc)


def fake_layout(k: FakeMM, recorded: dict) -> dict[str, Any]:
    """The model's values for the flat layout keys of *recorded* (see
    :func:`layout_keys`)."""
    out: dict[str, Any] = {}
    rec_zones = recorded.get("zones", {})
    for key in layout_keys(recorded):
        if key == "zones":
            out[key] = ",".join(z.name for z in sorted(k.zones.values(), key=lambda z: z.zone_start_pfn)
                                if z.present_pages)
        elif key.startswith("zone."):
            _, name, field = key.split(".")
            z = k.zones.get(name)
            out[key] = None if z is None else {"start_pfn": z.zone_start_pfn, "spanned": z.spanned_pages,
                                                "present": z.present_pages}[field]
        elif key.startswith("cma."):
            _, name, field = key.split(".")
            area = next((a for a in k.cma_areas if a.name == name), None)
            if area is None:
                out[key] = None
            elif field in ("count", "base_pfn"):
                out[key] = getattr(area, field)
            else:
                out[key] = next((z.name for z in k.zones.values() if z.zone_spans_pfn(area.base_pfn)), None)
        elif key == "block_pages":
            blocks = movable_blocks(k) or [k.memory_blocks[i] for i in k.memory_blocks]
            out[key] = blocks[0].nr_pages
        elif key == "baseline.top":
            pfn = _top_baseline_pfn(recorded, rec_zones)
            blk = next((b for b in movable_blocks(k) if b.start_pfn == pfn), None)
            out[key] = f"no movable block at pfn {pfn}" if blk is None else baseline(k, blk)
    return out


def _zone_of(pfn: int, zones: dict) -> str | None:
    for name, z in zones.items():
        if z["start_pfn"] <= pfn < z["start_pfn"] + z["spanned"]:
            return name
    return None


def _top_baseline_pfn(recorded: dict, zones: dict) -> int:
    pfns = [int(p) for p in recorded.get("baseline", {}) if _zone_of(int(p), zones) == "Movable"]
    return max(pfns)


def layout_keys(recorded: dict) -> list[str]:
    """The layout facts compared, named like scenario keys."""
    return list(real_layout(recorded))


def real_layout(recorded: dict) -> dict[str, Any]:
    """The recorded layout flattened to the compared facts: the populated zones' names,
    every zone's start, span and present pages, each CMA area's base, size and the zone
    its base lies in, the memory block size and the baseline outcome of the top
    ZONE_MOVABLE block (the other blocks' baselines vary from boot to boot)."""
    zones = recorded.get("zones", {})
    out: dict[str, Any] = {}
    if zones:
        out["zones"] = ",".join(n for n, z in sorted(zones.items(), key=lambda nz: nz[1]["start_pfn"])
                                if z.get("present", 1))
    for name, z in zones.items():
        for field in ("start_pfn", "spanned", "present"):
            out[f"zone.{name}.{field}"] = z[field]
    for name, area in recorded.get("cma", {}).items():
        out[f"cma.{name}.base_pfn"] = area["base_pfn"]
        out[f"cma.{name}.count"] = area["count"]
        out[f"cma.{name}.zone"] = _zone_of(area["base_pfn"], zones)
    if "block_pages" in recorded:
        out["block_pages"] = recorded["block_pages"]
    if "Movable" in zones and any(_zone_of(int(p), zones) == "Movable" for p in recorded.get("baseline", {})):
        out["baseline.top"] = recorded["baseline"][str(_top_baseline_pfn(recorded, zones))]
    return out


# ----------------------------------------------------------------------------- placement

def _pattern(i: int) -> bytes:
    """Page *i*'s fill: its number and a position-dependent byte ramp."""
    head = f"pinfault page {i:04d}|".encode()
    body = bytes((i * 31 + j * 7) & 0xFF for j in range(PAGE_SIZE - len(head)))
    return head + body


PATTERN = [_pattern(i) for i in range(THP_PAGES)]


class Buffer:
    """A 64-page buffer of *mem* (``anon`` or ``shmem``), or one 2 MiB THP (``thp``:
    anonymous, MADV_HUGEPAGE), placed in *where* (``movable``: one offlinable
    ZONE_MOVABLE block; ``cma``: the CMA area) and filled with :data:`PATTERN`."""

    def __init__(self, k: FakeMM, mem: str, where: str, seals: int = 0) -> None:
        self.k = k
        self.mm = k.current.mm
        self.mem = mem
        self.where = where
        self.nr = THP_PAGES if mem == "thp" else NR_PAGES
        self.size = self.nr * PAGE_SIZE
        self.memfile = None
        self.block = None
        self.cma = k.cma_areas[0] if where == "cma" else None
        self.balloon = None
        if where == "movable":
            self.block = self._soak_bad_movable_blocks()
        elif where != "cma":
            raise ValueError(f"placement: expected 'movable' or 'cma', got {where!r}")
        if mem in ("anon", "thp"):
            self.addr = self.mm.mmap(self.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
            if mem == "thp":
                assert self.addr >= 0 and self.mm.madvise(self.addr, self.size, MADV_HUGEPAGE) == 0
        elif mem == "shmem":
            self.memfile = k.memfd_create("pinfault-buf", MFD_ALLOW_SEALING)
            assert self.memfile.ftruncate(self.size) == 0
            if seals:
                assert self.memfile.add_seals(seals) == 0
            self.addr = self.mm.mmap(self.size, PROT_READ | PROT_WRITE, MAP_SHARED, file=self.memfile)
        else:
            raise ValueError(f"memory: expected 'anon' or 'shmem', got {mem!r}")
        assert self.addr >= 0, self.addr
        with k.steer(where):
            for i in range(self.nr):
                assert self.mm.write(self.addr + (i << PAGE_SHIFT), PATTERN[i]) == PAGE_SIZE
        pfns = self.pfns()
        if where == "movable":
            lo, hi = self.block.start_pfn, self.block.start_pfn + self.block.nr_pages
        else:
            lo, hi = self.cma.base_pfn, self.cma.base_pfn + self.cma.count
        stray = [p for p in pfns if p is None or not lo <= p < hi]
        if stray:
            raise PlacementError(f"{mem} buffer not placed in {where} [{lo:#x}, {hi:#x}): {stray[:4]}")
        self.before = pfns
        if self.balloon is not None:
            self.balloon.release()      # the probe frees its soak before the scenario runs

    def _soak_bad_movable_blocks(self) -> Any:
        """The probe's recipe: a baseline offline/online pass over the ZONE_MOVABLE
        blocks; the free pages of the blocks above the highest good one are taken (new
        movable allocations come from the top), so the buffer lands in that block."""
        k = self.k
        good = [b for b in movable_blocks(k) if baseline(k, b) == "ok"]
        if not good:
            raise PlacementError("no ZONE_MOVABLE block passed the baseline offline pass")
        target = good[-1]
        zone = k.zones["Movable"]
        end = target.start_pfn + target.nr_pages
        k.drain_all_pages(zone)
        leave = zone.free[MIGRATE_MOVABLE].count_range(zone.zone_start_pfn, end)
        self.balloon = k.fill_zone("Movable", leave=leave)
        return target

    def pfns(self) -> list[int | None]:
        """What /proc/self/pagemap shows: the PFN behind each page of the mapping."""
        out = []
        for i in range(self.nr):
            ent = self.mm.lookup(self.addr + (i << PAGE_SHIFT))
            out.append(None if ent is None else ent[0].pfn + ent[1])
        return out

    def moved(self) -> str:
        after = self.pfns()
        if None in after:
            return "unmapped"               # the probe's word when pagemap shows no page
        n = sum(1 for a, b in zip(self.before, after) if a != b)
        return "none" if n == 0 else "all" if n == self.nr else "some"

    def large(self) -> str:
        """``kept`` while every page is still part of a THP, else ``split`` (the probe
        reads KPF_THP from /proc/kpageflags)."""
        ents = [self.mm.lookup(self.addr + (i << PAGE_SHIFT)) for i in range(self.nr)]
        if None in ents:
            return "unmapped"
        return "kept" if all(f.order == 9 and f.kind == KIND_ANON for f, _ in ents) else "split"

    def data(self) -> str:
        for i in range(self.nr):
            if self.mm.read(self.addr + (i << PAGE_SHIFT), PAGE_SIZE) != PATTERN[i]:
                return "corrupt"
        return "intact"

    def probe(self) -> str:
        """``offline`` on the block that held the buffer (online again when it went),
        or a ``cma/<name>/alloc`` of the whole area (freed again when it succeeded;
        the debugfs file turns a failed cma_alloc into ENOMEM)."""
        k = self.k
        if self.where == "movable":
            return baseline(k, self.block)
        page = k.cma_alloc(self.cma, self.cma.count, 0)
        if page is None:
            return "ENOMEM"
        k.cma_release(self.cma, page, self.cma.count)
        return "ok"

    @property
    def probe_key(self) -> str:
        return "offline" if self.where == "movable" else "cma"


# ----------------------------------------------------------------------------- mechanisms

def _pin(flags: int) -> Callable[[FakeMM, Buffer], tuple[int, Callable[[], None]]]:
    def hold(k: FakeMM, buf: Buffer) -> tuple[int, Callable[[], None]]:
        pages: list = []
        n = k.pin_user_pages(buf.addr, buf.nr, flags, pages)
        return n, lambda: k.unpin_user_pages(pages, n) if n > 0 else None
    return hold


def _get(k: FakeMM, buf: Buffer) -> tuple[int, Callable[[], None]]:
    pages: list = []
    n = k.get_user_pages_fast(buf.addr, buf.nr, 0, pages)

    def release() -> None:
        for page in pages[:max(n, 0)]:
            k.put_page(page)
    return n, release


#: Scenario mechanism -> (take the hold: returns (count, release), held by the probe
#: across the offline/CMA attempt?).  gup_test's benchmarks pin and unpin inside the ioctl.
MECHANISMS: dict[str, tuple[Callable[[FakeMM, Buffer], tuple[int, Callable[[], None]]], bool]] = {
    "iouring": (_pin(FOLL_WRITE | FOLL_LONGTERM), True),    # IORING_REGISTER_BUFFERS
    # the probe's gup_test calls pass gup_flags = FOLL_WRITE (conformance/guest/probe.c)
    "gup-longterm": (_pin(FOLL_WRITE | FOLL_LONGTERM), False),  # gup_test PIN_LONGTERM_BENCHMARK
    "gup-pin": (_pin(FOLL_WRITE), False),                   # gup_test PIN_BASIC_TEST (FOLL_PIN)
    "vmsplice": (_get, True),                               # FOLL_GET references in a pipe
    "gup-longterm-held": (_pin(FOLL_WRITE | FOLL_LONGTERM), True),  # PIN_LONGTERM_TEST_START (v6.2+)
}


def replay_pin(series: str, mech: str, mem: str, where: str) -> dict[str, str]:
    """``pin/<mech>/<mem>/<where>``."""
    take, held = MECHANISMS[mech]
    k = new_machine(series)
    buf = Buffer(k, mem, where)
    n, release = take(k, buf)
    out = {"pin": outcome(n) if n <= 0 or n == buf.nr else "short"}
    if not held:
        release()
    out["moved"] = buf.moved()
    out["data"] = buf.data()
    if mem == "thp":
        out["large"] = buf.large()
    if held:
        out[f"{buf.probe_key}_held"] = buf.probe()
        release()
        out[f"{buf.probe_key}_released"] = buf.probe()
    return out


def replay_udmabuf(series: str, where: str) -> dict[str, str]:
    """``udmabuf/<where>``: UDMABUF_CREATE over a sealed shmem memfd placed in *where*."""
    k = new_machine(series)
    buf = Buffer(k, "shmem", where, seals=F_SEAL_SHRINK)
    dev = udmabuf_device(series)(k)
    memfd = buf.memfile.fd
    fd = dev.ioctl(UDMABUF_CREATE, udmabuf_create(memfd=memfd, offset=0, size=buf.size))
    out = {"pin": outcome(fd), "moved": buf.moved(), "data": buf.data()}
    out[f"{buf.probe_key}_held"] = buf.probe()
    if fd >= 0:
        k.close_fd(fd)
    out[f"{buf.probe_key}_released"] = buf.probe()
    return out


# ----------------------------------------------------------------------------- udmabuf errnos

P = PAGE_SIZE
#: case -> (memfd: (size, MFD_ALLOW_SEALING?, seals) or a non-memfd file kind, offset, size)
ERRNO_CASES: dict[str, tuple[Any, int, int]] = {
    "ok": ((16 * P, True, F_SEAL_SHRINK), 0, 16 * P),
    "unaligned-offset": ((16 * P, True, F_SEAL_SHRINK), 1, 15 * P),
    "unaligned-size": ((16 * P, True, F_SEAL_SHRINK), 0, P + 1),
    "size-zero": ((16 * P, True, F_SEAL_SHRINK), 0, 0),
    "no-seals": ((16 * P, True, 0), 0, 16 * P),
    "seal-grow": ((16 * P, True, F_SEAL_GROW), 0, 16 * P),
    "seal-write": ((16 * P, True, F_SEAL_SHRINK | F_SEAL_WRITE), 0, 16 * P),
    "seal-future-write": ((16 * P, True, F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE), 0, 16 * P),
    "no-allow-sealing": ((16 * P, False, 0), 0, 16 * P),
    "beyond-eof": ((16 * P, True, F_SEAL_SHRINK), 16 * P, P),
    "straddle-eof": ((16 * P, True, F_SEAL_SHRINK), 15 * P, 2 * P),
    "over-size-limit": ((65 << 20, True, F_SEAL_SHRINK), 0, 65 << 20),
    "pipe": ("pipe", 0, 16 * P),
    "dev-null": ("/dev/null", 0, 16 * P),
    "bad-fd": (None, 0, 16 * P),
}
BAD_FD = 999


def replay_udmabuf_errno(series: str, case: str) -> dict[str, str]:
    """``udmabuf-errno/<case>``: one UDMABUF_CREATE."""
    if case not in ERRNO_CASES:
        raise LookupError(f"udmabuf-errno case {case!r} has no replay: add it to ERRNO_CASES")
    what, offset, size = ERRNO_CASES[case]
    k = new_machine(series)
    if what is None:
        fd = BAD_FD
        assert k.fd_file(fd) is None
    elif isinstance(what, str):
        fd = k.get_unused_fd_flags(0)
        k.fd_install(fd, k.anon_inode_getfile(what, None, None, 0))
    else:
        length, sealable, seals = what
        memfile = k.memfd_create("udmabuf-errno", MFD_ALLOW_SEALING if sealable else 0)
        assert memfile.ftruncate(length) == 0
        if seals:
            assert memfile.add_seals(seals) == 0
        fd = memfile.fd
    dev = udmabuf_device(series)(k)
    ret = dev.ioctl(UDMABUF_CREATE, udmabuf_create(memfd=fd, offset=offset, size=size))
    if ret >= 0:
        k.close_fd(ret)
    return {"ret": outcome(ret)}


# ----------------------------------------------------------------------------- dispatch

def replay(series: str, scenario: str) -> dict[str, Any]:
    """The fake's outcomes for *scenario* (an id of docs/conformance.md).  The layout
    case needs the recording and is replayed by :func:`fake_layout`."""
    parts = scenario.split("/")
    if parts[0] == "pin" and len(parts) == 4 and parts[1] in MECHANISMS:
        return replay_pin(series, parts[1], parts[2], parts[3])
    if parts[0] == "udmabuf" and len(parts) == 2:
        return replay_udmabuf(series, parts[1])
    if parts[0] == "udmabuf-errno" and len(parts) == 2:
        return replay_udmabuf_errno(series, parts[1])
    raise LookupError(f"scenario {scenario!r} has no replay in {__name__}")
