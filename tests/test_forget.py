"""The confirmation that the scheduler forgot keys (``_forget.wait_forgotten``), over a
scripted scheduler: the order of what it sees, which a real cluster gives only by chance."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from dask_anyio._forget import marker_of, wait_forgotten

KEY = "task-1"
MARKER = marker_of(KEY)
BARRIER = "dask-anyio-barrier-"


class _Barrier:
    def __init__(self, key: str) -> None:
        self.key = key

    def release(self) -> None:
        pass


class _Scheduler:
    """Answers each status query with the next scripted state of (key, marker, barrier)."""

    def __init__(self, script: list[tuple[str | None, str | None, str | None]]) -> None:
        self._script: Iterator[tuple[str | None, str | None, str | None]] = iter(script)
        self.queries = 0
        self.last = script[-1]

    async def get_task_status(self, keys: list[str]) -> dict[str, str | None]:
        self.queries += 1
        key, marker, barrier = next(self._script, self.last)
        states = {KEY: key, MARKER: marker}
        return {k: states.get(k, barrier if k.startswith(BARRIER) else None) for k in keys}


class _Client:
    status = "running"

    def __init__(self, scheduler: _Scheduler) -> None:
        self.scheduler = scheduler
        self.refcount: dict[str, int] = {}

    def submit(self, fn: Any, *, key: str, resources: Any) -> _Barrier:
        return _Barrier(key)


def test_a_marker_that_arrives_after_the_first_query_is_waited_for() -> None:
    """A cancelled task's scope may hold its marker only after the first status query
    (which can overtake the batched cancel): the wait goes on until the barrier has passed,
    then waits for the marker it sees."""
    scheduler = _Scheduler(
        [
            ("processing", None, None),  # the cancel is on its way; no marker yet
            (None, "no-worker", "no-worker"),  # the barrier arrived; the marker too
            (None, "no-worker", None),
            (None, None, None),  # the scope closed
        ]
    )
    asyncio.run(wait_forgotten(_Client(scheduler), [KEY]))  # type: ignore[arg-type]
    assert scheduler.queries == 4


@pytest.mark.parametrize("arrived", [False, True])
def test_a_task_without_a_scope_is_confirmed_without_waiting_for_a_marker(arrived: bool) -> None:
    """No marker: confirmed once the key is gone and the barrier passed (or at once, for a
    key known to have arrived)."""
    scheduler = _Scheduler([(None, None, None), (None, None, "no-worker"), (None, None, None)])
    asyncio.run(
        wait_forgotten(
            _Client(scheduler),  # type: ignore[arg-type]
            [KEY],
            arrived=[KEY] if arrived else [],
        )
    )
    assert scheduler.queries == (1 if arrived else 3)
