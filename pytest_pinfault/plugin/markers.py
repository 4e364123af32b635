"""The markers: registration (``pytest --markers``) and collection-time validation.

A marker with a bad argument stops the run before any test runs, with a
:class:`pytest.UsageError` naming the test, the marker and what is wrong (for a fault
spec: the column, what was expected and what was got).
"""

from __future__ import annotations

import dataclasses
import errno as _errno
from typing import Any, Callable

import pytest

from ..faults.matrix import MODES
from ..faults.spec import FaultSpec, FaultSpecError, parse_errno
from ..mm.config import ConfigError, MMConfig
from .options import MAX_NTH_LIMIT, check_buildable
from .state import PinfaultState

__all__ = ["MARKERS", "register_markers", "validate_item", "MatrixArgs", "matrix_args",
           "pinfault_specs", "mm_config_fields", "MarkerError", "MARKED_CONFIG_KEY"]

MARKERS = (
    "mm_config(**fields): MMConfig fields for this test's fake_mm (ram='2GiB', cma='128MiB', "
    "hugetlb='2MiB:4', quirks='a,b' ...: the text the pinfault_mm_config ini key takes); wins over "
    "the mm_config fixture and the pinfault_mm_config ini key.",
    "pinfault(*specs, **callbacks): arm fault specs (e.g. 'folio_isolate_lru[nth=2]=1*return') on "
    "this test's fake_mm; keyword arguments are the callables that call(name) actions run.",
    "pinfault_matrix(*sites, modes=('transient', 'persistent'), max_nth=N, accept=None): run the "
    "test fault-free, then once per (site, occurrence, mode) with exactly that fault armed, for "
    "every occurrence the fault-free run reached up to the cap N (announced when it bites); no "
    "sites: every site it reached; a matrix that reaches none of its sites fails; accept= "
    "(negative errnos or a predicate) judges the values passed to pinfault.result().",
    "pin_contract(expect=RULE | disable=[RULE, ...], reason=...): expect a contract-checker "
    "violation, or disable rules for this test.",
    "pinfault_kernels(*versions): run the test once per kernel version ('6.1', '6.6', '6.12', "
    "'6.17'; none: all), ids kernel-6.1 ...; each fake_mm is MMConfig(kernel=version); wins over "
    "--pinfault-kernel and the pinfault_kernel ini key.",
)

_MM_FIELDS = tuple(f.name for f in dataclasses.fields(MMConfig))
_PIN_CONTRACT_KWARGS = ("expect", "disable", "reason")
_OURS = frozenset(("mm_config", "pinfault", "pinfault_matrix", "pin_contract", "pinfault_kernels"))


class MarkerError(Exception):
    """A bad marker argument; the plugin raises it as a UsageError naming the test."""


def register_markers(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)


# ---------------------------------------------------------------------- mm_config
def mm_config_fields(item: pytest.Item) -> dict[str, Any]:
    """The merged keyword arguments of every ``mm_config`` marker on *item*, the
    closest (function over class over module) winning field by field."""
    fields: dict[str, Any] = {}
    for mark in reversed(list(item.iter_markers("mm_config"))):
        if mark.args:
            raise MarkerError(f"@pytest.mark.mm_config: expected keyword arguments (MMConfig fields), "
                              f"got positional {mark.args!r}")
        for key in mark.kwargs:
            if key not in _MM_FIELDS:
                raise MarkerError(f"@pytest.mark.mm_config: expected an MMConfig field "
                                  f"({', '.join(_MM_FIELDS)}), got {key!r}")
        fields.update(mark.kwargs)
    return fields


def apply_mm_config(base: MMConfig, fields: dict[str, Any]) -> MMConfig:
    try:
        return base.replace(**fields) if fields else base
    except (ConfigError, TypeError) as e:
        raise MarkerError(f"@pytest.mark.mm_config: {e}") from None


_BUILDABLE_KEY = pytest.StashKey[dict[Any, Any]]()
#: The MMConfig of an item's mm_config markers over the ini defaults, resolved at collection.
MARKED_CONFIG_KEY = pytest.StashKey[MMConfig]()


def _check_buildable(config: pytest.Config, mm_config: MMConfig) -> None:
    """Build the machine once per distinct config of the run, at collection: values
    that only fail when the machine is laid out (a CMA area larger than RAM) stop the
    run here instead of erroring every test at setup."""
    cache = config.stash.setdefault(_BUILDABLE_KEY, {})
    if mm_config not in cache:
        cache[mm_config] = check_buildable(mm_config)
    why = cache[mm_config]
    if why is not None:
        raise MarkerError(f"@pytest.mark.mm_config: {why}")


def _uses_default_mm_config(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.get("mm_config") if info is not None else None
    if not defs:
        return False
    func = defs[-1].func
    return getattr(func, "__module__", None) == f"{__package__}.fixtures"


# ---------------------------------------------------------------------- pinfault
def pinfault_specs(item: pytest.Item, state: PinfaultState
                   ) -> list[tuple[FaultSpec, dict[str, Callable[..., Any]]]]:
    """The validated specs of every ``pinfault`` marker, outermost first, each with the
    callbacks given as its marker's keyword arguments."""
    out = []
    for mark in reversed(list(item.iter_markers("pinfault"))):
        for key, value in mark.kwargs.items():
            if not callable(value):
                raise MarkerError(f"@pytest.mark.pinfault: keyword arguments are callbacks for call(name) "
                                  f"actions; expected a callable for {key!r}, got {value!r}")
        for text in mark.args:
            if not isinstance(text, str):
                raise MarkerError(f"@pytest.mark.pinfault: expected fault spec strings, got {text!r}")
            try:
                spec = state.spec(text)
            except FaultSpecError as e:
                raise MarkerError(f"@pytest.mark.pinfault: {e}") from None
            for term in spec.terms:
                if term.action == "call" and term.arg not in mark.kwargs:
                    err = FaultSpecError(spec.text, term.arg_column or term.column,
                                         "a callback given as a keyword argument of the marker", str(term.arg))
                    raise MarkerError(f"@pytest.mark.pinfault: {err}")
            out.append((spec, dict(mark.kwargs)))
        used = {t.arg for text in mark.args if isinstance(text, str)
                for t in state.spec(text).terms if t.action == "call"}
        unused = sorted(set(mark.kwargs) - used)
        if unused:
            raise MarkerError(f"@pytest.mark.pinfault: keyword arguments are callbacks for call(name) "
                              f"actions; expected each to be named by a call(...) of the marker's specs, "
                              f"got {unused[0]!r} unused")
    return out


# ---------------------------------------------------------------------- pinfault_matrix
@dataclasses.dataclass(frozen=True)
class MatrixArgs:
    sites: tuple[str, ...]
    modes: tuple[str, ...]
    max_nth: int
    accept: Any   # None, a frozenset of negative errnos, or a predicate


def _accept(value: Any) -> Any:
    if value is None or callable(value):
        return value
    values = (value,) if isinstance(value, (int, str)) else value
    out = set()
    try:
        for v in values:
            if isinstance(v, str):
                e = parse_errno(v)
            else:
                e = abs(v) if isinstance(v, int) and not isinstance(v, bool) else None
            if not e:
                raise MarkerError(f"@pytest.mark.pinfault_matrix: accept: expected negative errnos like "
                                  f"-errno.ENOMEM or 'ENOMEM', or a predicate, got {v!r}")
            out.add(-e)
    except TypeError:
        raise MarkerError(f"@pytest.mark.pinfault_matrix: accept: expected a tuple of negative errnos "
                          f"or a predicate, got {value!r}") from None
    return frozenset(out)


def matrix_args(mark: Any, state: PinfaultState) -> MatrixArgs:
    where = "@pytest.mark.pinfault_matrix"
    unknown = set(mark.kwargs) - {"modes", "max_nth", "accept"}
    if unknown:
        raise MarkerError(f"{where}: expected keyword arguments modes, max_nth, accept, "
                          f"got {sorted(unknown)[0]!r}")
    catalogue = state.catalogue
    sites = tuple(mark.args) or tuple(catalogue)
    for s in sites:
        if not isinstance(s, str) or s not in catalogue:
            raise MarkerError(f"{where}: expected a known fault site ({', '.join(sorted(catalogue))}), "
                              f"got {s!r}")
    modes = mark.kwargs.get("modes", MODES)
    modes = ((modes,) if isinstance(modes, str) else
             tuple(modes) if isinstance(modes, (tuple, list, set, frozenset)) else None)
    if not modes or any(not isinstance(m, str) or m not in MODES for m in modes):
        raise MarkerError(f"{where}: modes: expected a subset of {MODES}, got {mark.kwargs['modes']!r}")
    max_nth = mark.kwargs.get("max_nth", state.settings.max_nth)
    if isinstance(max_nth, bool) or not isinstance(max_nth, int) or not 1 <= max_nth <= MAX_NTH_LIMIT:
        raise MarkerError(f"{where}: max_nth: expected an integer from 1 to {MAX_NTH_LIMIT}, "
                          f"got {max_nth!r}")
    return MatrixArgs(sites, modes, max_nth, _accept(mark.kwargs.get("accept")))


# ---------------------------------------------------------------------- pin_contract
def _rule(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return (isinstance(value, int) and value >= 1) or (isinstance(value, str) and bool(value.strip()))


def check_pin_contract(mark: Any) -> None:
    where = "@pytest.mark.pin_contract"
    if mark.args:
        raise MarkerError(f"{where}: expected keyword arguments expect=RULE or disable=[RULE, ...], "
                          f"got positional {mark.args!r}")
    unknown = set(mark.kwargs) - set(_PIN_CONTRACT_KWARGS)
    if unknown:
        raise MarkerError(f"{where}: expected keyword arguments {', '.join(_PIN_CONTRACT_KWARGS)}, "
                          f"got {sorted(unknown)[0]!r}")
    has_expect, has_disable = "expect" in mark.kwargs, "disable" in mark.kwargs
    if has_expect == has_disable:
        raise MarkerError(f"{where}: expected exactly one of expect=RULE or disable=[RULE, ...], "
                          f"got {'both' if has_expect else 'neither'}")
    if has_expect and not _rule(mark.kwargs["expect"]):
        raise MarkerError(f"{where}: expect: expected a rule (a number or a rule id), "
                          f"got {mark.kwargs['expect']!r}")
    if has_disable:
        rules = mark.kwargs["disable"]
        rules = (rules,) if isinstance(rules, (int, str)) else rules
        if not isinstance(rules, (list, tuple, set, frozenset)) or not rules or not all(map(_rule, rules)):
            raise MarkerError(f"{where}: disable: expected a list of rules (numbers or rule ids), "
                              f"got {mark.kwargs['disable']!r}")
    reason = mark.kwargs.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise MarkerError(f"{where}: reason: expected a string, got {reason!r}")
    if has_disable and not (reason or "").strip():
        raise MarkerError(f"{where}: disable: expected a reason=\"...\" saying why the rules are "
                          f"switched off, got none")
    from .contract import validate_pin_contract
    try:
        validate_pin_contract(mark)
    except ValueError as e:
        raise MarkerError(f"{where}: {e}") from None


# ---------------------------------------------------------------------- per item
def validate_item(item: pytest.Item, state: PinfaultState) -> None:
    """Check every pinfault-related marker of *item*; raises :class:`MarkerError`."""
    if not any(m.name in _OURS for m in item.iter_markers()):
        return
    uses_mm = bool({"fake_mm", "pinfault_machine"} & set(getattr(item, "fixturenames", ())))
    own = sorted({m.name for m in getattr(item, "own_markers", ()) if m.name in _OURS})
    if own and not uses_mm:
        # on the function itself: certainly meant for its machine, which it does not have
        # (a module's or class's marker may cover tests that need no machine)
        raise MarkerError(f"@pytest.mark.{own[0]}: expected the test to use the fake_mm or pinfault "
                          f"fixture (the marker applies to its fake_mm) or pinfault_machine, got neither")
    matrices = [m for m in getattr(item, "own_markers", ()) if m.name == "pinfault_matrix"]
    if len(matrices) > 1:
        raise MarkerError(f"@pytest.mark.pinfault_matrix: expected one marker per test (list every "
                          f"site in it), got {len(matrices)}")
    fields = mm_config_fields(item)
    if fields and _uses_default_mm_config(item):
        mm_config = apply_mm_config(state.settings.base_config, fields)
        if uses_mm:
            _check_buildable(item.config, mm_config)
            # the frozen config is what the test gets: the marker's own dicts may be
            # changed by the time it runs
            item.stash[MARKED_CONFIG_KEY] = mm_config
    _check_kernels(item, state, fields)
    pinfault_specs(item, state)
    mark = item.get_closest_marker("pinfault_matrix")
    if mark is not None:
        matrix_args(mark, state)
        if "fake_mm" not in getattr(item, "fixturenames", ()):
            raise MarkerError("@pytest.mark.pinfault_matrix: expected the test to use the fake_mm or "
                              "pinfault fixture (the faults are armed on its fake_mm), got neither")
    for mark in item.iter_markers("pin_contract"):
        check_pin_contract(mark)


def _check_kernels(item: pytest.Item, state: PinfaultState, fields: dict[str, Any]) -> None:
    """``pinfault_kernels``: known versions, not together with ``mm_config(kernel=...)``,
    and a machine each version can build (a quirk of the test's config that a version
    contradicts is named here, before anything runs)."""
    from .kernels import KernelsError, kernel_param, marked_kernels, uses_machine
    try:
        versions = marked_kernels(item)
    except KernelsError as e:
        raise MarkerError(str(e)) from None
    if versions is not None and "kernel" in fields:
        raise MarkerError(f"@pytest.mark.pinfault_kernels: expected no mm_config(kernel=...) on the same "
                          f"test (it runs one version), got kernel={fields['kernel']!r} and versions "
                          f"{', '.join(versions)}")
    version = kernel_param(item)
    if version is None or not uses_machine(getattr(item, "fixturenames", ())):
        return
    if not _uses_default_mm_config(item):
        return          # an overridden mm_config fixture: checked when the machine is built
    config = apply_mm_config(state.settings.base_config, fields)
    try:
        config = config.replace(kernel=version)
    except (ConfigError, TypeError) as e:
        where = ("@pytest.mark.pinfault_kernels" if versions is not None
                 else "--pinfault-kernel / pinfault_kernel (ini)")
        raise MarkerError(f"{where}: kernel {version!r}: {e}") from None
    _check_buildable(item.config, config)


def errno_text(value: Any) -> str:
    """``-12`` -> ``'-ENOMEM (-12)'``; other values as repr."""
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        name = _errno.errorcode.get(-value)
        return f"-{name} ({value})" if name else str(value)
    return repr(value)
