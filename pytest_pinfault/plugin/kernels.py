"""Running a test once per kernel version.

``@pytest.mark.pinfault_kernels("6.1", "6.12")`` (no arguments: every version), or for
every ``fake_mm`` or ``pinfault_machine`` test of the run the ``--pinfault-kernel=6.1,6.12``
option / the ``pinfault_kernel`` ini key, parametrizes the test over :data:`MMConfig.kernel
<pytest_pinfault.mm.config.KERNELS>` values with ids ``kernel-6.1``, ``kernel-6.12``.
The values are spelled as ``MMConfig(kernel=...)`` and ``mm_config(kernel=...)`` spell
them.  Precedence: ``mm_config(kernel=...)`` (one version, no parametrization) and
``pinfault_kernels`` (a marker may not use both) > ``--pinfault-kernel`` > the ini key.
Each version's machine is the test's resolved config with ``kernel`` replaced (for
``pinfault_machine``, every machine of the test, a ``config=`` given included); matrices
compose (each version gets its own fault-free run and cases:
``test_x[fault-free-kernel-6.1]``, ``test_x[kmalloc-1-transient-kernel-6.12]``).

The parameter is the indirect ``pinfault_kernel`` fixture, which a test may also
request to learn its version.
"""

from __future__ import annotations

from typing import Any

import pytest

from ..mm.config import KERNELS

__all__ = ["KERNEL_ARG", "MACHINE_FIXTURES", "uses_machine", "kernel_id", "parse_kernels", "marked_kernels", "parametrize_kernels",
           "kernel_param", "pinfault_kernel"]

#: The (indirect) parameter name and fixture carrying a test's kernel version.
KERNEL_ARG = "pinfault_kernel"
_ACCEPTED = ", ".join(repr(k) for k in KERNELS)


class KernelsError(ValueError):
    """A bad version list; callers turn it into a UsageError naming where it came from."""


def kernel_id(version: str) -> str:
    """``"6.1"`` -> ``"kernel-6.1"``, the test id part."""
    return f"kernel-{version}"


def _check(values: Any, what: str) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for v in values:
        if not isinstance(v, str) or v not in KERNELS:
            raise KernelsError(f"{what}: expected kernel versions from {_ACCEPTED}, got {v!r}")
        out[v] = None
    if not out:
        raise KernelsError(f"{what}: expected at least one kernel version from {_ACCEPTED}, got none")
    return tuple(out)


def parse_kernels(text: str, where: str) -> tuple[str, ...] | None:
    """``"6.1,6.12"`` -> ``("6.1", "6.12")`` (duplicates dropped, order kept); empty ->
    None; ``"all"`` -> every version.  Raises :class:`pytest.UsageError` naming *where*
    and the accepted values for anything else."""
    text = text.strip()
    if not text:
        return None
    if text == "all":
        return KERNELS
    try:
        return _check([p.strip() for p in text.split(",")], where)
    except KernelsError as e:
        raise pytest.UsageError(str(e)) from None


def marked_kernels(item: Any) -> tuple[str, ...] | None:
    """The versions of the closest ``pinfault_kernels`` marker, or None.  Raises
    :class:`KernelsError` for a bad argument."""
    mark = item.get_closest_marker("pinfault_kernels")
    if mark is None:
        return None
    where = "@pytest.mark.pinfault_kernels"
    if mark.kwargs:
        raise KernelsError(f"{where}: expected versions as positional arguments, got keyword "
                           f"{sorted(mark.kwargs)[0]!r}")
    return _check(mark.args, where) if mark.args else KERNELS


def _explicit_kernel(definition: Any) -> bool:
    return any("kernel" in m.kwargs for m in definition.iter_markers("mm_config"))


#: The fixtures whose machines follow a test's kernel version.
MACHINE_FIXTURES = frozenset({"fake_mm", "pinfault_machine"})


def uses_machine(names: Any) -> bool:
    """True when fixture *names* include ``fake_mm`` or ``pinfault_machine``."""
    return not MACHINE_FIXTURES.isdisjoint(names)


def parametrize_kernels(metafunc: pytest.Metafunc, run_kernels: tuple[str, ...] | None) -> None:
    """Parametrize a ``fake_mm`` or ``pinfault_machine`` test over its versions (marker,
    else *run_kernels* from the option or ini key); nothing for a test whose
    ``mm_config`` marker names a kernel.  A bad marker is left to the collection-time
    check, which names the test."""
    if not uses_machine(metafunc.fixturenames):
        return
    definition = metafunc.definition
    try:
        versions = marked_kernels(definition)
    except KernelsError:
        return
    if versions is None:
        if run_kernels is None or _explicit_kernel(definition):
            return
        versions = run_kernels
    elif _explicit_kernel(definition):
        return              # contradiction: reported by the collection-time check
    if KERNEL_ARG not in metafunc.fixturenames:
        metafunc.fixturenames.append(KERNEL_ARG)
    metafunc.parametrize(KERNEL_ARG, list(versions), ids=[kernel_id(v) for v in versions], indirect=True)


def kernel_param(item: Any) -> str | None:
    """The kernel version *item* is parametrized with, or None."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(KERNEL_ARG) if callspec is not None else None


def with_test_kernel(item: Any, config: Any, what: str = "") -> Any:
    """*config* at the kernel version *item* runs at (``pinfault_kernels``,
    ``--pinfault-kernel``, the ``pinfault_kernel`` ini key), if it runs at one; a
    version the config contradicts (a quirk of another version) is a UsageError naming
    the test (*what* says which config, e.g. ``"pinfault_machine(config=...) with "``)."""
    from ..mm.config import ConfigError
    version = kernel_param(item)
    if version is None or version == config.kernel:
        return config
    try:
        return config.replace(kernel=version)
    except ConfigError as e:
        raise pytest.UsageError(f"{item.nodeid}: {what}kernel {version!r} (pinfault_kernels / "
                                f"--pinfault-kernel / pinfault_kernel ini): {e}") from None


@pytest.fixture
def pinfault_kernel(request: pytest.FixtureRequest) -> str | None:
    """The kernel version this test runs with when it is parametrized over versions
    (``pinfault_kernels`` marker, ``--pinfault-kernel``, ini ``pinfault_kernel``), else
    None (the machine's version is then ``fake_mm.config.kernel``)."""
    return getattr(request, "param", None)
