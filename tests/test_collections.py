"""Dask collections: compute and persist, off the event loop's thread, owned and released."""

from __future__ import annotations

import operator
import threading
import uuid
from pathlib import Path
from typing import Any

import anyio
import dask
import dask.array as da
import dask.bag as db
import pytest
from dask.base import DaskMethodsMixin
from dask.core import flatten

from dask_anyio import DaskExecutor

from .conftest import ExternalCluster
from .tasks import (
    RemoteOnlyError,
    count_call,
    inc,
    raise_remote_only,
    set_event,
    wait_for_event,
    worker_address,
)

pytestmark = pytest.mark.anyio


class ThreadRecorder(DaskMethodsMixin):
    """A minimal Dask collection that records the threads that build its graph."""

    def __init__(self, value: int, threads: list[str]) -> None:
        self.value = value
        self.threads = threads
        self.key = f"recorder-{uuid.uuid4()}"

    def __dask_graph__(self) -> dict[str, Any]:
        self.threads.append(threading.current_thread().name)
        return {self.key: (operator.add, self.value, 1)}

    def __dask_keys__(self) -> list[str]:
        return [self.key]

    def __dask_tokenize__(self) -> str:
        return self.key

    def __dask_layers__(self) -> tuple[str]:
        return (self.key,)

    __dask_scheduler__ = staticmethod(dask.threaded.get)

    def __dask_optimize__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        self.threads.append(threading.current_thread().name)
        return dsk

    def __dask_postcompute__(self) -> Any:
        return operator.itemgetter(0), ()

    def __dask_postpersist__(self) -> Any:
        return ThreadRecorder._rebuild, (self.value, self.threads)

    @staticmethod
    def _rebuild(dsk: Any, value: int, threads: list[str], rename: Any = None) -> ThreadRecorder:
        return ThreadRecorder(value, threads)


async def test_compute_delayed_array_bag(
    ex: DaskExecutor, external_cluster: ExternalCluster
) -> None:
    """compute() returns the value of dask.delayed, dask.array and dask.bag collections, and
    releases every key it used."""
    assert await ex.compute(dask.delayed(operator.add)(dask.delayed(inc)(1), 40)) == 42
    assert await ex.compute(da.arange(100, chunks=10).sum()) == 4950
    assert await ex.compute(db.from_sequence(range(10), npartitions=3).map(inc).sum()) == 55
    await external_cluster.wait_forgotten()
    assert ex.statistics().in_flight == 0


async def test_compute_dataframe(external_cluster: ExternalCluster) -> None:
    """compute() of a dask.dataframe gives a pandas object (the `dataframe` extra)."""
    pd = pytest.importorskip("pandas")
    import dask.dataframe as dd

    frame = dd.from_pandas(pd.DataFrame({"x": range(10), "y": [1.5] * 10}), npartitions=2)
    async with DaskExecutor(external_cluster.address) as ex:
        assert await ex.compute(frame.x.sum()) == 45
        result = await ex.compute(frame[frame.x > 6])
        assert list(result.x) == [7, 8, 9]
        await external_cluster.wait_forgotten()


async def test_graph_is_built_off_the_event_loop_thread(external_cluster: ExternalCluster) -> None:
    """Dask builds and optimises graphs in the calling thread: compute and persist call it
    from a worker thread, never the event loop's."""
    threads: list[str] = []
    async with DaskExecutor(external_cluster.address) as ex:
        assert await ex.compute(ThreadRecorder(41, threads)) == 42
        await ex.persist(ThreadRecorder(1, threads))
    assert threads
    assert threading.current_thread().name not in threads


async def test_persist_is_owned_and_released(external_cluster: ExternalCluster) -> None:
    """persist() returns a collection backed by tasks the executor owns: usable in later
    computations, released at exit."""
    array = da.arange(1000, chunks=100) * 2
    async with DaskExecutor(external_cluster.address) as ex:
        persisted = await ex.persist(array)
        assert isinstance(persisted, da.Array)
        assert ex.statistics().in_flight == 10
        assert await ex.compute(persisted.sum()) == 999000
        keys = {str(k) for k in flatten(persisted.__dask_keys__())}
        assert len(keys) == 10
        assert keys <= external_cluster.scheduler_keys()
    assert external_cluster.scheduler_keys() == set()


async def test_persisted_failure_is_raised_at_exit(external_cluster: ExternalCluster) -> None:
    """A persisted task that fails and that nobody computed is raised at exit, as for a
    handle."""
    with pytest.RaisesGroup(RemoteOnlyError):
        async with DaskExecutor(external_cluster.address) as ex:
            await ex.persist(dask.delayed(raise_remote_only)("persisted"))
    assert external_cluster.scheduler_keys() == set()


async def test_compute_failure_and_timeout(external_cluster: ExternalCluster) -> None:
    """A failing computation raises the task's exception; a timeout around compute cancels
    its tasks on the cluster before the timeout's scope exits."""
    gate = f"gate-{uuid.uuid4()}"
    async with DaskExecutor(external_cluster.address) as ex:
        with pytest.raises(RemoteOnlyError, match="in a graph"):
            await ex.compute(dask.delayed(inc)(dask.delayed(raise_remote_only)("in a graph")))
        await external_cluster.wait_forgotten()
        blocked = dask.delayed(inc)(dask.delayed(len)(dask.delayed(wait_for_event)(gate)))
        with anyio.move_on_after(0.5) as scope:
            await ex.compute(blocked)
        assert scope.cancelled_caught
        assert external_cluster.scheduler_keys() == set()
        await ex.run(set_event, gate)


async def test_compute_refuses_what_is_not_a_collection(ex: DaskExecutor) -> None:
    """compute() and persist() of a plain object raise TypeError saying what to use."""
    with pytest.raises(TypeError, match="needs a Dask collection"):
        await ex.compute(42)
    with pytest.raises(TypeError, match="needs a Dask collection"):
        await ex.persist([1, 2])


async def test_compute_of_shared_keys(external_cluster: ExternalCluster) -> None:
    """compute() of a persisted collection, twice, leaves the persisted work alone; of one
    collection in two calls, cancelling one call leaves the other's result."""
    gate = f"gate-{uuid.uuid4()}"
    async with DaskExecutor(external_cluster.address) as ex:
        persisted = await ex.persist(dask.delayed(inc)(1))
        assert await ex.compute(persisted) == 2
        assert await ex.compute(persisted) == 2

        shared = dask.delayed(len)(dask.delayed(wait_for_event)(gate))
        values: list[int] = []

        async def keep() -> None:
            values.append(await ex.compute(shared))

        async with anyio.create_task_group() as tg:
            tg.start_soon(keep)
            # keep's call holds the key before the other starts (a call still building its
            # graph cannot be known: see docs/usage.md)
            with anyio.fail_after(30):
                while ex.statistics().pending != 1:  # noqa: ASYNC110 - a worker thread's work
                    await anyio.sleep(0.01)
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as doomed:
                    doomed.start_soon(ex.compute, shared)
                    await anyio.wait_all_tasks_blocked()
                    scope.cancel()
            assert scope.cancelled_caught
            await ex.run(set_event, gate)
        assert values == [len(gate)]
    assert external_cluster.scheduler_keys() == set()


async def test_persist_while_computing_the_same(external_cluster: ExternalCluster) -> None:
    """persist() of a collection that a compute() call is computing keeps the persisted
    work when that call returns."""
    gate = f"gate-{uuid.uuid4()}"
    lazy = dask.delayed(len)(dask.delayed(wait_for_event)(gate))
    async with DaskExecutor(external_cluster.address) as ex:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ex.compute, lazy)
            await anyio.wait_all_tasks_blocked()
            persisted = await ex.persist(lazy)
            await ex.run(set_event, gate)
        assert await ex.compute(persisted) == len(gate)
        stats = ex.statistics()  # the first computation and the persisted one are one task
        assert (stats.submitted, stats.finished, stats.in_flight) == (2, 2, 1)


async def test_cancelling_two_computes_of_one_collection(
    external_cluster: ExternalCluster,
) -> None:
    """Two compute() calls of one collection cancelled together: the last one cancels the
    work, and the scheduler has forgotten it when their scope exits."""
    gate = f"gate-{uuid.uuid4()}"
    lazy = dask.delayed(len)(dask.delayed(wait_for_event)(gate), dask_key_name=f"both-{gate}")
    async with DaskExecutor(external_cluster.address) as ex:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(ex.compute, lazy)
                tg.start_soon(ex.compute, lazy)
                await anyio.wait_all_tasks_blocked()
                await external_cluster.wait_held(f"both-{gate}")
                scope.cancel()
        assert not [k for k in external_cluster.scheduler_keys() if k.startswith("both-")]
        await ex.run(set_event, gate)
        assert ex.statistics().cancelled == 1  # one task, counted once


async def test_failure_told_by_compute_is_not_told_again(
    ex: DaskExecutor,
) -> None:
    """A persisted task's failure raised by compute() is not raised again at exit."""
    persisted = await ex.persist(dask.delayed(raise_remote_only)("once"))
    with pytest.raises(RemoteOnlyError, match="once"):
        await ex.compute(persisted)


async def test_handles_inside_dask_graphs(external_cluster: ExternalCluster) -> None:
    """A handle in a dask.delayed call, a delayed leaf, a persisted graph or an array's graph
    stands for its task's value, as a Dask future does; its data stays on the cluster."""
    async with DaskExecutor(external_cluster.address) as ex:
        h = ex.submit(inc, 1)
        assert await ex.compute(dask.delayed(inc)(h)) == 3
        assert await ex.compute(dask.delayed(inc, pure=True)(h)) == 3
        assert await ex.compute(dask.delayed(h)) == 2
        assert await ex.compute(dask.delayed(sum)([h, h, 1])) == 5
        persisted = await ex.persist(dask.delayed(operator.mul)(h, 10))
        assert await ex.compute(persisted) == 20
        block = ex.submit(operator.add, [1, 2], [3])
        assert await ex.compute(db.from_delayed([dask.delayed(block)]).sum()) == 6
    await external_cluster.wait_forgotten()


async def test_several_collections_at_once(
    external_cluster: ExternalCluster, tmp_path: Path
) -> None:
    """compute(a, b) and persist(a, b) submit one graph, as dask.compute(a, b) does: a part
    they share runs once, and a tuple comes back."""
    counter = str(tmp_path / "calls")

    def calls() -> int:
        return len(Path(counter).read_text().splitlines())

    async with DaskExecutor(external_cluster.address) as ex:
        shared = dask.delayed(count_call)(counter, 20)
        a, b = dask.delayed(inc)(shared), dask.delayed(operator.mul)(shared, 2)
        assert await ex.compute(a, b) == (21, 40)
        assert calls() == 1
        assert await ex.compute(dask.delayed(inc)(1)) == 2  # one gives its value
        shared = dask.delayed(count_call)(counter, 30)
        a, b = dask.delayed(inc)(shared), dask.delayed(operator.mul)(shared, 2)
        pa, pb = await ex.persist(a, b)
        assert await ex.compute(pa, pb) == (31, 60)
        assert calls() == 2
        with pytest.raises(TypeError, match=r"needs a Dask collection .*\(argument 1\)"):
            await ex.compute(a, 3)
        with pytest.raises(TypeError, match=r"\(argument 2\)"):
            await ex.persist(a, b, [a])
    await external_cluster.wait_forgotten()


async def test_options_of_compute_and_persist(external_cluster: ExternalCluster) -> None:
    """compute() and persist() take Dask's options: workers, resources, retries, priority,
    optimize_graph; bad values are refused before anything is sent."""
    worker = external_cluster.workers[0]
    async with DaskExecutor(external_cluster.address) as ex:
        where = dask.delayed(worker_address)()
        assert await ex.compute(where, workers=worker) == worker
        assert (
            await ex.compute(where, resources={"SLOT": 1}, priority=5) in external_cluster.workers
        )
        assert await ex.compute(dask.delayed(inc)(1), optimize_graph=False, retries=2) == 2
        (persisted,) = [await ex.persist(where, workers=[worker])]
        assert await ex.compute(persisted) == worker
        with pytest.raises(TypeError, match="optimize_graph"):
            await ex.compute(where, optimize_graph="no")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="retries"):
            await ex.persist(where, retries=-1)
        with pytest.raises(ValueError, match="resources"):
            await ex.compute(where, resources={"SLOT": -1})
        assert ex.statistics().submitted == 4
    await external_cluster.wait_forgotten()


async def test_compute_tells_one_failure_and_the_exit_the_rest(
    external_cluster: ExternalCluster,
) -> None:
    """compute(a, b) of two failing persisted collections raises one failure; the other,
    told to nobody, is raised at exit."""

    async def body() -> None:
        async with DaskExecutor(external_cluster.address) as ex:
            a = await ex.persist(dask.delayed(raise_remote_only)("boom a"))
            b = await ex.persist(dask.delayed(raise_remote_only)("boom b"))
            with pytest.raises(RemoteOnlyError) as told:
                await ex.compute(a, b)
            others.append("boom b" if "boom a" in str(told.value) else "boom a")

    others: list[str] = []
    with pytest.raises(ExceptionGroup) as at_exit:
        await body()
    assert [str(e) for e in at_exit.value.exceptions] == others


async def test_a_copied_handle_is_the_handle(external_cluster: ExternalCluster) -> None:
    """copy and deepcopy of a handle give the handle itself (pickling gives a Future)."""
    import copy

    async with DaskExecutor(external_cluster.address) as ex:
        handle = ex.submit(inc, 1)
        assert copy.copy(handle) is handle
        assert copy.deepcopy([handle])[0] is handle
        await handle
