"""Command-line options and ini keys, and the run settings resolved from them.

Every option lives in the ``pinfault`` group of ``pytest --help``.  Values are resolved
once per run in :func:`resolve_settings`; a bad value is a :class:`pytest.UsageError`
naming the option or ini key, what was expected and what was got.
"""

from __future__ import annotations

import dataclasses
import os
import random
from typing import Any

import pytest

from ..faults.spec import FaultSpec, FaultSpecError, parse_errno, parse_specs
from ..mm.config import ConfigError, MMConfig

__all__ = ["Settings", "pytest_addoption", "resolve_settings", "parse_mm_config_line",
           "parse_sites_lines", "check_buildable", "MAX_NTH_DEFAULT", "MAX_NTH_LIMIT", "TRACE_LEVELS", "ENV_FAULTS"]

MAX_NTH_DEFAULT = 32
#: The highest ``max_nth`` a matrix may ask for (marker, option or ini key): a matrix
#: has up to sites x max_nth x modes cases, and a bound checked at collection keeps a
#: typo (``max_nth=10**7``) from collecting for ever.  Retry loops in the model are
#: bounded well below it (``NR_MAX_MIGRATE_PAGES_RETRY`` is 10, ``gup_retry_limit`` 64).
MAX_NTH_LIMIT = 1000
TRACE_LEVELS = ("off", "on", "verbose")
#: The environment variable holding global fault specs (same grammar as the marker).
ENV_FAULTS = "PINFAULT_FAULTS"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pinfault", "pinfault: fake mm and fault injection")
    group.addoption("--pinfault-seed", dest="pinfault_seed", metavar="N", default=None,
                    help="seed of the fault injectors (default: ini pinfault_seed, else random "
                         "per session; printed in the report header)")
    group.addoption("--pinfault-faults", dest="pinfault_faults", metavar="SPECS", default=None,
                    help="fault specs armed on every fake_mm, separated by ';' "
                         f"(default: ${ENV_FAULTS}, else ini pinfault_faults)")
    group.addoption("--pinfault-json", dest="pinfault_json", metavar="PATH", default=None,
                    help="write the pinfault JSON report (schema pytest-pinfault/3) to PATH")
    group.addoption("--pinfault-trace", dest="pinfault_trace", default=None, choices=TRACE_LEVELS,
                    help="off: nothing (default); on: count every site hit and attach the fired "
                         "faults and the mm trace to failing tests; verbose: also the routine "
                         "trace events and every hit, for every test")
    group.addoption("--pinfault-max-nth", dest="pinfault_max_nth", metavar="N", default=None,
                    help=f"highest occurrence pinfault_matrix enumerates (default: ini "
                         f"pinfault_max_nth, else {MAX_NTH_DEFAULT})")
    group.addoption("--pinfault-kernel", dest="pinfault_kernel", metavar="VERSION[,VERSION]", default=None,
                    help="run every fake_mm or pinfault_machine test once per kernel version (ids kernel-6.1 ...): "
                         "versions from 6.1, 6.6, 6.12, 6.17, comma-separated, or 'all' (default: ini "
                         "pinfault_kernel; a test's pinfault_kernels or mm_config(kernel=) marker wins)")
    group.addoption("--pinfault-errpaths", dest="pinfault_errpaths", metavar="PKG[,PKG]", default=None,
                    help="under coverage.py (coverage run -m pytest, or --cov), print the error-path "
                         "coverage of these packages at the end: lines reached only under injected "
                         "faults (with their sites) and error-handling lines no test reached")
    parser.addini("pinfault_seed", "seed of the fault injectors (see --pinfault-seed)", default="")
    parser.addini("pinfault_faults", "fault specs armed on every fake_mm, one per line or ';'-separated",
                  default="")
    parser.addini("pinfault_max_nth", f"pinfault_matrix occurrence bound (default {MAX_NTH_DEFAULT})",
                  default="")
    parser.addini("pinfault_mm_config", "default MMConfig fields, e.g. 'ram=2GiB cma=128MiB "
                  "movablecore=256MiB quirks=pcp_thp_shared_list'", default="")
    parser.addini("pinfault_kernel", "kernel versions every fake_mm or pinfault_machine test runs with, e.g. '6.1,6.12' "
                  "(see --pinfault-kernel)", default="")
    parser.addini("pinfault_sites", "user fault sites, one per line: 'name: ENOMEM EINVAL'",
                  type="linelist", default=[])
    parser.addini("pinfault_budget", "fault-site hits allowed per test before a livelock failure "
                  "(default: the injector's)", default="")
    parser.addini("pinfault_trace", "default of --pinfault-trace", default="")
    parser.addini("pinfault_cdriver_cache", "where the C-driver bridge caches compiled drivers "
                  "(default: $PINFAULT_CDRIVER_CACHE, else $XDG_CACHE_HOME/pytest-pinfault/cdriver)",
                  default="")


@dataclasses.dataclass(frozen=True)
class Settings:
    """One run's pinfault settings (see :func:`resolve_settings`)."""

    seed: int
    faults: tuple[FaultSpec, ...]
    faults_source: str
    json_path: str | None
    trace: str
    max_nth: int
    budget: int | None
    base_config: MMConfig
    sites: tuple[tuple[str, tuple[int, ...]], ...]
    kernels: tuple[str, ...] | None = None


def _ascii_int(text: str) -> int | None:
    """``"12"`` or ``"-3"`` -> int; None for anything else, including what ``int()``
    would take but a reader would not (``"١٢"``, ``"1_000"``, ``" +4"``) and numbers
    of more than 30 digits."""
    t = text.strip()
    digits = t[1:] if t.startswith("-") else t
    if not digits or len(digits) > 30 or not all(c in "0123456789" for c in digits):
        return None
    return int(t)


def _int(value: Any, where: str, lo: int | None = None, hi: int | None = None) -> int:
    n = _ascii_int(str(value))
    if n is None or (lo is not None and n < lo) or (hi is not None and n > hi):
        what = ("an integer" if lo is None else f"an integer >= {lo}" if hi is None
                else f"an integer from {lo} to {hi}")
        raise pytest.UsageError(f"{where}: expected {what}, got {value!r}") from None
    return n


def _resolve_seed(config: pytest.Config) -> int:
    worker = getattr(config, "workerinput", None)
    if worker is not None and "pinfault_seed" in worker:   # pytest-xdist: the controller's seed
        return int(worker["pinfault_seed"])
    opt = config.getoption("pinfault_seed")
    if opt is not None:
        return _int(opt, "--pinfault-seed", 0)
    ini = str(config.getini("pinfault_seed")).strip()
    if ini:
        return _int(ini, "pinfault_seed (ini)", 0)
    return random.SystemRandom().randrange(1 << 32)


def _resolve_faults(config: pytest.Config) -> tuple[tuple[FaultSpec, ...], str]:
    opt = config.getoption("pinfault_faults")
    if opt is not None:
        text, source = opt, "--pinfault-faults"
    elif os.environ.get(ENV_FAULTS, "").strip():
        text, source = os.environ[ENV_FAULTS], ENV_FAULTS
    else:
        text, source = str(config.getini("pinfault_faults")), "pinfault_faults (ini)"
    try:
        return tuple(parse_specs(text)), source
    except FaultSpecError as e:
        raise pytest.UsageError(f"{source}: {e}") from None


def _resolve_max_nth(config: pytest.Config) -> int:
    opt = config.getoption("pinfault_max_nth")
    if opt is not None:
        return _int(opt, "--pinfault-max-nth", 1, MAX_NTH_LIMIT)
    ini = str(config.getini("pinfault_max_nth")).strip()
    return _int(ini, "pinfault_max_nth (ini)", 1, MAX_NTH_LIMIT) if ini else MAX_NTH_DEFAULT


def _resolve_trace(config: pytest.Config) -> str:
    opt = config.getoption("pinfault_trace")
    if opt is not None:
        return str(opt)
    ini = str(config.getini("pinfault_trace")).strip()
    if ini and ini not in TRACE_LEVELS:
        raise pytest.UsageError(f"pinfault_trace (ini): expected one of {', '.join(TRACE_LEVELS)}, "
                                f"got {ini!r}")
    return ini or "off"


_MM_FIELDS = {f.name: f for f in dataclasses.fields(MMConfig)}


def parse_mm_config_line(text: str, where: str = "pinfault_mm_config (ini)") -> MMConfig:
    """``"ram=2GiB cma=128MiB quirks=a,b hugetlb=2MiB:16"`` -> :class:`MMConfig`.

    Each value is passed to :class:`MMConfig` as the text it is: the ini key, the
    ``mm_config`` marker and ``MMConfig(...)`` read the same spelling
    (:meth:`MMConfig.spelling`).  A bad token or value is a :class:`pytest.UsageError`
    naming *where*, the field, what was expected and what was got."""
    fields: dict[str, Any] = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if not sep:
            raise pytest.UsageError(f"{where}: expected 'field=value', got {token!r}")
        if key not in _MM_FIELDS:
            raise pytest.UsageError(f"{where}: expected an MMConfig field "
                                    f"({', '.join(_MM_FIELDS)}), got {key!r}")
        if key in fields:
            raise pytest.UsageError(f"{where}: expected each field once, got {key!r} twice")
        fields[key] = value
    try:
        return MMConfig(**fields)
    except ConfigError as e:
        raise pytest.UsageError(f"{where}: {e}") from None


def check_buildable(config: MMConfig) -> str | None:
    """Why a FakeMM cannot be built from *config* (a CMA area that does not fit, a
    ``movablecore`` larger than the highest zone ...), or None.  Some values are only
    refused when the machine is laid out; building one finds them before any test runs.
    The cost is that of the test's own machine: about 0.2 ms whatever the RAM size, plus
    about 5 us per hugetlb pool page (2.5 ms for 512 pages of 2 MiB)."""
    from .. import FakeMM
    try:
        FakeMM(config)
    except ConfigError as e:
        return str(e)
    return None


def _check_json_path(path: str | None, base: str, probe: bool = True) -> str | None:
    """The ``--pinfault-json`` path, refused at start-up rather than after the run when
    it cannot be written: empty, a directory, or a file that cannot be created there.
    With *probe* (not on pytest-xdist workers, which write nothing) the file is opened
    for appending -- created and removed again if it did not exist -- and its missing
    directories are created, as the report would."""
    if path is None:
        return None
    where = "--pinfault-json"
    if not path.strip():
        raise pytest.UsageError(f"{where}: expected a file path, got {path!r}")
    full = os.path.join(base, path)
    if os.path.isdir(full):
        raise pytest.UsageError(f"{where}: expected a file path, got the directory {path!r}")
    if not probe:
        return path
    existed = os.path.exists(full)
    try:
        os.makedirs(os.path.dirname(full) or ".", exist_ok=True)
        with open(full, "a", encoding="utf-8"):
            pass
        if not existed:
            os.remove(full)
    except OSError as e:
        raise pytest.UsageError(f"{where}: expected a path where the report can be written, got "
                                f"{path!r} ({e.strerror or e})") from None
    return path


def parse_sites_lines(lines: list[str], where: str = "pinfault_sites (ini)"
                      ) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``["udmabuf.sg_alloc: ENOMEM EINVAL"]`` -> ``(("udmabuf.sg_alloc", (12, 22)),)``."""
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, rest = line.partition(":")
        name = name.strip()
        errnos = []
        for tok in rest.replace(",", " ").split():
            e = parse_errno(tok)
            if e is None:
                raise pytest.UsageError(f"{where}: site {name!r}: expected an errno name like "
                                        f"ENOMEM, got {tok!r}")
            errnos.append(e)
        if not sep or not name or not errnos:
            raise pytest.UsageError(f"{where}: expected 'name: ERRNO [ERRNO...]', got {line!r}")
        out.append((name, tuple(errnos)))
    return tuple(out)


def resolve_settings(config: pytest.Config) -> Settings:
    """Options > environment > ini > defaults, validated."""
    faults, source = _resolve_faults(config)
    errpaths = config.getoption("pinfault_errpaths", None)
    if errpaths is not None and not [p for p in str(errpaths).split(",") if p.strip()]:
        raise pytest.UsageError(f"--pinfault-errpaths: expected packages PKG[,PKG], got {errpaths!r}")
    budget_ini = str(config.getini("pinfault_budget")).strip()
    base = _base_config(config)
    kernels = _resolve_kernels(config)
    for version in kernels or ():
        try:
            base.replace(kernel=version)
        except ConfigError as e:
            where = ("--pinfault-kernel" if config.getoption("pinfault_kernel", None) is not None
                     else "pinfault_kernel (ini)")
            raise pytest.UsageError(f"{where}: kernel {version!r} with pinfault_mm_config (ini): {e}") from None
    return Settings(
        seed=_resolve_seed(config),
        faults=faults,
        faults_source=source,
        json_path=_check_json_path(config.getoption("pinfault_json"), str(config.invocation_params.dir),
                                   probe=not hasattr(config, "workerinput")),
        trace=_resolve_trace(config),
        max_nth=_resolve_max_nth(config),
        budget=_int(budget_ini, "pinfault_budget (ini)", 1) if budget_ini else None,
        base_config=base,
        sites=parse_sites_lines(list(config.getini("pinfault_sites"))),
        kernels=kernels,
    )


def _resolve_kernels(config: pytest.Config) -> tuple[str, ...] | None:
    """``--pinfault-kernel`` > ini ``pinfault_kernel``: the versions every fake_mm or
    pinfault_machine test runs with, or None (one run, with the machine's own version)."""
    from .kernels import parse_kernels
    opt = config.getoption("pinfault_kernel", None)
    if opt is not None:
        kernels = parse_kernels(str(opt), "--pinfault-kernel")
        if kernels is None:
            raise pytest.UsageError("--pinfault-kernel: expected kernel versions from '6.1', '6.6', "
                                    "'6.12', '6.17' (comma-separated) or 'all', got ''")
        return kernels
    return parse_kernels(str(config.getini("pinfault_kernel")), "pinfault_kernel (ini)")


def _base_config(config: pytest.Config) -> MMConfig:
    where = "pinfault_mm_config (ini)"
    base = parse_mm_config_line(str(config.getini("pinfault_mm_config")), where)
    why = check_buildable(base)
    if why is not None:
        raise pytest.UsageError(f"{where}: {why}")
    return base
