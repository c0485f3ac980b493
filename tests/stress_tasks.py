"""Task functions for the stress tests, importable by workers as ``tests.stress_tasks``."""

from __future__ import annotations

from typing import Any


def after(_dependency: Any, item: int) -> int:
    """Return ``item``, once ``_dependency`` is done (used to queue a task behind another)."""
    return item


def triple(item: int) -> int:
    return 3 * item
