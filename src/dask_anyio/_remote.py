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
import contextlib
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, overload

import cloudpickle
from dask.context import thread_state
from distributed import Worker, get_worker, secede
from distributed.core import Status

from . import _child
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

#: How often a worker thread waiting for a child process looks at its task's state.
_POLL = 0.02
#: How long a child that sent its outcome may take to exit before its group is killed.
_EXIT_GRACE = 2.0
#: Statuses of a worker that will not take the result of a running task.
_CLOSING = frozenset({Status.closing, Status.closed, Status.failed})


class kill_on_cancel(Generic[P, T]):  # (lower case: used like a function, kill_on_cancel(fn))
    """Wrap ``fn`` so that, as a task, it runs in a child process that is killed when the
    task is cancelled: for code that cannot call :func:`checkpoint`.

    ``await ex.run(kill_on_cancel(fn), *args)``, or ``ex.submit(kill_on_cancel(fn), ...)``:
    the worker thread starts a new Python process (the worker itself is not touched), sends
    it the call, and waits for the outcome, looking every 20 ms whether the task is still
    wanted. If it is not, or if the worker closes, the child and the processes it started
    are killed (``SIGKILL`` to its process group), and the worker thread is free again. If
    the worker process dies, the child kills its group itself.

    The child's return value comes back as the task's result; its exception is raised on
    the worker with the child's traceback (as a plain task's would be). A coroutine
    function runs in the child under :func:`asyncio.run`.

    Processes that the call started in its process group end with it, also when it
    returns (once the child exited by itself, its ``atexit`` handlers run, or after 2 s).
    ``sys.exit()`` in the call is a :exc:`RuntimeError` of the task, not the worker's exit.

    Trade-offs: each call starts a new interpreter, which imports ``fn``'s modules: about
    40-50 ms more than a plain task for a builtin, 0.65-0.8 s more when the modules import
    distributed (2 shared cores). The arguments and the result are pickled once more,
    a killed call gets no chance to clean up (no ``finally``), and the child's memory is
    outside Dask's limits of the worker. POSIX only. In the child,
    :func:`distributed.get_worker` and :func:`checkpoint` have no worker to talk to.
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


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _run_in_child(fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    key = getattr(thread_state, "key", None)
    state = _task_state(key) if key is not None else _ALWAYS_RUNNING
    worker = _worker_or_none()

    def check() -> None:
        if state is None or state.state not in RUNNING_STATES:
            raise CancelledOnWorker(f"task {key!r} was cancelled: its process is killed")
        if worker is not None and worker.status in _CLOSING:
            raise CancelledOnWorker(f"the worker is closing: the process of {key!r} is killed")

    read_end, write_end = os.pipe()
    try:
        child = subprocess.Popen(
            # by path, -P: neither the package (slow to import) nor the script's directory
            [sys.executable, "-P", _child.__file__, str(write_end)],
            stdin=subprocess.PIPE,
            pass_fds=(write_end,),
            start_new_session=True,  # its own process group: killed whole
        )
    except BaseException:
        os.close(read_end)
        os.close(write_end)
        raise
    os.close(write_end)
    assert child.stdin is not None
    chunks: list[bytes] = []
    try:
        # The call, then stdin stays open: the child's lifeline. If this process dies, the
        # child reads the end of its stdin and kills its process group.
        with contextlib.suppress(BrokenPipeError):  # it died: its exit status tells, below
            for part in (pickle.dumps(sys.path), cloudpickle.dumps((fn, args, kwargs))):
                child.stdin.write(_child.header(part))
                child.stdin.write(part)
            child.stdin.flush()
        outcome = select.poll()
        outcome.register(read_end, select.POLLIN)
        while True:
            check()
            if outcome.poll(_POLL * 1000):
                chunk = os.read(read_end, 1 << 20)
                if not chunk:  # the child closed it: the outcome is in, or it died
                    break
                chunks.append(chunk)
            elif _exited(child):  # (a process it forked may hold the pipe open)
                os.set_blocking(read_end, False)
                with contextlib.suppress(BlockingIOError):
                    while chunk := os.read(read_end, 1 << 20):
                        chunks.append(chunk)
                break
        # Let it exit as a process does (buffers flushed, atexit handlers run), for a while:
        # a thread it left running would keep it alive.
        delay, deadline = 0.0005, time.monotonic() + _EXIT_GRACE
        while not _exited(child) and time.monotonic() < deadline:
            check()
            time.sleep(delay)
            delay = min(2 * delay, _POLL)
    finally:
        os.close(read_end)
        with contextlib.suppress(OSError):
            child.stdin.close()
        # The call's processes end with it: the child if it runs on, and whatever it
        # started in its group. (Not reaped yet, the child's pid still names its group.)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    data = b"".join(chunks)
    if not _child.complete(data):
        status = child.returncode
        how = (
            f"was killed by {_signal_name(-status)}"
            if status < 0
            else f"died with exit status {status}"
        )
        raise RuntimeError(f"the process running {fn!r} {how}, without an outcome")
    kind, value = pickle.loads(data[_child.HEADER_SIZE :])
    if kind == "ok":
        return value
    if isinstance(value, SystemExit | KeyboardInterrupt):  # would end the worker
        message = f"{fn!r} raised {value!r} in its process"
        raise RuntimeError(message) from value  # noqa: TRY004 - the call's outcome, not a type
    raise value


def _exited(child: Any) -> bool:
    """Whether the process ``child`` has ended, without reaping it: its pid, and the id of
    its process group, stay taken until ``child.wait()``."""
    try:
        return os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped by someone else
        return True


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
