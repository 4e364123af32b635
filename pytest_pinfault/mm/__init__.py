"""The fake kernel memory manager.  Pure Python: never imports pytest.

``from pytest_pinfault.mm import FakeMM, MMConfig, GFP_KERNEL, MIGRATE_CMA, ...``
"""

from . import gfp as _gfp
from .cma import CMA
from .config import CMASpec, ConfigError, MMConfig, QUIRKS, parse_size
from .fakemm import KERNEL_VERSION, FakeMM, Out
from .folio import GUP_PIN_COUNTING_BIAS, PAGE_SHIFT, PAGE_SIZE, Folio, Page, page_folio
from .gfp import *  # noqa: F401,F403  (GFP_*, gfp_t, zone and migratetype names)
from .gfp import (MIGRATE_CMA, MIGRATE_HIGHATOMIC, MIGRATE_ISOLATE, MIGRATE_MOVABLE,
                  MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE, ZONE_DMA, ZONE_DMA32, ZONE_MOVABLE,
                  ZONE_NORMAL)
from .hugetlb import HState
from .memory_hotplug import MemoryBlock
from .migrate import (MIGRATE_ASYNC, MIGRATE_SYNC, MIGRATE_SYNC_LIGHT, MR_COMPACTION,
                      MR_CONTIG_RANGE, MR_LONGTERM_PIN, MR_MEMORY_HOTPLUG, MR_SYSCALL,
                      NR_MAX_MIGRATE_PAGES_RETRY, NUMA_NO_NODE, MigrationTargetControl)
from .mmzone import MAX_PAGE_ORDER, Zone, pageblock_nr_pages, pageblock_order
from .sched import PF_MEMALLOC_PIN, Task
from .bug import KernelWarning

# the kernel's __GFP_* spellings (created dynamically in gfp.py)
globals().update({k: v for k, v in vars(_gfp).items() if k.startswith("__GFP_")})

__all__ = [
    "FakeMM", "MMConfig", "CMASpec", "ConfigError", "QUIRKS", "parse_size", "Out",
    "KERNEL_VERSION", "Folio", "Page", "page_folio", "GUP_PIN_COUNTING_BIAS", "PAGE_SIZE",
    "PAGE_SHIFT", "CMA", "HState", "MemoryBlock", "Zone", "Task", "KernelWarning",
    "MAX_PAGE_ORDER", "pageblock_order", "pageblock_nr_pages", "PF_MEMALLOC_PIN",
    "MIGRATE_UNMOVABLE", "MIGRATE_MOVABLE", "MIGRATE_RECLAIMABLE", "MIGRATE_HIGHATOMIC",
    "MIGRATE_CMA", "MIGRATE_ISOLATE", "ZONE_DMA", "ZONE_DMA32", "ZONE_NORMAL", "ZONE_MOVABLE",
    "MIGRATE_ASYNC", "MIGRATE_SYNC_LIGHT", "MIGRATE_SYNC", "MR_COMPACTION", "MR_CONTIG_RANGE",
    "MR_LONGTERM_PIN", "MR_MEMORY_HOTPLUG", "MR_SYSCALL", "NR_MAX_MIGRATE_PAGES_RETRY",
    "NUMA_NO_NODE", "MigrationTargetControl",
] + list(_gfp.__all__)
