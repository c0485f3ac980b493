"""The README's example is docs/examples/readme.py, and runs as written on asyncio and trio."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys

import pytest

from dask_anyio import DaskExecutor

from .conftest import ROOT

EXAMPLE = ROOT / "docs" / "examples" / "readme.py"


def test_readme_example_is_the_example_file() -> None:
    """The README's example is docs/examples/readme.py, character for character."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert match, "README.md has no python example"
    assert match.group(1) == EXAMPLE.read_text()


@pytest.mark.timeout(180)  # two embedded LocalClusters start and stop
def test_readme_example_runs() -> None:
    """Run as a script, it exits cleanly on both backends (it runs main on each)."""
    assert 'anyio.run(main, backend="trio")' in EXAMPLE.read_text()
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr


def test_readme_calls_write_only_real_defaults() -> None:
    """A keyword the README writes with a value in a call (`ex.imap(..., max_in_flight=n)`)
    is that argument's default, so that it does not read like one when it is not; every
    required keyword is written."""
    readme = (ROOT / "README.md").read_text()
    calls = re.findall(r"`((?:await )?ex\.\w+\([^`]*\))`", readme)
    assert any("imap" in call for call in calls)
    for code in calls:
        call = ast.parse(code, mode="eval").body
        if isinstance(call, ast.Await):
            call = call.value
        assert isinstance(call, ast.Call)
        assert isinstance(call.func, ast.Attribute)
        parameters = inspect.signature(getattr(DaskExecutor, call.func.attr)).parameters
        written = {keyword.arg for keyword in call.keywords}
        for keyword in call.keywords:
            assert keyword.arg is not None
            default = parameters[keyword.arg].default
            if isinstance(keyword.value, ast.Constant):
                assert keyword.value.value == default, f"{code}: {keyword.arg} has no such default"
        for name, parameter in parameters.items():
            if parameter.kind is parameter.KEYWORD_ONLY and parameter.default is parameter.empty:
                assert name in written, f"{code} leaves out the required {name}="
