"""Task functions for ``tests/test_reliability.py``, importable by workers as
``tests.reliability_tasks``."""

from __future__ import annotations

import time
from typing import Any


def ten_ms_step(x: int) -> int:
    """Return ``10 * x + 1`` after 10 ms: a value that tells which input it came from."""
    time.sleep(0.01)
    return 10 * x + 1


def sleep_then_return(x: Any, seconds: float) -> Any:
    """Return ``x`` after sleeping ``seconds`` on the worker."""
    time.sleep(seconds)
    return x

