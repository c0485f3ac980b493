"""Task functions and the scheduler plugin of the benchmarks.

Workers import this module by name (it ships with dask-anyio); the scheduler loads it with
``--preload``, which calls :func:`dask_setup` and installs :class:`ForgetClock`.
"""

from __future__ import annotations

import time
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

#: Key prefix of the tasks whose cancellation latency is measured.
CANCEL_TARGET = "bench_cancel_target"


def noop(x: int) -> int:
    return x


def total(*parts: int) -> int:
    return sum(parts)


def bench_cancel_target(_blocker: Any) -> None:
    """Queued behind a task that never runs: it waits on the scheduler until cancelled."""


def payload(nbytes: int) -> bytes:
    return bytes(nbytes)


class ForgetClock(SchedulerPlugin):
    """Records, at the scheduler's transition hook, when each key was forgotten."""

    name = "dask-anyio-bench-forget-clock"

    def __init__(self) -> None:
        self.forgotten: dict[str, float] = {}

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if not isinstance(key, str) or not key.startswith(CANCEL_TARGET):
            return
        if finish == "forgotten":
            self.forgotten[key] = time.time()


def dask_setup(scheduler: Any) -> None:
    """``dask scheduler --preload dask_anyio._bench.tasks``."""
    scheduler.add_plugin(ForgetClock())


def forgotten_since(since: float, dask_scheduler: Any) -> dict[str, float]:
    """Keys of cancel targets forgotten after ``since`` (wall clock), with when. Older
    entries are dropped: a caller asks only about what happened since it last asked."""
    clock: ForgetClock = dask_scheduler.plugins[ForgetClock.name]
    clock.forgotten = {k: t for k, t in clock.forgotten.items() if t >= since}
    return clock.forgotten


def held_count(dask_scheduler: Any) -> int:
    """How many cancel targets the scheduler holds now."""
    return sum(isinstance(k, str) and k.startswith(CANCEL_TARGET) for k in dask_scheduler.tasks)


def task_count(dask_scheduler: Any) -> int:
    return len(dask_scheduler.tasks)
