"""Task functions for ``tests/test_reliability.py``, importable by workers as
``tests.reliability_tasks``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import distributed


def ten_ms_step(x: int) -> int:
    """Return ``10 * x + 1`` after 10 ms: a value that tells which input it came from."""
    time.sleep(0.01)
    return 10 * x + 1


def sleep_then_return(x: Any, seconds: float) -> Any:
    """Return ``x`` after sleeping ``seconds`` on the worker."""
    time.sleep(seconds)
    return x


def wait_when_recomputed(directory: str, event: str) -> str:
    """Return ``"value"``. A second run (a recomputation) first creates ``directory/again``
    and then waits for the ``distributed.Event`` ``event``."""
    if (Path(directory) / "once").exists():
        (Path(directory) / "again").touch()
        distributed.Event(event).wait()
    else:
        (Path(directory) / "once").touch()
    return "value"
