"""Boot-time layout: the firmware memory map, zone boundaries, memblock reservations and
CMA placement of a small x86-64 virtual machine.

Kernel: arch/x86/kernel/e820.c, mm/memblock.c, mm/mm_init.c (free_area_init,
find_zone_movable_pfns_for_nodes), kernel/dma/contiguous.c (dma_contiguous_reserve),
mm/cma.c (cma_declare_contiguous), v6.12; QEMU's ``pc`` machine RAM split.

* RAM below the 4 GiB PCI hole: all of it when less than 3.5 GiB, else 3 GiB, with the
  rest from 4 GiB up; the legacy VGA/BIOS hole [640 KiB, 1 MiB) is absent.  With
  ``firmware="seabios"`` SeaBIOS also keeps the top 128 KiB below the hole for itself
  (e820 "reserved") and the kernel takes page 0 out of the usable map
  (``trim_bios_range``), so the first present pfn -- and the DMA zone's start -- is 1,
  as the recorded guests show (tests/conformance).
* Zones: DMA [0, 16 MiB), DMA32 [16 MiB, 4 GiB), Normal above; ZONE_MOVABLE is the top
  ``movablecore`` bytes of the highest populated zone, its start rounded up to
  MAX_ORDER_NR_PAGES (as ``find_zone_movable_pfns_for_nodes`` does for ``movablecore=``).
* Reservations (``boot_reserved="auto"``): pfn 0 (when present), the kernel image at 16 MiB, and the
  memmap (64 bytes per page) allocated top-down from the end of RAM, which therefore lands
  in the top memory block(s) -- the reason the top ZONE_MOVABLE block of a real guest
  cannot be offlined.
* CMA areas are placed top-down inside their ``start``/``end`` bounds (default: below
  4 GiB, like the x86-64 DMA32 limit), pageblock aligned, avoiding reservations, holes,
  ZONE_MOVABLE and each other.
"""

from __future__ import annotations

import dataclasses

from .config import ConfigError, MMConfig, _fmt

PAGE_SHIFT = 12
MiB = 1 << 20
GiB = 1 << 30
PFN_4G = (4 * GiB) >> PAGE_SHIFT
PFN_16M = (16 * MiB) >> PAGE_SHIFT
KERNEL_IMAGE = (16 * MiB >> PAGE_SHIFT, 48 * MiB >> PAGE_SHIFT)
ISA_HOLE = (0x9F, 0x100)
SEABIOS_TOP_PAGES = 32         # SeaBIOS's reservation at the top of low RAM (128 KiB)
STRUCT_PAGE_SIZE = 64
PAGEBLOCK = 512
MAX_ORDER_NR_PAGES = 1024      # 1 << MAX_PAGE_ORDER (10) on x86-64


@dataclasses.dataclass
class Layout:
    memory: list[tuple[int, int]]                 # present pfn ranges, sorted
    zones: dict[int, tuple[int, int]]             # zone idx -> [start, end) span
    reserved: list[tuple[int, int]]               # memblock.reserved, sorted
    cma: list[tuple[str, int, int]]               # (name, base_pfn, count)
    zero_pfn: int


def _subtract(ranges: list[tuple[int, int]], hole: tuple[int, int]) -> list[tuple[int, int]]:
    out = []
    for s, e in ranges:
        if hole[1] <= s or hole[0] >= e:
            out.append((s, e))
            continue
        if s < hole[0]:
            out.append((s, hole[0]))
        if hole[1] < e:
            out.append((hole[1], e))
    return out


def _overlaps(a: tuple[int, int], ranges: list[tuple[int, int]]) -> bool:
    return any(a[0] < e and s < a[1] for s, e in ranges)


def compute_layout(cfg: MMConfig) -> Layout:
    ram_pages = cfg.ram >> PAGE_SHIFT
    low = ram_pages if cfg.ram < (3 * GiB + GiB // 2) else (3 * GiB) >> PAGE_SHIFT
    seabios = cfg.firmware == "seabios"
    first_pfn = 1 if seabios else 0              # trim_bios_range drops page 0 from e820
    memory = _subtract([(first_pfn, low - (SEABIOS_TOP_PAGES if seabios else 0))], ISA_HOLE)
    if ram_pages > low:
        memory.append((PFN_4G, PFN_4G + ram_pages - low))
    end_pfn = memory[-1][1]

    zones: dict[int, tuple[int, int]] = {0: (first_pfn, min(PFN_16M, end_pfn))}
    if low > PFN_16M:
        # A zone spans up to the node's end clamped to the zone's limits, holes included
        # (zone_spanned_pages_in_node): DMA32 reaches 4 GiB when RAM continues above it.
        zones[1] = (PFN_16M, min(end_pfn, PFN_4G))
    zones[2] = (PFN_4G, max(PFN_4G, end_pfn))
    movable = cfg.movablecore >> PAGE_SHIFT
    if movable:
        top = 2 if end_pfn > PFN_4G else 1
        tstart, tend = zones[top]
        # find_zone_movable_pfns_for_nodes: kernelcore runs out `movable` present pages
        # below the end of RAM; the start is then rounded up to MAX_ORDER_NR_PAGES
        mstart = -(-(end_pfn - movable) // MAX_ORDER_NR_PAGES) * MAX_ORDER_NR_PAGES
        if mstart <= tstart:
            raise ConfigError(
                f"movablecore: expected less than the highest zone ({_fmt((tend - tstart) << PAGE_SHIFT)}), "
                f"got {_fmt(cfg.movablecore)}")
        zones[top] = (tstart, mstart)
        zones[3] = (mstart, tend)

    reserved: list[tuple[int, int]] = []
    zero_pfn = KERNEL_IMAGE[0] + 0x800  # empty_zero_page lives in the kernel image's bss
    if cfg.boot_reserved == "auto":
        memmap_pages = -(-ram_pages * STRUCT_PAGE_SIZE // 4096)
        reserved = ([] if seabios else [(0, 1)]) + [KERNEL_IMAGE, (end_pfn - memmap_pages, end_pfn)]
        if low < KERNEL_IMAGE[1] + PAGEBLOCK:
            raise ConfigError(f"ram: expected room above the kernel image, got {_fmt(cfg.ram)}")

    cma: list[tuple[str, int, int]] = []
    taken = list(reserved) + [ISA_HOLE]
    if 3 in zones:
        taken.append(zones[3])
    for spec in cfg.cma:
        count = spec.size >> PAGE_SHIFT
        lo = (spec.start or 0) >> PAGE_SHIFT
        hi = (spec.end >> PAGE_SHIFT) if spec.end else min(PFN_4G, end_pfn)
        base = -1
        for ms, me in reversed(memory):
            top = min(me, hi) & ~(PAGEBLOCK - 1)
            while top - count >= max(ms, lo):
                cand = (top - count, top)
                clash = [r for r in taken if cand[0] < r[1] and r[0] < cand[1]]
                if not clash:
                    base = cand[0]
                    break
                top = min(r[0] for r in clash) & ~(PAGEBLOCK - 1)
            if base >= 0:
                break
        if base < 0:
            raise ConfigError(f"cma[{spec.name!r}]: expected {_fmt(spec.size)} to fit in free memory "
                              f"between {_fmt(lo << PAGE_SHIFT)} and {_fmt(hi << PAGE_SHIFT)}")
        if spec.start is not None and spec.end is None and base != lo:
            # cma=size@base asks for that exact base
            if _overlaps((lo, lo + count), taken) or not any(ms <= lo and lo + count <= me for ms, me in memory):
                raise ConfigError(f"cma[{spec.name!r}]: expected free memory at {_fmt(spec.start)}, got a reserved or absent range")
            base = lo
        cma.append((spec.name, base, count))
        taken.append((base, base + count))
    return Layout(memory, zones, sorted(reserved), cma, zero_pfn)
