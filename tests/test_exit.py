"""Structured exit: wait on success, cancel on error, raise what nobody observed."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from dask_anyio import DaskExecutor, TaskCancelled, TaskHandle, TaskStatus

from .conftest import ExternalCluster
from .tasks import RemoteOnlyError, inc, raise_remote_only, set_event, slow_identity, wait_for_event

pytestmark = pytest.mark.anyio


async def test_normal_exit_waits_for_outstanding_handles(external_cluster: ExternalCluster) -> None:
    """Leaving the block normally waits for every handle, then releases every key."""
    async with DaskExecutor(external_cluster.address) as ex:
        handles = [ex.submit(slow_identity, i, 0.2) for i in range(3)]
        assert not any(h.done() for h in handles)
    assert [h.status for h in handles] == [TaskStatus.FINISHED] * 3
    assert external_cluster.scheduler_keys() == set()


async def test_exit_is_a_checkpoint_with_nothing_outstanding(
    external_cluster: ExternalCluster,
) -> None:
    """The exit is a checkpoint, as a nursery's: a cancelled scope is caught there even if
    no task is outstanding (and the body has no checkpoint of its own)."""
    with anyio.CancelScope() as scope:
        async with DaskExecutor(external_cluster.address):
            scope.cancel()
    assert scope.cancelled_caught


async def test_error_exit_cancels_outstanding_tasks(external_cluster: ExternalCluster) -> None:
    """An exception in the body cancels outstanding tasks on the cluster, then propagates."""
    gate = f"gate-{uuid.uuid4()}"
    blocked: list[TaskHandle[str]] = []
    done: list[TaskHandle[int]] = []

    async def body() -> None:
        async with DaskExecutor(external_cluster.address) as ex:
            blocked.extend(ex.submit(wait_for_event, gate) for _ in range(3))
            done.append(ex.submit(inc, 1))
            await done[0]
            raise KeyError("body failed")

    with pytest.raises(KeyError, match="body failed"):
        await body()
    assert [h.status for h in blocked] == [TaskStatus.CANCELLED] * 3
    assert done[0].status is TaskStatus.FINISHED
    assert external_cluster.scheduler_keys() == set()
    async with DaskExecutor(external_cluster.address) as ex:
        await ex.run(set_event, gate)  # free the worker threads of the cancelled tasks


async def test_cancelled_scope_exit_cancels_outstanding_tasks(
    external_cluster: ExternalCluster,
) -> None:
    """A cancelled scope around the executor cancels its tasks, and the scope still ends."""
    gate = f"gate-{uuid.uuid4()}"
    with anyio.CancelScope() as scope:
        async with DaskExecutor(external_cluster.address) as ex:
            blocked = ex.submit(wait_for_event, gate)
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert blocked.status is TaskStatus.CANCELLED
    assert external_cluster.scheduler_keys() == set()
    async with DaskExecutor(external_cluster.address) as ex:
        await ex.run(set_event, gate)


async def test_cancelled_while_exit_waits(external_cluster: ExternalCluster) -> None:
    """If the scope is cancelled while the exit waits for handles, they are cancelled."""
    gate = f"gate-{uuid.uuid4()}"
    async with anyio.create_task_group() as tg:

        async def body() -> None:
            async with DaskExecutor(external_cluster.address) as ex:
                handles.append(ex.submit(wait_for_event, gate))
                submitted.set()

        handles: list[object] = []
        submitted = anyio.Event()
        tg.start_soon(body)
        await submitted.wait()
        await anyio.wait_all_tasks_blocked()  # body is now waiting in the executor's exit
        tg.cancel_scope.cancel()
    assert [h.status for h in handles] == [TaskStatus.CANCELLED]  # type: ignore[attr-defined]
    assert external_cluster.scheduler_keys() == set()
    async with DaskExecutor(external_cluster.address) as ex:
        await ex.run(set_event, gate)


async def test_unobserved_failure_is_raised_at_exit(external_cluster: ExternalCluster) -> None:
    """A failed task whose error nobody awaited comes out of the exit: never silently lost."""
    with pytest.RaisesGroup(pytest.RaisesExc(RemoteOnlyError, match="nobody looked")):
        async with DaskExecutor(external_cluster.address) as ex:
            ex.submit(raise_remote_only, "nobody looked")
            ex.submit(inc, 1)
    assert external_cluster.scheduler_keys() == set()


async def test_observed_failure_is_not_raised_again(external_cluster: ExternalCluster) -> None:
    """A failure already raised to a caller does not come out of the exit a second time."""
    async with DaskExecutor(external_cluster.address) as ex:
        failed = ex.submit(raise_remote_only, "seen")
        with pytest.raises(RemoteOnlyError):
            await failed
        cancelled = ex.submit(inc, 1, resources={"ABSENT": 1})  # never starts: no such worker
        cancelled.cancel()
    assert failed.status is TaskStatus.ERROR
    assert cancelled.status is TaskStatus.CANCELLED
    with pytest.raises(RemoteOnlyError, match="seen"):  # handles keep their outcome after exit
        await failed
    with pytest.raises(TaskCancelled):
        await cancelled


async def test_executor_loop_thread_is_joined(
    external_cluster: ExternalCluster, anyio_backend_name: str
) -> None:
    """Under trio the Dask client runs on a private loop thread, joined at exit."""
    import threading

    from dask_anyio._bridge import LOOP_THREAD_NAME

    async with DaskExecutor(external_cluster.address) as ex:
        await ex.run(inc, 1)
        names = [t.name for t in threading.enumerate()]
        uses_thread = anyio_backend_name == "trio"
        assert names.count(LOOP_THREAD_NAME) == (1 if uses_thread else 0)
    assert LOOP_THREAD_NAME not in [t.name for t in threading.enumerate()]


@pytest.mark.parametrize(
    "deadline", [0, 0.3], ids=["already-cancelled", "cancelled-while-starting"]
)
async def test_cancelled_while_entering_leaves_nothing(deadline: float) -> None:
    """A scope cancelled while the executor starts its cluster leaves no thread or process."""
    with anyio.move_on_after(deadline) as scope:
        async with DaskExecutor(n_workers=1, threads_per_worker=1) as ex:
            await ex.run(inc, 1)
            await anyio.sleep_forever()
    assert scope.cancelled_caught


async def test_unobserved_failure_is_noted_on_error_exit(external_cluster: ExternalCluster) -> None:
    """On an error exit the body's error propagates, with unobserved task failures noted."""

    async def body() -> None:
        async with DaskExecutor(external_cluster.address) as ex:
            failed = ex.submit(raise_remote_only, "lost in the noise")
            with pytest.raises(RemoteOnlyError):
                await ex.retrieve(ex.submit(inc, failed))  # observes the dependent only
            raise KeyError("body failed")

    with pytest.raises(KeyError, match="body failed") as excinfo:
        await body()
    assert any("lost in the noise" in note for note in excinfo.value.__notes__)


async def test_cancel_while_exit_waits(external_cluster: ExternalCluster) -> None:
    """A sibling may still cancel a handle that the exit is waiting for."""
    gate = f"gate-{uuid.uuid4()}"
    results: list[bool] = []
    async with anyio.create_task_group() as tg:

        async def body() -> None:
            async with DaskExecutor(external_cluster.address) as ex:
                handle = ex.submit(wait_for_event, gate)
                handles.append(handle)
                submitted.set()

        handles: list[TaskHandle[str]] = []
        submitted = anyio.Event()
        tg.start_soon(body)
        await submitted.wait()
        await anyio.wait_all_tasks_blocked()  # body waits in the exit
        results.append(handles[0].cancel())
    assert results == [True]
    assert handles[0].status is TaskStatus.CANCELLED
    async with DaskExecutor(external_cluster.address) as ex:
        await ex.run(set_event, gate)


async def test_repeated_open_close_leaves_nothing(external_cluster: ExternalCluster) -> None:
    """Ten open/use/close cycles: no thread, fd, process or scheduler key stays behind."""
    for i in range(10):
        async with DaskExecutor(external_cluster.address) as ex:
            assert await ex.run(inc, i) == i + 1
            ex.submit(inc, i)
    assert external_cluster.scheduler_keys() == set()


async def test_exit_confirms_many_cancellations_at_once(external_cluster: ExternalCluster) -> None:
    """An error exit with 1500 pending tasks; a normal exit after a handle.cancel(), a task
    Dask cancelled for a lost dependency and 400 more tasks; 1500 tasks cancelled as soon as
    submitted: the scheduler forgets it all, with no warning that it still holds keys."""

    async def leave_with_pending_tasks() -> None:
        async with DaskExecutor(external_cluster.address) as ex:
            ex.map(inc, range(1500), resources={"ABSENT": 1})
            await ex.run(inc, 0)
            raise LookupError("leave")

    with pytest.raises(LookupError):
        await leave_with_pending_tasks()
    assert external_cluster.scheduler_keys() == set()

    async with DaskExecutor(external_cluster.address) as ex:
        cancelled = ex.submit(inc, 1, resources={"ABSENT": 1})
        orphan = ex.submit(inc, cancelled)
        cancelled.cancel()
        with pytest.raises(TaskCancelled):
            await orphan
        await ex.gather(ex.map(inc, range(400)))
    assert external_cluster.scheduler_keys() == set()

    async with DaskExecutor(external_cluster.address) as ex:
        for handle in ex.map(inc, range(1500), resources={"ABSENT": 1}):
            handle.cancel()  # before the scheduler even received them
    assert external_cluster.scheduler_keys() == set()


async def test_exit_waits_for_calls_of_other_tasks(external_cluster: ExternalCluster) -> None:
    """A normal exit waits for run(), compute(), retrieve() and gather() calls that other
    tasks are making, and each of them gets its value (none is released on its way)."""
    import dask

    gate = f"gate-{uuid.uuid4()}"
    results: dict[str, object] = {}
    async with anyio.create_task_group() as tg, DaskExecutor(external_cluster.address) as ex:
        held = ex.submit(wait_for_event, gate)

        async def call(name: str, make: Any) -> None:
            results[name] = await make()

        tg.start_soon(call, "run", lambda: ex.run(wait_for_event, gate))
        tg.start_soon(call, "compute", lambda: ex.compute(dask.delayed(wait_for_event)(gate)))
        tg.start_soon(call, "retrieve", lambda: ex.retrieve(held))
        tg.start_soon(call, "gather", lambda: ex.gather([held]))
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(open_gate_once_exit_waits, external_cluster.address, gate)
    assert results == {"run": gate, "compute": gate, "retrieve": gate, "gather": [gate]}
    await external_cluster.wait_forgotten()


async def open_gate_once_exit_waits(address: str, gate: str) -> None:
    await anyio.wait_all_tasks_blocked()  # the executor's exit is waiting now
    async with DaskExecutor(address) as other:
        await other.run(set_event, gate)


async def test_error_exit_cancels_calls_of_other_tasks(external_cluster: ExternalCluster) -> None:
    """An error exit cancels the tasks of run() calls that other tasks are making: they
    raise TaskCancelled, and the scheduler holds none of their keys afterwards."""
    gate = f"gate-{uuid.uuid4()}"
    failures: list[BaseException] = []

    async def call(ex: DaskExecutor) -> None:
        try:
            await ex.run(wait_for_event, gate)
        except TaskCancelled as failure:
            failures.append(failure)

    async def body(tg: anyio.abc.TaskGroup) -> None:
        async with DaskExecutor(external_cluster.address) as ex:
            tg.start_soon(call, ex)
            tg.start_soon(call, ex)
            await anyio.wait_all_tasks_blocked()
            raise KeyError("body failed")

    async with anyio.create_task_group() as tg:
        with pytest.raises(KeyError):
            await body(tg)
    assert len(failures) == 2
    assert all("exited with an error" in str(f) for f in failures)
    assert external_cluster.scheduler_keys() == set()
    async with DaskExecutor(external_cluster.address) as ex:
        await ex.run(set_event, gate)  # free the worker threads of the cancelled tasks


async def test_published_data_does_not_hold_the_exit(external_cluster: ExternalCluster) -> None:
    """Keys that Dask keeps for a published dataset (or another client) are not waited
    for at exit, nor warned about (the warning would fail this test): they stay published,
    and go once unpublished."""
    import dask.array as da

    name = f"dataset-{uuid.uuid4()}"
    async with DaskExecutor(external_cluster.address) as ex:
        persisted = await ex.persist(da.arange(10, chunks=5))
        await ex.call_client(lambda c: c.publish_dataset(persisted, name=name))
        keys = {str(k) for k in ex.client.refcount}
    assert keys <= external_cluster.scheduler_keys()
    observer = external_cluster.observer
    assert observer.compute(observer.get_dataset(name).sum()).result() == 45
    observer.unpublish_dataset(name)
    await external_cluster.wait_forgotten()


async def test_values_fetched_while_the_exit_waits(external_cluster: ExternalCluster) -> None:
    """While a normal exit waits, other tasks may still fetch values: as_completed with
    results, and retrieve() after an await, each get theirs (none is refused as closing)."""
    gate = f"gate-{uuid.uuid4()}"
    got: dict[str, object] = {}
    async with anyio.create_task_group() as tg, DaskExecutor(external_cluster.address) as ex:
        handles = [ex.submit(wait_for_event, gate), ex.submit(wait_for_event, gate)]

        async def stream() -> None:
            got["stream"] = sorted(
                [v async for _, v in ex.as_completed(handles, with_results=True)]
            )

        async def later() -> None:
            await handles[0]
            got["retrieve"] = await ex.retrieve(handles[1])

        tg.start_soon(stream)
        tg.start_soon(later)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(open_gate_once_exit_waits, external_cluster.address, gate)
    assert got == {"stream": [gate, gate], "retrieve": gate}
    await external_cluster.wait_forgotten()


async def test_error_exit_and_a_gather_just_started(external_cluster: ExternalCluster) -> None:
    """A gather() another task starts as the body fails gets the finished task's value, or,
    started once the exit releases the keys, RuntimeError saying the executor is closing;
    never distributed's FutureCancelledError from a key released under it (as it did)."""
    got: list[object] = []

    async def body(tg: anyio.abc.TaskGroup) -> None:
        async with DaskExecutor(external_cluster.address) as ex:
            handle = ex.submit(inc, 1)
            await handle

            async def getter() -> None:
                try:
                    got.append(await ex.gather([handle]))
                except RuntimeError as refused:
                    got.append(str(refused))

            tg.start_soon(getter)
            await anyio.lowlevel.checkpoint()  # the getter starts, and yields in gather()
            raise KeyError("body failed")

    async with anyio.create_task_group() as tg:
        with pytest.raises(KeyError):
            await body(tg)
    assert got in ([[2]], ["this DaskExecutor is closing: it cannot be used any more"])
    await external_cluster.wait_forgotten()


async def test_exit_waits_for_a_scatter_under_way(external_cluster: ExternalCluster) -> None:
    """A scatter() of another task under way at the exit is waited for, and its data
    released with the rest (its handles used to stay in a closed executor)."""
    scattered: list[Any] = []
    async with anyio.create_task_group() as tg, DaskExecutor(external_cluster.address) as ex:

        async def scatter() -> None:
            scattered.append(await ex.scatter([1, 2, 3]))

        tg.start_soon(scatter)
        await anyio.wait_all_tasks_blocked()
    assert [h.status for h in scattered[0]] == [TaskStatus.FINISHED] * 3
    assert ex.statistics().in_flight == 0
    await external_cluster.wait_forgotten()


async def test_cancelled_run_finishes_before_the_exit_closes(
    external_cluster: ExternalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A run() of another task cancelled while the exit waits for it finishes its cleanup
    (cancel on the cluster, confirmed) before the exit closes the client: no warning."""
    gate = f"gate-{uuid.uuid4()}"
    scopes: list[anyio.CancelScope] = []

    async def call(ex: DaskExecutor) -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await ex.run(wait_for_event, gate)

    async def cancel_once_exit_waits() -> None:
        await anyio.wait_all_tasks_blocked()
        scopes[0].cancel()

    with caplog.at_level("WARNING", logger="dask_anyio"):
        async with anyio.create_task_group() as tg, DaskExecutor(external_cluster.address) as ex:
            tg.start_soon(call, ex)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(cancel_once_exit_waits)
    assert scopes[0].cancelled_caught
    assert [r.getMessage() for r in caplog.records if r.name == "dask_anyio"] == []
    assert external_cluster.scheduler_keys() == set()
    async with DaskExecutor(external_cluster.address) as other:
        await other.run(set_event, gate)  # free the worker thread
