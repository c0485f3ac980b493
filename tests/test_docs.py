"""The documentation stays true to the code: examples are files the tests run, links
resolve, the README agrees with the guides, and the reference says what cancellation does."""

from __future__ import annotations

import importlib
import inspect
import operator
import re
import runpy
import tomllib
from pathlib import Path
from typing import Any

import dask
import pytest

import dask_anyio
from dask_anyio import AsCompleted, DaskExecutor, ResultStream, TaskHandle, TaskStatus

from .conftest import ABSENT, ROOT, ExternalCluster

DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
EXAMPLES = sorted((DOCS / "examples").rglob("*.py"))


def test_the_docs_have_no_inline_python() -> None:
    """Every code example is a file under docs/examples/ (shown with literalinclude), so
    that the tests run it."""
    for page in PAGES:
        text = page.read_text()
        # (within the fence's line: a closing fence followed by "Python ..." is prose)
        fences = re.findall(r"^(?:```+|~~~+)[ \t]*(\{[\w-]+\})?[ \t]*(\w*)", text, re.M)
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
    tests += (ROOT / "tests" / "test_docs.py").read_text()
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


# -- the front page ------------------------------------------------------------------------

INDEX = DOCS / "index.md"


def _plain(markdown: str) -> str:
    """Markdown's text without links' targets, emphasis and line breaks."""
    markdown = re.sub(r"\[([^]]*)\]\([^)]*\)", r"\1", markdown)
    return " ".join(markdown.replace("**", "").split())


def _index_as_shown() -> str:
    """The front page's source with the part of the README it includes put in."""
    text = INDEX.read_text()
    readme = (ROOT / "README.md").read_text()

    def include(directive: re.Match[str]) -> str:
        assert directive.group(1) == "../README.md"
        options = dict(re.findall(r':([\w-]+): "([^"]*)"', directive.group(2)))
        return readme.split(options["start-after"], 1)[1].split(options["end-before"], 1)[0]

    return re.sub(r"```\{include\} (\S+)\n(.*?)```", include, text, flags=re.S)


def test_the_front_page_says_its_tagline_once() -> None:
    """The front page does not repeat the README's first sentence above it."""
    shown = _plain(_index_as_shown())
    assert shown.count("Submit work to a Dask cluster from asyncio and trio") == 1


def test_the_front_page_has_an_install_line() -> None:
    """The front page gives the install command, with extras that exist."""
    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installs = re.findall(r"^\$ pip install '([^']+)'$", INDEX.read_text(), re.M)
    assert installs, "no install line on the front page"
    for install in installs:
        requirement = Requirement(install)
        assert requirement.name == "dask-anyio"
        assert requirement.extras <= set(extras["optional-dependencies"]), install


def test_the_footer_names_the_copyright_holder() -> None:
    """The footer reads "Copyright © <year>, <holder>" as the LICENSE does, not a bare
    "Copyright ©"."""
    conf = runpy.run_path(str(DOCS / "conf.py"))
    license_line = (ROOT / "LICENSE").read_text().splitlines()[2]
    assert license_line == f"Copyright (c) {conf['copyright']}"


#: furo's code font sizes, as fractions of the text's (16 px); furo's default is small--2.
_FURO_SIZES = {"var(--font-size--small--2)": 0.8125, "var(--font-size--small--3)": 0.75}
#: What furo leaves for a line of code at desktop widths: its 46em column less the code
#: block's padding (0.875rem each side), in px; monospace fonts advance 0.602em a character.
_FURO_CODE_WIDTH = 46 * 16 - 2 * 14
_MONOSPACE_ADVANCE = 0.602


def test_examples_fit_the_code_column() -> None:
    """No example's line runs past the right edge of furo's column at the configured code
    font size (the README's aligned comments were cut off on the front page)."""
    conf = runpy.run_path(str(DOCS / "conf.py"))
    variables = conf.get("html_theme_options", {}).get("light_css_variables", {})
    size = _FURO_SIZES[variables.get("code-font-size", "var(--font-size--small--2)")]
    columns = int(_FURO_CODE_WIDTH / (16 * size * _MONOSPACE_ADVANCE))
    for example in EXAMPLES:
        for number, line in enumerate(example.read_text().splitlines(), 1):
            assert len(line) <= columns, f"{example.name}:{number} is wider than {columns}"


# -- the guides ----------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["howto/cancellation.md", "howto/streaming.md"])
def test_the_guide_explains_before_it_shows(page: str) -> None:
    """The guide opens with its rules in prose (here, at least 80 words) before its first
    example, not with a block of code."""
    text = (DOCS / page).read_text()
    before = text.split("```{literalinclude}", 1)[0]
    prose = [line for line in before.splitlines() if not line.startswith("#")]
    assert len(" ".join(prose).split()) >= 80


#: The one line that cancels what a loop over handles left.
CANCEL_THE_REST = "for handle in handles: handle.cancel()"


def test_leaving_as_completed_early_is_explained_where_users_look() -> None:
    """The README's rules, the streaming guide and the cancellation guide say that leaving an
    as_completed loop early leaves its tasks to the executor's exit, with the line that
    cancels them."""
    readme = (ROOT / "README.md").read_text()
    rules = readme.split("## Rules in one screen", 1)[1].split("\n## ", 1)[0]
    streaming = (DOCS / "howto" / "streaming.md").read_text()
    cancellation = (DOCS / "howto" / "cancellation.md").read_text()
    for text in (rules, streaming, cancellation):
        assert "as_completed" in text
        assert f"`{CANCEL_THE_REST}`" in text
    assert "examples/howto/streaming_early_exit.py" in streaming


def _early_exit_example() -> Any:
    """The streaming guide's example of leaving early, imported by its name from the
    repository's root (as the external cluster's processes import it)."""
    example = DOCS / "examples" / "howto" / "streaming_early_exit.py"
    return importlib.import_module(".".join(example.relative_to(ROOT).with_suffix("").parts))


@pytest.mark.anyio
async def test_leaving_as_completed_early_cancels_the_rest(
    external_cluster: ExternalCluster,
) -> None:
    """The streaming guide's example: a timeout around the loop alone, then the line that
    cancels the rest; a task already done stays done, the others are cancelled at once, and
    the executor's exit does not wait for them."""
    early = _early_exit_example()
    with dask.config.set({"scheduler-address": external_cluster.address}):
        async with DaskExecutor() as ex:
            done = ex.submit(operator.add, 1, 2)
            await done
            never = ex.map(early.simulate, range(3), resources=ABSENT)  # can never start
            try:
                # deadline 0: the loop is left at its first checkpoint
                assert await early.first_results(ex, [done, *never], 0) == []
                assert done.status is TaskStatus.FINISHED
                assert [handle.status for handle in never] == [TaskStatus.CANCELLED] * 3
            finally:  # (else the exit would wait for them forever)
                for handle in never:
                    handle.cancel()
            assert await ex.retrieve(done) == 3
    assert external_cluster.scheduler_keys() == set()


@pytest.mark.anyio
async def test_early_exit_example_runs(
    external_cluster: ExternalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example's program runs and says how many tasks were done in time."""
    with dask.config.set({"scheduler-address": external_cluster.address}):
        await _early_exit_example().main(seconds=0.5)
    out = capsys.readouterr().out
    assert re.fullmatch(r"\d+ of 100 done within 0.5 s; the rest cancelled\n", out), out
    assert external_cluster.scheduler_keys() == set()
