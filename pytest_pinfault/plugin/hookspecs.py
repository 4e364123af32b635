"""Hooks that pytest-pinfault calls, for downstream suites to extend it.

Implement them in a ``conftest.py`` or a plugin; they are registered through
``pytest_addhooks``.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest


@pytest.hookspec()
def pytest_pinfault_configure(fake_mm: Any, request: pytest.FixtureRequest) -> None:
    """A test's ``fake_mm`` was just built (its global, marker and matrix faults armed).

    Use it to prepare the machine for every test (register drivers, pre-fault memory,
    arm more faults with ``fake_mm.faults.arm_spec``).  *request* is the fixture request
    of the test (``request.node`` is the item).  The contract checker
    (``fake_mm._checker``) exists already and takes its baseline again after the hooks
    ran, so what they leave (pins of a long-lived driver, ...) is not a violation.
    """


@pytest.hookspec()
def pytest_pinfault_fault_fired(record: Any, item: pytest.Item) -> None:
    """A fault fired in *item*: *record* is the
    :class:`~pytest_pinfault.faults.injector.FaultRecord` (site, occurrence, errno,
    context, caller; ``record.as_dict()`` is JSON-able).  Called at the fault site, so
    keep it quick and do not raise."""


@pytest.hookspec()
def pytest_pinfault_declare_sites(config: pytest.Config, declare: Callable[..., Any]) -> None:
    """Declare user fault sites for the whole run: call
    ``declare(name, errnos, kernel="driver", meaning="")`` once per site (*errnos*: names
    like ``"ENOMEM"``, numbers, or a string ``"ENOMEM EINVAL"``).  Declared sites can be
    named in markers (checked at collection), ``--pinfault-faults`` and matrices, and are
    declared on every test's ``fake_mm`` so driver code can hit them with
    ``fake_mm.fault_point(name, **context)``."""


@pytest.hookspec()
def pytest_pinfault_violation(violation: Any, item: pytest.Item) -> None:
    """The contract checker found *violation* (a
    :class:`~pytest_pinfault.contracts.Violation`: ``rule``, ``message``, ``folios``,
    ``call``, ``caller``, ``events``; ``str(violation)`` is the splat) in *item*.  Called
    once per violation as it is found (at a pin return, an on-demand check or the
    teardown check), including violations of a rule the test expects; not for rules
    the test disables.  Keep it quick and do not raise."""
