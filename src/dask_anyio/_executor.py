"""anyio front end: :class:`DaskExecutor`, the object users hold.

A façade: each public method checks its arguments and delegates to one of the executor's
parts, made on entry: the :class:`~dask_anyio._gate.Gate` (may a call start?), the
:class:`~dask_anyio._watch.Watcher` (which tasks are done), the
:class:`~dask_anyio._tasks.TaskTable` (which tasks it owns) and the
:class:`~dask_anyio._fetch.Fetcher` (their values). They reach the asyncio core only through
a :class:`~dask_anyio._bridge.CoreRunner`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterable, Callable, Hashable, Iterable, Mapping
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, overload

import distributed
from distributed.deploy.cluster import Cluster

from . import _work
from ._bridge import open_core_runner
from ._completed import AsCompleted
from ._coordination import ExecutorCoordination
from ._core import DaskCore
from ._errors import TaskCancelled
from ._fetch import Fetcher
from ._handle import TaskHandle, check_owner
from ._host import Host
from ._options import (
    Source,
    TaskOptions,
    check_source,
    check_stream,
    collection_options,
    task_options,
)
from ._scope import CoreOpener, ExecutorScope, RunnerOpener
from ._streams import ResultStream, StreamState
from ._tasks import CONFIRM_BATCH

__all__ = ["DaskExecutor", "executor_over"]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
C = TypeVar("C")
P = ParamSpec("P")

#: run() takes no options: all its keyword arguments are the function's.
_RUN_OPTIONS = TaskOptions().for_dask()


class DaskExecutor(ExecutorCoordination):
    """Submit work to a Dask cluster from asyncio or trio, with structured concurrency.

    Use it as ``async with DaskExecutor(...) as ex:``. Where the cluster comes from:

    * nothing given: Dask's ``scheduler-address`` setting if set (as
      :class:`distributed.Client` does), else an embedded :class:`distributed.LocalCluster`
      with worker processes, listening on 127.0.0.1 only, dashboard on a free port. The
      executor owns that cluster and closes it on exit; ``local_cluster_kwargs`` are passed
      to it (``n_workers=``, ``threads_per_worker=``, ...);
    * ``address``: an existing scheduler, ``"tcp://..."`` or ``"tls://..."`` (give
      ``security=`` a :class:`distributed.security.Security` for TLS);
    * ``scheduler_file``: the JSON file that ``dask scheduler --scheduler-file PATH`` writes
      (as :class:`distributed.Client` does, the executor waits up to ``connect_timeout`` for
      it to appear and be complete, then connects within ``connect_timeout`` again);
    * ``cluster``: any ``distributed`` cluster object (LocalCluster, dask-jobqueue, ...);
      the executor connects to it and does not close it;
    * ``client``: an existing asynchronous :class:`distributed.Client` on the running
      asyncio loop (asyncio only); the executor does not close it.

    ``connect_timeout`` (seconds, default Dask's ``distributed.comm.timeouts.connect``)
    bounds connecting: an unreachable scheduler raises :exc:`ConnectionError` naming it.

    Entering connects (and starts the embedded cluster): a checkpoint; cancelling it closes
    whatever was opened. The exit is a checkpoint too.

    Exit rules, as for a task group: a normal exit waits for every outstanding handle, then
    releases every key; if the body raises or the scope is cancelled, every outstanding task
    is cancelled on the cluster first. Failures of tasks whose error nobody observed (by
    awaiting the handle or retrieving it) are raised at exit as an :exc:`ExceptionGroup`.
    After exit the scheduler holds no key of this executor.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        scheduler_file: str | os.PathLike[str] | None = None,
        cluster: Cluster | None = None,
        client: distributed.Client | None = None,
        security: Any = None,
        connect_timeout: float | str | None = None,
        **local_cluster_kwargs: Any,
    ) -> None:
        source = check_source(
            address, scheduler_file, cluster, client, security, connect_timeout,
            local_cluster_kwargs,
        )  # fmt: skip
        self._scope = ExecutorScope(
            source, open_core_runner, functools.partial(_open_dask_core, source), CONFIRM_BATCH
        )
        #: The background task holding the scope, if opened with open().
        self._host: Host | None = None

    # -- submitting ------------------------------------------------------------------------

    def submit(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        key: str | None = None,
        pure: bool = False,
        priority: int = 0,
        retries: int | None = None,
        resources: Mapping[str, float] | None = None,
        workers: str | Iterable[str] | None = None,
        allow_other_workers: bool = False,
        **kwargs: Any,
    ) -> TaskHandle[T]:
        """Submit ``fn(*args, **kwargs)`` as one task and return its handle at once.

        A plain call (not a checkpoint) on both backends. Handles anywhere in ``args`` and
        ``kwargs`` (also inside lists, tuples, sets and dicts) are replaced by their values on
        the cluster, without passing through the client.

        ``pure=False`` (the default, unlike Dask) gives every call its own key, so that
        cancelling one caller's task never cancels another's. The other options are those of
        :meth:`distributed.Client.submit`.

        :raises RuntimeError: if the executor is not open.
        :raises ValueError: for a handle of another executor, a key already in use, or an
            invalid option.
        :raises TypeError: if ``fn`` is not callable or cannot be pickled.
        """
        self._scope.gate.check_open()
        options = task_options(
            key=key, pure=pure, priority=priority, retries=retries, resources=resources,
            workers=workers, allow_other_workers=allow_other_workers,
            used=self._scope.table.handles,
        )  # fmt: skip
        return _work.submit(self._scope, fn, args, kwargs, options.for_dask())

    def map(
        self,
        fn: Callable[..., T],
        /,
        *iterables: Iterable[Any],
        key: str | None = None,
        pure: bool = False,
        priority: int = 0,
        retries: int | None = None,
        resources: Mapping[str, float] | None = None,
        workers: str | Iterable[str] | None = None,
        allow_other_workers: bool = False,
        **kwargs: Any,
    ) -> list[TaskHandle[T]]:
        """Submit ``fn`` once per item of ``iterables`` (zipped); return the handles in order.

        A plain call, like :meth:`submit`, with the same options; ``key`` is a prefix here.
        ``kwargs`` are passed to every call.
        """
        self._scope.gate.check_open()
        if not callable(fn):
            raise TypeError(f"map() needs a callable, not {fn!r}")
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        options = task_options(
            prefix=key, pure=pure, priority=priority, retries=retries, resources=resources,
            workers=workers, allow_other_workers=allow_other_workers,
        )  # fmt: skip
        return _work.submit_many(self._scope, fn, iterables, kwargs, options.for_dask())

    # -- waiting ---------------------------------------------------------------------------

    async def retrieve(self, handle: TaskHandle[T]) -> T:
        """Return the value of the task behind ``handle``, transferring it to the client.

        Checkpoint. Waits until the task is done; raises the task's own exception if it
        failed, :exc:`TaskCancelled` if it was cancelled. Cancelling the caller stops the
        waiting (a transfer under way finishes, and is dropped), not the task.

        :raises ValueError: if the handle belongs to another executor.
        :raises RuntimeError: if the executor has exited (its data is released).
        """
        check_owner(handle, self._scope.tasks)
        value, failure = await self._fetcher_open(fetching=True).retrieve(handle)
        if failure is not None:  # raised here: the traceback shows one frame of ours
            raise failure
        result: T = value
        return result

    def _fetcher_open(self, *, fetching: bool = False) -> Fetcher:
        self._scope.gate.check_open(fetching=fetching)
        return self._scope.fetcher

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the cluster and return its value.

        Checkpoint. The task is bound to this call: if the caller's scope is cancelled, the
        task is cancelled on the cluster, and the cancellation propagates only once the
        scheduler has forgotten the task. Its key is released when the call returns.
        Raises the task's own exception if it failed. All keyword arguments go to ``fn``:
        for Dask's options, use :meth:`submit` and :meth:`retrieve`.
        """
        self._fetcher_open()  # (refused at once if closed)
        await self._scope.pace.turn()  # (a cancelled caller starts nothing)
        fetcher = self._fetcher_open()  # (and if it closed while this call waited its turn)
        with self._scope.pace.spending():
            handle = _work.submit(self._scope, fn, args, kwargs, _RUN_OPTIONS, "run")
        values, failure = await fetcher.results_of_call([handle])
        if failure is not None:  # raised here: the traceback shows one frame of ours
            raise failure
        result: T = values[0]
        return result

    async def compute(
        self,
        collection: Any,
        /,
        *collections: Any,
        optimize_graph: bool = True,
        priority: int = 0,
        retries: int | None = None,
        resources: Mapping[str, float] | None = None,
        workers: str | Iterable[str] | None = None,
        allow_other_workers: bool = False,
    ) -> Any:
        """Compute Dask collections on the cluster and return their values.

        Checkpoint. A collection is anything Dask can compute: ``dask.delayed`` objects,
        ``dask.array``, ``dask.bag``, ``dask.dataframe`` (with pandas installed). One
        collection gives its value; several give a tuple of values, computed as one graph
        (as ``dask.compute(a, b)`` does: the parts they share are computed once). Dask builds
        and optimises the graph in a worker thread, so the event loop stays responsive. As
        with :meth:`run`, the tasks belong to this call: cancelling the caller cancels them
        on the cluster, and returning releases them.

        ``optimize_graph=False`` skips Dask's graph optimisation; the other options are
        those of :meth:`submit`, for every task of the graph.

        :raises TypeError: if an argument is not a Dask collection.
        """
        self._scope.gate.check_open()
        options = collection_options(
            optimize_graph=optimize_graph, priority=priority, retries=retries,
            resources=resources, workers=workers, allow_other_workers=allow_other_workers,
        )  # fmt: skip
        every = [collection, *collections]
        values, failure = await _work.compute(self._scope, every, options)
        if failure is not None:  # raised here: the traceback shows one frame of ours
            raise failure
        return tuple(values) if collections else values[0]

    @overload
    async def persist(
        self,
        collection: C,
        /,
        *,
        optimize_graph: bool = True,
        priority: int = 0,
        retries: int | None = None,
        resources: Mapping[str, float] | None = None,
        workers: str | Iterable[str] | None = None,
        allow_other_workers: bool = False,
    ) -> C: ...
    @overload
    async def persist(
        self,
        collection: C,
        other: Any,
        /,
        *collections: Any,
        optimize_graph: bool = True,
        priority: int = 0,
        retries: int | None = None,
        resources: Mapping[str, float] | None = None,
        workers: str | Iterable[str] | None = None,
        allow_other_workers: bool = False,
    ) -> tuple[Any, ...]: ...
    async def persist(
        self,
        collection: Any,
        /,
        *collections: Any,
        optimize_graph: bool = True,
        priority: int = 0,
        retries: int | None = None,
        resources: Mapping[str, float] | None = None,
        workers: str | Iterable[str] | None = None,
        allow_other_workers: bool = False,
    ) -> Any:
        """Start computing Dask collections on the cluster; return them backed by that work.

        Checkpoint (the graph is built in a worker thread). One collection gives one
        persisted collection; several give a tuple of them, submitted as one graph (shared
        parts computed once). The returned collections hold futures that this executor
        owns, as it owns handles: the exit waits for them (or cancels them on error) and
        releases them. Compute on them with :meth:`compute`, while the executor is open.
        Cancelling the caller does not cancel the persisted work. The options are those of
        :meth:`compute`.

        :raises TypeError: if an argument is not a Dask collection.
        """
        self._scope.gate.check_open()
        options = collection_options(
            optimize_graph=optimize_graph, priority=priority, retries=retries,
            resources=resources, workers=workers, allow_other_workers=allow_other_workers,
        )  # fmt: skip
        persisted = await _work.persist(self._scope, [collection, *collections], options)
        return tuple(persisted) if collections else persisted[0]

    async def gather(self, handles: Any, /, *, errors: Literal["raise", "skip"] = "raise") -> Any:
        """Return the values of the tasks behind ``handles``, in the same structure.

        Checkpoint. ``handles`` is a handle or a list, tuple, set or dict (nested at will)
        with handles in it; other objects are returned as they are. Values are transferred in
        one request per worker. With ``errors="raise"`` the first failure found (a task's
        exception or :exc:`TaskCancelled`) is raised as soon as it is known; with
        ``errors="skip"`` failed and cancelled tasks are left out of lists, tuples and sets,
        their entries out of dicts (a lone failed handle gives ``None``). Cancelling the
        caller stops the waiting, not the tasks.
        """
        fetcher = self._fetcher_open(fetching=True)
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
        result, failure = await fetcher.gather(handles, errors)
        if failure is not None:  # raised here: the traceback shows one frame of ours
            raise failure
        return result

    @overload
    async def scatter(  # type: ignore[overload-overlap]
        self, data: list[T], /, *, broadcast: bool = False
    ) -> list[TaskHandle[T]]: ...
    @overload
    async def scatter(  # type: ignore[overload-overlap]
        self, data: dict[K, T], /, *, broadcast: bool = False
    ) -> dict[K, TaskHandle[T]]: ...
    @overload
    async def scatter(self, data: T, /, *, broadcast: bool = False) -> TaskHandle[T]: ...
    async def scatter(self, data: Any, /, *, broadcast: bool = False) -> Any:
        """Send data to the workers; return handles to pass to later tasks.

        Checkpoint. A list gives a list of handles, a dict a dict of handles (same keys);
        anything else, tuples included, is sent as one object and gives one handle. Every
        item gets its own key. ``broadcast=True`` copies the data to every worker. The
        executor owns the handles, as those of :meth:`submit`. If the caller is cancelled,
        the transfer finishes and is then released.
        """
        self._scope.gate.check_open()
        if not isinstance(broadcast, bool):
            raise TypeError(f"broadcast must be True or False, not {broadcast!r}")
        return await _work.scatter(self._scope, data, broadcast)

    # -- iterating -------------------------------------------------------------------------

    @overload
    def as_completed(
        self,
        handles: Iterable[TaskHandle[T]] = (),
        /,
        *,
        with_results: Literal[False] = False,
        raise_errors: bool = True,
    ) -> AsCompleted[TaskHandle[T]]: ...
    @overload
    def as_completed(
        self,
        handles: Iterable[TaskHandle[T]] = (),
        /,
        *,
        with_results: Literal[True],
        raise_errors: Literal[True] = True,
    ) -> AsCompleted[tuple[TaskHandle[T], T | TaskCancelled]]: ...
    @overload
    def as_completed(
        self,
        handles: Iterable[TaskHandle[T]] = (),
        /,
        *,
        with_results: Literal[True],
        raise_errors: Literal[False],
    ) -> AsCompleted[tuple[TaskHandle[T], T | Exception]]: ...
    @overload
    def as_completed(
        self,
        handles: Iterable[TaskHandle[T]] = (),
        /,
        *,
        with_results: bool,
        raise_errors: bool = True,
    ) -> AsCompleted[TaskHandle[T] | tuple[TaskHandle[T], T | Exception]]: ...
    def as_completed(
        self,
        handles: Iterable[TaskHandle[Any]] = (),
        /,
        *,
        with_results: bool = False,
        raise_errors: bool = True,
    ) -> AsCompleted[Any]:
        """Iterate over ``handles`` as their tasks finish: ``async for h in ex.as_completed(hs)``.

        A plain call; iterating is a checkpoint. Failed and cancelled tasks are yielded too.
        Add handles while iterating with :meth:`AsCompleted.add`. With ``with_results=True``
        it yields ``(handle, value)`` pairs, transferring each value; a cancelled task is
        yielded as ``(handle, TaskCancelled(...))`` and the iteration goes on (as Dask's
        ``as_completed`` yields its ``CancelledError``); a failed task raises its exception
        from the iteration, or, with ``raise_errors=False``, is yielded as ``(handle,
        exception)``. Cancelling the iteration only stops the waiting.
        """
        self._scope.gate.check_open()
        return AsCompleted(
            self._scope.parts,
            handles,
            with_results=bool(with_results),
            raise_errors=bool(raise_errors),
        )

    def imap(
        self,
        fn: Callable[Concatenate[Any, ...], T],
        iterable: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        max_in_flight: int,
        ordered: bool = True,
        key: str | None = None,
        priority: int = 0,
        retries: int | None = None,
        resources: Mapping[str, float] | None = None,
        workers: str | Iterable[str] | None = None,
        allow_other_workers: bool = False,
        **kwargs: Any,
    ) -> ResultStream[T]:
        """Stream ``fn(item, **kwargs)`` for each item of ``iterable``, with backpressure.

        A plain call; returns a :class:`ResultStream`, best used as
        ``async with ex.imap(fn, items, max_in_flight=8) as results:``. ``iterable`` may be
        sync or async, and endless: items are taken only as slots free up, so that at most
        ``max_in_flight`` of these tasks exist on the cluster at any moment, counting those
        whose result has not been yielded yet. The scheduler forgets a yielded task before
        the next one is submitted. Results come in the order of the items
        (``ordered=True``) or as tasks finish (``ordered=False``).

        Leaving the stream early, a failed task, an error from ``iterable`` (raised after the
        results of the items before it) or a cancelled scope stops the stream: tasks in
        flight are cancelled on the cluster and released. ``key`` is a key prefix; the other
        options are those of :meth:`submit`. A sync ``iterable`` is iterated on the event
        loop's thread: it must not block.
        """
        self._scope.gate.check_open()
        check_stream("imap", fn, iterable, max_in_flight, ordered)
        options = task_options(
            prefix=key, priority=priority, retries=retries, resources=resources,
            workers=workers, allow_other_workers=allow_other_workers,
        ).for_dask()  # fmt: skip
        fixed = self._scope.table.unwrap(kwargs)

        def submit(items: list[Any], position: int) -> list[TaskHandle[Any]]:
            return _work.submit_many(self._scope, fn, [items], fixed, options, position)

        return ResultStream(
            StreamState(self._scope.parts, submit, iterable, max_in_flight, ordered)
        )


async def _open_dask_core(source: Source, address: str | None) -> DaskCore:
    return await DaskCore.open(**source.core_arguments(address))


def executor_over(
    open_runner: RunnerOpener,
    open_core: CoreOpener,
    *,
    source: Source | None = None,
    confirm_batch: int = CONFIRM_BATCH,
) -> DaskExecutor:
    """A :class:`DaskExecutor` over another runner and core: the seam of the collaboration
    tests (whose fake core runs on the caller's loop) and of task trees (whose core holds a
    marker). ``source``: where it connects, as its repr says; ``confirm_batch``: how many
    released keys to confirm with the scheduler at once."""
    executor = DaskExecutor()
    executor._scope = ExecutorScope(source or Source(), open_runner, open_core, confirm_batch)
    return executor
