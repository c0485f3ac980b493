"""Sphinx configuration."""

from __future__ import annotations

project = "dask-anyio"
author = "dask-anyio developers"
# as in LICENSE; the footer reads "Copyright © <this>"
copyright = "2026, dask-anyio developers"
# No intersphinx: the docs build offline (CI has no network beyond package registries).
extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "furo"
html_theme_options = {
    # Code at 75% of the text's size (furo's default: 81.25%), so that the examples' lines
    # (up to 96 characters: ruff's limit is 100, the README's comments are aligned far
    # right) fit furo's 46em column instead of scrolling out of sight; tests/test_docs.py
    # checks that they do.
    "light_css_variables": {"code-font-size": "var(--font-size--small--3)"},
}
# anchors for headings, so that pages link to sections ("page.md#section")
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Names outside this package (the standard library, Dask, anyio), type variables, and the
# internal records that handles and iterators are made over (users never make those).
nitpick_ignore_regex = [
    (r"py:.*", r"(asyncio|collections\.abc|typing|types|os|distributed|anyio|trio|dask)\..*"),
    (r"py:.*", r"(Cluster|ExceptionGroup|StreamState|TaskState|Parts|ExecutorScope)"),
    (r"py:.*", r"(~?P|T|Ts|.*\.(T|T_co|K|C|Y|R|Ts)|typing\.~P)"),
]
