"""anyio front end: :class:`DaskExecutor`, the object users hold.

It runs on the caller's event loop (asyncio or trio) and reaches the asyncio core only
through a :class:`~dask_anyio._bridge.CoreRunner` and its loop tokens
(:meth:`~dask_anyio._bridge.LoopToken.run_sync_soon`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import functools
import json
import math
import os
import threading
from collections import Counter
from collections.abc import (
    AsyncIterable,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import AsyncExitStack
from numbers import Number
from types import TracebackType
from typing import Any, Concatenate, Literal, ParamSpec, Self, TypeVar, TypeVarTuple, overload

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import distributed
from dask.base import is_dask_collection
from distributed.client import FutureCancelledError
from distributed.deploy.cluster import Cluster

from ._bridge import CoreRunner, open_core_runner
from ._client import current_client, make_default
from ._core import DaskCore, _connect_timeout, logger
from ._handle import ExecutorStatistics, SchedulerLost, TaskCancelled, TaskHandle, TaskStatus
from ._host import Host, start_background
from ._show import executor_html, executor_repr
from ._streams import _REASON_STREAM, AsCompleted, ResultStream, _Stream

__all__ = ["DaskExecutor"]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
C = TypeVar("C")
P = ParamSpec("P")
Ts = TypeVarTuple("Ts")

_SCALARS = (str, bytes, int, float, complex, bool, type(None))
_REASON_SCOPE = "the scope that owned it was cancelled"
_REASON_HANDLE = "TaskHandle.cancel() was called"
_REASON_EXIT = "the DaskExecutor exited with an error"
_OUR_REASONS = frozenset({_REASON_SCOPE, _REASON_HANDLE, _REASON_EXIT, _REASON_STREAM})
#: The reason Dask gives to futures cancelled because the scheduler connection was lost.
_REASON_SCHEDULER_LOST = "scheduler-connection-lost"
#: How often to look at a task whose value was lost with a worker (rare).
_LOST_RECHECK = 0.1
#: How many keys released by run() to confirm with the scheduler at once.
_CONFIRM_BATCH = 1000
#: run() takes no options: all its keyword arguments are the function's.
_RUN_OPTIONS: dict[str, Any] = {"pure": False}
#: Left out of a gathered structure (errors="skip").
_SKIP: Any = object()


@dataclasses.dataclass
class _ForgetBatch:
    """Handles to release, of which ``pending`` to cancel first (see _forget_handles)."""

    handles: list[TaskHandle[Any]]
    pending: list[TaskHandle[Any]]
    done: anyio.Event = dataclasses.field(default_factory=anyio.Event)


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class DaskExecutor:
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
        sources = [
            ("address", address),
            ("scheduler_file", scheduler_file),
            ("cluster", cluster),
            ("client", client),
        ]
        given = [n for n, v in sources if v is not None]
        if len(given) > 1:
            raise ValueError(
                f"give at most one of address, scheduler_file, cluster and client, not {given}"
            )
        if local_cluster_kwargs and given:
            raise TypeError(
                f"{sorted(local_cluster_kwargs)} configure the embedded LocalCluster; "
                f"they cannot be combined with {given[0]}="
            )
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a string such as 'tcp://host:port', not {address!r}")
        if scheduler_file is not None and not isinstance(scheduler_file, str | os.PathLike):
            raise TypeError(f"scheduler_file must be a path, not {scheduler_file!r}")
        if scheduler_file is not None and not os.fspath(scheduler_file):
            raise ValueError("scheduler_file is empty: give the path of a scheduler file")
        if client is not None and not isinstance(client, distributed.Client):
            raise TypeError(f"client must be a distributed.Client, not {client!r}")
        if cluster is not None and not hasattr(cluster, "scheduler_address"):
            raise TypeError(f"cluster must be a distributed Cluster object, not {cluster!r}")
        self._scheduler_file = scheduler_file
        self._open_args: dict[str, Any] = {
            "address": address,
            "cluster": cluster,
            "client": client,
            "security": security,
            "connect_timeout": connect_timeout,
            "local_cluster_kwargs": local_cluster_kwargs,
        }
        self._state = _State.NEW
        self._handles: dict[str, TaskHandle[Any]] = {}
        self._released_keys: set[Hashable] = set()
        self._background_errors: list[Exception] = []
        self._cancel_batch: list[distributed.Future[Any]] = []
        #: Handles to cancel and release together, by reason (see _forget_handles).
        self._forget_batches: dict[str, _ForgetBatch] = {}
        self._streams: set[_Stream] = set()
        self._submitted = 0
        self._outcomes: Counter[TaskStatus] = Counter()
        #: Keys that run() and compute() calls are waiting for, with those calls' handles.
        self._calls: dict[Hashable, list[TaskHandle[Any]]] = {}
        #: Keys whose cancellation the scheduler confirmed.
        self._forgotten_keys: set[Hashable] = set()
        #: Futures of keys a handle holds already (in persisted collections): released at exit.
        self._other_references: list[distributed.Future[Any]] = []
        #: Calls fetching values now (see _call_under_way), and an event set when none is.
        self._calls_under_way = 0
        self._no_call_under_way: anyio.Event | None = None
        #: Set by an error exit: a task adopted from now on is cancelled at once.
        self._cancelling_all = False
        #: Set by the exit once no call may start any more: it releases every key next.
        self._releasing = False
        self._core: DaskCore
        self._core_opened = False
        self._runner: CoreRunner
        self._tg: anyio.abc.TaskGroup
        self._stack: AsyncExitStack
        #: The background task holding the scope, if opened with open().
        self._host: Host | None = None
        #: The task that entered, which must leave; set once left.
        self._entered_in = 0
        self._exited: anyio.Event | None = None
        #: Whether the run of the event loop that entered ended while the scope was open.
        self._ended_with_run = False

    # -- lifetime --------------------------------------------------------------------------

    async def open(self) -> Self:
        """Enter the executor's scope in a background task of the event loop; return the
        executor, open until :meth:`aclose`. For notebooks and other REPLs, where one
        ``async with`` block cannot span cells (each cell is a task of its own).

        Checkpoint; cancelling it closes whatever was opened. The scope keeps the rules of
        ``async with``; ``aclose()`` is its normal exit, and if the event loop's run ends
        first (``asyncio.run()`` returns; under trio the main task returns, as at the end of
        every cell under IPython's ``%autoawait trio``), the scope is left as a cancelled one
        is: its tasks are cancelled and the cluster closed, and later calls raise
        :exc:`RuntimeError` saying so. Use ``async with`` wherever one block can hold the
        executor.
        """
        if self._state is not _State.NEW or self._host is not None:
            raise RuntimeError("a DaskExecutor can be entered only once")
        self._host = Host(self, name=f"dask-anyio: {self!r}")
        await self._host.open()
        # The scope's current client is the host task's: make it Dask's default instead,
        # for the blocking API of every later cell (a notebook's xarray, say).
        make_default(self._core.client)
        return self

    async def aclose(self) -> None:
        """Leave the scope that :meth:`open` entered, as ``async with`` leaves it normally:
        wait for every outstanding task, release every key, close what the executor owns,
        and raise the failures nobody observed.

        Checkpoint; cancelling it cancels the outstanding tasks, as a cancelled scope does.
        Nothing to do if the scope was left already (the event loop's run ended).
        """
        if self._host is None:
            raise RuntimeError(
                "aclose() leaves an executor opened with `await ex.open()`; one entered with "
                "`async with` is left at the end of that block"
            )
        if self._host.done:
            return
        self._check_loop()
        await self._host.close()

    async def __aenter__(self) -> Self:
        if self._state is not _State.NEW:
            raise RuntimeError("a DaskExecutor can be entered only once")
        await anyio.lowlevel.checkpoint_if_cancelled()  # cancelled already: start nothing
        self._entered_in = anyio.get_current_task().id
        if self._scheduler_file is not None:
            timeout = _connect_timeout(self._open_args["connect_timeout"])
            path = self._scheduler_file
            self._open_args["address"] = await _read_scheduler_file(path, timeout)
        async with AsyncExitStack() as stack:
            self._runner = await stack.enter_async_context(open_core_runner())
            client = self._open_args["client"]
            if client is not None:
                self._check_client(client)
            stack.push_async_callback(self._close_core)
            await self._runner.run(self._open_core)
            # Dask's own API (dask.compute, get_client, Lock...) finds this client, in the
            # body and the worker threads it starts; under trio it refuses to block the
            # event loop's thread (the core runs on another).
            other_thread = self._runner.core is not self._runner.front
            never_block = threading.get_ident() if other_thread else None
            stack.enter_context(current_client(self._core.client, never_block))
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._stack = stack.pop_all()
        self._state = _State.OPEN
        if self._host is None:  # (a host leaves the scope itself when the run ends)
            self._exited = anyio.Event()
            start_background(self._close_at_run_end, f"dask-anyio: closes {self!r}")
        return self

    async def _close_at_run_end(self) -> None:
        """In the background: if the run of the event loop ends while the executor is open
        (entered in one notebook cell and never left), close what it opened (client,
        cluster), before the run closes the core runner under them. Never raises."""
        assert self._exited is not None
        try:
            await self._exited.wait()
        except anyio.get_cancelled_exc_class():
            if self._state is _State.OPEN:  # (no exit under way: nobody will leave it)
                self._state = _State.CLOSED
                self._ended_with_run = True
                with anyio.CancelScope(shield=True):
                    try:
                        await self._close_core()
                    except Exception:
                        logger.warning("could not close an abandoned DaskExecutor", exc_info=True)

    async def _open_core(self) -> None:
        # On the core loop. Stored here, not returned, so that a caller cancelled just as the
        # core opened still finds it to close.
        self._core = await DaskCore.open(**self._open_args)
        self._core_opened = True

    async def _close_core(self) -> None:
        if self._core_opened:
            with anyio.CancelScope(shield=True):
                await self._runner.run(self._core.close)

    def _check_client(self, client: distributed.Client) -> None:
        if self._runner.core is not self._runner.front:
            raise RuntimeError(
                "client= is for asyncio only: a distributed.Client lives on an asyncio event "
                "loop, and under trio the executor runs Dask on a private loop thread. "
                "Pass the scheduler's address= (or cluster=) instead."
            )
        if not client.asynchronous or client.status != "running":
            raise ValueError(
                "client= must be a running asynchronous Client created on this event loop, "
                "as in `await Client(..., asynchronous=True)`"
            )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._state is not _State.OPEN:
            self._check_open()  # raises, saying why
        self._check_loop()
        try:
            return await self._leave(exc)
        finally:
            if self._exited is not None:
                self._exited.set()

    async def _leave(self, exc: BaseException | None) -> bool | None:
        other_task = anyio.get_current_task().id != self._entered_in
        self._state = _State.CLOSING
        for stream in list(self._streams):  # nobody reads them any more
            await stream.aclose()
        error = exc
        if error is None:
            try:
                await self._wait_outstanding()
            except BaseException as wait_error:  # cancelled while waiting: as for an error
                error = wait_error
        unobserved: list[Exception] = []
        cleanup_errors: list[Exception] = []
        try:
            with anyio.CancelScope(shield=True):
                if error is not None:
                    self._cancelling_all = True
                    await self._cancel_outstanding()
                    await self._wait_calls()  # (what they adopt is cancelled at once)
                    self._releasing = True  # (no await since the wait: none is under way)
                    await self._cancel_outstanding()  # (what persist() adopted meanwhile)
                self._releasing = True  # (a normal exit: no await since the last wait)
                released = await self._release_all()
                unobserved = [
                    h._failure
                    for h in released
                    if h._failure is not None
                    and not h._observed
                    and h._cancel_reason is None
                    # on an error exit, the executor itself cancelled what was pending
                    and (error is None or h._final_status is TaskStatus.ERROR)
                    # a dependent of a task this executor cancelled: cancelled with it
                    and not _cancelled_by_us(h._failure)
                ]
        except Exception as cleanup_error:
            cleanup_errors.append(cleanup_error)
        finally:
            self._state = _State.CLOSED
            # Outside any scope opened after the task group: waits for background
            # cancellations, closes the client and what we own, then stops the private loop
            # thread (trio). Each step shields itself.
            try:
                await self._stack.aclose()
            except Exception as cleanup_error:
                cleanup_errors.append(cleanup_error)
        if error is not None:
            # The body's error (or cancellation) wins; cleanup failures must not hide it, and
            # task failures nobody saw are still told.
            for failed in cleanup_errors:
                logger.warning("closing the DaskExecutor after %r failed", error, exc_info=failed)
            if unobserved:
                summary = "; ".join(f"{type(f).__name__}: {f}" for f in unobserved)
                if isinstance(error, Exception):
                    error.add_note(f"Also, tasks of the DaskExecutor failed unobserved: {summary}")
                else:
                    logger.warning("tasks of the DaskExecutor failed unobserved: %s", summary)
            if error is not exc:
                raise error
            return None
        if other_task:  # anyio refused to leave the task group (cleanup_errors), and said why
            raise RuntimeError(
                "a DaskExecutor's `async with` is left by the task that entered it: in a "
                "notebook, where every cell runs as a task of its own, keep one executor "
                "across cells with `ex = await DaskExecutor(...).open()` and `await "
                "ex.aclose()`. This executor is closed now."
            ) from (cleanup_errors[0] if cleanup_errors else None)
        if cleanup_errors:
            raise cleanup_errors[0]
        failures = _one_scheduler_lost(unobserved) + self._background_errors
        if failures:
            raise ExceptionGroup("tasks failed and nobody awaited them", failures)
        return None

    async def _wait_outstanding(self) -> None:
        """A normal exit: wait for every handle, and for every call fetching values (run(),
        compute(), retrieve(), gather() of another task): each gets its value."""
        while True:
            for handle in list(self._handles.values()):
                await self._wait_done(handle)
            if not self._calls_under_way:  # (none starts now: the executor is closing)
                return
            await self._wait_calls()  # then wait for what they adopted (persist)

    async def _wait_calls(self) -> None:
        if self._calls_under_way:
            self._no_call_under_way = anyio.Event()
            await self._no_call_under_way.wait()

    async def _cancel_outstanding(self) -> None:
        pending = [h._future for h in self._handles.values() if not h.done()]
        if not pending:
            return
        await self._runner.run(self._core.cancel, pending, _REASON_EXIT)
        self._forgotten_keys.update(f.key for f in pending)

    async def _release_all(self) -> list[TaskHandle[Any]]:
        """Freeze every handle's outcome, release its key and wait until the scheduler forgot."""
        released = list(self._handles.values())
        # Keys released earlier were of finished or failed tasks: the scheduler had them.
        arrived = set(self._released_keys)
        for handle in released:
            await self._freeze(handle)
            self._outcomes[handle.status] += 1
            self._core.release(handle._future)
            key = handle._future.key
            if key not in self._forgotten_keys:  # (a confirmed cancellation: gone already)
                self._released_keys.add(key)
            if handle.status in (TaskStatus.FINISHED, TaskStatus.ERROR) or (
                # cancelled by the scheduler (a lost dependency, another client): it had it
                handle.status is TaskStatus.CANCELLED and handle._cancel_reason is None
            ):
                arrived.add(key)
            self._notify(handle)
        for future in self._other_references:
            self._core.release(future)
        self._other_references.clear()
        self._handles.clear()
        self._forgotten_keys.clear()
        keys, self._released_keys = self._released_keys, set()
        await self._runner.run(functools.partial(self._core.wait_forgotten, keys, arrived=arrived))
        return released

    async def _freeze(self, handle: TaskHandle[Any]) -> None:
        """Keep what ``await handle`` reports once the key is released (releasing marks it
        cancelled in Dask's client)."""
        failure = handle._failure = await self._failure_of(handle)
        handle._failure_traceback = None if failure is None else failure.__traceback__
        handle._final_status = handle.status

    def _check_open(self, *, fetching: bool = False) -> None:
        """Refuse use unless open; ``fetching`` calls (retrieve, gather, as_completed's
        values) are also let in while a normal exit still waits, so that a value on its way
        to another task is not lost (the exit waits for them)."""
        if self._state is _State.OPEN or (
            fetching and self._state is _State.CLOSING and not self._releasing
        ):
            self._check_loop()
            return
        if self._state is _State.NEW:
            raise RuntimeError(
                "this DaskExecutor is not open: use `async with DaskExecutor() as ex`"
            )
        if self._ended_with_run or (self._host is not None and self._host.ended_with_run):
            raise RuntimeError(
                "this DaskExecutor was closed when the run of the event loop that opened it "
                "ended (under IPython's `%autoawait trio`, every cell runs in a trio.run of "
                "its own): open and use an executor within one cell there, or keep one "
                "across cells under IPython's default asyncio autoawait"
            )
        raise RuntimeError(f"this DaskExecutor is {self._state.value}: it cannot be used any more")

    def _check_loop(self) -> None:
        """Refuse a call from another thread or event loop than the one that entered (it
        would wait for a loop that never wakes it)."""
        if self._state in (_State.OPEN, _State.CLOSING) and not self._runner.front.is_current():
            raise RuntimeError(
                "a DaskExecutor is used from the event loop that entered it, and this is "
                "another thread or another event loop (a second anyio.run, say, or a notebook "
                "cell that IPython runs in a trio.run of its own); from another thread, go "
                "through anyio.from_thread"
            )

    def _check_connected(self) -> None:
        """Refuse new work while Dask's client is not connected (it lost the scheduler)."""
        if self._core.client.status != "running":
            raise SchedulerLost(self._core.scheduler_address)

    # -- introspection ---------------------------------------------------------------------

    def __repr__(self) -> str:
        state, scheduler, _, _, stats = self._shown()
        return executor_repr(state, scheduler, stats)

    def _repr_html_(self) -> str:
        """What Jupyter shows: scheduler, dashboard link, workers, tasks."""
        return executor_html(*self._shown())

    def _shown(
        self,
    ) -> tuple[str, str | None, str | None, Mapping[str, Any], ExecutorStatistics | None]:
        """What the reprs show: plain reads, no request (the workers as the client last
        heard of them); counts only on the executor's own loop, where they are kept."""
        scheduler = dashboard = None
        identity: Mapping[str, Any] = {}
        if self._state in (_State.OPEN, _State.CLOSING):
            scheduler, dashboard = self._core.scheduler_address, self._core.dashboard_link
            identity = getattr(self._core.client, "_scheduler_identity", None) or {}
        stats = None
        if self._state is not _State.NEW:
            with contextlib.suppress(RuntimeError):  # from another thread or loop
                stats = self.statistics()
        return self._state.value, scheduler, dashboard, identity, stats

    @property
    def client(self) -> distributed.Client:
        """The underlying asynchronous :class:`distributed.Client`, for the rest of Dask's API.

        It lives on the core loop: under asyncio that is your own loop and you may ``await``
        its methods; under trio it is a private asyncio loop thread, so never call its
        methods that talk to the scheduler from trio (they would block or return coroutines
        of another loop): go through :meth:`call_client`, which works on both backends.
        Reading attributes (``id``, ``status``) is fine. Futures you create through it are not
        owned by the executor: release them yourself.
        """
        self._check_open()
        return self._core.client

    async def call_client(
        self,
        fn: Callable[Concatenate[distributed.Client, P], object],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Any:
        """Call ``fn(client, *args, **kwargs)`` on the client's event loop; return its result,
        awaited if it is awaitable.

        Checkpoint; cancelling the caller cancels the call. The safe way to use the rest of
        Dask's client API on either backend, for example
        ``await ex.call_client(distributed.Client.who_has)`` or
        ``await ex.call_client(lambda c: c.run_on_scheduler(fn))``. Handles in ``args`` and
        ``kwargs`` (also inside lists, tuples, sets and dicts) are replaced by their Dask
        futures, as :meth:`submit` replaces them, so that
        ``await ex.call_client(distributed.Client.replicate, [handle])`` works.
        """
        self._check_open()
        args, kwargs = self._unwrap(args), self._unwrap(kwargs)
        await anyio.lowlevel.checkpoint_if_cancelled()
        return await self._runner.run(self._core.call, fn, args, kwargs)

    @property
    def dashboard_link(self) -> str | None:
        """The link to the scheduler's dashboard, if it serves one."""
        self._check_open()
        return self._core.dashboard_link

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
        self._check_open()
        options = self._options(
            key, pure, priority, retries, resources, workers, allow_other_workers
        )
        return self._submit(fn, args, kwargs, options)

    def _submit(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> TaskHandle[T]:
        """Submit on an open executor (checked by the caller)."""
        if not callable(fn):
            raise TypeError(f"submit() needs a callable, not {fn!r}")
        self._check_connected()
        future = self._core.submit(fn, self._unwrap(args), self._unwrap(kwargs), options)
        return self._adopt(future)

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
        self._check_open()
        if not callable(fn):
            raise TypeError(f"map() needs a callable, not {fn!r}")
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        options = self._options(
            None, pure, priority, retries, resources, workers, allow_other_workers
        )
        if key is not None:
            options["key"] = _check_prefix(key)
        columns = [self._unwrap(list(it)) for it in iterables]
        self._check_connected()
        futures = self._core.map(fn, columns, self._unwrap(kwargs), options)
        return [self._adopt(f) for f in futures]

    def _options(
        self,
        key: str | None,
        pure: bool,
        priority: int,
        retries: int | None,
        resources: Mapping[str, float] | None,
        workers: str | Iterable[str] | None,
        allow_other_workers: bool,
    ) -> dict[str, Any]:
        if key is not None:
            if not isinstance(key, str) or not key:
                raise ValueError(f"key must be a non-empty string, not {key!r}")
            if key in self._handles:
                raise ValueError(f"key {key!r} is already used by a task of this executor")
        if not isinstance(pure, bool):
            raise TypeError(f"pure must be True or False, not {pure!r}")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise TypeError(f"priority must be an integer, not {priority!r}")
        if retries is not None and (
            not isinstance(retries, int) or isinstance(retries, bool) or retries < 0
        ):
            raise ValueError(f"retries must be a non-negative integer or None, not {retries!r}")
        if resources is not None and not (
            isinstance(resources, Mapping)
            and all(
                isinstance(k, str)
                and isinstance(v, Number)
                and not isinstance(v, bool)
                and math.isfinite(v)
                and v >= 0
                for k, v in resources.items()
            )
        ):
            raise ValueError(
                f"resources must map resource names to non-negative numbers, not {resources!r}"
            )
        if isinstance(workers, str):
            workers = [workers]
        elif workers is not None:
            workers = list(workers) if isinstance(workers, Iterable) else [workers]
            if not all(isinstance(w, str) for w in workers):
                raise ValueError(f"workers must be addresses or names (strings), not {workers!r}")
        if not isinstance(allow_other_workers, bool):
            raise TypeError(
                f"allow_other_workers must be True or False, not {allow_other_workers!r}"
            )
        if allow_other_workers and not workers:
            raise ValueError("allow_other_workers=True needs workers=")
        return {
            "key": key,
            "pure": pure,
            "priority": priority,
            "retries": retries,
            "resources": dict(resources) if resources is not None else None,
            "workers": workers,
            "allow_other_workers": allow_other_workers,
        }

    def _unwrap(self, obj: Any) -> Any:
        """Replace our handles in ``obj`` (recursively in lists, tuples, sets and dicts)."""
        return _map_handles(obj, self._future_of)

    def _future_of(self, handle: TaskHandle[Any]) -> distributed.Future[Any]:
        if handle._executor is not self:
            raise ValueError(f"{handle!r} belongs to another DaskExecutor")
        return handle._future

    def _adopt(self, future: distributed.Future[Any]) -> TaskHandle[Any]:
        handle: TaskHandle[Any] = TaskHandle(self, future)
        existing = self._handles.get(handle.key)
        if existing is not None:  # pure=True and an identical call: one task, one handle
            self._core.release(future)
            return existing
        self._handles[handle.key] = handle
        self._submitted += 1
        return handle

    def _forget_handle(self, handle: TaskHandle[Any]) -> bool:
        """Stop owning ``handle``: freeze its status, count its outcome, release its key.

        :return: ``False`` if that was done already.
        """
        if handle._final_status is not None:
            return False
        handle._final_status = handle.status
        if self._handles.get(handle.key) is handle:  # counted as submitted, hence here
            del self._handles[handle.key]
            self._outcomes[handle._final_status] += 1
        self._core.release(handle._future)
        return True

    async def _forget_handles(self, handles: list[TaskHandle[Any]], reason: str) -> None:
        """Cancel the pending ones on the cluster, release them all; return once the
        scheduler forgot them. Call it shielded.

        Calls made at the same moment share one round trip: when a task group with many
        ``run()`` calls is cancelled, every call arrives here in the same loop turn. The
        first one waits a checkpoint for the others, then cancels and confirms for all.
        """
        pending = [h for h in handles if not h.done()]
        for handle in pending:
            handle._cancel_reason = reason
            self._notify(handle)
        batch = self._forget_batches.get(reason)
        if batch is not None:  # another call sends it: wait for it
            batch.handles.extend(handles)
            batch.pending.extend(pending)
            await batch.done.wait()
            return
        batch = self._forget_batches[reason] = _ForgetBatch(list(handles), pending)
        try:
            try:
                await anyio.lowlevel.checkpoint()  # let the calls cancelled with this one join
            finally:  # (even if a native asyncio cancel got through the shield)
                del self._forget_batches[reason]
                with anyio.CancelScope(shield=True):
                    await self._forget_now(batch, reason)
        finally:  # the others wait for this, come what may
            batch.done.set()

    async def _forget_now(self, batch: _ForgetBatch, reason: str) -> None:
        handles, pending = batch.handles, batch.pending
        try:
            await self._runner.run(self._core.cancel, [h._future for h in pending], reason)
        except Exception:  # the exit confirms the release again
            logger.warning("could not cancel %d tasks on the cluster", len(pending), exc_info=True)
            pending = []
        cancelled = {h.key for h in pending}
        done = [h.key for h in handles if h.key not in cancelled]
        if done:  # a value may still be on its way to a caller cancelled meanwhile
            try:
                await self._runner.run(self._core.wait_fetches, done)
            except Exception:  # (then Dask may warn that it couldn't gather it)
                logger.debug("could not wait for transfers", exc_info=True)
        released = [
            h._future.key for h in handles if self._forget_handle(h) and h.key not in cancelled
        ]
        try:
            confirm = functools.partial(self._core.wait_forgotten, released, arrived=released)
            await self._runner.run(confirm)
        except Exception:  # the exit confirms the release again
            logger.warning("could not release %d tasks", len(released), exc_info=True)
            self._confirm_released(*released)

    def _accepts_background(self) -> bool:
        return self._state in (_State.OPEN, _State.CLOSING)

    def _check_handle(self, handle: TaskHandle[Any]) -> None:
        if not isinstance(handle, TaskHandle):
            raise TypeError(f"expected a TaskHandle, not {handle!r}")
        if handle._executor is not self:
            raise ValueError(f"{handle!r} belongs to another DaskExecutor")

    # -- waiting ---------------------------------------------------------------------------

    async def _wait(self, handle: TaskHandle[Any]) -> None:
        """``await handle``: wait without transferring data, then raise its failure if any."""
        self._check_loop()
        failure = await self._outcome(handle)
        if failure is not None:  # raised here: the traceback shows one frame of ours
            raise failure

    async def _outcome(self, handle: TaskHandle[Any]) -> Exception | None:
        """Wait until ``handle`` is done; return what ``await handle`` raises (then observed:
        the caller raises it), or ``None``."""
        await self._wait_done(handle)
        failure = await self._failure_of(handle)
        if failure is not None:
            handle._observed = True
        return failure

    async def _wait_done(self, handle: TaskHandle[Any]) -> None:
        """Wait until ``handle`` is done. Checkpoint; cancelling it only stops the waiting."""
        await anyio.lowlevel.checkpoint()
        if handle.done():
            return
        event = anyio.Event()
        self._watch(handle, event.set)
        try:
            await event.wait()
        finally:
            self._unwatch(handle, event.set)

    def _watch(self, handle: TaskHandle[Any], callback: Callable[[], object]) -> None:
        """Call ``callback()`` on the front loop once ``handle`` is done: at once if it is.

        One watch on the core loop per handle serves every watcher (waiters, as_completed,
        imap); completions come back in batches, one thread crossing per batch.
        """
        if handle.done():
            callback()
            return
        handle._watchers.append(callback)
        if not handle._registered:
            self._register(handle)

    def _register(self, handle: TaskHandle[Any]) -> None:
        handle._registered = True
        watch = self._core.watch
        if not self._runner.core.run_sync_soon(watch, handle._future, handle, self._deliver_done):
            handle._registered = False  # (a wait for it would never be woken)
            raise RuntimeError("the executor's Dask client has stopped: its event loop ended")

    @staticmethod
    def _unwatch(handle: TaskHandle[Any], callback: Callable[[], object]) -> None:
        if callback in handle._watchers:
            handle._watchers.remove(callback)

    def _deliver_done(self, handles: list[TaskHandle[Any]]) -> None:
        # On the core loop: hand over to the caller's loop, touch nothing here.
        self._runner.front.run_sync_soon(self._settle_all, handles)

    def _settle_all(self, handles: list[TaskHandle[Any]]) -> None:
        for handle in handles:
            try:
                self._settle(handle)
            except Exception:  # a bug: log it, and still settle the rest of the batch
                logger.exception("could not settle %r", handle)

    def _settle(self, handle: TaskHandle[Any]) -> None:
        """On the front loop, once the core's watch of ``handle`` ended: tell the watchers
        if it is done, else watch again."""
        handle._registered = False
        if handle.done():
            self._notify(handle)
        elif handle._watchers:
            if handle.status is TaskStatus.LOST and self._state is not _State.CLOSED:
                # The watch ends at once for a task lost with a worker: look
                # again after a pause, until Dask has recomputed it.
                self._tg.start_soon(self._recheck_lost, handle)
            else:
                self._register(handle)

    async def _recheck_lost(self, handle: TaskHandle[Any]) -> None:
        await anyio.sleep(_LOST_RECHECK)
        if not handle._registered:
            self._settle(handle)

    @staticmethod
    def _notify(handle: TaskHandle[Any]) -> None:
        watchers, handle._watchers = handle._watchers, []
        for callback in watchers:
            callback()

    async def _failure_of(self, handle: TaskHandle[Any]) -> Exception | None:
        """What ``await handle`` raises for a done task: its remote exception or
        :exc:`TaskCancelled`; ``None`` if it finished (or is not done)."""
        if handle._final_status is not None:
            if handle._failure is None:
                return None
            return handle._failure.with_traceback(handle._failure_traceback)
        status = handle.status
        if handle._cancel_reason is not None:
            return TaskCancelled(handle.key, handle._cancel_reason)
        if status is TaskStatus.ERROR:
            error = await self._runner.run(self._core.exception, handle._future)
            if isinstance(error, Exception):
                return error
            # A BaseException from the worker (an async task's CancelledError, say) must not
            # pass for one of ours: it would look like a local cancellation or exit.
            if isinstance(error, asyncio.CancelledError):
                failure: Exception = TaskCancelled(handle.key, "it raised CancelledError")
            else:
                failure = RuntimeError(f"task {handle.key!r} raised {error!r}")
            failure.__cause__ = error
            return failure
        if status is TaskStatus.CANCELLED:
            reason = await self._runner.run(_cancel_reason, handle._future)
            if reason == _REASON_SCHEDULER_LOST:
                return SchedulerLost(self._core.scheduler_address, handle.key)
            return TaskCancelled(handle.key, reason)
        return None

    async def retrieve(self, handle: TaskHandle[T]) -> T:
        """Return the value of the task behind ``handle``, transferring it to the client.

        Checkpoint. Waits until the task is done; raises the task's own exception if it
        failed, :exc:`TaskCancelled` if it was cancelled. Cancelling the caller stops the
        waiting (a transfer under way finishes, and is dropped), not the task.

        :raises ValueError: if the handle belongs to another executor.
        :raises RuntimeError: if the executor has exited (its data is released).
        """
        self._check_handle(handle)
        self._check_open(fetching=True)
        await anyio.lowlevel.checkpoint_if_cancelled()
        with self._call_under_way():
            value, failure = await self._value_of(handle)
        if failure is not None:
            raise failure
        result: T = value
        return result

    async def _value_of(self, handle: TaskHandle[Any]) -> tuple[Any, Exception | None]:
        """Wait for ``handle`` and fetch its value: ``(value, None)``, or ``(None, failure)``
        for the caller to raise (a failure raised here would add our frames to it)."""
        failure = await self._outcome(handle)
        if failure is not None:
            return None, failure
        try:
            return await self._runner.run(self._core.result, handle._future), None
        except FutureCancelledError:  # released or cancelled while its value was on the way
            failure = await self._failure_of(handle)
            if failure is None:
                failure = TaskCancelled(handle.key, "its key was released before its value came")
            failure.__suppress_context__ = True
            return None, failure

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the cluster and return its value.

        Checkpoint. The task is bound to this call: if the caller's scope is cancelled, the
        task is cancelled on the cluster, and the cancellation propagates only once the
        scheduler has forgotten the task. Its key is released when the call returns.
        Raises the task's own exception if it failed. All keyword arguments go to ``fn``:
        for Dask's options, use :meth:`submit` and :meth:`retrieve`.
        """
        self._check_open()
        await anyio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller starts nothing
        handle = self._submit(fn, args, kwargs, _RUN_OPTIONS)
        values, failure = await self._results_of_call([handle])
        if failure is not None:  # raised here: the traceback shows one frame of ours
            raise failure
        result: T = values[0]
        return result

    async def _results_of_call(
        self, handles: list[TaskHandle[Any]]
    ) -> tuple[list[Any], Exception | None]:
        """Wait for the values of tasks that belong to this call (run(), compute()):
        ``(values, None)``, or ``([], failure)`` for the caller to raise.

        Others may hold their keys too (a compute() of a persisted collection, two compute()
        calls of one collection): then this call lets go of its own references only.
        """
        with self._call_under_way():  # (its cleanup too: the exit closes the client next)
            return await self._call_results(handles)

    async def _call_results(
        self, handles: list[TaskHandle[Any]]
    ) -> tuple[list[Any], Exception | None]:
        try:
            for handle in handles:
                self._calls.setdefault(handle._future.key, []).append(handle)
                handle._observed = True
                if self._cancelling_all and not handle.done():  # adopted in an error exit
                    handle._cancel_reason = _REASON_EXIT
                    cancel = functools.partial(self._core.cancel, [handle._future], _REASON_EXIT)
                    self._tg.start_soon(self._in_background, cancel)
            values, failure, culprits = await self._values_of(handles)
        except anyio.get_cancelled_exc_class():
            last_holders = [h for h in handles if self._let_go_of_call(h)]
            if last_holders:  # the last holders of these keys: cancel them
                with anyio.CancelScope(shield=True):
                    await self._forget_handles(last_holders, _REASON_SCOPE)
            raise
        except Exception:
            self._observed_by_call(handles)
            raise
        finally:
            for handle in handles:
                key = handle._future.key
                if handle in self._calls.get(key, ()):  # not let go of yet
                    sole = self._let_go_of_call(handle)
                    if self._forget_handle(handle) and sole:
                        self._confirm_released(key)
        if failure is not None:  # (only the one told: the others' failures are still due)
            self._observed_by_call([h for h in handles if h.key in culprits])
        return values, failure

    async def _values_of(
        self, handles: list[TaskHandle[Any]]
    ) -> tuple[list[Any], Exception | None, set[str]]:
        """Wait for ``handles`` and fetch their values, as :meth:`_value_of` does for one:
        also the keys of the tasks whose failure is returned."""
        if len(handles) == 1:  # run(): the round trip that counts
            value, failure = await self._value_of(handles[0])
            return [value], failure, {handles[0].key}
        culprits, failure = await self._wait_all(handles, stop_at_failure=True)
        if failure is not None:
            return [], failure, culprits
        values, failure = await self._gathered(handles)
        return values, failure, {h.key for h in handles}

    async def _gathered(self, handles: list[TaskHandle[Any]]) -> tuple[list[Any], Exception | None]:
        """Fetch the values of finished tasks in one request per worker: ``(values, None)``,
        or ``([], failure)`` if one was cancelled or released while on the way."""
        try:
            return await self._runner.run(self._core.gather, [h._future for h in handles]), None
        except FutureCancelledError:
            for handle in handles:
                failure = await self._failure_of(handle)
                if failure is not None:
                    break
            else:
                failure = TaskCancelled(
                    handles[0].key, "its key was released before its value came"
                )
            failure.__suppress_context__ = True
            return [], failure

    def _observed_by_call(self, handles: list[TaskHandle[Any]]) -> None:
        """A call's failure is told to its caller: the exit must not tell it again (also
        through the handles that count the keys for several calls)."""
        for handle in handles:
            registered = self._handles.get(handle.key)
            if registered is not None:
                registered._observed = True

    @contextlib.contextmanager
    def _call_under_way(self) -> Iterator[None]:
        """Count a call that fetches values (run, compute, retrieve, gather): the exit waits
        for it before releasing any key, so that no value is lost on the way."""
        self._calls_under_way += 1
        try:
            yield
        finally:
            self._calls_under_way -= 1
            if not self._calls_under_way and self._no_call_under_way is not None:
                self._no_call_under_way.set()

    def _let_go_of_call(self, handle: TaskHandle[Any]) -> bool:
        """A call stops waiting for ``handle``; return whether no one else holds its key
        (then the caller cancels or releases it); else let go of this call's reference.

        On the front loop, before any await: of calls cancelled together, one is last.
        """
        key = handle._future.key
        others = self._calls[key]
        others.remove(handle)
        if not others:
            del self._calls[key]
        registered = self._handles.get(handle.key)
        if registered is handle and others:  # the task is counted once: with another call
            self._handles[handle.key] = others[0]
        elif not others and (registered in (None, handle) or registered._cancel_reason is not None):
            return True
        self._forget_handle(handle)
        return False

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
        self._check_open()
        options = self._collection_options(
            optimize_graph, priority, retries, resources, workers, allow_other_workers
        )
        await anyio.lowlevel.checkpoint_if_cancelled()
        self._check_connected()
        every = [collection, *collections]
        compute = functools.partial(_checked_collections, self._core.compute, "compute")
        with self._call_under_way():  # (the exit must not pass while the graph is built)
            futures = await anyio.to_thread.run_sync(compute, every, options)
            handles = [self._adopt_for_call(future) for future in futures]
            values, failure = await self._results_of_call(handles)
        if failure is not None:  # raised here: the traceback shows one frame of ours
            raise failure
        return tuple(values) if collections else values[0]

    def _adopt_for_call(self, future: distributed.Future[Any]) -> TaskHandle[Any]:
        handle: TaskHandle[Any] = TaskHandle(self, future)
        if handle.key not in self._handles:  # else: a key held here already (persisted, or
            self._handles[handle.key] = handle  # computed by another call): share it
            self._submitted += 1
        return handle

    def _collection_options(
        self,
        optimize_graph: bool,
        priority: int,
        retries: int | None,
        resources: Mapping[str, float] | None,
        workers: str | Iterable[str] | None,
        allow_other_workers: bool,
    ) -> dict[str, Any]:
        """The options of compute() and persist(), checked as submit()'s are."""
        if not isinstance(optimize_graph, bool):
            raise TypeError(f"optimize_graph must be True or False, not {optimize_graph!r}")
        options = self._options(
            None, False, priority, retries, resources, workers, allow_other_workers
        )
        del options["key"], options["pure"]
        return {**options, "optimize_graph": optimize_graph}

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
        self._check_open()
        options = self._collection_options(
            optimize_graph, priority, retries, resources, workers, allow_other_workers
        )
        await anyio.lowlevel.checkpoint_if_cancelled()
        self._check_connected()
        every = [collection, *collections]
        persist = functools.partial(_checked_collections, self._core.persist, "persist")
        with self._call_under_way():  # (the exit waits for the handles it adopts)
            persisted, futures = await anyio.to_thread.run_sync(persist, every, options)
        for future in futures:  # owned here; the collections hold these very futures
            handle: TaskHandle[Any] = TaskHandle(self, future)
            existing = self._handles.get(handle.key)
            if existing is None:
                self._handles[handle.key] = handle
                self._submitted += 1
            elif existing in self._calls.get(future.key, ()):  # a compute() call's: take over
                self._handles[handle.key] = handle
            elif existing._cancel_reason is not None:  # cancelled by us: this is new work
                self._forget_handle(existing)
                self._handles[handle.key] = handle
                self._submitted += 1
            else:
                self._other_references.append(future)
            self._forgotten_keys.discard(future.key)
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
        self._check_open(fetching=True)
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
        found: dict[str, TaskHandle[Any]] = {}

        def collect(handle: TaskHandle[Any]) -> None:
            self._future_of(handle)  # checks the owner
            found[handle.key] = handle

        _map_handles(handles, collect)
        with self._call_under_way():  # (from before the checkpoint: the exit waits for it)
            await anyio.lowlevel.checkpoint()  # cancelled already: raises before a transfer
            failed, failure = await self._wait_all(
                list(found.values()), stop_at_failure=errors == "raise"
            )
            if failure is not None:
                raise failure
            keys = [k for k in found if k not in failed]
            values, failure = await self._gathered([found[k] for k in keys])
            if failure is not None:
                raise failure
        lookup = dict(zip(keys, values, strict=True))
        result = _map_handles(handles, lambda h: _SKIP if h.key in failed else lookup[h.key])
        return None if result is _SKIP else result

    async def _wait_all(
        self, handles: list[TaskHandle[Any]], *, stop_at_failure: bool
    ) -> tuple[set[str], Exception | None]:
        """Wait until every handle is done; return the keys of those that failed (or were
        cancelled). With ``stop_at_failure``, return as soon as one failure is known, with
        it (for the caller to raise: its traceback then shows only the caller's frame).

        Handles are looked at in completion order, as many per wake-up as are done: unlike
        ``as_completed``, whose every iteration is a checkpoint, this waits once per batch
        of completions (a checkpoint per task cost a large gather a tenth of its speed).
        """
        done: collections.deque[TaskHandle[Any]] = collections.deque()
        wakeup = [anyio.Event()]

        def on_done(handle: TaskHandle[Any]) -> None:
            done.append(handle)
            wakeup[0].set()

        callbacks = [(handle, functools.partial(on_done, handle)) for handle in handles]
        failed: set[str] = set()
        try:
            for handle, callback in callbacks:
                self._watch(handle, callback)  # calls back at once if done
            outstanding = len(handles)
            while True:
                while done:
                    handle = done.popleft()
                    outstanding -= 1
                    failure = await self._failure_of(handle)
                    if failure is not None:
                        handle._observed = True
                        if stop_at_failure:
                            return {handle.key}, failure
                        failed.add(handle.key)
                if not outstanding:
                    return failed, None
                wakeup[0] = anyio.Event()  # nothing is done and unseen: wait for more
                await wakeup[0].wait()
        finally:
            for handle, callback in callbacks:
                self._unwatch(handle, callback)

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
        self._check_open()
        if not isinstance(broadcast, bool):
            raise TypeError(f"broadcast must be True or False, not {broadcast!r}")
        await anyio.lowlevel.checkpoint_if_cancelled()
        self._check_connected()
        with self._call_under_way():  # (the exit waits for the handles it adopts)
            if type(data) is list:
                futures = await self._runner.run(self._core.scatter, data, broadcast)
                return [self._adopt(f) for f in futures]
            if type(data) is dict:
                names = list(data)
                futures = await self._runner.run(self._core.scatter, list(data.values()), broadcast)
                return {name: self._adopt(f) for name, f in zip(names, futures, strict=True)}
            futures = await self._runner.run(self._core.scatter, [data], broadcast)
            return self._adopt(futures[0])

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
        self._check_open()
        return AsCompleted(
            self, handles, with_results=bool(with_results), raise_errors=bool(raise_errors)
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
        self._check_open()
        if not callable(fn):
            raise TypeError(f"imap() needs a callable, not {fn!r}")
        if not isinstance(iterable, Iterable | AsyncIterable):
            raise TypeError(f"imap() needs an iterable or async iterable, not {iterable!r}")
        if (
            not isinstance(max_in_flight, int)
            or isinstance(max_in_flight, bool)
            or max_in_flight < 1
        ):
            raise ValueError(f"max_in_flight must be a positive integer, not {max_in_flight!r}")
        if not isinstance(ordered, bool):
            raise TypeError(f"ordered must be True or False, not {ordered!r}")
        options = self._options(
            None, False, priority, retries, resources, workers, allow_other_workers
        )
        prefix = None if key is None else _check_prefix(key)
        fixed = self._unwrap(kwargs)

        if prefix is not None:
            options["key"] = prefix

        def submit(items: list[Any], position: int) -> list[TaskHandle[Any]]:
            self._check_connected()
            futures = self._core.map(fn, [self._unwrap(items)], fixed, options, position)
            return [self._adopt(f) for f in futures]

        return ResultStream(_Stream(self, submit, iterable, max_in_flight, ordered))

    # -- introspection (counts) ------------------------------------------------------------

    def statistics(self) -> ExecutorStatistics:
        """Return counts of this executor's tasks, as a frozen record. A plain call."""
        self._check_loop()
        outcomes = self._outcomes.copy()
        pending = 0
        for handle in self._handles.values():
            status = handle.status
            if status in _DONE:
                outcomes[status] += 1
            else:
                pending += 1
        return ExecutorStatistics(
            submitted=self._submitted,
            pending=pending,
            running=None,
            finished=outcomes[TaskStatus.FINISHED],
            failed=outcomes[TaskStatus.ERROR],
            cancelled=outcomes[TaskStatus.CANCELLED],
            in_flight=len(self._handles),
        )

    def _confirm_released(self, *keys: Hashable) -> None:
        """Remember released keys of finished or failed tasks, to confirm with the scheduler
        that they were forgotten: at exit, or in the background once enough have gathered
        (so memory stays bounded)."""
        self._released_keys.update(keys)
        if len(self._released_keys) >= _CONFIRM_BATCH and self._state is _State.OPEN:
            batch, self._released_keys = self._released_keys, set()
            confirm = functools.partial(self._core.wait_forgotten, batch, arrived=batch)
            self._tg.start_soon(self._in_background, confirm)

    # -- cancelling ------------------------------------------------------------------------

    def _cancel_handle(self, handle: TaskHandle[Any]) -> bool:
        # While CLOSING the task group is still open (the exit may be waiting for this very
        # handle); once CLOSED every handle is frozen, hence done.
        if handle.done() or self._state is _State.CLOSED:
            return False
        if self._state is _State.OPEN:
            self._check_open()  # the right thread
        handle._cancel_reason = _REASON_HANDLE
        self._notify(handle)
        self._cancel_batch.append(handle._future)
        if len(self._cancel_batch) == 1:  # the first of a burst: tell the cluster soon, once
            self._tg.start_soon(self._flush_cancels)
        return True

    async def _flush_cancels(self) -> None:
        batch, self._cancel_batch = self._cancel_batch, []
        if await self._in_background(self._core.cancel, batch, _REASON_HANDLE):
            self._forgotten_keys.update(f.key for f in batch)

    async def _in_background(self, fn: Callable[[*Ts], Awaitable[object]], *args: *Ts) -> bool:
        """Run a core coroutine as a child of the executor's task group: shielded, so that
        it finishes before the exit; its failure is raised at exit instead of cancelling the
        body. Return whether it succeeded."""
        succeeded = False
        with anyio.CancelScope(shield=True):
            try:
                await self._runner.run(fn, *args)
            except Exception as error:
                self._background_errors.append(error)
            else:
                succeeded = True
        return succeeded


_DONE = (TaskStatus.FINISHED, TaskStatus.ERROR, TaskStatus.CANCELLED)


def _map_handles(obj: Any, fn: Callable[[TaskHandle[Any]], Any]) -> Any:
    """``obj`` with each handle ``h`` in it (in lists, tuples, sets, dicts, nested) replaced
    by ``fn(h)``; a ``_SKIP`` result leaves the item out."""
    if isinstance(obj, _SCALARS):
        return obj
    if isinstance(obj, TaskHandle):
        return fn(obj)
    kind = type(obj)
    if kind in (list, tuple, set, frozenset):
        mapped = (_map_handles(x, fn) for x in obj)
        return kind(x for x in mapped if x is not _SKIP)
    if kind is dict:
        pairs = ((k, _map_handles(v, fn)) for k, v in obj.items())
        return {k: v for k, v in pairs if v is not _SKIP}
    return obj


def _cancelled_by_us(failure: Exception) -> bool:
    """Whether ``failure`` is the cancellation of a task that this executor cancelled, or
    that Dask cancelled because a task it depends on was (Dask's cancel cascades)."""
    return isinstance(failure, TaskCancelled) and failure.reason in _OUR_REASONS


def _one_scheduler_lost(failures: list[Exception]) -> list[Exception]:
    """``failures`` with its SchedulerLost errors (one per pending task) told once."""
    lost = [f for f in failures if isinstance(f, SchedulerLost)]
    if len(lost) <= 1:
        return failures
    summary = SchedulerLost(lost[0].address)
    summary.add_note(f"{len(lost)} tasks nobody awaited were pending: their outcome is unknown")
    return [f for f in failures if not isinstance(f, SchedulerLost)] + [summary]


def _check_prefix(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(
            f"key must be a non-empty string, used as the prefix of every key, not {key!r}"
        )
    return key


def _checked_collections(
    fn: Callable[[list[Any], dict[str, Any]], T],
    what: str,
    collections: list[Any],
    options: dict[str, Any],
) -> T:
    """``fn(collections, options)`` if they are Dask collections. In a worker thread:
    telling may already build the graph."""
    for position, collection in enumerate(collections):
        if not is_dask_collection(collection):
            which = f" (argument {position})" if len(collections) > 1 else ""
            raise TypeError(
                f"{what}() needs a Dask collection (dask.delayed, dask.array, dask.bag, "
                f"dask.dataframe), not {collection!r}{which}; for a function call, use "
                "submit() or run()"
            )
    return fn(collections, options)


async def _cancel_reason(future: distributed.Future[Any]) -> str:
    """On the core loop: why Dask cancelled ``future`` (its ``FutureCancelledError``)."""
    try:
        await future.result()
    except FutureCancelledError as error:
        return str(error.reason or error)
    except Exception as error:  # pragma: no cover - the future was cancelled, not failed
        return repr(error)
    return "unknown reason"  # pragma: no cover


async def _read_scheduler_file(path: str | os.PathLike[str], patience: float) -> str:
    """The address in a scheduler file, waiting up to ``patience`` seconds for the scheduler
    to write it: a script may start the scheduler and its client together, and on a shared
    filesystem the file may be seen half written (as :class:`distributed.Client` does)."""
    file = anyio.Path(path)
    name = os.fspath(path)
    deadline = anyio.current_time() + patience
    while True:
        try:
            text = await file.read_text()
        except FileNotFoundError:
            problem: Exception = FileNotFoundError(
                f"no scheduler file {name!r} appeared within {patience:g} s: start the "
                f"scheduler with `dask scheduler --scheduler-file {name}`"
            )
        else:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                address = json.loads(text)["address"]
                if isinstance(address, str):
                    return address
            problem = ValueError(
                f"{name!r} is not a scheduler file (JSON with an 'address' string, as "
                f"`dask scheduler --scheduler-file` writes), still after {patience:g} s"
            )
        if anyio.current_time() >= deadline:
            raise problem
        await anyio.sleep(0.05)
