"""fill_units (the final check's written-out loop) agrees with split_units on every kind
of folio and hold: mapped anonymous pages, page-cache pages, pins, plain references,
isolation, an lru_add batch, large folios and freed folios."""

from __future__ import annotations

from pytest_pinfault import Out
from pytest_pinfault.contracts.units import fill_units, injector_holds, split_units
from pytest_pinfault.mm import FOLL_GET, FOLL_LONGTERM, FOLL_WRITE

from .helpers import PAGE, anon_buffer, machine


def _agree(k, folios):
    holds = injector_holds(k)
    cache: dict = {}
    fill_units(k, folios, holds, cache)
    assert cache == {id(f): split_units(k, f, holds) for f in folios}
    return cache


def test_fill_units_matches_split_units_across_holds():
    k = machine()
    addr = anon_buffer(k, "cma", npages=4)
    pages: list = []
    assert k.pin_user_pages(addr, 2, FOLL_LONGTERM | FOLL_WRITE, pages) == 2   # pins
    refs: list = []
    assert k.get_user_pages(addr + 2 * PAGE, 1, FOLL_GET, refs) == 1           # a plain reference
    f = k.memfd_create("buf", 0)
    assert f.ftruncate(16 * PAGE) == 0 and f.fallocate(0, 0, 16 * PAGE) == 0
    folios: list = []
    assert k.memfd_pin_folios(f, 0, 8 * PAGE - 1, folios, 8, Out(0)) == 8    # page-cache pins
    big = k.folio_alloc(0, 4)                                                 # a large folio
    every = list(k.iter_folios())
    assert big in every and any(x.kind == "anon" for x in every) and any(x.kind == "shmem" for x in every)
    cache = _agree(k, every)
    assert any(p for p, _ in cache.values()) and any(r for _, r in cache.values())
    # after release (and a freed folio) the two still agree
    k.unpin_user_pages(pages, 2)
    k.unpin_folios(folios, 8)
    k.put_page(refs[0])
    k.folio_put(big)
    assert big.freed
    _agree(k, every)
