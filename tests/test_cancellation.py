"""Cancellation: what a cancelled scope does to remote tasks, and what it leaves alone."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskStatus as AnyioTaskStatus
from anyio.lowlevel import checkpoint

from dask_anyio import DaskExecutor, TaskCancelled, TaskStatus

from .conftest import ABSENT, ExternalCluster
from .tasks import inc, mark_started, set_event, wait_for_event

pytestmark = pytest.mark.anyio


def gate_name() -> str:
    return f"gate-{uuid.uuid4()}"


async def test_run_cancelled_by_scope_forgets_remote_task(
    ex: DaskExecutor,
    external_cluster: ExternalCluster,
) -> None:
    """move_on_after around run(): the scope ends and the scheduler has forgotten the task."""
    with anyio.move_on_after(0.2) as scope:
        await ex.run(time.sleep, 30)
    assert scope.cancelled_caught
    # run() returned only after the scheduler forgot the task: no waiting needed here.
    assert not [k for k in external_cluster.scheduler_keys() if k.startswith("sleep-")]
    assert await ex.run(inc, 1) == 2  # the executor keeps working


async def test_run_in_cancelled_scope_forgets_task_not_yet_arrived(
    ex: DaskExecutor,
    external_cluster: ExternalCluster,
) -> None:
    """run() cancelled at once, before the scheduler even got the task: still forgotten."""
    for _ in range(5):
        with anyio.CancelScope() as scope:
            scope.cancel()
            await ex.run(time.sleep, 0.5)
        assert scope.cancelled_caught
        assert not [k for k in external_cluster.scheduler_keys() if k.startswith("sleep-")]


async def test_queued_tasks_of_cancelled_scope_never_start(
    external_cluster: ExternalCluster, tmp_path: Path
) -> None:
    """Tasks queued behind a busy slot are cancelled with their scope and never start."""
    gate, worker = gate_name(), external_cluster.workers[0]
    slot = {"resources": {"SLOT": 1}, "workers": [worker]}
    keys: list[str] = []
    async with DaskExecutor(external_cluster.address) as helper:
        with anyio.CancelScope() as scope:
            async with DaskExecutor(external_cluster.address) as ex:
                blocker = ex.submit(wait_for_event, gate, **slot)
                queued = [
                    ex.submit(mark_started, str(tmp_path / f"q{i}"), **slot) for i in range(5)
                ]
                keys = [blocker.key] + [h.key for h in queued]
                scope.cancel()
                await checkpoint()
        assert scope.cancelled_caught
        assert all(h.status is TaskStatus.CANCELLED for h in queued)
        assert not set(keys) & external_cluster.scheduler_keys()
        await helper.run(set_event, gate)  # free the slot if the blocker had started
        # The slot serves tasks in order: once a later task has run there, none of the
        # cancelled ones can still be waiting for it.
        await helper.submit(mark_started, str(tmp_path / "after"), **slot)
    assert sorted([p.name async for p in anyio.Path(tmp_path).iterdir()]) == ["after"]


async def test_cancelling_a_wait_leaves_the_task_running(
    external_cluster: ExternalCluster,
) -> None:
    """Cancelling `await handle` stops the waiting only: the executor owns the task."""
    gate = gate_name()
    async with DaskExecutor(external_cluster.address) as ex:
        handle = ex.submit(wait_for_event, gate)
        async with anyio.create_task_group() as tg:

            async def waiter(*, task_status: AnyioTaskStatus[None]) -> None:
                task_status.started()
                await handle

            await tg.start(waiter)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        assert handle.status is TaskStatus.PENDING
        await ex.run(inc, 0)  # the client's messages are ordered: a barrier for the submit
        assert handle.key in external_cluster.scheduler_keys()
        await ex.run(set_event, gate)
        await handle
        assert await ex.retrieve(handle) == gate


async def test_handle_cancel(external_cluster: ExternalCluster) -> None:
    """handle.cancel() cancels the task and its dependents; awaiting raises TaskCancelled."""
    gate = gate_name()
    async with DaskExecutor(external_cluster.address) as ex:
        handle = ex.submit(wait_for_event, gate)
        dependent = ex.submit(inc, handle)
        assert handle.cancel() is True
        assert handle.cancelled()
        assert handle.done()
        assert handle.status is TaskStatus.CANCELLED
        with pytest.raises(TaskCancelled, match="cancel") as excinfo:
            await handle
        assert excinfo.value.key == handle.key
        with pytest.raises(TaskCancelled):
            await ex.retrieve(handle)
        with pytest.raises(TaskCancelled):
            await dependent
        assert handle.cancel() is False  # already done
        finished = ex.submit(inc, 1)
        await finished
        assert finished.cancel() is False
        assert await ex.retrieve(finished) == 2
        await ex.run(set_event, gate)
    assert not {handle.key, dependent.key} & external_cluster.scheduler_keys()


async def test_dependents_of_a_cancelled_handle_are_not_failures_at_exit(
    external_cluster: ExternalCluster,
) -> None:
    """Dependents that Dask cancels with a cancelled handle raise TaskCancelled when awaited,
    with the handle's reason, but the exit does not report them as unobserved failures: the
    cancellation was asked for. (A task another client cancels still is: see below.)"""
    async with DaskExecutor(external_cluster.address) as ex:
        blocker = ex.submit(inc, 1, resources=ABSENT)
        dependents = ex.map(inc, [blocker] * 20)
        awaited = ex.submit(inc, blocker)
        blocker.cancel()
        with pytest.raises(TaskCancelled, match=r"TaskHandle\.cancel\(\) was called"):
            await awaited
        with anyio.fail_after(10):
            async for _ in ex.as_completed(dependents):  # Dask's cascade, told to the client
                pass
        assert {h.status for h in dependents} == {TaskStatus.CANCELLED}
    assert not {h.key for h in [blocker, awaited, *dependents]} & external_cluster.scheduler_keys()


async def test_cancelled_by_someone_else(external_cluster: ExternalCluster) -> None:
    """A task cancelled by another client raises TaskCancelled, an ordinary Exception."""
    import distributed

    gate = gate_name()
    async with DaskExecutor(external_cluster.address) as ex:
        handle = ex.submit(wait_for_event, gate)
        await ex.run(inc, 0)  # barrier: the scheduler knows the task before it is cancelled
        other = external_cluster.observer
        other.cancel([distributed.Future(handle.key, other)], force=True)
        with pytest.raises(TaskCancelled) as excinfo:
            await handle
        assert isinstance(excinfo.value, Exception)
        assert handle.status is TaskStatus.CANCELLED
        await ex.run(set_event, gate)


async def test_run_cancelled_while_queued_behind_busy_slot(
    external_cluster: ExternalCluster, tmp_path: Path
) -> None:
    """Concurrent run() calls in a cancelled task group: none of the queued ones starts."""
    gate, worker = gate_name(), external_cluster.workers[1]
    slot = {"resources": {"SLOT": 1}, "workers": [worker]}
    async with DaskExecutor(external_cluster.address) as ex:
        blocker = ex.submit(wait_for_event, gate, **slot)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                for i in range(4):
                    # run() takes no options; a dependency on the blocker queues it instead
                    tg.start_soon(ex.run, _after, blocker, str(tmp_path / f"r{i}"))
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
        assert not [k for k in external_cluster.scheduler_keys() if k.startswith("_after-")]
        await ex.run(set_event, gate)
        await blocker
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []


def _after(_blocker: object, path: str) -> str:
    return mark_started(path)


async def test_many_handle_cancels_are_sent_together(external_cluster: ExternalCluster) -> None:
    """A burst of cancel() calls reaches the cluster as one request; all are forgotten."""
    async with DaskExecutor(external_cluster.address) as ex:
        # No worker has this resource: the tasks wait on the scheduler, holding no thread.
        handles = [ex.submit(inc, i, resources={"ABSENT": 1}) for i in range(200)]
        await ex.run(inc, 0)  # barrier: the scheduler knows them all
        assert all(h.cancel() for h in handles)
        client_id = ex.client.id
    assert external_cluster.cancel_requests(client_id) == [200]
    assert not {h.key for h in handles} & external_cluster.scheduler_keys()


async def test_run_in_fail_after_cancels_remote_task(external_cluster: ExternalCluster) -> None:
    """fail_after around run(): TimeoutError, raised once the scheduler forgot the task."""
    gate = gate_name()
    async with DaskExecutor(external_cluster.address) as ex:
        with pytest.raises(TimeoutError), anyio.fail_after(0.2):
            await ex.run(wait_for_event, gate)
        assert not [k for k in external_cluster.scheduler_keys() if k.startswith("wait_for_event-")]
        await ex.run(set_event, gate)


async def test_a_cancelled_call_starts_nothing(external_cluster: ExternalCluster) -> None:
    """Every call that sends work, awaited in an already-cancelled scope, raises the
    cancellation before it sends anything (trio's rule for a checkpoint)."""
    import dask
    import distributed

    called: list[str] = []

    def note(client: distributed.Client) -> None:
        called.append(client.id)

    async with DaskExecutor(external_cluster.address) as ex:
        handle = ex.submit(inc, 1)
        await handle
        calls = [
            lambda: ex.run(inc, 1),
            lambda: ex.compute(dask.delayed(inc)(1)),
            lambda: ex.persist(dask.delayed(inc)(2)),
            lambda: ex.scatter([1, 2]),
            lambda: ex.call_client(note),
            lambda: ex.retrieve(handle),
            lambda: ex.gather([handle]),
        ]
        for call in calls:
            with anyio.CancelScope() as scope:
                scope.cancel()
                await call()
            assert scope.cancelled_caught
        assert ex.statistics().submitted == 1
        assert called == []
        assert external_cluster.scheduler_keys() == {handle.key}
