"""Task trees: dask_anyio.subtasks() and run_async() in tasks on a real cluster; the parent
owns its children, down the tree."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import distributed
import psutil
import pytest

import dask_anyio
from dask_anyio import CancelledOnWorker, DaskExecutor
from dask_anyio._owned import OwnedCore
from dask_anyio._remote import run_coroutine

from . import tree_tasks
from .conftest import ExternalCluster

pytestmark = pytest.mark.anyio

#: Key prefixes of the tasks of tree_tasks' trees, and of their scopes' markers.
TREE_KEYS = ("count", "blocked", "_leaf", "kill_on_cancel", "failing", "fail_leaf")
TREE_KEYS += ("dask-anyio-subtasks",)


def _tree_keys(cluster: ExternalCluster) -> set[str]:
    return {k for k in cluster.scheduler_keys() if k.startswith(TREE_KEYS)}


def _marks(directory: Path, what: str) -> list[Path]:
    return sorted(directory.glob(f"{what}-*"))


async def _wait_marks(directory: Path, what: str, count: int, within: float = 20) -> None:
    """Wait until the leaves wrote ``count`` marks (polling files another process writes)."""
    with anyio.fail_after(within):
        while len(_marks(directory, what)) < count:  # noqa: ASYNC110
            await anyio.sleep(0.02)


async def _wait_dead(pids: list[int], within: float = 10) -> None:
    with anyio.fail_after(within):
        while any(psutil.pid_exists(pid) for pid in pids):  # noqa: ASYNC110
            await anyio.sleep(0.02)


# -- trees that complete --------------------------------------------------------------------


@pytest.mark.parametrize("depth", [2, 3])
async def test_a_tree_with_more_tasks_than_threads_completes(
    tree_cluster: ExternalCluster, depth: int
) -> None:
    """A tree of coroutine tasks, 7 or 15 of them on 2 workers of 1 thread, completes: a
    waiting parent holds no slot. After the executor's exit the scheduler holds no key of
    it (the exit confirms the root's release; the root's scopes confirmed the rest)."""
    async with DaskExecutor(tree_cluster.address) as ex:
        assert await ex.run(tree_tasks.count, depth) == 2 ** (depth + 1) - 1
    assert not _tree_keys(tree_cluster)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
async def test_sync_tasks_open_subtasks_through_run_async(
    tree_cluster: ExternalCluster, backend: str
) -> None:
    """Sync task functions make a tree through run_async, on either inner backend."""
    async with DaskExecutor(tree_cluster.address) as ex:
        assert await ex.run(tree_tasks.count_sync, 2, backend) == 7
    assert not _tree_keys(tree_cluster)


async def test_a_tree_leaves_nothing_on_the_workers_or_the_scheduler(
    tree_cluster: ExternalCluster,
) -> None:
    """After a tree returns, its workers run the threads they ran before it, and the
    scheduler knows the clients it knew: every scope closed its client and loop thread."""
    async with DaskExecutor(tree_cluster.address) as ex:
        await ex.run(tree_tasks.count_sync, 1, "trio")  # what a worker starts once, started
        threads = await ex.call_client(lambda c: c.run(tree_tasks.threads_of_the_worker))
        clients = tree_cluster.observer.run_on_scheduler(tree_tasks.clients_of_the_scheduler)
        assert await ex.run(tree_tasks.count, 2) == 7
        assert await ex.run(tree_tasks.count_sync, 2, "trio") == 7
        assert await ex.run(tree_tasks.count_sync, 2, "asyncio") == 7
        after = await ex.call_client(lambda c: c.run(tree_tasks.threads_of_the_worker))
        assert after == threads
        assert tree_cluster.observer.run_on_scheduler(tree_tasks.clients_of_the_scheduler) == (
            clients
        )


# -- cancelling the root --------------------------------------------------------------------


async def _cancel_tree(
    cluster: ExternalCluster, directory: Path, how: str, leaf: str, sync: str | None
) -> None:
    """Start a tree of depth 3 (8 leaves) whose leaves run until cancelled, cancel its root
    as ``how`` says, and check that the scheduler holds no key of it at once."""
    args = (tree_tasks.blocked, 3, str(directory), leaf, sync)
    if how == "scope":
        async with DaskExecutor(cluster.address) as ex:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(ex.run, *args)
                    await _wait_marks(directory, "started", 8)
                    scope.cancel()
            assert not _tree_keys(cluster)
    elif how == "handle":
        async with DaskExecutor(cluster.address) as ex:
            root = ex.submit(*args)
            await _wait_marks(directory, "started", 8)
            assert root.cancel()
        assert not _tree_keys(cluster)
    else:  # the executor's exit, as the body raises
        with pytest.raises(LookupError):  # noqa: PT012 - the raise is what exits the scope
            async with DaskExecutor(cluster.address) as ex:
                ex.submit(*args)
                await _wait_marks(directory, "started", 8)
                raise LookupError
        assert not _tree_keys(cluster)


@pytest.mark.parametrize(
    ("how", "leaf", "sync"),
    [
        ("scope", "coroutine", None),
        ("handle", "checkpoint", None),
        ("exit", "kill", None),
        ("scope", "coroutine", "trio"),
        ("handle", "checkpoint", "asyncio"),
    ],
)
async def test_cancelling_the_root_cancels_the_whole_tree(
    external_cluster: ExternalCluster, tmp_path: Path, how: str, leaf: str, sync: str | None
) -> None:
    """However the root of a depth-3 tree is cancelled (its caller's scope, its handle, its
    executor's exit), the scheduler holds no key of the tree once that is confirmed, and
    every leaf's code stops: coroutines cancelled, checkpoint() raising, kill_on_cancel
    processes killed. Parents are coroutine tasks, or sync ones through run_async."""
    await _cancel_tree(external_cluster, tmp_path, how, leaf, sync)
    if leaf == "kill":
        await _wait_dead([int(p.read_text()) for p in _marks(tmp_path, "started")])
    else:
        await _wait_marks(tmp_path, "stopped", 8)


async def test_a_root_whose_key_is_released_cancels_its_tree(
    external_cluster: ExternalCluster, tmp_path: Path
) -> None:
    """A root released by its client without a cancel (Dask's own client dropping its
    future, as when its caller goes) stops as a cancelled one does: its tree goes."""
    key = f"blocked-released-{tmp_path.name}"

    def submit_then_release() -> None:
        with distributed.Client(external_cluster.address, set_as_default=False) as client:
            future = client.submit(
                run_coroutine,
                key,
                tree_tasks.blocked,
                (3, str(tmp_path), "coroutine"),
                {},
                key=key,
                pure=False,
            )
            with anyio.from_thread.start_blocking_portal() as portal:
                portal.call(_wait_marks, tmp_path, "started", 8)
            future.release()

    await anyio.to_thread.run_sync(submit_then_release)
    await _wait_marks(tmp_path, "stopped", 8)
    await external_cluster.wait_forgotten("blocked")
    await external_cluster.wait_forgotten("dask-anyio-subtasks-blocked")
    assert not _tree_keys(external_cluster)


async def test_a_tree_wider_than_the_cluster_cancels_without_deadlock(
    tree_cluster: ExternalCluster, tmp_path: Path
) -> None:
    """A tree of 7 coroutine tasks on 2 one-thread workers whose leaves run until cancelled
    (2 of the 4 run, 2 wait for a slot) cancels whole; then the slots serve the next tree."""
    async with DaskExecutor(tree_cluster.address) as ex:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(ex.run, tree_tasks.blocked, 2, str(tmp_path), "coroutine")
                await _wait_marks(tmp_path, "started", 2)
                scope.cancel()
        assert not _tree_keys(tree_cluster)
        await _wait_marks(tmp_path, "stopped", 2)
        assert await ex.run(tree_tasks.count, 2) == 7


async def test_a_task_that_catches_its_scopes_cancellation_still_stops(
    tree_cluster: ExternalCluster, tmp_path: Path
) -> None:
    """A coroutine task whose code catches the CancelledOnWorker of its subtasks scope and
    goes on awaiting is cancelled all the same once it has left the scope."""
    async with DaskExecutor(tree_cluster.address) as ex:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(ex.run, tree_tasks.swallowing, str(tmp_path))
                await _wait_marks(tmp_path, "started", 1)  # its leaf
                scope.cancel()
        await _wait_marks(tmp_path, "stopped", 1)  # the leaf
        await _wait_marks(tmp_path, "ended", 1)  # and the task's own code, after the scope


async def test_run_async_twice_in_one_task(tree_cluster: ExternalCluster) -> None:
    """A sync task may call run_async more than once (it secedes once)."""
    async with DaskExecutor(tree_cluster.address) as ex:
        assert await ex.run(tree_tasks.run_async_twice) == 2


async def test_a_scope_whose_task_is_gone_starts_nothing(
    tree_cluster: ExternalCluster,
) -> None:
    """A subtasks scope that opens after the scheduler let its task go (cancelled while the
    scope connected) gives up before any child starts, and holds no marker."""
    with pytest.raises(CancelledOnWorker, match="was cancelled"):
        await _open_owned_core(tree_cluster, "count-not-on-the-scheduler")
    assert not _tree_keys(tree_cluster)


async def _open_owned_core(cluster: ExternalCluster, owner: str) -> None:
    async def open_and_close() -> None:
        core = await OwnedCore.open_owned(
            owner,
            address=cluster.address,
            cluster=None,
            client=None,
            security=None,
            connect_timeout=None,
            local_cluster_kwargs={},
        )
        await core.close()

    async with DaskExecutor(cluster.address) as ex:  # (an asyncio loop under every backend)
        await ex.call_client(lambda _: open_and_close())


# -- errors ---------------------------------------------------------------------------------


def _frames(error: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(error.__traceback__)]


async def test_a_leaf_error_reaches_the_root_caller_with_its_traceback(
    tree_cluster: ExternalCluster,
) -> None:
    """A leaf's error, three levels down, is raised by the root's caller as itself, with the
    leaf's remote frames and its parents' in its traceback."""
    async with DaskExecutor(tree_cluster.address) as ex:
        with pytest.raises(tree_tasks.LeafError, match="leaf 0 failed") as caught:
            await ex.run(tree_tasks.failing, 3, 1)
        frames = _frames(caught.value)
        assert "fail_leaf" in frames
        assert frames.count("failing") >= 3
    assert not _tree_keys(tree_cluster)


async def test_several_leaf_errors_reach_the_root_caller_as_a_group(
    tree_cluster: ExternalCluster,
) -> None:
    """Two failed leaves that nobody awaited reach the root's caller as an ExceptionGroup
    (their parent's exit raised it), each with the leaf's remote traceback."""
    async with DaskExecutor(tree_cluster.address) as ex:
        with pytest.raises(ExceptionGroup) as caught:
            await ex.run(tree_tasks.failing, 2, 2)
        group = caught.value.subgroup(tree_tasks.LeafError)
        assert group is not None
        leaves = _leaves(group)
        assert sorted(str(e) for e in leaves) == ["leaf 0 failed", "leaf 1 failed"]
        assert all("fail_leaf" in _frames(e) for e in leaves)
    assert not _tree_keys(tree_cluster)


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        found += _leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
    return found


# -- where it works -------------------------------------------------------------------------


async def test_subtasks_outside_a_task_says_where_it_works() -> None:
    """subtasks() in the client, outside any task, raises a RuntimeError saying where it
    works, before connecting anywhere."""
    with pytest.raises(RuntimeError, match="outside a task: it works in a task running on"):
        async with dask_anyio.subtasks():
            pass


def test_run_async_outside_a_task_says_where_it_works() -> None:
    """run_async() outside a task raises a RuntimeError saying where it works."""

    async def nothing() -> None:
        pass

    with pytest.raises(RuntimeError, match="outside a task: it works in a task running on"):
        dask_anyio.run_async(nothing)


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (tree_tasks.run_async_in_a_coroutine, "use `async with dask_anyio.subtasks"),
        (tree_tasks.subtasks_in_a_thread, "in another thread than its coroutine task"),
    ],
)
async def test_misplaced_calls_in_a_task_say_what_to_do(
    tree_cluster: ExternalCluster, fn: Any, message: str
) -> None:
    """run_async() in a coroutine task, or subtasks() in a thread that a coroutine task
    started, fails the task with a RuntimeError saying what to do instead."""
    async with DaskExecutor(tree_cluster.address) as ex:
        with pytest.raises(RuntimeError, match=message):
            await ex.run(fn)
