"""An executor kept across tasks (open() and aclose(), as notebooks need), and what happens
to one whose event loop's run ends while it is open."""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from typing import Any

import anyio
import anyio.to_thread
import distributed
import pytest
import trio

from dask_anyio import DaskExecutor, TaskStatus

from .conftest import ABSENT, ExternalCluster
from .tasks import inc, raise_remote_only, set_event, wait_for_event


async def in_a_fresh_context(fn: Any) -> Any:
    """``fn()`` in a worker thread whose context is a new one (not the caller's, where no
    executor's scope is current either)."""
    return await anyio.to_thread.run_sync(contextvars.Context().run, fn)


RUN_ENDED = r"closed when the run of the event loop that opened it ended .*%autoawait trio"


@pytest.mark.anyio
async def test_open_and_aclose_from_different_tasks(external_cluster: ExternalCluster) -> None:
    """open() holds the scope in a task of its own: other tasks use the executor and leave
    it with aclose(), a normal exit (it waits, releases, raises what nobody observed)."""
    ex = await DaskExecutor(external_cluster.address).open()
    results: list[int] = []

    async def use() -> None:
        results.append(await ex.run(inc, 1))
        ex.submit(raise_remote_only, "nobody awaited this")

    async with anyio.create_task_group() as tg:  # (a cell's task, say)
        tg.start_soon(use)
    # Dask's blocking API of any task finds it (a notebook's later cell, in a worker thread)
    assert await in_a_fresh_context(distributed.get_client) is ex.client
    pending = ex.submit(inc, 2)
    with pytest.RaisesGroup(pytest.RaisesExc(match="nobody awaited this")):
        await ex.aclose()
    assert results == [2]
    assert pending.status is TaskStatus.FINISHED
    assert external_cluster.scheduler_keys() == set()
    await ex.aclose()  # left already: nothing to do
    with pytest.raises(ValueError, match="No global client"):
        await in_a_fresh_context(distributed.get_client)
    with pytest.raises(RuntimeError, match="closed"):
        ex.submit(inc, 1)
    with pytest.raises(RuntimeError, match="entered only once"):
        await ex.open()


@pytest.mark.anyio
async def test_cancelled_open_and_aclose(external_cluster: ExternalCluster) -> None:
    """A cancelled open() opens nothing; a cancelled aclose() leaves the scope as a
    cancelled scope is left: its tasks are cancelled on the cluster."""
    ex = DaskExecutor(external_cluster.address)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await ex.open()
    assert scope.cancelled_caught
    with pytest.raises(RuntimeError, match="not open"):
        ex.submit(inc, 1)

    gate = f"gate-{uuid.uuid4()}"
    ex = await DaskExecutor(external_cluster.address).open()
    blocked = ex.submit(wait_for_event, gate)
    queued = ex.submit(inc, 1, resources=ABSENT)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await ex.aclose()
    assert scope.cancelled_caught
    assert [blocked.status, queued.status] == [TaskStatus.CANCELLED] * 2
    assert external_cluster.scheduler_keys() == set()
    async with DaskExecutor(external_cluster.address) as other:
        await other.run(set_event, gate)  # free the worker thread


@pytest.mark.anyio
async def test_aclose_is_for_open(external_cluster: ExternalCluster) -> None:
    """aclose() on an executor entered with `async with` says where it is left."""
    async with DaskExecutor(external_cluster.address) as ex:
        with pytest.raises(RuntimeError, match="end of that block"):
            await ex.aclose()


def test_an_executor_closes_with_its_trio_run() -> None:
    """Under trio, an executor still open when its trio.run ends (opened with open(), or
    entered and never left, as in a notebook cell under %autoawait trio) is closed with the
    run, its embedded cluster too (the leak check sees no process or thread left), and a
    later run's use raises RuntimeError at once, saying why."""
    executors: list[DaskExecutor] = []

    async def opened() -> None:
        ex = await DaskExecutor(n_workers=1, threads_per_worker=1).open()
        executors.append(ex)
        assert await ex.run(inc, 1) == 2
        ex.submit(inc, 2, resources=ABSENT)  # still pending when the run ends

    async def entered() -> None:
        ex = DaskExecutor(n_workers=1, threads_per_worker=1)
        executors.append(ex)
        await ex.__aenter__()
        assert await ex.run(inc, 1) == 2

    trio.run(opened)
    with pytest.raises(RuntimeError, match="Nursery stack corrupted"):  # trio's, as it must
        trio.run(entered)

    async def later() -> None:
        for ex in executors:
            with pytest.raises(RuntimeError, match=RUN_ENDED):
                await ex.run(inc, 1)
            with pytest.raises(RuntimeError, match=RUN_ENDED):
                ex.submit(inc, 1)
        await executors[0].aclose()  # left with its run: nothing to do
        with pytest.raises(RuntimeError, match=RUN_ENDED):
            await executors[1].__aexit__(None, None, None)

    trio.run(later)
    assert [repr(ex).split(":")[0] for ex in executors] == ["<DaskExecutor closed"] * 2


def test_an_executor_opened_in_asyncio_run_closes_with_it(
    external_cluster: ExternalCluster,
) -> None:
    """Under asyncio, an executor opened with open() and never closed is left, as a
    cancelled scope, when asyncio.run() ends: the scheduler holds none of its keys."""
    found: list[Any] = []

    async def main() -> None:
        ex = await DaskExecutor(external_cluster.address).open()
        found.append(ex.submit(inc, 1, resources=ABSENT))

    asyncio.run(main())
    assert found[0].status is TaskStatus.CANCELLED
    assert external_cluster.scheduler_keys() == set()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # asyncio's own tasks: a notebook's
async def test_left_by_another_task_says_what_to_use(external_cluster: ExternalCluster) -> None:
    """Entered in one asyncio task and left in another (two notebook cells), the executor
    still closes, and says to use open() and aclose()."""
    ex = DaskExecutor(external_cluster.address)
    await asyncio.ensure_future(ex.__aenter__())  # a cell's task, as ipykernel makes one
    handle = ex.submit(inc, 1)
    with pytest.raises(RuntimeError, match=r"await DaskExecutor\(\.\.\.\)\.open\(\)"):
        await asyncio.ensure_future(ex.__aexit__(None, None, None))
    assert handle.status is TaskStatus.FINISHED
    with pytest.raises(RuntimeError, match="closed"):
        ex.submit(inc, 1)
    assert external_cluster.scheduler_keys() == set()
