"""The per-run state of the plugin, kept in ``config.stash`` (never in a module global).

It holds the resolved :class:`~.options.Settings` and the site catalogue: the built-in
sites plus the user sites declared by the ``pinfault_sites`` ini key and by
``pytest_pinfault_declare_sites`` hook implementations (typically in a conftest).  Fault
*state* is not here: every test gets a fresh ``fake_mm`` with its own injector.
"""

from __future__ import annotations

import zlib
from typing import Any

import pytest

from ..faults.injector import Injector
from ..faults.spec import FaultSpec, FaultSpecError, parse_spec, validate_spec
from .options import Settings

__all__ = ["PinfaultState", "STATE_KEY", "get_state"]


class PinfaultState:
    """Settings plus the lazily built site catalogue of one pytest run."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self._catalogue: dict[str, Any] | None = None
        self._user_sites: tuple[Any, ...] = ()
        self._nimpls = -1
        self._specs: dict[str, FaultSpec] = {}

    # ------------------------------------------------------------------ sites
    def _declared(self) -> list[tuple[str, Any, str, str, str]]:
        """(name, errnos, kernel, meaning, where) of every user site declaration."""
        out = [(n, e, "driver", "", "pinfault_sites (ini)") for n, e in self.settings.sites]

        def declare(*args: Any, **kwargs: Any) -> None:
            """declare(name, errnos, kernel="driver", meaning=""); a wrong call is a
            UsageError naming the hook, not a TypeError out of the plugin."""
            where = "pytest_pinfault_declare_sites"
            names = ("name", "errnos", "kernel", "meaning")
            unknown = sorted(set(kwargs) - set(names))
            given = dict(zip(names, args))
            twice = sorted(set(given) & set(kwargs))
            if len(args) > len(names) or unknown or twice:
                got = (f"{len(args)} positional arguments" if len(args) > len(names) else
                       f"{unknown[0]!r}" if unknown else f"{twice[0]!r} twice")
                raise pytest.UsageError(f"{where}: declare(name, errnos, kernel='driver', meaning=''): "
                                        f"expected those arguments, got {got}")
            given.update(kwargs)
            if "name" not in given or "errnos" not in given:
                raise pytest.UsageError(f"{where}: declare(name, errnos, ...): expected a name and its "
                                        f"errnos, got {', '.join(map(repr, args)) or 'nothing'}")
            out.append((given["name"], given["errnos"], given.get("kernel", "driver"),
                        given.get("meaning", ""), where))

        self.config.hook.pytest_pinfault_declare_sites(config=self.config, declare=declare)
        return out

    def _build(self) -> None:
        inj = Injector()
        user = []
        for name, errnos, kernel, meaning, where in self._declared():
            if isinstance(errnos, str):
                errnos = errnos.replace(",", " ").split()
            try:
                user.append(inj.declare_site(name, errnos, kernel=kernel, meaning=meaning))
            except (ValueError, KeyError, TypeError) as e:
                raise pytest.UsageError(f"{where}: cannot declare fault site {name!r}: {e}") from None
        self._catalogue = dict(inj.sites)
        self._user_sites = tuple(user)

    def _fresh(self) -> None:
        n = len(self.config.hook.pytest_pinfault_declare_sites.get_hookimpls())
        if self._catalogue is None or n != self._nimpls:   # a conftest with declarations came in
            self._nimpls = n
            self._build()

    @property
    def catalogue(self) -> dict[str, Any]:
        """Site name -> Site, built-in and declared."""
        self._fresh()
        assert self._catalogue is not None
        return self._catalogue

    @property
    def user_sites(self) -> tuple[Any, ...]:
        """The declared sites, re-declared on every test's injector."""
        self._fresh()
        return self._user_sites

    # ------------------------------------------------------------------ specs
    def spec(self, text: str) -> FaultSpec:
        """Parse and validate one spec against the catalogue (cached); raises
        :class:`FaultSpecError`."""
        spec = self._specs.get(text)
        if spec is None:
            spec = parse_spec(text)
            validate_spec(spec, self.catalogue)
            self._specs[text] = spec
        return spec

    def validate_global_faults(self) -> None:
        for spec in self.settings.faults:
            try:
                validate_spec(spec, self.catalogue)
                for term in spec.terms:
                    if term.action == "call":
                        raise FaultSpecError(spec.text, term.arg_column or term.column,
                                             "an action other than call(...) (callbacks can only be "
                                             "given in a marker or pinfault.arm)", f"call({term.arg})")
            except FaultSpecError as e:
                raise pytest.UsageError(f"{self.settings.faults_source}: {e}") from None

    def test_seed(self, nodeid: str) -> int:
        """A test's injector seed: a function of the run seed and the test id only, so
        a test sees the same random faults whatever runs before it (or on which
        pytest-xdist worker)."""
        return zlib.crc32(f"{self.settings.seed}:{nodeid}".encode()) or 1


STATE_KEY = pytest.StashKey[PinfaultState]()


def get_state(config: pytest.Config) -> PinfaultState:
    return config.stash[STATE_KEY]
