"""The reference (docs/, built by Sphinx from the code) documents every public name,
fixture, marker, option, ini key, hook, fault site and quirk, and configuration.md
states the real machine defaults.

The lists come from docs/_ext/pinfault_ref.py, the extension that generates the
reference pages, so they are the code's own.  The tests that build the site need the
``docs`` extra (Sphinx, myst-parser) and skip without it; CI builds the site with
``-W --keep-going`` and points ``PINFAULT_DOCS_HTML`` at it, so the check below reads
that build instead of building again.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
import sys
from pathlib import Path

import pytest

import pytest_pinfault

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
import pinfault_ref  # noqa: E402

sys.path.remove(str(DOCS / "_ext"))


def test_every_public_package_is_in_the_reference():
    """A package of pytest_pinfault with an ``__all__`` (its public API) is one of the
    modules the reference documents."""
    missing = []
    for info in pkgutil.walk_packages(pytest_pinfault.__path__, "pytest_pinfault."):
        if not info.ispkg or any(part.startswith("_") for part in info.name.split(".")):
            continue
        mod = importlib.import_module(info.name)
        if hasattr(mod, "__all__") and info.name not in pinfault_ref.PUBLIC_MODULES:
            missing.append(info.name)
    assert missing == []


def test_public_api_lists_every_name_of_every_public_module():
    names = pinfault_ref.public_api()
    for modname in pinfault_ref.PUBLIC_MODULES:
        mod = importlib.import_module(modname)
        assert {n.name for n in names if n.module == modname} == set(mod.__all__), modname
    by_full = {n.full: n for n in names}
    # a re-export points at the documented entry, which is the same object
    fakemm = by_full["pytest_pinfault.mm.FakeMM"]
    assert fakemm.canonical == "pytest_pinfault.FakeMM"
    assert by_full["pytest_pinfault.plugin.pinfault_faker"].kind == "fixture"
    assert by_full["pytest_pinfault.Violation"].kind == "class"


def test_every_api_page_section_is_generated():
    page = (DOCS / "reference" / "api.rst").read_text(encoding="utf-8")
    for modname in pinfault_ref.PUBLIC_MODULES:
        assert f".. pinfault-api:: {modname}\n" in page, modname
    plugin_page = (DOCS / "reference" / "plugin.rst").read_text(encoding="utf-8")
    for kind in ("fixtures", "markers", "options", "ini", "hooks", "sites", "quirks", "mmconfig"):
        assert f".. pinfault-{kind}::" in plugin_page, kind


def test_plugin_surface_is_read_from_the_code():
    from pytest_pinfault.faults.sites import BUILTIN_SITES
    from pytest_pinfault.mm.config import QUIRKS
    from pytest_pinfault.plugin import hookspecs
    assert {name for name, _ in pinfault_ref.fixtures()} >= {
        "mm_config", "fake_mm", "pinfault", "pinfault_kernel", "pinfault_faker", "load_c_driver"}
    assert [m.name for m in pinfault_ref.markers()] == ["mm_config", "pinfault", "pinfault_matrix",
                                                        "pin_contract", "pinfault_kernels"]
    opts = [n for o in pinfault_ref.options() for n in o.names]
    assert "--pinfault-seed" in opts and all(n.startswith("--pinfault-") for n in opts)
    assert "pinfault_mm_config" in [k.name for k in pinfault_ref.ini_keys()]
    assert {h for h, _ in pinfault_ref.hooks()} == {n for n in vars(hookspecs) if n.startswith("pytest_pinfault_")}
    assert [s.name for s in pinfault_ref.sites()] == list(BUILTIN_SITES)
    assert list(pinfault_ref.quirks()) == list(QUIRKS)


def _undocumented() -> list[str]:
    """Public classes, functions, fixtures, methods and properties without a docstring
    (the reference would show a bare signature)."""
    import enum
    import inspect
    missing = []
    for n in pinfault_ref.public_api():
        if n.canonical != n.full or n.kind not in ("class", "function", "fixture"):
            continue
        obj = getattr(importlib.import_module(n.module), n.name)
        if n.kind == "fixture":
            obj = pinfault_ref.fixture_function(obj)
        if not (obj.__doc__ or "").strip():
            missing.append(n.full)
        if n.kind != "class" or issubclass(obj, enum.Enum):
            continue
        for name in dir(obj):
            owner = next((k for k in obj.__mro__ if name in vars(k)), None)
            if name.startswith("_") or owner is None or not owner.__module__.startswith("pytest_pinfault"):
                continue
            raw = vars(owner)[name]
            raw = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
            if owner.__module__ == "pytest_pinfault.mm.fakemm" and name == "observer_factory":
                continue          # a class attribute (documented by its #: comment) set by contracts
            if (inspect.isfunction(raw) or isinstance(raw, property)) and not (raw.__doc__ or "").strip():
                missing.append(f"{n.full}.{name}")
    return missing


def test_every_public_callable_has_a_docstring():
    assert _undocumented() == []


def test_every_mmconfig_field_is_described_in_its_docstring():
    from pytest_pinfault.mm.config import MMConfig
    described = pinfault_ref.mmconfig_fields_doc()
    for field in dataclasses.fields(MMConfig):
        assert described.get(field.name), f"MMConfig's docstring does not describe {field.name!r}"


def test_configuration_md_states_the_real_defaults():
    """The machine defaults table in configuration.md is the one generated from
    ``MMConfig()``, and the ini key's row no longer passes an example off as them."""
    doc = (DOCS / "configuration.md").read_text(encoding="utf-8")
    table = pinfault_ref.mmconfig_markdown()
    assert table in doc, ("docs/configuration.md's machine defaults differ from MMConfig(); "
                          "refresh them with: python docs/_ext/pinfault_ref.py")
    from pytest_pinfault.mm.config import MMConfig
    d = MMConfig()
    assert (d.ram, d.movablecore, d.cma, dict(d.hugetlb)) == (4 << 30, 0, (), {})
    assert "| `ram` | `4GiB` |" in table and "| `cma` | `0` |" in table
    row = next(line for line in doc.splitlines() if line.startswith("| | `pinfault_mm_config` |"))
    assert "4 GiB of RAM, no ZONE_MOVABLE, no CMA" in row and "for example `ram=2GiB" in row


def test_markdown_table_changes_with_the_defaults(monkeypatch):
    """The check above can fail: a changed default changes the generated table."""
    from pytest_pinfault.mm import config
    before = pinfault_ref.mmconfig_markdown()
    fields = {f.name: f for f in dataclasses.fields(config.MMConfig)}
    monkeypatch.setattr(fields["nr_cpus"], "default", 3)
    monkeypatch.setattr(config.MMConfig.__init__, "__defaults__",
                        tuple(3 if d == 2 and isinstance(d, int) else d
                              for d in config.MMConfig.__init__.__defaults__))
    assert config.MMConfig().nr_cpus == 3
    after = pinfault_ref.mmconfig_markdown()
    assert after != before and "| `nr_cpus` | `3` |" in after


# ------------------------------------------------------------------ the built site


def _need_sphinx() -> None:
    pytest.importorskip("sphinx", reason="the docs extra (pip install -e '.[docs]') is not installed")
    pytest.importorskip("myst_parser", reason="the docs extra (pip install -e '.[docs]') is not installed")


def _build(src: Path, out: Path) -> tuple[int, str]:
    """sphinx-build -W --keep-going -b html SRC OUT, in-process; (status, warnings)."""
    import io
    from sphinx.cmd.build import build_main
    from sphinx.util.docutils import docutils_namespace, patch_docutils
    err = io.StringIO()
    import contextlib
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = build_main(["-W", "--keep-going", "-q", "-E", "-b", "html", str(src), str(out)])
    return status, err.getvalue()


@pytest.fixture(scope="module")
def built_html(tmp_path_factory) -> Path:
    _need_sphinx()
    given = os.environ.get("PINFAULT_DOCS_HTML")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("docs-html")
    status, warnings = _build(DOCS, out)
    assert status == 0, warnings
    return out


def _inventory(html: Path) -> dict[str, set[str]]:
    from sphinx.util.inventory import InventoryFile
    with open(html / "objects.inv", "rb") as f:
        data = f.read()
    try:
        inv = InventoryFile.loads(data, uri="")          # Sphinx >= 8.2
        items = {t: set(v) for t, v in inv.data.items()} if hasattr(inv, "data") else None
    except AttributeError:
        items = None
    if items is None:
        import io
        inv = InventoryFile.load(io.BytesIO(data), "", lambda a, b: b)
        items = {t: set(v) for t, v in inv.items()}
    return items


def test_built_reference_documents_everything(built_html):
    inv = _inventory(built_html)
    py = set().union(*(v for t, v in inv.items() if t.startswith("py:")))
    missing = [n.full for n in pinfault_ref.public_api() if n.full not in py]
    missing += [f"hook {h}" for h, _ in pinfault_ref.hooks()
                if f"pytest_pinfault.plugin.hookspecs.{h}" not in py]
    for kind, names in (("std:fixture", [f for f, _ in pinfault_ref.fixtures()]),
                        ("std:marker", [m.name for m in pinfault_ref.markers()]),
                        ("std:confval", [k.name for k in pinfault_ref.ini_keys()]),
                        ("std:faultsite", [s.name for s in pinfault_ref.sites()]),
                        ("std:quirk", list(pinfault_ref.quirks())),
                        ("std:cmdoption", [f"pytest.{n}" for o in pinfault_ref.options() for n in o.names])):
        missing += [f"{kind} {n}" for n in names if n not in inv.get(kind, ())]
    assert missing == []
    # signatures and return values are on the page
    api = (built_html / "reference" / "api.html").read_text(encoding="utf-8")
    assert "pin_user_pages" in api and "gup_flags" in api


def test_build_warns_about_an_undocumented_name(tmp_path):
    """The extension's coverage check fires: a site whose reference page leaves out the
    markers (and every public module) fails under -W, naming what is missing."""
    _need_sphinx()
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(DOCS / '_ext')!r})\n"
        "extensions = ['sphinx.ext.autodoc', 'pinfault_ref']\n", encoding="utf-8")
    (src / "index.rst").write_text("Reference\n=========\n\n.. pinfault-fixtures::\n\n.. pinfault-sites::\n",
                                   encoding="utf-8")
    status, warnings = _build(src, tmp_path / "out")
    assert status != 0
    assert "marker pinfault_matrix is not in the reference" in warnings
    assert "public name pytest_pinfault.FakeMM is not in the reference" in warnings
    assert "fixture fake_mm is not in the reference" not in warnings
    assert "faultsite kmalloc is not in the reference" not in warnings


def test_a_missing_docstring_is_found(monkeypatch):
    from pytest_pinfault.mm.fakemm import FakeMM
    from pytest_pinfault.mm.folio import Folio
    monkeypatch.setattr(FakeMM.pfn_valid, "__doc__", None)
    monkeypatch.setattr(Folio, "size", property(lambda self: 0))
    assert {"pytest_pinfault.FakeMM.pfn_valid", "pytest_pinfault.mm.Folio.size"} <= set(_undocumented())
