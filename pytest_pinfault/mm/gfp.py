"""GFP flags and the gfp -> zone / migratetype mapping.

Kernel: include/linux/gfp_types.h, include/linux/gfp.h (gfp_zone, gfp_migratetype),
include/linux/sched/mm.h (current_gfp_context), v6.12.

The public names are :class:`gfp_t` members and the kernel's spellings (``GFP_KERNEL``,
``__GFP_MOVABLE`` ...).  Internally the model works on plain ``int`` values: enum
arithmetic is far too slow for the allocator's hot path.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

__all__ = [
    "gfp_t", "GFP_KERNEL", "GFP_USER", "GFP_HIGHUSER", "GFP_HIGHUSER_MOVABLE",
    "GFP_ATOMIC", "GFP_NOWAIT", "GFP_DMA", "GFP_DMA32", "GFP_TRANSHUGE",
    "GFP_TRANSHUGE_LIGHT", "GFP_NOIO", "GFP_NOFS", "GFP_KERNEL_ACCOUNT",
    "gfp_migratetype", "gfp_zone",
]


class gfp_t(enum.IntFlag):
    """The ``__GFP_*`` bits (values as in v6.12 gfp_types.h)."""

    DMA = 0x01
    HIGHMEM = 0x02
    DMA32 = 0x04
    MOVABLE = 0x08
    RECLAIMABLE = 0x10
    HIGH = 0x20
    IO = 0x40
    FS = 0x80
    ZERO = 0x100
    DIRECT_RECLAIM = 0x400
    KSWAPD_RECLAIM = 0x800
    WRITE = 0x1000
    NOWARN = 0x2000
    RETRY_MAYFAIL = 0x4000
    NOFAIL = 0x8000
    NORETRY = 0x10000
    MEMALLOC = 0x20000
    COMP = 0x40000
    NOMEMALLOC = 0x80000
    HARDWALL = 0x100000
    THISNODE = 0x200000
    ACCOUNT = 0x400000


# Plain-int bits for the model's own use.
_DMA = 0x01
_HIGHMEM = 0x02
_DMA32 = 0x04
_MOVABLE = 0x08
_RECLAIMABLE = 0x10
_HIGH = 0x20
_DIRECT_RECLAIM = 0x400
_NOWARN = 0x2000
_NOFAIL = 0x8000
_COMP = 0x40000

_RECLAIM = gfp_t.DIRECT_RECLAIM | gfp_t.KSWAPD_RECLAIM

# The kernel's spellings.  Names starting with two underscores are name-mangled inside
# class bodies; use the gfp_t members there (gfp_t.MOVABLE).
globals().update({f"__GFP_{m.name}": m for m in gfp_t})
if TYPE_CHECKING:       # the same names, spelled out for type checkers
    __GFP_DMA: gfp_t
    __GFP_HIGHMEM: gfp_t
    __GFP_DMA32: gfp_t
    __GFP_MOVABLE: gfp_t
    __GFP_RECLAIMABLE: gfp_t
    __GFP_HIGH: gfp_t
    __GFP_IO: gfp_t
    __GFP_FS: gfp_t
    __GFP_ZERO: gfp_t
    __GFP_DIRECT_RECLAIM: gfp_t
    __GFP_KSWAPD_RECLAIM: gfp_t
    __GFP_WRITE: gfp_t
    __GFP_NOWARN: gfp_t
    __GFP_RETRY_MAYFAIL: gfp_t
    __GFP_NOFAIL: gfp_t
    __GFP_NORETRY: gfp_t
    __GFP_MEMALLOC: gfp_t
    __GFP_COMP: gfp_t
    __GFP_NOMEMALLOC: gfp_t
    __GFP_HARDWALL: gfp_t
    __GFP_THISNODE: gfp_t
    __GFP_ACCOUNT: gfp_t
# one per gfp_t member, in its order (tests/test_typing.py checks it)
__all__ += [
    "__GFP_DMA", "__GFP_HIGHMEM", "__GFP_DMA32", "__GFP_MOVABLE", "__GFP_RECLAIMABLE",
    "__GFP_HIGH", "__GFP_IO", "__GFP_FS", "__GFP_ZERO", "__GFP_DIRECT_RECLAIM",
    "__GFP_KSWAPD_RECLAIM", "__GFP_WRITE", "__GFP_NOWARN", "__GFP_RETRY_MAYFAIL",
    "__GFP_NOFAIL", "__GFP_NORETRY", "__GFP_MEMALLOC", "__GFP_COMP", "__GFP_NOMEMALLOC",
    "__GFP_HARDWALL", "__GFP_THISNODE", "__GFP_ACCOUNT",
]

GFP_ATOMIC = gfp_t.HIGH | gfp_t.KSWAPD_RECLAIM
GFP_KERNEL = _RECLAIM | gfp_t.IO | gfp_t.FS
GFP_KERNEL_ACCOUNT = GFP_KERNEL | gfp_t.ACCOUNT
GFP_NOWAIT = gfp_t.KSWAPD_RECLAIM | gfp_t.NOWARN
GFP_NOIO = _RECLAIM
GFP_NOFS = _RECLAIM | gfp_t.IO
GFP_USER = _RECLAIM | gfp_t.IO | gfp_t.FS | gfp_t.HARDWALL
GFP_DMA = gfp_t.DMA
GFP_DMA32 = gfp_t.DMA32
GFP_HIGHUSER = GFP_USER | gfp_t.HIGHMEM
GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER | gfp_t.MOVABLE
GFP_TRANSHUGE_LIGHT = (GFP_HIGHUSER_MOVABLE | gfp_t.COMP | gfp_t.NOMEMALLOC | gfp_t.NOWARN) & ~_RECLAIM
GFP_TRANSHUGE = GFP_TRANSHUGE_LIGHT | gfp_t.DIRECT_RECLAIM

# zone indices (enum zone_type order on x86-64)
ZONE_DMA, ZONE_DMA32, ZONE_NORMAL, ZONE_MOVABLE = 0, 1, 2, 3
ZONE_NAMES = ("DMA", "DMA32", "Normal", "Movable")

# migratetypes (enum migratetype, CONFIG_CMA and CONFIG_MEMORY_ISOLATION on)
MIGRATE_UNMOVABLE, MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE = 0, 1, 2
MIGRATE_PCPTYPES = 3
MIGRATE_HIGHATOMIC = 3
MIGRATE_CMA = 4
MIGRATE_ISOLATE = 5
MIGRATE_TYPES = 6
MIGRATETYPE_NAMES = ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "CMA", "Isolate")


def gfp_migratetype(gfp: int) -> int:
    """Migratetype of an allocation: MOVABLE, RECLAIMABLE or UNMOVABLE by its bits.

    Kernel: include/linux/gfp.h:gfp_migratetype (v6.12).
    """
    gfp = int(gfp)
    if gfp & _MOVABLE:
        return MIGRATE_MOVABLE
    if gfp & _RECLAIMABLE:
        return MIGRATE_RECLAIMABLE
    return MIGRATE_UNMOVABLE


def gfp_zone(gfp: int) -> int:
    """Highest zone an allocation may use (the GFP_ZONE_TABLE rules).

    ``__GFP_MOVABLE`` together with ``__GFP_HIGHMEM`` gives ZONE_MOVABLE; ``__GFP_MOVABLE``
    alone or ``__GFP_HIGHMEM`` alone gives ZONE_NORMAL on 64-bit; ``__GFP_DMA`` and
    ``__GFP_DMA32`` select those zones.  Kernel: include/linux/gfp.h:gfp_zone (v6.12).
    """
    gfp = int(gfp)
    if gfp & _DMA:
        return ZONE_DMA
    if gfp & _DMA32:
        return ZONE_DMA32
    if gfp & _MOVABLE and gfp & _HIGHMEM:
        return ZONE_MOVABLE
    return ZONE_NORMAL
