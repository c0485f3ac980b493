"""The documentation stays true to the code: examples are files the tests run, links
resolve, the README agrees with the guides, and the reference says what cancellation does."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import dask_anyio
from dask_anyio import AsCompleted, DaskExecutor, ResultStream, TaskHandle

from .conftest import ROOT

DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
EXAMPLES = sorted((DOCS / "examples").rglob("*.py"))


def test_the_docs_have_no_inline_python() -> None:
    """Every code example is a file under docs/examples/ (shown with literalinclude), so
    that the tests run it."""
    for page in PAGES:
        text = page.read_text()
        fences = re.findall(r"^(?:```+|~~~+)\s*(\{[\w-]+\})?\s*(\w*)", text, re.M)
        for directive, language in fences:
            assert language.lower() not in ("python", "py", "python3", "pycon"), page
            assert directive in ("", "{literalinclude}", "{toctree}", "{include}", "{eval-rst}"), (
                f"{page.name}: {directive}"
            )


def test_every_example_is_shown_and_run() -> None:
    """Every example file is included by a page (the README's by the README) and run by a
    test."""
    shown = "".join(page.read_text() for page in PAGES)
    tests = (ROOT / "tests" / "test_docs_examples.py").read_text()
    tests += (ROOT / "tests" / "test_readme.py").read_text()
    for example in EXAMPLES:
        relative = example.relative_to(DOCS / "examples").as_posix()
        if relative == "readme.py":
            assert '"readme.py"' in tests
            continue
        assert f"examples/{relative}" in shown, f"no page shows {relative}"
        if example.parent.name == "testing":  # copied whole into a pytest run of its own
            assert 'HOWTO / "testing"' in tests
        else:
            imported = re.search(rf"^\s*import {example.stem}\b", tests, re.M)
            run = f'"{example.name}"' in tests or imported is not None
            assert run, f"no test runs {relative}"


READMES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]


@pytest.mark.parametrize("page", [*READMES, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    text = page.read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    targets += re.findall(r"```\{literalinclude\} (\S+)", text)
    for target in targets:
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        assert (page.parent / target).exists(), f"{page.name}: {target} does not exist"


def test_readme_tables_agree_with_the_guides() -> None:
    """The README's connecting table is the guide's."""
    readme = (ROOT / "README.md").read_text()
    guide = (DOCS / "howto" / "connecting.md").read_text()
    section = readme.split("## Connecting", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert len(rows) >= 5
    for row in rows:
        assert row in guide, row


def _public_callables() -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    for cls in (DaskExecutor, TaskHandle, AsCompleted, ResultStream):
        for name, member in vars(cls).items():
            if name.startswith("_") or isinstance(member, property):
                continue
            if callable(member):
                found.append((f"{cls.__name__}.{name}", member))
    return found


@pytest.mark.parametrize(("name", "member"), _public_callables(), ids=lambda v: str(v))
def test_the_reference_says_which_calls_are_checkpoints(name: str, member: object) -> None:
    """Every public method's docstring says whether it is a checkpoint (then, what
    cancelling it does) or a plain call."""
    doc = inspect.getdoc(member) or ""
    assert "checkpoint" in doc.lower() or "plain call" in doc.lower(), name
    if inspect.iscoroutinefunction(member) and "checkpoint" in doc.lower():
        assert re.search(r"cancel", doc, re.I), f"{name}: what does cancellation do?"


def test_the_reference_documents_every_public_name() -> None:
    reference = (DOCS / "reference.md").read_text()
    for name in dask_anyio.__all__:
        if name.startswith("_"):
            continue
        assert re.search(rf"auto\w+:: {name}\b", reference), f"{name} is not in the reference"
    for name, _ in _public_callables():
        cls, method = name.split(".")
        block = reference.split(f":: {cls}", 1)[1].split(".. auto", 1)[0]
        assert re.search(rf"\b{method}\b", block), f"{name} is not in the reference"
