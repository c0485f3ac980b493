"""Losing the scheduler: SchedulerLost on every pending await, promptly, and a clean exit."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import distributed
import pytest

from dask_anyio import DaskExecutor, SchedulerLost

from .conftest import ABSENT, start_external_cluster, stop_processes
from .tasks import inc, wait_for_event

pytestmark = pytest.mark.anyio


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A scheduler and one worker of this test's own, to be killed."""
    address, procs = start_external_cluster(tmp_path, n_workers=1, nthreads=2)
    try:
        with distributed.Client(address, timeout=60, set_as_default=False) as observer:
            observer.wait_for_workers(1, timeout=60)
        yield address, procs
    finally:
        stop_processes(procs)


async def test_pending_awaits_raise_scheduler_lost(own_cluster: tuple[str, Any]) -> None:
    """Killing the scheduler with 100 tasks pending makes every pending await raise
    SchedulerLost (a ConnectionError) within seconds; new work is refused with it; the exit
    tells the loss of the tasks nobody awaited once."""
    address, procs = own_cluster
    outcomes: dict[str, BaseException] = {}
    told_once = pytest.RaisesExc(SchedulerLost, check=lambda e: e.key is None)
    with pytest.RaisesGroup(told_once):  # the unawaited tasks' loss, told once at exit
        await run_and_lose_the_scheduler(address, procs, outcomes)
    assert sorted(outcomes) == sorted(
        [f"await-{i}" for i in range(100)] + ["retrieve", "run", "gather", "submit"]
    )
    for name, error in outcomes.items():
        assert isinstance(error, SchedulerLost), (name, error)
        assert isinstance(error, ConnectionError)
        assert error.address == address
    assert "reconnecting or closed" in str(outcomes["submit"])


async def run_and_lose_the_scheduler(
    address: str, procs: list[Any], outcomes: dict[str, BaseException]
) -> None:
    """Pending awaits of several kinds, unawaited tasks, the scheduler killed, then a submit."""
    started = anyio.Event()
    async with DaskExecutor(address) as ex:
        ex.map(inc, range(3), resources=ABSENT)  # never awaited
        never = ex.map(inc, range(100), resources=ABSENT)
        blocked = ex.submit(wait_for_event, f"never-set-{uuid.uuid4()}")
        await ex.run(inc, 0)  # the scheduler knows them all

        async def waiter(name: str, fn: Any, *args: Any) -> None:
            try:
                await fn(*args)
            except Exception as error:
                outcomes[name] = error

        with anyio.fail_after(15):  # a bound, not a timing assertion: no hang
            async with anyio.create_task_group() as tg:
                for i, handle in enumerate(never):
                    tg.start_soon(waiter, f"await-{i}", _wait, handle)
                tg.start_soon(waiter, "retrieve", ex.retrieve, blocked)
                tg.start_soon(waiter, "run", ex.run, wait_for_event, f"never-{uuid.uuid4()}")
                tg.start_soon(waiter, "gather", ex.gather, never)
                await anyio.wait_all_tasks_blocked()
                started.set()
                os.kill(procs[0].pid, signal.SIGKILL)
        assert started.is_set()
        assert outcomes["retrieve"].key == blocked.key  # type: ignore[attr-defined]
        try:
            ex.submit(inc, 1)
        except SchedulerLost as error:
            outcomes["submit"] = error


async def _wait(handle: Any) -> None:
    await handle
