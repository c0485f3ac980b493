"""The README's example runs as written, on asyncio and on trio."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


def test_readme_example_runs(tmp_path: Path) -> None:
    """The first python block of README.md, run as a script, exits cleanly on both backends."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert match, "README.md has no python example"
    script = tmp_path / "example.py"
    script.write_text(match.group(1))
    assert 'anyio.run(main, backend="trio")' in match.group(1)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
