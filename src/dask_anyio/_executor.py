"""anyio front end: :class:`DaskExecutor`, the object users hold.

It runs on the caller's event loop (asyncio or trio) and reaches the asyncio core only
through a :class:`~dask_anyio._bridge.CoreRunner`, and Dask's callback thread only through
:meth:`~dask_anyio._bridge.LoopToken.run_sync_soon`.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import math
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from numbers import Number
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar, TypeVarTuple

import anyio
import anyio.abc
import anyio.lowlevel
import distributed
from distributed.deploy.cluster import Cluster

from ._bridge import CoreRunner, open_core_runner
from ._core import DaskCore, logger
from ._handle import TaskCancelled, TaskHandle, TaskStatus

__all__ = ["DaskExecutor"]

T = TypeVar("T")
P = ParamSpec("P")
Ts = TypeVarTuple("Ts")

_SCALARS = (str, bytes, int, float, complex, bool, type(None))
_REASON_SCOPE = "the scope that owned it was cancelled"
_REASON_HANDLE = "TaskHandle.cancel() was called"
_REASON_EXIT = "the DaskExecutor exited with an error"
#: How often to look at a task whose value was lost with a worker (rare).
_LOST_RECHECK = 0.1
#: How many keys released by run() to confirm with the scheduler at once.
_CONFIRM_BATCH = 1000
#: run() takes no options: all its keyword arguments are the function's.
_RUN_OPTIONS: dict[str, Any] = {"pure": False}


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
    * ``cluster``: any ``distributed`` cluster object (LocalCluster, dask-jobqueue, ...);
      the executor connects to it and does not close it;
    * ``client``: an existing asynchronous :class:`distributed.Client` on the running
      asyncio loop (asyncio only); the executor does not close it.

    ``connect_timeout`` (seconds, default Dask's ``distributed.comm.timeouts.connect``)
    bounds connecting: an unreachable scheduler raises :exc:`ConnectionError` naming it.

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
        cluster: Cluster | None = None,
        client: distributed.Client | None = None,
        security: Any = None,
        connect_timeout: float | str | None = None,
        **local_cluster_kwargs: Any,
    ) -> None:
        given = [
            n for n, v in (("address", address), ("cluster", cluster), ("client", client)) if v
        ]
        if len(given) > 1:
            raise ValueError(f"give at most one of address, cluster and client, not {given}")
        if local_cluster_kwargs and given:
            raise TypeError(
                f"{sorted(local_cluster_kwargs)} configure the embedded LocalCluster; "
                f"they cannot be combined with {given[0]}="
            )
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a string such as 'tcp://host:port', not {address!r}")
        if client is not None and not isinstance(client, distributed.Client):
            raise TypeError(f"client must be a distributed.Client, not {client!r}")
        if cluster is not None and not hasattr(cluster, "scheduler_address"):
            raise TypeError(f"cluster must be a distributed Cluster object, not {cluster!r}")
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
        self._released_keys: set[str] = set()
        self._background_errors: list[Exception] = []
        self._cancel_batch: list[distributed.Future[Any]] = []
        self._core: DaskCore
        self._core_opened = False
        self._runner: CoreRunner
        self._tg: anyio.abc.TaskGroup
        self._stack: AsyncExitStack
        self._owner_thread = 0

    # -- lifetime --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _State.NEW:
            raise RuntimeError("a DaskExecutor can be entered only once")
        async with AsyncExitStack() as stack:
            self._runner = await stack.enter_async_context(open_core_runner())
            client = self._open_args["client"]
            if client is not None:
                self._check_client(client)
            stack.push_async_callback(self._close_core)
            await self._runner.run(self._open_core)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._stack = stack.pop_all()
        self._owner_thread = threading.get_ident()
        self._state = _State.OPEN
        return self

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
        self._state = _State.CLOSING
        error = exc
        if error is None:
            try:
                for handle in list(self._handles.values()):
                    await self._wait_done(handle)
            except BaseException as wait_error:  # cancelled while waiting: as for an error
                error = wait_error
        unobserved: list[Exception] = []
        cleanup_errors: list[Exception] = []
        try:
            with anyio.CancelScope(shield=True):
                if error is not None:
                    await self._cancel_outstanding()
                released = await self._release_all()
                unobserved = [
                    h._failure
                    for h in released
                    if h._failure is not None
                    and not h._observed
                    and not h._cancel_requested
                    # on an error exit, the executor itself cancelled what was pending
                    and (error is None or h._final_status is TaskStatus.ERROR)
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
        if cleanup_errors:
            raise cleanup_errors[0]
        failures = unobserved + self._background_errors
        if failures:
            raise ExceptionGroup("tasks failed and nobody awaited them", failures)
        return None

    async def _cancel_outstanding(self) -> None:
        pending = [h._future for h in self._handles.values() if not h.done()]
        await self._runner.run(self._core.cancel, pending, _REASON_EXIT)

    async def _release_all(self) -> list[TaskHandle[Any]]:
        """Freeze every handle's outcome, release its key and wait until the scheduler forgot."""
        released = list(self._handles.values())
        for handle in released:
            await self._freeze(handle)
            self._core.release(handle._future)
            self._released_keys.add(handle.key)
        self._handles.clear()
        keys, self._released_keys = self._released_keys, set()
        await self._runner.run(self._core.wait_forgotten, keys)
        return released

    async def _freeze(self, handle: TaskHandle[Any]) -> None:
        """Keep what ``await handle`` reports once the key is released (releasing marks it
        cancelled in Dask's client)."""
        handle._failure = await self._failure_of(handle)
        handle._final_status = handle.status

    def _check_open(self) -> None:
        if self._state is _State.OPEN:
            if threading.get_ident() != self._owner_thread:
                raise RuntimeError(
                    "a DaskExecutor is used from the thread of the event loop that entered it; "
                    "from another thread, go through anyio.from_thread"
                )
            return
        if self._state is _State.NEW:
            raise RuntimeError(
                "this DaskExecutor is not open: use `async with DaskExecutor() as ex`"
            )
        raise RuntimeError(f"this DaskExecutor is {self._state.value}: it cannot be used any more")

    # -- introspection ---------------------------------------------------------------------

    @property
    def client(self) -> distributed.Client:
        """The underlying asynchronous :class:`distributed.Client`, for the rest of Dask's API.

        It lives on the core loop: under asyncio that is your own loop and you may ``await``
        its methods; under trio it is a private asyncio loop thread, so do not call its
        coroutine methods from trio (its plain, thread-safe methods such as ``submit`` work).
        Futures you create through it are not owned by the executor.
        """
        self._check_open()
        return self._core.client

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
            options["key"] = key
        columns = [self._unwrap(list(it)) for it in iterables]
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
            workers = list(workers)
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
        if isinstance(obj, _SCALARS):
            return obj
        if isinstance(obj, TaskHandle):
            if obj._executor is not self:
                raise ValueError(f"{obj!r} belongs to another DaskExecutor")
            return obj._future
        if type(obj) in (list, tuple, set, frozenset):
            return type(obj)(self._unwrap(x) for x in obj)
        if type(obj) is dict:
            return {k: self._unwrap(v) for k, v in obj.items()}
        return obj

    def _adopt(self, future: distributed.Future[Any]) -> TaskHandle[Any]:
        handle: TaskHandle[Any] = TaskHandle(self, future)
        existing = self._handles.get(handle.key)
        if existing is not None:  # pure=True and an identical call: one task, one handle
            self._core.release(future)
            return existing
        self._handles[handle.key] = handle
        return handle

    def _check_handle(self, handle: TaskHandle[Any]) -> None:
        if not isinstance(handle, TaskHandle):
            raise TypeError(f"expected a TaskHandle, not {handle!r}")
        if handle._executor is not self:
            raise ValueError(f"{handle!r} belongs to another DaskExecutor")

    # -- waiting ---------------------------------------------------------------------------

    async def _wait(self, handle: TaskHandle[Any]) -> None:
        """``await handle``: wait without transferring data, then raise its failure if any."""
        await self._wait_done(handle)
        await self._raise_if_failed(handle)

    async def _wait_done(self, handle: TaskHandle[Any]) -> None:
        await anyio.lowlevel.checkpoint()
        while not handle.done():
            event = handle._event
            if event is not None and event.is_set():
                # Lost with a worker: Dask's done-callback fires at once for a lost task, so
                # look again after a pause until Dask has recomputed it.
                await anyio.sleep(_LOST_RECHECK)
            if event is None or event.is_set():
                event = handle._event = anyio.Event()
                handle._future.add_done_callback(functools.partial(self._on_future_done, event))
            await event.wait()

    def _on_future_done(self, event: anyio.Event, _future: object) -> None:
        # On Dask's callback thread: hand over to the caller's loop, touch nothing here.
        self._runner.front.run_sync_soon(event.set)

    async def _failure_of(self, handle: TaskHandle[Any]) -> Exception | None:
        """What ``await handle`` raises for a done task: its remote exception or
        :exc:`TaskCancelled`; ``None`` if it finished (or is not done)."""
        if handle._final_status is not None:
            return handle._failure
        status = handle.status
        if handle._cancel_requested:
            return TaskCancelled(handle.key, _REASON_HANDLE)
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
            return TaskCancelled(handle.key, await self._runner.run(_cancel_reason, handle._future))
        return None

    async def _raise_if_failed(self, handle: TaskHandle[Any]) -> None:
        failure = await self._failure_of(handle)
        if failure is not None:
            handle._observed = True
            raise failure

    async def retrieve(self, handle: TaskHandle[T]) -> T:
        """Return the value of the task behind ``handle``, transferring it to the client.

        Checkpoint. Waits until the task is done; raises the task's own exception if it
        failed, :exc:`TaskCancelled` if it was cancelled. Cancelling the caller stops the
        waiting and the transfer, not the task.

        :raises ValueError: if the handle belongs to another executor.
        :raises RuntimeError: if the executor has exited (its data is released).
        """
        self._check_handle(handle)
        self._check_open()
        await self._wait(handle)
        value: T = await self._runner.run(self._core.result, handle._future)
        return value

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the cluster and return its value.

        Checkpoint. The task is bound to this call: if the caller's scope is cancelled, the
        task is cancelled on the cluster, and the cancellation propagates only once the
        scheduler has forgotten the task. Its key is released when the call returns.
        Raises the task's own exception if it failed.
        """
        self._check_open()
        handle = self._submit(fn, args, kwargs, _RUN_OPTIONS)
        handle._observed = True
        try:
            await self._wait(handle)
            return await self._runner.run(self._core.result, handle._future)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                handle._cancel_requested = True
                try:
                    await self._runner.run(self._core.cancel, [handle._future], _REASON_SCOPE)
                except Exception:  # the caller's cancellation wins; the exit retries the release
                    logger.warning("could not cancel %s on the cluster", handle.key, exc_info=True)
                    self._confirm_released(handle.key)
            raise
        finally:
            if self._handles.pop(handle.key, None) is not None:
                handle._final_status = handle.status
                self._core.release(handle._future)
                if not handle._cancel_requested:
                    self._confirm_released(handle.key)

    def _confirm_released(self, key: str) -> None:
        """Remember a released key, to confirm with the scheduler that it was forgotten: at
        exit, or in the background once enough have gathered (so memory stays bounded)."""
        self._released_keys.add(key)
        if len(self._released_keys) >= _CONFIRM_BATCH and self._state is _State.OPEN:
            keys, self._released_keys = self._released_keys, set()
            confirm = functools.partial(self._core.wait_forgotten, keys)
            self._tg.start_soon(self._in_background, confirm)

    # -- cancelling ------------------------------------------------------------------------

    def _cancel_handle(self, handle: TaskHandle[Any]) -> bool:
        # While CLOSING the task group is still open (the exit may be waiting for this very
        # handle); once CLOSED every handle is frozen, hence done.
        if handle.done() or self._state is _State.CLOSED:
            return False
        if self._state is _State.OPEN:
            self._check_open()  # the right thread
        handle._cancel_requested = True
        if handle._event is not None:
            handle._event.set()
        self._cancel_batch.append(handle._future)
        if len(self._cancel_batch) == 1:  # the first of a burst: tell the cluster soon, once
            self._tg.start_soon(self._flush_cancels)
        return True

    async def _flush_cancels(self) -> None:
        batch, self._cancel_batch = self._cancel_batch, []
        await self._in_background(self._core.cancel, batch, _REASON_HANDLE)

    async def _in_background(self, fn: Callable[[*Ts], Awaitable[object]], *args: *Ts) -> None:
        """Run a core coroutine as a child of the executor's task group: shielded, so that
        it finishes before the exit; its failure is raised at exit instead of cancelling the
        body."""
        with anyio.CancelScope(shield=True):
            try:
                await self._runner.run(fn, *args)
            except Exception as error:
                self._background_errors.append(error)


async def _cancel_reason(future: distributed.Future[Any]) -> str:
    """On the core loop: why Dask cancelled ``future`` (its ``FutureCancelledError``)."""
    try:
        await future.result()
    except distributed.client.FutureCancelledError as error:
        return str(error.reason or error)
    except Exception as error:  # pragma: no cover - the future was cancelled, not failed
        return repr(error)
    return "unknown reason"  # pragma: no cover
