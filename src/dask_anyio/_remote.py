"""Code that runs inside tasks, on Dask's workers.

Dask cannot interrupt a task that is running in a worker thread: when the scheduler cancels
or releases it, the worker marks the task ``cancelled`` and lets the thread run on (its
result is then dropped). :func:`checkpoint` lets a task look: it reads the worker's own state
of the task running in the calling thread, and raises :exc:`CancelledOnWorker` once the
worker no longer wants it.

This reads three of Dask's internals, in this module only: the key of the task a thread runs
(``dask.context.thread_state.key``, set by the worker around each task), the worker's
state machine (``Worker.state.tasks[key].state``, written by the worker's event loop; a
``TaskState`` stays in place until its task returns, so one lookup per task suffices), and
whether a task's thread seceded from the worker's pool (``proceed`` of the pool's own
thread state, see :func:`secede_once`).
"""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, overload

import cloudpickle
from dask.context import thread_state
from distributed import Worker, get_worker, secede

from . import _child, _warm
from ._running import RUNNING_STATES, CancelledOnWorker, RunningTask, running_as, watch_task

__all__ = [
    "CancelledOnWorker",
    "checkpoint",
    "kill_on_cancel",
    "new_actor",
    "run_coroutine",
    "secede_once",
]

P = ParamSpec("P")
T = TypeVar("T")

#: Per worker thread: the task last checked (key, start time) and the worker's state of it.
_checked = threading.local()


def checkpoint() -> None:
    """Raise :exc:`CancelledOnWorker` if the task running this code was cancelled.

    Call it inside a task function, on a Dask worker, between pieces of work: in the loop of
    a long computation, say. It returns at once while the worker still wants the task, and
    raises once the task was cancelled (by :meth:`DaskExecutor.run`'s caller being
    cancelled, :meth:`TaskHandle.cancel`, an executor's exit...) or released. Outside a task
    (in the client, in tests) it does nothing.

    It costs a few tenths of a microsecond (0.2 to 0.6 µs on the tests' loaded workers): a loop may
    call it every few microseconds of work. It looks at the task of the calling thread: in
    a thread that the task started itself, it does nothing. In a coroutine task,
    cancellation arrives as :exc:`asyncio.CancelledError` at the coroutine's next ``await``
    instead.
    """
    key = getattr(thread_state, "key", None)
    if key is None:  # not in a task
        return
    # The worker sets key and start time around each run of a task: a task run again with
    # the same key (after a reschedule) gets a new start time, and a new TaskState.
    started = getattr(thread_state, "start_time", None)
    checked: tuple[Any, Any, Any] | None = getattr(_checked, "task", None)
    if checked is None or checked[0] is not key or checked[1] is not started:
        checked = _checked.task = (key, started, _task_state(key))
    state = checked[2]
    if state is None or state.state not in RUNNING_STATES:
        raise CancelledOnWorker(f"task {key!r} was cancelled")


def _task_state(key: Any) -> Any:
    """The worker's ``TaskState`` of ``key``, or ``None`` if the worker has let go of it."""
    if getattr(thread_state, "actor", False):  # an actor's method: not a task, never cancelled
        return _ALWAYS_RUNNING
    worker = _worker_or_none()
    if worker is None:  # a thread that is not a worker's: a task of a local scheduler
        return _ALWAYS_RUNNING
    return worker.state.tasks.get(key)


class _Running:
    state = "executing"


_ALWAYS_RUNNING = _Running()


# -- coroutine tasks ------------------------------------------------------------------------


async def run_coroutine(
    key: Any,
    fn: Callable[..., Coroutine[Any, Any, Any]],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> Any:
    """Run ``fn(*args, **kwargs)`` as the task ``key``, on the worker's event loop; when the
    worker stops wanting the task (cancelled or released), cancel the coroutine: it gets
    :exc:`asyncio.CancelledError` at its current ``await``, and its ``finally`` blocks run.

    The coroutine runs in a task of its own: cancelling the worker's task that runs this one
    would lose the worker's record of it (the thread slot would never be freed).
    """
    worker = get_worker()
    task = RunningTask(key, worker, on_loop=True)
    unwatch = await watch_task(worker, key, task.stop)
    try:
        # (in a context of its own, where subtasks() finds the task)
        inner = asyncio.get_running_loop().create_task(
            fn(*args, **kwargs), context=running_as(task)
        )
        # Once the task stops: the subtasks scopes the coroutine holds are cancelled first
        # (their exits cancel the children on the scheduler, then raise CancelledOnWorker),
        # and the coroutine itself once it has left them, or at once if it holds none.
        task.cancel_rest_with(inner.cancel)
        return await inner
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if task.stopped and (current is None or not current.cancelling()):
            raise task.cancelled() from None
        raise  # the worker is closing
    finally:
        unwatch()


# -- hard cancellation ----------------------------------------------------------------------


class kill_on_cancel(Generic[P, T]):  # (lower case: used like a function, kill_on_cancel(fn))
    """Wrap ``fn`` so that, as a task, it runs in a child process that is killed when the
    task is cancelled: for code that cannot call :func:`checkpoint`.

    ``await ex.run(kill_on_cancel(fn), *args)``, or ``ex.submit(kill_on_cancel(fn), ...)``:
    the call runs in a process of its own, forked from a *warm process* that the worker keeps
    (the worker itself is not touched), and the worker thread waits for the outcome, looking
    every 20 ms whether the task is still wanted. If it is not, or if the worker closes, the
    call's process and the processes it started are killed (``SIGKILL`` to its process
    group), and the worker thread is free again. If the worker process dies, the call's
    process kills its group itself.

    The warm process imports the modules the call needs (to unpickle it) once, and keeps them
    for the calls after: a call costs a fork, a few milliseconds, not a new interpreter.
    Each call still starts from the warm process's state, not from what an earlier call left
    (numpy's global random generator is reseeded, as Python's own is). A worker keeps one
    warm process per call it runs at the same time; one idle for
    ``dask-anyio.kill-on-cancel.idle-timeout`` (Dask's config, on the worker; default
    ``60s``, ``0`` keeps none) ends, and all end with their worker. They keep the
    environment and working directory the worker had when they started.

    The child's return value comes back as the task's result; its exception is raised on
    the worker with the child's traceback (as a plain task's would be). A coroutine
    function runs in the child under :func:`asyncio.run`.

    Processes that the call started in its process group end with it, also when it
    returns (once the call's process exited by itself: its non-daemon threads ended, its
    ``atexit`` handlers ran; or after 2 s). ``sys.exit()`` in the call is a
    :exc:`RuntimeError` of the task, not the worker's exit.

    Trade-offs: the first call on a worker (and each call beyond the number of warm
    processes) starts a warm process, which imports ``fn``'s modules: about 40-50 ms, 0.4-0.8 s
    when they import distributed (2 shared cores); each warm process holds the memory of
    what it imported. The arguments and the result are pickled once more, a killed call gets
    no chance to clean up (no ``finally``), and the processes' memory is outside Dask's
    limits of the worker. POSIX only. In the child, :func:`distributed.get_worker` and
    :func:`checkpoint` have no worker to talk to.
    """

    @overload
    def __init__(self: kill_on_cancel[P, T], fn: Callable[P, Coroutine[Any, Any, T]]) -> None: ...
    @overload
    def __init__(self: kill_on_cancel[P, T], fn: Callable[P, T]) -> None: ...
    def __init__(self, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise TypeError(f"kill_on_cancel() needs a callable, not {fn!r}")
        self.fn = fn
        self.__name__: str = str(getattr(fn, "__name__", type(fn).__name__))  # key prefix
        self.__doc__ = getattr(fn, "__doc__", None)

    def __repr__(self) -> str:
        return f"kill_on_cancel({self.fn!r})"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        result: T = _run_in_child(self.fn, args, kwargs)
        return result


def _run_in_child(fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    key = getattr(thread_state, "key", None)
    state = _task_state(key) if key is not None else _ALWAYS_RUNNING
    worker = _worker_or_none()

    def check() -> None:
        if state is None or state.state not in RUNNING_STATES:
            raise CancelledOnWorker(f"task {key!r} was cancelled: its process is killed")
        if worker is not None and worker.status in _warm.CLOSING:
            raise CancelledOnWorker(f"the worker is closing: the process of {key!r} is killed")

    data, status = _warm.run_call(fn, cloudpickle.dumps((fn, args, kwargs)), check, worker)
    if not _child.complete(data):
        assert status is not None  # (known whenever the outcome is not whole)
        how = _warm.how_it_ended(status)
        raise RuntimeError(f"the process running {fn!r} {how}, without an outcome")
    kind, value = pickle.loads(data[_child.HEADER_SIZE :])
    if kind == "ok":
        return value
    if isinstance(value, SystemExit | KeyboardInterrupt):  # would end the worker
        message = f"{fn!r} raised {value!r} in its process"
        raise RuntimeError(message) from value  # noqa: TRY004 - the call's outcome, not a type
    raise value


def new_actor(cls: Callable[..., T], args: Sequence[Any], kwargs: Mapping[str, Any]) -> T:
    """The task that makes an actor of ``ex.actor``: ``cls(*args, **kwargs)``. Then every
    exception class imported so far (the actor's module's own among them) pickles with its
    traceback, as distributed makes its own and builtin ones do: a method's error reaches
    its caller with the remote traceback (the worker sends it pickled)."""
    import tblib.pickling_support

    actor = cls(*args, **kwargs)
    tblib.pickling_support.install()
    return actor


def secede_once() -> None:
    """:func:`distributed.secede` for the task running in this thread, unless its thread
    seceded already (a second ``run_async``, or inside ``worker_client``): Dask's own
    raises then. Dask's pool marks a seceded thread in its own thread state."""
    from distributed.threadpoolexecutor import thread_state as pool_thread

    if getattr(pool_thread, "proceed", True):
        secede()


def _worker_or_none() -> Worker | None:
    try:
        return get_worker()
    except ValueError:
        return None
