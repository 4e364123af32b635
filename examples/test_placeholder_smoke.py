"""Smoke run of the fake mm until the driver examples land (see the open issues)."""

from pytest_pinfault.mm import GFP_HIGHUSER_MOVABLE


def test_movable_allocation_can_be_steered_into_cma(fake_mm):
    with fake_mm.steer("cma"):
        page = fake_mm.alloc_pages(GFP_HIGHUSER_MOVABLE, 0)
    assert page is not None and page.is_cma
