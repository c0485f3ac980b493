"""The README's example is docs/examples/readme.py, and runs as written on asyncio and trio."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .conftest import ROOT

EXAMPLE = ROOT / "docs" / "examples" / "readme.py"


def test_readme_example_is_the_example_file() -> None:
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
