"""Page/folio conversions and compound-page helpers drivers use on GUP results.

Kernel: include/linux/page-flags.h (page_folio, compound_head, PageCompound, PageHead,
PageTail), include/linux/mm.h (folio_page, folio_nr_pages, folio_size, page_size,
compound_nr, folio_page_idx, nth_page, page_to_pfn), v6.12.

Plain functions (they need no machine state): ``from pytest_pinfault.mm.page_flags
import compound_head``.  ``pfn_to_page`` is :meth:`FakeMM.pfn_to_page`.
"""

from __future__ import annotations

from .folio import PAGE_SHIFT, Folio, Page, page_folio

__all__ = ["page_folio", "folio_page", "compound_head", "PageCompound", "PageHead", "PageTail",
           "folio_nr_pages", "folio_size", "page_size", "compound_nr", "folio_page_idx",
           "nth_page", "page_to_pfn", "page_to_phys"]


def _page(p: Page | Folio) -> Page:
    return Page(p, p.pfn) if isinstance(p, Folio) else p


def folio_page(folio: Folio, n: int) -> Page:
    """Page *n* of *folio*.  Kernel: include/linux/mm.h:folio_page."""
    return Page(folio, folio.pfn + n)


def compound_head(page: Page | Folio) -> Page:
    """The head page of the folio *page* belongs to (itself for a small page).
    Kernel: include/linux/page-flags.h:compound_head."""
    f = page.folio
    return Page(f, f.pfn)


def PageCompound(page: Page | Folio) -> bool:
    """True for a head or tail page of a large folio.  Kernel: include/linux/page-flags.h."""
    return page.folio.order > 0


def PageHead(page: Page | Folio) -> bool:
    """Kernel: include/linux/page-flags.h:PageHead."""
    return page.folio.order > 0 and page.pfn == page.folio.pfn


def PageTail(page: Page | Folio) -> bool:
    """Kernel: include/linux/page-flags.h:PageTail."""
    return page.folio.order > 0 and page.pfn != page.folio.pfn


def folio_nr_pages(folio: Folio) -> int:
    """Kernel: include/linux/mm.h:folio_nr_pages."""
    return folio.nr_pages


def folio_size(folio: Folio) -> int:
    """Kernel: include/linux/mm.h:folio_size."""
    return folio.nr_pages << PAGE_SHIFT


def compound_nr(page: Page | Folio) -> int:
    """Pages in the compound page *page* heads (1 for a tail or small page).
    Kernel: include/linux/mm.h:compound_nr."""
    f = page.folio
    return f.nr_pages if page.pfn == f.pfn else 1


def page_size(page: Page | Folio) -> int:
    """Bytes of the compound page *page* heads.  Kernel: include/linux/mm.h:page_size."""
    return compound_nr(page) << PAGE_SHIFT


def folio_page_idx(folio: Folio, page: Page) -> int:
    """Index of *page* within *folio*.  Kernel: include/linux/mm.h:folio_page_idx."""
    return page.pfn - folio.pfn


def nth_page(page: Page | Folio, n: int) -> Page:
    """The page *n* pfns after *page*, within its folio.  Kernel: include/linux/mm.h:nth_page."""
    p = _page(page)
    f = p.folio
    if not f.pfn <= p.pfn + n < f.pfn + f.nr_pages:
        raise ValueError(f"nth_page({p!r}, {n}) leaves its folio; use FakeMM.pfn_to_page")
    return Page(f, p.pfn + n)


def page_to_pfn(page: Page | Folio) -> int:
    """Kernel: include/asm-generic/memory_model.h:page_to_pfn."""
    return page.pfn


def page_to_phys(page: Page | Folio) -> int:
    """Kernel: arch/x86/include/asm/io.h:page_to_phys."""
    return page.pfn << PAGE_SHIFT
