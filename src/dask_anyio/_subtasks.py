"""anyio front end: task trees. :func:`subtasks` opens, inside a task running on a worker, a
:class:`DaskExecutor` whose scope belongs to that task; :func:`run_async` lets a sync task
function do the same, on an event loop in its own thread.

How a child scope learns that its parent was cancelled: the parent's task recorded itself
as a :class:`~dask_anyio._running.RunningTask` (the coroutine task's runner, or
:func:`run_async`); a worker plugin calls its ``stop`` on the worker's event loop when the
worker stops wanting the task, which cancels the task's subtasks scopes (through the bridge's
one primitive where the scope runs on another thread). Each scope's exit then does what
every executor's cancelled exit does: it cancels its tasks on the scheduler and waits for
the scheduler to confirm. Those tasks are the next level's parents, so the cancellation goes
down the tree, one level per exit.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar, TypeVarTuple

import anyio
import anyio.lowlevel
import distributed
from dask.context import thread_state

from ._bridge import LoopToken, current_loop_token, open_core_runner, run_on_loop
from ._core import DaskCore
from ._executor import DaskExecutor, executor_over
from ._options import Source
from ._owned import OwnedCore
from ._remote import secede_once
from ._running import (
    RunningTask,
    current_task,
    install_traceback_pickling,
    running_as,
    watch_task,
)

__all__ = ["run_async", "subtasks"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_WHERE = (
    "it works in a task running on a Dask worker: in a coroutine function that a "
    "DaskExecutor runs (ex.run, ex.submit, ...), or in a sync task function through "
    "dask_anyio.run_async(async_fn)"
)


@asynccontextmanager
async def subtasks(*, connect_timeout: float | str | None = None) -> AsyncIterator[DaskExecutor]:
    """Open a :class:`DaskExecutor` whose scope belongs to the task running this code:
    ``async with dask_anyio.subtasks() as ex:``, in a coroutine task function on a worker
    (or in the async function that a sync task runs with :func:`run_async`).

    The executor connects to the worker's scheduler (with the worker's security settings)
    and has the whole API of any executor; its exit follows the same rules. The task owns
    it: when the worker stops wanting the task (its caller's scope cancelled,
    :meth:`TaskHandle.cancel`, an executor's exit, a released key), the scope is cancelled,
    its tasks are cancelled on the scheduler (confirmed), their code stops as the task's
    would, and the block raises :exc:`CancelledOnWorker`, which ends the task. An error of a
    child raised in the block (or the :exc:`ExceptionGroup` of unobserved failures that the
    exit raises) fails the task, and reaches its caller with the child's traceback.

    Entering frees the task's slot of the worker's threads for good (the task becomes
    ``long-running``, as after :func:`distributed.secede`): a waiting parent does not keep
    its children from running. A checkpoint; so is the exit.

    :raises RuntimeError: outside a task on a worker, saying where it works.
    """
    task = current_task()
    if task is None:
        raise RuntimeError(f"dask_anyio.subtasks() was used outside a task: {_WHERE}")
    if task.on_loop and not _on_loop_of(task):
        raise RuntimeError(
            "dask_anyio.subtasks() was used in another thread than its coroutine task's "
            "(started with to_thread, say): open it in the coroutine itself"
        )
    await anyio.lowlevel.checkpoint_if_cancelled()
    if task.on_loop:
        if task.stopped:
            raise task.cancelled()
        task.secede_on_loop()
    with anyio.CancelScope() as scope:
        # In run_async, the scope around the whole call is cancelled instead (see there).
        if task.on_loop:
            task.add_hook(scope.cancel)
        try:
            async with _owned_executor(task, connect_timeout) as executor:
                yield executor
        except BaseException as error:
            install_traceback_pickling(error)
            raise
        finally:
            if task.on_loop:
                task.remove_hook(scope.cancel)
    if scope.cancel_called:
        raise task.cancelled()


def _owned_executor(task: RunningTask, connect_timeout: float | str | None) -> DaskExecutor:
    """An executor on the worker's scheduler, whose core holds the task's marker."""
    source = Source(
        address=task.worker.scheduler.address,
        security=task.worker.security,
        connect_timeout=connect_timeout,
    )

    async def open_core(_: str | None) -> DaskCore:
        return await OwnedCore.open_owned(task.key, **source.core_arguments(None))

    return executor_over(open_core_runner, open_core, source=source)


def _on_loop_of(task: RunningTask) -> bool:
    return _running_loop() is task.loop


def run_async(
    fn: Callable[[*Ts], Awaitable[T]],
    /,
    *args: *Ts,
    backend: Literal["asyncio", "trio"] = "asyncio",
    backend_options: dict[str, Any] | None = None,
) -> T:
    """Run ``await fn(*args)`` to its end on a new event loop in the calling task's thread,
    and return its result: for a sync task function whose work opens :func:`subtasks`.

    Call it in a sync task function running on a worker (a coroutine task function uses
    ``async with subtasks()`` directly). Like :func:`distributed.worker_client`, it first
    frees the task's slot of the worker's threads (:func:`distributed.secede`), for good;
    then it runs ``fn`` under :func:`anyio.run` with ``backend`` (asyncio by default, or
    trio) and ``backend_options``. The task owns the call: when the worker stops wanting
    the task, the call is cancelled as a cancelled scope is (its subtasks scopes cancel
    their tasks on the scheduler as they exit), and this raises :exc:`CancelledOnWorker`.

    :raises RuntimeError: outside a sync task on a worker, saying where it works.
    """
    if _running_loop() is not None:
        raise RuntimeError(
            "dask_anyio.run_async() blocks its thread, and an event loop runs in this one: "
            "in a coroutine task function, use `async with dask_anyio.subtasks()` directly"
        )
    key = getattr(thread_state, "key", None)
    if key is None or getattr(thread_state, "actor", False):
        raise RuntimeError(f"dask_anyio.run_async() was called outside a task: {_WHERE}")
    worker = distributed.get_worker()
    secede_once()
    task = RunningTask(key, worker, on_loop=False)
    run = functools.partial(anyio.run, backend=backend, backend_options=backend_options)
    result: T = running_as(task).run(run, _run_owned, task, fn, args)
    return result


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _run_owned(task: RunningTask, fn: Callable[..., Awaitable[T]], args: Any) -> T:
    """``await fn(*args)`` in a scope that the worker's loop cancels when the task stops."""
    worker_loop = LoopToken(task.loop)
    front = current_loop_token()
    with anyio.CancelScope() as scope:
        hook = functools.partial(front.run_sync_soon, scope.cancel)

        async def watch() -> Callable[[], None]:  # on the worker's loop
            unwatch = await watch_task(task.worker, task.key, task.stop)
            task.add_hook(hook)
            return unwatch

        def unwatch_on_loop(unwatch: Callable[[], None]) -> None:
            unwatch()

        unwatch = await run_on_loop(worker_loop, watch, dropped=unwatch_on_loop)
        try:
            result = await fn(*args)
        finally:
            worker_loop.run_sync_soon(unwatch)
            worker_loop.run_sync_soon(task.remove_hook, hook)
    if scope.cancel_called:
        raise task.cancelled()
    return result
