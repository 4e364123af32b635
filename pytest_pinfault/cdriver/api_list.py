"""The kernel API the bridge provides, read from its own header (``include/pinfault/kapi.h``,
with the bridge headers it includes, such as the uapi ioctl encoding
``include/uapi/asm-generic/ioctl.h``): functions (implemented by the runtime or inline) and macros.  ``python -m
pytest_pinfault.cdriver.api_list`` prints the list docs/cdriver.md carries (a test keeps
the two equal)."""

from __future__ import annotations

import re
from pathlib import Path

from .build import INCLUDE_DIR

__all__ = ["supported_api"]

_FUNC = re.compile(r"^(?:extern|static inline)\s[^;{(]*?\b([A-Za-z_][A-Za-z0-9_]*)\s*\(", re.M)
_MACRO = re.compile(r"^#define\s+([A-Za-z_][A-Za-z0-9_]*)", re.M)
_INCLUDE = re.compile(r'^#include\s+"([^"]+)"', re.M)


def _header_text(path: Path, seen: set[Path] | None = None) -> str:
    """*path*'s text followed by that of the bridge headers it includes (``#include "..."``,
    relative to it), each once."""
    seen = set() if seen is None else seen
    path = path.resolve()
    if path in seen:
        return ""
    seen.add(path)
    text = path.read_text()
    parts = [text]
    for m in _INCLUDE.finditer(text):
        inc = (path.parent / m.group(1)).resolve()
        if inc.is_file() and inc.is_relative_to(INCLUDE_DIR.resolve()):
            parts.append(_header_text(inc, seen))
    return "\n".join(parts)


def supported_api() -> dict[str, list[str]]:
    """``{"functions": [...], "macros": [...]}``, sorted; bridge-internal names
    (``__pf_*``, ``pf_*``, ``___GFP_*``, include guards) left out."""
    text = _header_text(INCLUDE_DIR / "pinfault" / "kapi.h")
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
