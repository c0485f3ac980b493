"""anyio front end: the part of :class:`~dask_anyio.DaskExecutor` that coordinates work
through the scheduler and its workers (its base class :class:`ExecutorCoordination`):
locks, semaphores, queues, events and variables, cancel-safe; actors; the scheduler's
diagnostics."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, ParamSpec, TypeVar

from ._actor import Actor, make_actor
from ._handle import TaskHandle
from ._lifetime import ExecutorLifetime
from ._primitives import Lock, Semaphore, check_name
from ._reports import PerformanceReport, TaskStream, calling_code, progress
from ._shared import Event, Queue, Variable

__all__ = ["ExecutorCoordination"]

P = ParamSpec("P")
T = TypeVar("T")


class ExecutorCoordination(ExecutorLifetime):
    """Coordination through the scheduler (a base class of DaskExecutor; see there)."""

    def lock(self, name: str) -> Lock:
        """A lock of the cluster's scheduler named ``name``, shared with every client that
        uses the name (Dask's ``distributed.Lock`` of that name included): ``async with
        ex.lock("name"):``. A plain call; acquiring is a checkpoint, and a cancelled
        acquire never holds the lock afterwards. The executor's exit releases it if it is
        still held.

        :raises TypeError, ValueError: if ``name`` is not a non-empty string.
        """
        self._scope.gate.check_open()
        return Lock(self._scope, check_name("lock()", name), 1)

    def semaphore(self, name: str, *, max_leases: int) -> Semaphore:
        """A semaphore of the cluster's scheduler named ``name`` with ``max_leases`` leases,
        shared with every client that uses the name: ``async with ex.semaphore("gpu",
        max_leases=2):``. As :meth:`lock`: a cancelled acquire never holds a lease.

        :raises TypeError, ValueError: for a bad name or a ``max_leases`` that is not a
            positive integer; acquiring raises :exc:`ValueError` if the name is a semaphore
            of another number of leases on the cluster.
        """
        self._scope.gate.check_open()
        if not isinstance(max_leases, int) or isinstance(max_leases, bool) or max_leases < 1:
            raise ValueError(f"max_leases must be a positive integer, not {max_leases!r}")
        return Semaphore(self._scope, check_name("semaphore()", name), max_leases)

    def queue(self, name: str, *, maxsize: int = 0) -> Queue:
        """A queue of the cluster's scheduler named ``name``, shared with every client that
        uses the name (Dask's ``distributed.Queue`` of that name too, for handles and plain
        values): ``await q.put(x)``, ``x = await q.get()``. A plain call. Cancel-safe: a
        cancelled get either returned its item or left it in the queue. ``maxsize`` (0: no
        limit) counts only if the queue is new on the scheduler when this object's first
        request reaches it.

        :raises TypeError, ValueError: for a bad name or a negative ``maxsize``.
        """
        self._scope.gate.check_open()
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
            raise ValueError(f"maxsize must be an integer, 0 or more, not {maxsize!r}")
        return Queue(self._scope, check_name("queue()", name), maxsize)

    def event(self, name: str) -> Event:
        """An event of the cluster's scheduler named ``name``, shared with every client
        that uses the name: ``await ev.wait()``, ``await ev.set()``, ``await ev.clear()``.
        A plain call; a cancelled wait stops at once, and leaves nothing waiting on the
        scheduler after a second.

        :raises TypeError, ValueError: if ``name`` is not a non-empty string.
        """
        self._scope.gate.check_open()
        return Event(self._scope, check_name("event()", name))

    def variable(self, name: str) -> Variable:
        """A variable of the cluster's scheduler named ``name``, shared with every client
        that uses the name: ``await var.set(x)``, ``x = await var.get()``. A plain call;
        a cancelled get leaves nothing held on the scheduler.

        :raises TypeError, ValueError: if ``name`` is not a non-empty string.
        """
        self._scope.gate.check_open()
        return Variable(self._scope, check_name("variable()", name))

    async def actor(self, cls: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Actor[T]:
        """``cls(*args, **kwargs)`` made on a worker, where it stays, its state with it:
        ``counter = await ex.actor(Counter)``, then ``await counter.add(1)``. Checkpoint: it
        returns once the actor exists (raising its constructor's exception if that failed);
        a cancelled call leaves no actor. Handles in the arguments stand for their values.
        The actor belongs to this executor's scope: the exit releases it.

        :raises TypeError: if ``cls`` is not a class.
        """
        return await make_actor(self._scope, cls, args, kwargs)  # type: ignore[arg-type]

    def performance_report(
        self,
        filename: str = "dask-report.html",
        *,
        mode: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> PerformanceReport:
        """``async with ex.performance_report("report.html"):``: Dask's performance report
        of what the cluster did while the block ran (the dashboard's plots, the profile,
        the calling code), written to ``filename`` (a path, or a URL with
        ``storage_options`` for fsspec) however the block is left. Entering is a
        checkpoint. Needs bokeh where the scheduler runs (the ``dashboard`` extra).

        :raises TypeError: if ``filename`` is not a string.
        """
        self._scope.gate.check_open()
        if not isinstance(filename, str) or not filename:
            raise TypeError(f"performance_report() needs a file name, not {filename!r}")
        frame = inspect.currentframe()
        code = calling_code(frame.f_back if frame is not None else None)
        return PerformanceReport(self._scope, filename, mode, storage_options or {}, code)

    def task_stream(
        self, *, plot: bool | Literal["save"] = False, filename: str = "task-stream.html"
    ) -> TaskStream:
        """``async with ex.task_stream() as ts:``: the tasks that ran while the block ran,
        in ``ts.data`` once it is left (one dict per task run, as Dask's
        ``get_task_stream``); with ``plot=True`` a bokeh figure in ``ts.figure``, and with
        ``plot="save"`` also saved to ``filename``. Entering is a checkpoint."""
        self._scope.gate.check_open()
        if plot not in (True, False, "save"):
            raise ValueError(f'plot must be True, False or "save", not {plot!r}')
        return TaskStream(self._scope, plot, filename)

    async def progress(
        self, handles: Iterable[TaskHandle[Any]], /, *, description: str | None = None
    ) -> None:
        """Show a progress bar of ``handles`` until all are done (as Dask's
        ``progress(futures)``): tqdm's, a widget in a notebook, text on stderr otherwise,
        hidden if stderr is not a terminal; failed and cancelled tasks count as done and
        are shown as failed. Checkpoint. It observes no failure: await the handles
        afterwards as usual. Cancelling it leaves the tasks as they are.

        :raises ValueError: for a handle of another executor.
        """
        self._scope.gate.check_open()
        await progress(self._scope, handles, description)
