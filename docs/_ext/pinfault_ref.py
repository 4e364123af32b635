"""Sphinx extension: the pytest-pinfault reference, generated from the code at build time.

Every list in the reference -- public names, fixtures, markers, command-line options,
ini keys, hooks, fault sites, quirks and the ``MMConfig`` defaults -- is read from the
package while the docs build, so a name added to the code appears in the reference
without anyone editing a page, and a name that cannot be documented is a build warning
(an error under ``sphinx-build -W``).

The collecting functions (``public_api``, ``options``, ``fixtures`` ...) need neither
Sphinx nor docutils; tests/docs/test_reference.py uses them to check the reference's
coverage without building it.  Directives (used from the Markdown pages as
```` ```{pinfault-api} pytest_pinfault.mm ```` and the like):

``pinfault-api MODULE``
    one autodoc entry per name in ``MODULE.__all__`` (a name already documented under
    another public module gets a short entry pointing there);
``pinfault-fixtures``, ``pinfault-markers``, ``pinfault-options``, ``pinfault-ini``,
``pinfault-hooks``, ``pinfault-sites``, ``pinfault-quirks``, ``pinfault-mmconfig``
    the plugin's fixtures, markers, options, ini keys, hooks, the fault-site catalogue,
    the quirks and every ``MMConfig`` field with its default in the ini spelling.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import re
import textwrap
import types
from typing import Any, Callable, Iterator

#: The public modules, in the order they are documented.  A class or function exported by
#: several of them is documented once, under the first; the others point there.
PUBLIC_MODULES = (
    "pytest_pinfault",
    "pytest_pinfault.mm",
    "pytest_pinfault.contracts",
    "pytest_pinfault.faults.spec",
    "pytest_pinfault.faults.injector",
    "pytest_pinfault.faults.matrix",
    "pytest_pinfault.faults.sites",
    "pytest_pinfault.plugin",
    "pytest_pinfault.cdriver",
    "pytest_pinfault.errpaths",
    "pytest_pinfault.conformance",
    "pytest_pinfault.faker_provider",
)

#: Base classes whose own members are not pytest-pinfault's API (left out of
#: ``:inherited-members:``).
_FOREIGN_BASES = ("object", "BaseException", "Exception", "ValueError", "RuntimeError", "KeyError",
                  "LookupError", "TypeError", "Warning", "UserWarning", "int", "str", "tuple", "dict",
                  "list", "Enum", "IntEnum", "Flag", "IntFlag", "ReprEnum", "Mapping", "Collection",
                  "Sized", "Iterable", "Container", "Generic", "Protocol", "NamedTuple")


# ------------------------------------------------------------------ public names
@dataclasses.dataclass(frozen=True)
class ApiName:
    module: str            # the public module exporting it
    name: str
    kind: str              # "class", "function", "fixture", "hookimpl", "data", "module"
    canonical: str         # full name of the entry documenting it (itself or the first export)

    @property
    def full(self) -> str:
        return f"{self.module}.{self.name}"


def _is_fixture(obj: Any) -> bool:
    from _pytest.fixtures import getfixturemarker
    try:
        return getfixturemarker(obj) is not None
    except Exception:
        return False


def fixture_function(obj: Any) -> Callable[..., Any]:
    """The function behind a ``@pytest.fixture`` definition (pytest 7.4 to 9)."""
    get = getattr(obj, "_get_wrapped_function", None)
    if get is not None:
        return get()
    wrapped = getattr(obj, "__pytest_wrapped__", None)
    if wrapped is not None:
        return wrapped.obj
    return inspect.unwrap(obj)


def _kind(module: str, name: str, obj: Any) -> str:
    if module == "pytest_pinfault.plugin" and _is_fixture(obj):
        return "fixture"
    if module == "pytest_pinfault.plugin" and name.startswith("pytest_"):
        return "hookimpl"
    if isinstance(obj, type):
        return "class"
    if isinstance(obj, types.ModuleType):
        return "module"
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType)):
        return "function"
    return "data"


def public_api() -> list[ApiName]:
    """Every name in the ``__all__`` of :data:`PUBLIC_MODULES`, with where it is documented."""
    seen: dict[int, str] = {}
    out = []
    for modname in PUBLIC_MODULES:
        mod = importlib.import_module(modname)
        for name in dict.fromkeys(mod.__all__):         # a name listed twice: once
            obj = getattr(mod, name)
            kind = _kind(modname, name, obj)
            full = f"{modname}.{name}"
            canonical = full
            if kind in ("class", "function"):
                canonical = seen.setdefault(id(obj), full)
            out.append(ApiName(modname, name, kind, canonical))
    return out


# ------------------------------------------------------------------ plugin surface
@dataclasses.dataclass(frozen=True)
class Option:
    names: tuple[str, ...]
    help: str
    metavar: str | None
    choices: tuple[str, ...] | None
    default: Any


@dataclasses.dataclass(frozen=True)
class IniKey:
    name: str
    help: str
    type: str | None
    default: Any


class _Recorder:
    """Stands for pytest's ``Parser`` (and its option groups) in ``pytest_addoption``."""

    def __init__(self) -> None:
        self.options: list[Option] = []
        self.ini: list[IniKey] = []

    def getgroup(self, *args: Any, **kwargs: Any) -> "_Recorder":
        return self

    def addoption(self, *names: str, **kw: Any) -> None:
        self.options.append(Option(tuple(names), kw.get("help", ""), kw.get("metavar"),
                                   tuple(kw["choices"]) if kw.get("choices") else None, kw.get("default")))

    _addoption = addoption

    def addini(self, name: str, help: str, type: str | None = None, default: Any = None,
               **kw: Any) -> None:
        self.ini.append(IniKey(name, help, type, default))


def _recorded() -> _Recorder:
    from pytest_pinfault import plugin
    rec = _Recorder()
    plugin.pytest_addoption(rec)  # type: ignore[arg-type]
    return rec


def options() -> list[Option]:
    """The plugin's command-line options, in ``pytest --help`` order."""
    return _recorded().options


def ini_keys() -> list[IniKey]:
    """The plugin's ini keys, in ``pytest --help`` order."""
    return _recorded().ini


def fixtures() -> list[tuple[str, Callable[..., Any]]]:
    """``(name, function)`` of every fixture the plugin provides."""
    from pytest_pinfault import plugin
    out = []
    for name in sorted(vars(plugin)):
        obj = getattr(plugin, name)
        if _is_fixture(obj):
            from _pytest.fixtures import getfixturemarker
            out.append((getfixturemarker(obj).name or name, fixture_function(obj)))
    return out


@dataclasses.dataclass(frozen=True)
class Marker:
    name: str
    signature: str
    help: str


def markers() -> list[Marker]:
    """The plugin's markers, from the lines it registers (``pytest --markers``)."""
    from pytest_pinfault.plugin.markers import MARKERS
    out = []
    for line in MARKERS:
        m = re.match(r"^(\w+)(\(.*?\))?: (.*)$", line, re.S)
        if m is None:
            raise ValueError(f"marker line not of the form 'name(args): help': {line!r}")
        out.append(Marker(m.group(1), m.group(2) or "", m.group(3)))
    return out


def hooks() -> list[tuple[str, Callable[..., Any]]]:
    """``(name, spec function)`` of the plugin's own hooks."""
    from pytest_pinfault.plugin import hookspecs
    return [(n, f) for n, f in vars(hookspecs).items()
            if n.startswith("pytest_") and inspect.isfunction(f)]


def sites() -> list[Any]:
    from pytest_pinfault.faults.sites import BUILTIN_SITES
    return list(BUILTIN_SITES.values())


def quirks() -> dict[str, str]:
    from pytest_pinfault.mm.config import QUIRKS
    return dict(QUIRKS)


def mmconfig_defaults() -> list[tuple[str, str]]:
    """``(field, default in the ini spelling)`` for every ``MMConfig`` field."""
    from pytest_pinfault.mm.config import MMConfig
    default = MMConfig()
    return [(f.name, default.spelling(f.name)) for f in dataclasses.fields(MMConfig)]


def mmconfig_fields_doc() -> dict[str, str]:
    """Field -> its paragraph in the ``MMConfig`` docstring (``name`` on a line, the text
    indented below it)."""
    from pytest_pinfault.mm.config import MMConfig
    out: dict[str, str] = {}
    name = None
    for line in inspect.cleandoc(MMConfig.__doc__ or "").splitlines():
        if re.fullmatch(r"[a-z_][a-z0-9_]*", line):
            name = line
            out[name] = ""
        elif name is not None and line.startswith("    "):
            out[name] = (out[name] + " " + line.strip()).strip()
        elif line.strip():
            name = None
    return out


def _first_sentence(text: str) -> str:
    m = re.match(r"(.+?\.)(\s|$)", text)
    return m.group(1) if m else text


def mmconfig_markdown() -> str:
    """The machine defaults as the Markdown table in docs/configuration.md (checked by
    tests/docs/test_reference.py; refresh with ``python docs/_ext/pinfault_ref.py``)."""
    from pytest_pinfault.mm.config import MMConfig
    docs = mmconfig_fields_doc()
    rows = ["| field | default | what it is |", "|---|---|---|"]
    for name, text in mmconfig_defaults():
        what = " ".join(_first_sentence(docs.get(name, "")).split()).replace("|", "\\|")
        what = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", re.sub(r"``(.+?)``", r"`\1`", what))
        rows.append(f"| `{name}` | {f'`{text}`' if text else '(none)'} | {what} |")
    rows += ["", "As one ini line: `pinfault_mm_config = " + MMConfig().as_ini() + "`."]
    return "\n".join(rows) + "\n"


# ------------------------------------------------------------------ rendering (RST text)
def _indent(text: str, n: int = 3) -> str:
    return textwrap.indent(text, " " * n)


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "")


def _literal(value: Any) -> str:
    return f"``{value}``" if value not in (None, "", []) else "(none)"


def api_rst(modname: str) -> str:
    """autodoc directives for every name of ``modname.__all__``."""
    mod = importlib.import_module(modname)
    rows = [n for n in public_api() if n.module == modname]
    out = [f".. py:module:: {modname}", ""]
    doc = _doc(mod)
    if doc:
        out += [doc, ""]
    for kind, title in (("class", "Classes"), ("function", "Functions"), ("fixture", "Fixtures"),
                        ("hookimpl", "Hook implementations"), ("module", "Modules"),
                        ("data", "Constants and data")):
        group = [n for n in rows if n.kind == kind]
        if not group:
            continue
        out += [title, "~" * len(title), ""]
        for n in sorted(group, key=lambda n: n.name.lstrip("_").lower()):
            out += _entry(mod, n)
    return "\n".join(out) + "\n"


def _entry(mod: Any, n: ApiName) -> list[str]:
    obj = getattr(mod, n.name)
    if n.kind in ("class", "function") and n.canonical != n.full:
        role = "class" if n.kind == "class" else "func"
        directive = "py:class" if n.kind == "class" else "py:function"
        return [f".. {directive}:: {n.name}", "",
                f"   The same object as :py:{role}:`{n.canonical}`, documented there.", ""]
    if n.kind == "class":
        opts = ["   :members:", "   :undoc-members:"]
        if obj.__bases__ != (object,):
            opts.append("   :show-inheritance:")
        if any(b.__module__.startswith("pytest_pinfault") for b in obj.__mro__[1:]):
            opts.append(f"   :inherited-members: {','.join(_FOREIGN_BASES)}")
        if issubclass(obj, enum.Enum):
            opts = ["   :members:", "   :undoc-members:", "   :show-inheritance:"]
        return [f".. autoclass:: {n.full}", *opts, ""]
    if n.kind == "function":
        return [f".. autofunction:: {n.full}", ""]
    if n.kind == "fixture":
        fn = fixture_function(obj)
        return [f".. py:function:: {n.name}{_signature(fn)}", "",
                _indent(f"A pytest fixture (``{n.name}``): request it by that name as a test "
                        f"argument; see :fixture:`{n.name}`."), "",
                _indent(_doc(fn)), ""]
    if n.kind == "hookimpl":
        return [f".. autofunction:: {n.full}", "",
                _indent("pytest hook implementation: pytest calls it, tests do not."), ""]
    if n.kind == "module":
        return [f".. py:data:: {n.name}", "", _indent(f"The module :py:mod:`{obj.__name__}`."), ""]
    return [f".. py:data:: {n.name}", f"   :value: {_short_repr(obj)}", "",
            _indent(_data_doc(n.module, n.name, obj) or
                    f"A constant of type ``{type(obj).__name__}``."), ""]


def _data_doc(modname: str, name: str, obj: Any) -> str:
    """The ``#:`` comment documenting *name* where it is assigned: in *modname* or in
    whichever pytest-pinfault module it was imported from."""
    import sys
    from sphinx.pycode import ModuleAnalyzer
    candidates = [modname] + sorted(m for m, mod in list(sys.modules.items())
                                    if m.startswith("pytest_pinfault") and m != modname
                                    and getattr(mod, name, _MISSING) is obj)
    for m in candidates:
        try:
            docs = ModuleAnalyzer.for_module(m).find_attr_docs()
        except Exception:
            continue
        lines = docs.get(("", name))
        if lines:
            return "\n".join(lines).strip()
    return ""


_MISSING = object()


def _short_repr(obj: Any) -> str:
    if isinstance(obj, enum.Enum):
        text = f"{type(obj).__name__}.{obj.name}" if obj.name else repr(obj)
        if isinstance(obj, int):
            text += f" ({int(obj):#x})"
        return text
    text = repr(obj)
    if len(text) > 70:
        text = text[:67] + "..."
    return text.replace("\n", " ")


def _signature(fn: Callable[..., Any]) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "()"


def fixtures_rst() -> str:
    out = []
    for name, fn in fixtures():
        sig = inspect.signature(fn)
        deps = ", ".join(f":fixture:`{p}`" if p in dict(fixtures()) else f"``{p}``"
                         for p in sig.parameters)
        ret = sig.return_annotation
        ret_text = "" if ret is inspect.Signature.empty else (ret if isinstance(ret, str) else
                                                               getattr(ret, "__name__", str(ret)))
        out += [f".. fixture:: {name}", "",
                _indent(f"*Defined in* ``{fn.__module__}``; *uses* {deps or 'nothing'}; "
                        f"*returns* ``{ret_text or 'see below'}``."), "",
                _indent(_doc(fn)), ""]
    return "\n".join(out) + "\n"


def markers_rst() -> str:
    out = []
    for m in markers():
        out += [f".. marker:: {m.name}", "", _indent(f"``@pytest.mark.{m.name}{m.signature}``"), "",
                _indent(_escape(m.help)), ""]
    return "\n".join(out) + "\n"


def _escape(text: str) -> str:
    """Plain text as RST: no markup characters taken for markup."""
    return re.sub(r"([*`|_\\])", r"\\\1", text)


def options_rst() -> str:
    out = [".. program:: pytest", ""]
    for o in options():
        arg = f" {o.metavar}" if o.metavar else ("={" + ",".join(o.choices) + "}" if o.choices else "")
        out += [f".. option:: {', '.join(n + arg for n in o.names)}", "", _indent(_escape(o.help)), ""]
        if o.choices:
            out += [_indent("Choices: " + ", ".join(f"``{c}``" for c in o.choices) + "."), ""]
    return "\n".join(out) + "\n"


def ini_rst() -> str:
    out = []
    for k in ini_keys():
        default = "" if k.default in (None, "", []) else f"; default: {_literal(k.default)}"
        out += [f".. confval:: {k.name}", "", _indent(_escape(k.help)), "",
                _indent(f"Type: ``{k.type or 'string'}``{default}."), ""]
    return "\n".join(out) + "\n"


def hooks_rst() -> str:
    out = []
    for name, fn in hooks():
        out += [f".. autofunction:: pytest_pinfault.plugin.hookspecs.{name}", ""]
    return "\n".join(out) + "\n"


def sites_rst() -> str:
    import errno
    out = []
    for s in sites():
        errnos = ", ".join(f"``-{errno.errorcode.get(e, str(e))}``" for e in s.errnos)
        out += [f".. faultsite:: {s.name}", "",
                _indent(f"Kernel function: ``{s.kernel}``.  Firing means: {_escape(s.meaning)}.  "
                        f"The kernel function then returns: {_escape(s.returns)}.  "
                        f"Errnos (the first is the default): {errnos}."), ""]
    return "\n".join(out) + "\n"


def quirks_rst() -> str:
    out = []
    for name, text in quirks().items():
        out += [f".. quirk:: {name}", "", _indent(_escape(text)), ""]
    return "\n".join(out) + "\n"


def mmconfig_rst() -> str:
    from pytest_pinfault.mm.config import MMConfig
    line = MMConfig().as_ini()
    out = [".. list-table::", "   :header-rows: 1", "", "   * - field", "     - default (ini spelling)"]
    for name, text in mmconfig_defaults():
        out += [f"   * - ``{name}``", f"     - {_literal(text)}"]
    out += ["", "The whole default machine as one ``pinfault_mm_config`` line:", "",
            ".. code-block:: ini", "", f"   pinfault_mm_config = {line}", ""]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ Sphinx glue
def _directive(render: Callable[..., str], takes_arg: bool = False) -> Any:
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective
    from sphinx.util.nodes import nested_parse_with_titles

    class Generated(SphinxDirective):
        required_arguments = 1 if takes_arg else 0
        has_content = False

        def run(self) -> list[Any]:
            text = render(*self.arguments)
            node = nodes.section() if takes_arg else nodes.container()
            node.document = self.state.document
            lines = StringList(text.splitlines(), source=f"<{self.name} {' '.join(self.arguments)}>")
            nested_parse_with_titles(self.state, lines, node)
            return list(node.children)

    return Generated


def _check_coverage(app: Any, env: Any) -> None:
    """Warn for every public name, fixture, marker, option, ini key, hook and site that the
    built reference does not document (an error under ``-W``)."""
    from sphinx.util import logging
    log = logging.getLogger("pinfault_ref")
    py = env.get_domain("py").objects
    # A re-export's entry is an alias: a short cross-reference (``FakeMM``) resolves to
    # the documented object rather than being ambiguous between the two.
    for n in public_api():
        if n.canonical != n.full and n.full in py:
            py[n.full] = py[n.full]._replace(aliased=True)
    std = env.get_domain("std")
    documented = {(t, n) for (t, n) in std.objects}
    for n in public_api():
        if n.full not in py:
            log.warning("public name %s is not in the reference (add its module's page)", n.full)
    want = ([("fixture", f) for f, _ in fixtures()] + [("marker", m.name) for m in markers()]
            + [("confval", k.name) for k in ini_keys()] + [("faultsite", s.name) for s in sites()]
            + [("quirk", q) for q in quirks()])
    for t, n in want:
        if (t, n) not in documented:
            log.warning("%s %s is not in the reference", t, n)
    progs = std.progoptions
    for o in options():
        for name in o.names:
            if ("pytest", name) not in progs:
                log.warning("option %s is not in the reference", name)
    for name, _ in hooks():
        if f"pytest_pinfault.plugin.hookspecs.{name}" not in py:
            log.warning("hook %s is not in the reference", name)


def setup(app: Any) -> dict[str, Any]:
    for objtype, label in (("fixture", "pair: %s; fixture"), ("marker", "pair: %s; marker"),
                           ("confval", "pair: %s; ini key"), ("faultsite", "pair: %s; fault site"),
                           ("quirk", "pair: %s; quirk")):
        app.add_object_type(objtype, objtype, label)
    app.add_directive("pinfault-api", _directive(api_rst, takes_arg=True))
    for name, render in (("fixtures", fixtures_rst), ("markers", markers_rst),
                         ("options", options_rst), ("ini", ini_rst), ("hooks", hooks_rst),
                         ("sites", sites_rst), ("quirks", quirks_rst), ("mmconfig", mmconfig_rst)):
        app.add_directive(f"pinfault-{name}", _directive(render))
    app.connect("env-check-consistency", _check_coverage)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


def iter_all_names() -> Iterator[str]:
    """Every name the reference must carry: public names, then the plugin's surface."""
    for n in public_api():
        yield n.full
    yield from (f for f, _ in fixtures())
    yield from (m.name for m in markers())
    yield from (n for o in options() for n in o.names)
    yield from (k.name for k in ini_keys())
    yield from (h for h, _ in hooks())
    yield from (s.name for s in sites())


if __name__ == "__main__":
    print(mmconfig_markdown(), end="")
