"""The kernel API the bridge provides, read from its own header (``include/pinfault/kapi.h``):
functions (implemented by the runtime or inline) and macros.  ``python -m
pytest_pinfault.cdriver.api_list`` prints the list docs/cdriver.md carries (a test keeps
the two equal)."""

from __future__ import annotations

import re

from .build import INCLUDE_DIR

__all__ = ["supported_api"]

_FUNC = re.compile(r"^(?:extern|static inline)\s[^;{(]*?\b([A-Za-z_][A-Za-z0-9_]*)\s*\(", re.M)
_MACRO = re.compile(r"^#define\s+([A-Za-z_][A-Za-z0-9_]*)", re.M)


def supported_api() -> dict[str, list[str]]:
    """``{"functions": [...], "macros": [...]}``, sorted; bridge-internal names
    (``__pf_*``, ``pf_*``, ``___GFP_*``, include guards) left out."""
    text = (INCLUDE_DIR / "pinfault" / "kapi.h").read_text()
    funcs = {m.group(1) for m in _FUNC.finditer(text)}
    macros = {m.group(1) for m in _MACRO.finditer(text)}

    def public(n: str) -> bool:
        return not (n.startswith(("__pf", "pf_", "PF_", "___", "PINFAULT_")) or n in ("__init", "__exit"))
    return {"functions": sorted(n for n in funcs if public(n)),
            "macros": sorted(n for n in macros - funcs if public(n))}


def render() -> str:
    api = supported_api()
    out = []
    for kind in ("functions", "macros"):
        out.append(f"**{kind.capitalize()}** ({len(api[kind])}): " + ", ".join(f"`{n}`" for n in api[kind]))
    return "\n\n".join(out)


if __name__ == "__main__":     # pragma: no cover
    print(render())
