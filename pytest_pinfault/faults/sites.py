"""The catalogue of built-in fault sites.

Every site is one line at the kernel function it is named after; firing it makes that
function fail the way the kernel's does.  ``errnos`` lists what the site may produce
(the first is the default); a site whose failure is not an errno (a bool or NULL return)
lists the errno its callers end up reporting, for documentation.
"""

from __future__ import annotations

import dataclasses
import errno

__all__ = ["Site", "BUILTIN_SITES", "site", "catalogue_markdown"]


@dataclasses.dataclass(frozen=True)
class Site:
    name: str
    kernel: str            # file:function
    meaning: str           # what firing means
    returns: str           # what the kernel function returns when it fires
    errnos: tuple[int, ...]
    user: bool = False


def _s(name: str, kernel: str, meaning: str, returns: str, *errnos: int) -> Site:
    return Site(name, kernel, meaning, returns, tuple(errnos))


BUILTIN_SITES: dict[str, Site] = {s.name: s for s in (
    _s("folio_isolate_lru", "mm/vmscan.c:folio_isolate_lru",
       "isolation fails: the folio is temporarily off the LRU (a racing isolation)",
       "false", errno.EBUSY),
    _s("folio_isolate_hugetlb", "mm/hugetlb.c:folio_isolate_hugetlb",
       "hugetlb isolation fails (folio not migratable at the moment)",
       "false", errno.EBUSY),
    _s("alloc_migration_target", "mm/migrate.c:alloc_migration_target",
       "OOM while allocating the migration target; migrate_pages aborts",
       "NULL (migrate_pages returns -ENOMEM)", errno.ENOMEM),
    _s("migrate_folio", "mm/migrate.c:__migrate_folio",
       "a transient extra reference (a concurrent GUP, an LRU batch) makes the refcount check fail",
       "-EAGAIN (retried, then counted as failed)", errno.EAGAIN),
    _s("lru_add_drain_all", "mm/swap.c:lru_add_drain_all",
       "the drain leaves per-cpu batch references in place",
       "void (batches not drained)", errno.EAGAIN),
    _s("alloc_pages", "mm/page_alloc.c:__alloc_pages",
       "page allocation fails (fail_page_alloc)",
       "NULL", errno.ENOMEM),
    _s("try_grab_folio", "mm/gup.c:try_grab_folio",
       "the pin or reference cannot be taken",
       "-ENOMEM (or -EREMOTEIO for P2PDMA pages)", errno.ENOMEM, errno.EREMOTEIO),
    _s("memfd_alloc_folio", "mm/memfd.c:memfd_alloc_folio",
       "shmem/hugetlb folio allocation fails or races with another allocator",
       "ERR_PTR(-ENOMEM/-ENOSPC/-EEXIST)", errno.ENOMEM, errno.ENOSPC, errno.EEXIST),
    _s("kmalloc", "mm/slub.c:__kmalloc",
       "slab allocation fails (failslab); driver code hits it through fake_mm.kmalloc",
       "NULL", errno.ENOMEM),
    _s("dma_map_page", "kernel/dma/mapping.c:dma_map_page_attrs",
       "mapping one page (or one sg entry) for a device fails (IOMMU/bounce buffer exhausted)",
       "DMA_MAPPING_ERROR (dma_map_sg: -EIO, nothing left mapped)", errno.EIO, errno.ENOMEM),
    _s("dma_map_sg", "kernel/dma/mapping.c:__dma_map_sg_attrs",
       "the whole scatterlist cannot be mapped (an IOMMU out of IOVA space, a P2PDMA page)",
       "-ENOMEM/-EIO/-EREMOTEIO (dma_map_sg_attrs: 0)", errno.ENOMEM, errno.EIO, errno.EREMOTEIO),
    _s("folio_alloc_swap", "mm/swapfile.c:folio_alloc_swap",
       "no swap slot for a folio reclaim wants to swap out (get_swap_pages finds none)",
       "an empty swp_entry_t (add_to_swap returns false; the folio stays)", errno.ENOMEM),
    _s("add_to_swap_cache", "mm/swap_state.c:add_to_swap_cache",
       "the swap-cache insertion fails after a slot was allocated; the slot is given back",
       "-ENOMEM (add_to_swap returns false; the folio stays)", errno.ENOMEM),
    _s("swap_read_folio", "mm/page_io.c:swap_read_folio",
       "reading a page back from swap fails (an I/O error): the folio never becomes uptodate",
       "void (do_swap_page: VM_FAULT_SIGBUS; shmem_swapin_folio: -EIO)", errno.EIO),
)}


def site(name: str) -> Site:
    """The built-in :class:`Site` named *name* (KeyError for another name)."""
    return BUILTIN_SITES[name]


def _md_cell(text: str) -> str:
    """Make *text* safe inside one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def catalogue_markdown(sites: dict[str, Site] | None = None) -> str:
    """The site catalogue as one Markdown table (the table in docs/fault-sites.md).

    One row per site, in catalogue order: name, kernel ``file:function``, what firing
    means, what the kernel function returns then, and the errnos the site may produce by
    name (the first is the default).  tests/faults/test_sites_doc.py checks that the
    document carries exactly this text.
    """
    rows = [
        "| Site | Kernel function | Firing means | Kernel returns | Errnos |",
        "|---|---|---|---|---|",
    ]
    for s in (BUILTIN_SITES if sites is None else sites).values():
        names = ", ".join(f"`-{errno.errorcode.get(e, str(e))}`" for e in s.errnos)
        rows.append(f"| `{s.name}` | `{s.kernel}` | {_md_cell(s.meaning)} | "
                    f"{_md_cell(s.returns)} | {names} |")
    return "\n".join(rows) + "\n"
