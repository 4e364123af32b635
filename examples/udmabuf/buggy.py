"""Three buggy twins of the udmabuf model, each caught by the pin contract checker.

* :class:`PreV611Device` -- the driver before v6.11 ("udmabuf: pin the pages using
  memfd_pin_folios() API"): a plain page-cache reference per page
  (``filemap_get_folio`` / ``shmem_read_mapping_page``), no PF_MEMALLOC_PIN, no migration.
  Pages stay in CMA / ZONE_MOVABLE, so ``cma_alloc`` and ``offline_pages`` fail for as
  long as the buffer exists.  Caught by rule 1 (``longterm-placement``).
* :class:`LeakyErrorPathDevice` -- an error path that frees the tables but forgets
  ``unpin_folio()`` for what the earlier items pinned.  Caught by rule 2
  (``error-nothing-held``) at the ioctl's return and rule 4 (``pin-balance``) at teardown.
* :class:`TrustCountDevice` -- ``udmabuf_pin_folios`` that reports (and records) the
  requested page count instead of the number of folios ``memfd_pin_folios`` returned.
  Invisible with 4 KiB shmem folios, wrong as soon as folios are large (hugetlb).  Caught
  by rule 3 (``count-honesty``).
"""

from __future__ import annotations

import errno

from pytest_pinfault import Out, pin_entry_point
from pytest_pinfault.mm import PAGE_SHIFT

from .driver import UdmaBuf, UdmabufDevice


# --------------------------------------------------------------------- (a) pre-6.11


class _RefUdmaBuf(UdmaBuf):
    def unpin_all(self) -> None:
        for folio in self.pinned_folios:          # put_page() per page
            self.k.folio_put(folio)
        self.nr_pinned = 0


class PreV611Device(UdmabufDevice):
    """udmabuf as 6.1.y has it (6.1.176): a plain page reference per page, from
    ``shmem_read_mapping_page()`` for shmem and ``get_page()`` on the subpage of the huge
    page ``find_get_page_flags()`` finds for hugetlbfs (a missing huge page is -EINVAL;
    nothing is allocated).  Kernel: drivers/dma-buf/udmabuf.c:udmabuf_create, 6.1.176."""

    ubuf_class = _RefUdmaBuf

    def pin_item(self, ubuf, memfd, start, size, scratch) -> int:
        k = self.k
        pgoff = start >> PAGE_SHIFT
        huge = memfd.is_file_hugepages()
        for i in range(size >> PAGE_SHIFT):
            folio = k.filemap_get_folio(memfd.mapping, pgoff + i)    # a plain reference
            if huge:
                if isinstance(folio, int):
                    return -errno.EINVAL          # no huge page there: not faulted in
                ubuf.pinned_arr.items[ubuf.nr_pinned] = folio
                ubuf.nr_pinned += 1
                ubuf.folios[ubuf.pagecount] = folio
                ubuf.offsets[ubuf.pagecount] = (pgoff + i - folio.index) << PAGE_SHIFT
                ubuf.pagecount += 1
                continue
            if isinstance(folio, int):
                folio = k.memfd_alloc_folio(memfd, pgoff + i)         # shmem_read_mapping_page
                if isinstance(folio, int):
                    return folio
            ubuf.pinned_arr.items[ubuf.nr_pinned] = folio
            ubuf.nr_pinned += 1
            ubuf.folios[ubuf.pagecount] = folio
            ubuf.offsets[ubuf.pagecount] = 0
            ubuf.pagecount += 1
        return 0


# --------------------------------------------------------------------- (b) leaky error path


class LeakyErrorPathDevice(UdmabufDevice):
    """``err:`` label that kvfree()s the tables without unpinning ``pinned_folios``."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.leaked: list = []                # for the test's clean-up only

    def _fail(self, ubuf, ret: int) -> int:
        if ubuf.pinned_arr is not None:
            self.leaked += ubuf.pinned_folios  # BUG: no unpin_folio() for these
        for arr in (ubuf.pinned_arr, ubuf.offsets_arr, ubuf.folios_arr):
            self.k.kfree(arr)
        self.k.kfree(ubuf.obj)
        return ret


# --------------------------------------------------------------------- (c) trusts the count


class TrustCountDevice(UdmabufDevice):
    """Treats ``memfd_pin_folios()`` as if it returned one folio per requested page."""

    @pin_entry_point(name="udmabuf_pin_folios")
    def udmabuf_pin_folios(self, memfd, start: int, size: int, folios: list) -> int:
        pgcnt = size >> PAGE_SHIFT
        ret = self.k.memfd_pin_folios(memfd, start, start + size - 1, folios, pgcnt, Out(0))
        if ret < 0:
            return ret
        return pgcnt if ret else -errno.EINVAL    # BUG: the requested count, not ret

    def pin_item(self, ubuf, memfd, start, size, scratch) -> int:
        n = self.udmabuf_pin_folios(memfd, start, size, scratch)
        if n < 0:
            return n
        for i in range(n):                        # records (and later unpins) n entries
            ubuf.pinned_arr.items[ubuf.nr_pinned] = scratch[i]
            ubuf.nr_pinned += 1
            ubuf.folios[ubuf.pagecount] = scratch[i]
            ubuf.offsets[ubuf.pagecount] = 0
            ubuf.pagecount += 1
        return 0
