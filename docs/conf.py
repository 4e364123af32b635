"""Sphinx configuration of the pytest-pinfault documentation.

Build it with ``pip install -e '.[docs]'`` then
``sphinx-build -W --keep-going -b html docs docs/_build/html``.  The Markdown pages are
read by myst-parser; the reference pages are generated from the code by the local
extension ``_ext/pinfault_ref.py`` (the lists of names are never typed by hand).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_ext"))

import pytest_pinfault  # noqa: E402

project = "pytest-pinfault"
author = "the pytest-pinfault authors"
copyright = "the pytest-pinfault authors (MIT licence)"
release = version = pytest_pinfault.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "pinfault_ref",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]

# The pages link each other as files (fault-sites.md); MyST resolves those to documents
# and turns `#anchor` links into heading anchors.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# Option names and quotes as written (``--cov``, not an en dash; straight quotes).
smartquotes = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"exclude-members": "__init__, __new__, __weakref__, __dict__, __module__"}
add_module_names = False

html_theme = "alabaster"
html_title = f"pytest-pinfault {release}"
html_theme_options = {"description": "A fake Linux mm with fault injection and a pinning contract checker"}


def setup(app):  # type: ignore[no-untyped-def]
    # The grammar block in configuration.md is ```ebnf (tests/faults/test_spec.py finds it
    # by that name); Pygments has no EBNF lexer, so show it as plain text.
    from pygments.lexers.special import TextLexer
    app.add_lexer("ebnf", TextLexer)
