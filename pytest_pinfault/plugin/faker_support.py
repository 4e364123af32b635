"""Opt-in Faker support: the ``pinfault_faker`` fixture.

Faker and :mod:`pytest_pinfault.faker_provider` are imported only when a test requests
the fixture, so loading the plugin never imports faker.  The Faker instance is the one of
Faker's own pytest plugin (its ``faker`` fixture), which seeds it for every test from
the ``faker_seed`` fixture when one is defined (default seed 0)::

    @pytest.fixture
    def faker_seed():
        return 1234

    def test_sweep(pinfault_faker):
        config = pinfault_faker.mm_config(ram="2GiB")
        ops = pinfault_faker.workload(n=30, config=config)
        spec = pinfault_faker.fault_spec()
"""

from __future__ import annotations

from typing import Any

import pytest

__all__ = ["pinfault_faker"]


@pytest.fixture
def pinfault_faker(request: pytest.FixtureRequest) -> Any:
    """Faker's seeded ``faker`` instance with :class:`~pytest_pinfault.faker_provider.MachineProvider`
    added: ``mm_config(**overrides)``, ``workload(n=...)``, ``fault_spec(sites=None)``.

    Needs Faker (``pip install faker``), whose pytest plugin provides ``faker`` and reads
    an optional ``faker_seed`` fixture for the seed.
    """
    try:
        from ..faker_provider import MachineProvider
    except ImportError as exc:         # faker missing: opted in, so say so loudly
        missing = str(exc)
    else:
        missing = ""
    if missing:
        pytest.fail(f"pinfault_faker: expected Faker to be installed (pip install faker), got {missing}",
                    pytrace=False)
    # Faker's ``faker`` fixture only sees ``faker_seed`` when it is in the test's fixture
    # names; a test that asks only for pinfault_faker would otherwise silently get seed 0
    # even with a ``faker_seed`` override in scope.  Resolving it first puts it there.
    try:
        request.getfixturevalue("faker_seed")
    except pytest.FixtureLookupError as exc:
        if exc.argname != "faker_seed":
            raise
    try:
        fake = request.getfixturevalue("faker")
    except pytest.FixtureLookupError as exc:
        if exc.argname != "faker":
            raise
        fake = None
    if fake is None:
        pytest.fail("pinfault_faker: expected Faker's pytest plugin to provide the 'faker' fixture, "
                    "got no such fixture (plugin autoload disabled? add -p faker.contrib.pytest.plugin)",
                    pytrace=False)
    # one generator per locale; the session instance is reused across tests
    for generator in getattr(fake, "factories", None) or [fake]:
        if not any(isinstance(p, MachineProvider) for p in generator.providers):
            generator.add_provider(MachineProvider)
    return fake
