"""docs/fault-sites.md cannot drift from the site catalogue, and every catalogued site is
really placed somewhere in the fake mm."""

from __future__ import annotations

import errno
import pathlib
import re

import pytest_pinfault.mm
from pytest_pinfault.faults.sites import BUILTIN_SITES, Site, catalogue_markdown

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "fault-sites.md"
MM_DIR = pathlib.Path(pytest_pinfault.mm.__file__).resolve().parent


def _tables(text: str) -> list[str]:
    """Every Markdown table of *text* (runs of lines starting with ``|``)."""
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append("\n".join(current) + "\n")
            current = []
    if current:
        tables.append("\n".join(current) + "\n")
    return tables


def test_doc_holds_exactly_the_generated_table() -> None:
    tables = _tables(DOC.read_text(encoding="utf-8"))
    assert tables == [catalogue_markdown()], (
        "docs/fault-sites.md is out of date; regenerate its table with\n"
        "  python -c 'from pytest_pinfault.faults.sites import catalogue_markdown; "
        "print(catalogue_markdown(), end=\"\")'")


def test_table_has_one_row_per_site_in_catalogue_order() -> None:
    rows = catalogue_markdown().splitlines()[2:]
    assert [r.split("`")[1] for r in rows] == list(BUILTIN_SITES)


def test_errnos_are_listed_by_name() -> None:
    s = Site("x.y", "drivers/x.c:y", "a | b", "NULL", (errno.ENOMEM, errno.ENOSPC))
    row = catalogue_markdown({"x.y": s}).splitlines()[2]
    assert row == "| `x.y` | `drivers/x.c:y` | a \\| b | NULL | `-ENOMEM`, `-ENOSPC` |"


def test_every_catalogued_site_is_hit_in_the_model() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in sorted(MM_DIR.glob("*.py")))
    missing = [name for name in BUILTIN_SITES
               if not re.search(r'hit\("' + re.escape(name) + r'"', source)]
    assert not missing, f"catalogued fault sites never hit in pytest_pinfault/mm/*.py: {missing}"
