"""Task functions and the scheduler plugin of the benchmarks.

Workers import this module by name (the runner puts the benchmarks folder on their
``PYTHONPATH``); the scheduler loads it with ``--preload``, which calls :func:`dask_setup` and
installs :class:`ForgetClock`.

Each workload has task functions of its own: the scheduler groups tasks by function name
(task groups), and groups shared between workloads would change how it queues them (a chain
makes its group depend on itself, and a group with dependencies is not queued as root-ish).
"""

from __future__ import annotations

import os
import time
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

#: Key prefix of the tasks whose cancellation latency is measured.
CANCEL_TARGET = "bench_cancel_target"
#: The keys whose forgetting the scheduler's clock records: cancel targets, and the tasks and
#: markers of task trees (see trees.py).
_CLOCKED = (CANCEL_TARGET, "bench_tree", "dask-anyio-subtasks-bench_tree")


def noop(x: int) -> int:
    """Throughput workloads."""
    return x


def trip(x: int) -> int:
    """Sequential round trips."""
    return x


def link(x: int) -> int:
    """Chains."""
    return x


def leaf(x: int) -> int:
    """Fan-in: the many."""
    return x


def total(*parts: int) -> int:
    """Fan-in: the one."""
    return sum(parts)


def bench_cancel_target(_blocker: Any) -> None:
    """Queued behind a task that never runs: it waits on the scheduler until cancelled."""


def pending(_item: int) -> None:
    """Memory per pending task: needs a resource no worker has, so it never runs."""


def payload(nbytes: int) -> bytes:
    return bytes(nbytes)


#: Stop workloads, on the worker: when each target (by name) started, and when it stopped
#: (``time.monotonic()``: one clock for every process of the machine, on Linux).
STARTED: dict[str, float] = {}
STOPPED: dict[str, float] = {}
#: Killed targets: the file that their child creates once it spins.
MARKERS: dict[str, str] = {}
#: A target that is not stopped ends on its own after this many seconds.
STOP_CAP = 30.0


def bench_stop_checking(name: str) -> None:
    """Computes, calling dask_anyio.checkpoint() between steps, until it is cancelled."""
    from dask_anyio import checkpoint

    STARTED[name] = time.monotonic()
    try:
        deadline = time.monotonic() + STOP_CAP
        while time.monotonic() < deadline:
            checkpoint()
    finally:
        STOPPED[name] = time.monotonic()


async def bench_stop_awaiting(name: str) -> None:
    """A coroutine that waits until it is cancelled."""
    import asyncio

    STARTED[name] = time.monotonic()
    try:
        await asyncio.sleep(STOP_CAP)
    finally:
        STOPPED[name] = time.monotonic()


def bench_stop_killed(name: str, marker: str) -> None:
    """Spins in a kill_on_cancel child that never checks in; the worker thread's call
    returns once the child is killed. It counts as started once the child spins (it
    creates the file ``marker``)."""
    from dask_anyio import kill_on_cancel

    MARKERS[name] = marker  # (the worker that runs it says when it started)
    try:
        kill_on_cancel(_spin)(STOP_CAP, marker)
    finally:
        STOPPED[name] = time.monotonic()


def _spin(seconds: float, marker: str) -> None:
    """In the child: say so (the file ``marker``), then spin for ``seconds``."""
    deadline = time.monotonic() + seconds
    with open(marker, "x"):
        pass
    while time.monotonic() < deadline:
        pass


def stop_times(name: str) -> tuple[float | None, float | None]:
    """On a worker (``Client.run``): when the target ``name`` started and stopped there.
    A killed target started once its marker file exists (its time is then when this
    looked)."""
    marker = MARKERS.get(name)
    if marker is not None and name not in STARTED and os.path.exists(marker):
        STARTED[name] = time.monotonic()
    return STARTED.get(name), STOPPED.get(name)


class ForgetClock(SchedulerPlugin):
    """Records, at the scheduler's transition hook, when each cancel target was forgotten."""

    name = "dask-anyio-bench-forget-clock"

    def __init__(self) -> None:
        self.forgotten: dict[str, float] = {}

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "forgotten" and isinstance(key, str) and key.startswith(_CLOCKED):
            self.forgotten[key] = time.time()


def dask_setup(scheduler: Any) -> None:
    """``dask scheduler --preload dask_anyio_bench.tasks``: install the plugin, and close
    the scheduler if the runner that started it dies (it runs in a session of its own)."""
    from tornado.ioloop import PeriodicCallback

    scheduler.add_plugin(ForgetClock())
    parent = os.getppid()

    def orphaned() -> None:
        if os.getppid() != parent:
            scheduler.loop.add_callback(scheduler.close)

    scheduler.periodic_callbacks["dask-anyio-bench-parent"] = PeriodicCallback(orphaned, 1000)


def forgotten_since(since: float, dask_scheduler: Any) -> dict[str, Any]:
    """How many cancel targets were forgotten after ``since`` (wall clock, same machine),
    and when: the first, the last, and all of them when there are few. Older entries are
    dropped: a caller asks only about what happened since it last asked."""
    clock: ForgetClock = dask_scheduler.plugins[ForgetClock.name]
    clock.forgotten = {k: t for k, t in clock.forgotten.items() if t >= since}
    times = sorted(clock.forgotten.values())
    return {
        "count": len(times),
        "first": times[0] if times else None,
        "last": times[-1] if times else None,
        "times": times if len(times) <= 100 else None,
    }


def held_count(dask_scheduler: Any) -> int:
    """How many cancel targets the scheduler holds now."""
    return sum(isinstance(k, str) and k.startswith(CANCEL_TARGET) for k in dask_scheduler.tasks)


def task_count(dask_scheduler: Any) -> int:
    return len(dask_scheduler.tasks)


def worker_saturation(dask_scheduler: Any) -> float:
    """The setting in effect on the scheduler."""
    return float(dask_scheduler.WORKER_SATURATION)
