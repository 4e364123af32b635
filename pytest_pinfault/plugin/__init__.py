"""The pytest plugin (entry point ``pinfault``): the only module tree that imports pytest."""

from __future__ import annotations

import pytest

from .. import FakeMM, MMConfig


@pytest.fixture
def mm_config() -> MMConfig:
    """The machine a test's ``fake_mm`` is built from; override it to change the default."""
    return MMConfig()


@pytest.fixture
def fake_mm(request: pytest.FixtureRequest, mm_config: MMConfig) -> FakeMM:
    """A fresh fake mm per test, from ``@pytest.mark.mm_config(...)`` or ``mm_config``."""
    marker = request.node.get_closest_marker("mm_config")
    config = mm_config.replace(**marker.kwargs) if marker else mm_config
    return FakeMM(config)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mm_config(**fields): MMConfig fields for this test's fake_mm")
