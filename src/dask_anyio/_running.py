"""Worker side: the task that runs the calling code, as its own code sees it.

A coroutine task (run by :func:`~dask_anyio._remote.run_coroutine`) and a sync task's
:func:`~dask_anyio.run_async` record their :class:`RunningTask` in a context variable, where
:func:`~dask_anyio.subtasks` finds it: the task's key, its worker, and the *stop hooks* of
the subtasks scopes it holds. A worker plugin (:class:`_CancelWatch`) tells the task when the
worker stops wanting it (cancelled or released) by calling :meth:`RunningTask.stop` on the
worker's event loop, which calls the hooks. Hooks are added, removed and called on the
worker's event loop only.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from distributed import Reschedule, Worker, WorkerPlugin
from distributed.worker_state_machine import SecedeEvent

__all__ = [
    "RUNNING_STATES",
    "CancelledOnWorker",
    "RunningTask",
    "current_task",
    "install_traceback_pickling",
    "running_as",
    "watch_task",
]

logger = logging.getLogger("dask_anyio")

#: States of a task that its worker still wants to run. A cancelled running task is
#: ``cancelled``, or ``resumed`` if its key is wanted again as data from elsewhere.
RUNNING_STATES = frozenset({"executing", "long-running"})


class CancelledOnWorker(Reschedule):
    """Raised by :func:`checkpoint` in a task that the scheduler cancelled or released, and
    by :func:`subtasks` and :func:`run_async` in such a task.

    Let it propagate out of the task. It subclasses :exc:`distributed.Reschedule`, which the
    worker handles without logging an error: the task ends, its worker thread is free again,
    and nothing is reported (if someone wants the key again, Dask runs the task again). It
    is an :exc:`Exception`: a bare ``except Exception`` in the task would catch it, but the
    next :func:`checkpoint` raises it again, and a coroutine task that caught a subtasks
    scope's is cancelled (:exc:`asyncio.CancelledError`) once it has left its scopes.
    """


class RunningTask:
    """One running task: its key, its worker, whether the worker still wants it, the hooks
    to call when it stops wanting it. Made by the code that runs the task; ``on_loop``:
    whether the task's code runs on the worker's event loop (a coroutine task) or in a
    thread of its own (a sync task's :func:`run_async`)."""

    def __init__(self, key: Any, worker: Worker, *, on_loop: bool) -> None:
        self.key = key
        self.worker = worker
        #: The worker's event loop (Dask's IOLoop is tornado's, over an asyncio loop).
        self.loop: asyncio.AbstractEventLoop = worker.loop.asyncio_loop  # type: ignore[attr-defined]
        self.on_loop = on_loop
        self.started = time.time()
        #: Set on the worker's loop once the worker no longer wants the task.
        self.stopped = False
        self.seceded = False
        self._hooks: list[Callable[[], object]] = []
        #: How many hooks were added and not removed yet (called or not).
        self._open = 0
        #: What stops the rest of the task's code (a coroutine task's Task.cancel): called
        #: when the task stops with no hook open, or once the last open one is removed.
        self._cancel_rest: Callable[[], object] | None = None

    def stop(self) -> None:
        """The worker stopped wanting the task: call the hooks (once). On the worker's loop.
        With no hook open, stop the rest of the task's code at once."""
        if self.stopped:
            return
        self.stopped = True
        hooks, self._hooks = self._hooks, []
        for hook in hooks:
            _call(hook)
        if not self._open and self._cancel_rest is not None:
            _call(self._cancel_rest)

    def cancel_rest_with(self, cancel: Callable[[], object]) -> None:
        """What stops the task's code outside its hooks' scopes (see ``_cancel_rest``);
        called at once if the task stopped already. On the worker's loop."""
        self._cancel_rest = cancel
        if self.stopped and not self._open:
            _call(cancel)

    def add_hook(self, hook: Callable[[], object]) -> None:
        """Call ``hook()`` when the task stops, at once if it has. On the worker's loop."""
        self._open += 1
        if self.stopped:
            _call(hook)
        else:
            self._hooks.append(hook)

    def remove_hook(self, hook: Callable[[], object]) -> None:
        """The hook's scope is left (its hook called or not). On the worker's loop. Once a
        stopped task's last scope is left, the rest of its code is stopped too: a scope's
        CancelledOnWorker, caught by the task's code, does not let it run on."""
        if hook in self._hooks:
            self._hooks.remove(hook)
        self._open -= 1
        if self.stopped and not self._open and self._cancel_rest is not None:
            _call(self._cancel_rest)

    def secede_on_loop(self) -> None:
        """Free the task's slot of the worker's threads, as :func:`distributed.secede` does
        for a task in a thread: the worker may run another task meanwhile (the task is then
        ``long-running``). For a coroutine task, on the worker's loop; once."""
        if self.seceded:
            return
        self.seceded = True
        event = SecedeEvent(
            key=self.key,
            compute_duration=time.time() - self.started,
            stimulus_id=f"dask-anyio-secede-{time.time()}",
        )
        self.worker.handle_stimulus(event)

    def cancelled(self) -> CancelledOnWorker:
        return CancelledOnWorker(f"task {self.key!r} was cancelled")


def _call(hook: Callable[[], object]) -> None:
    """Call ``hook()``; an error is logged, and the other hooks still run."""
    try:
        hook()
    except Exception:
        logger.exception("dask-anyio could not stop a part of a cancelled task")


_current: contextvars.ContextVar[RunningTask | None] = contextvars.ContextVar(
    "dask_anyio_running_task", default=None
)


def current_task() -> RunningTask | None:
    """The task whose code calls this, if it recorded itself (see :func:`running_as`)."""
    return _current.get()


def running_as(task: RunningTask) -> contextvars.Context:
    """A copy of the calling context in which :func:`current_task` is ``task``."""
    context = contextvars.copy_context()
    context.run(_current.set, task)
    return context


# -- watching the worker's state of a task -------------------------------------------------


class _CancelWatch(WorkerPlugin):
    """Calls a task's callback when the worker stops wanting the task. Its ``transition``
    hook runs on the worker's event loop, right after each transition of a task."""

    name = "dask-anyio-cancel-watch"

    def __init__(self) -> None:
        self.callbacks: dict[Any, Callable[[], object]] = {}
        self.ready = asyncio.Event()  # set once installed, or once that failed
        self.error: BaseException | None = None

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        callback = self.callbacks.get(key)
        if callback is not None and finish not in RUNNING_STATES:
            callback()


#: One watch per worker (a process may hold several workers: LocalCluster with threads).
_watches: weakref.WeakKeyDictionary[Worker, _CancelWatch] = weakref.WeakKeyDictionary()


async def _cancel_watch(worker: Worker) -> _CancelWatch:
    watch = _watches.get(worker)
    if watch is None:  # the first task of this worker that needs it installs it
        watch = _watches[worker] = _CancelWatch()
        try:
            await worker.plugin_add(watch, name=_CancelWatch.name, catch_errors=False)
        except BaseException as error:  # the tasks waiting fail; a later one tries again
            watch.error = error
            if _watches.get(worker) is watch:
                del _watches[worker]
            raise
        finally:
            watch.ready.set()
    await watch.ready.wait()
    if watch.error is not None:
        raise RuntimeError("dask-anyio could not watch this worker's tasks") from watch.error
    return watch


async def watch_task(worker: Worker, key: Any, stop: Callable[[], object]) -> Callable[[], None]:
    """Call ``stop()`` on the worker's loop when the worker stops wanting the task ``key``
    (at once if it has already). On the worker's loop; return the call that ends the watch
    (on the worker's loop too)."""
    watch = await _cancel_watch(worker)
    watch.callbacks[key] = stop

    def unwatch() -> None:
        if watch.callbacks.get(key) is stop:
            del watch.callbacks[key]

    state = worker.state.tasks.get(key)
    if state is None or state.state not in RUNNING_STATES:  # stopped before it was watched
        stop()
    return unwatch


# -- errors that travel up a tree ----------------------------------------------------------


def install_traceback_pickling(error: BaseException) -> None:
    """Let ``error`` and every exception inside it (causes, contexts, the members of
    exception groups, recursively) pickle with their tracebacks, as distributed does only
    for an error and its causes: a child's error raised by its parent task, alone or in an
    :exc:`ExceptionGroup`, then reaches the tree's caller with the child's traceback."""
    import tblib.pickling_support

    seen: set[int] = set()
    pending = [error]
    while pending:
        exc = pending.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        tblib.pickling_support.install(type(exc))
        pending += [e for e in (exc.__cause__, exc.__context__) if e is not None]
        if isinstance(exc, BaseExceptionGroup):
            pending += list(exc.exceptions)
