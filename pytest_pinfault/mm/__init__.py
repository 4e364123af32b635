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
from .gup import KernelHang, KernelOutcome, Livelock
from .memfd import *  # noqa: F401,F403  (MFD_*, F_SEAL_*, FALLOC_FL_*)
from .memfd import AddressSpace, MemFile
from . import memfd as _memfd
from .mm_types import *  # noqa: F401,F403  (FOLL, PROT_*, MAP_*, VM_*)
from . import mm_types as _mm_types
from .mm_types import FOLL, MMStruct, VMA
from .mmu_notifier import MMUIntervalNotifier, MMUNotifierRange
from .slab import ZERO_SIZE_PTR, KmallocObject

FOLL_WRITE, FOLL_GET, FOLL_DUMP, FOLL_FORCE = FOLL.WRITE, FOLL.GET, FOLL.DUMP, FOLL.FORCE
FOLL_NOWAIT, FOLL_NOFAULT, FOLL_HWPOISON, FOLL_ANON = FOLL.NOWAIT, FOLL.NOFAULT, FOLL.HWPOISON, FOLL.ANON
FOLL_LONGTERM, FOLL_SPLIT_PMD, FOLL_PCI_P2PDMA = FOLL.LONGTERM, FOLL.SPLIT_PMD, FOLL.PCI_P2PDMA
FOLL_INTERRUPTIBLE, FOLL_HONOR_NUMA_FAULT = FOLL.INTERRUPTIBLE, FOLL.HONOR_NUMA_FAULT
FOLL_PIN, FOLL_TOUCH, FOLL_REMOTE = FOLL.PIN, FOLL.TOUCH, FOLL.REMOTE

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
    "Livelock", "KernelOutcome", "KernelHang", "AddressSpace", "MemFile", "MMStruct", "VMA", "MMUIntervalNotifier",
    "MMUNotifierRange", "ZERO_SIZE_PTR", "KmallocObject",
    "FOLL_WRITE", "FOLL_GET", "FOLL_DUMP", "FOLL_FORCE", "FOLL_NOWAIT", "FOLL_NOFAULT",
    "FOLL_HWPOISON", "FOLL_ANON", "FOLL_LONGTERM", "FOLL_SPLIT_PMD", "FOLL_PCI_P2PDMA",
    "FOLL_INTERRUPTIBLE", "FOLL_HONOR_NUMA_FAULT", "FOLL_PIN", "FOLL_TOUCH", "FOLL_REMOTE",
]
# in the form type checkers follow (``__all__ += module.__all__``)
__all__ += _gfp.__all__
__all__ += _memfd.__all__
__all__ += _mm_types.__all__
