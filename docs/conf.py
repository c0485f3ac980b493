"""Sphinx configuration."""

from __future__ import annotations

project = "dask-anyio"
author = "dask-anyio developers"
# No intersphinx: the docs build offline (CI has no network beyond package registries).
extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "furo"
# anchors for headings, so that pages link to sections ("page.md#section")
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Names outside this package (the standard library, Dask, anyio) and type variables.
nitpick_ignore_regex = [
    (r"py:.*", r"(asyncio|collections\.abc|typing|types|os|distributed|anyio|trio|dask)\..*"),
    (r"py:.*", r"(Cluster|ExceptionGroup|_Stream|~?P|.*\.(T|T_co|K|C|Y)|typing\.~P)"),
]
