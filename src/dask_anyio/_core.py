"""asyncio core: the corrected seed ``DaskExecutor`` over an asynchronous Dask client.

Everything here is plain asyncio and runs on the *core loop*, the loop that owns the
:class:`distributed.Client`. The coroutine methods must be awaited on that loop; the plain
methods (:meth:`DaskCore.submit`, :meth:`DaskCore.map`, :meth:`DaskCore.release`) are
thread-safe because the Dask client's ``submit``, ``map`` and ``Future.release`` are.
This module knows nothing of anyio, trio or handles. Its parts do one job each: opening
the client (:mod:`._connect`), confirming that keys are forgotten (:mod:`._forget`),
transfers that outlive their caller (:mod:`._transfer`), leases (:mod:`._leases`), queues,
events and variables (:mod:`._exchange`), actors (:mod:`._actors`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import reprlib
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, TypeVar

import distributed
from dask.base import tokenize
from dask.utils import apply, funcname
from distributed.client import FutureCancelledError
from distributed.utils import iscoroutinefunction

from ._actors import Actors
from ._connect import Connection, open_connection
from ._exchange import Exchange
from ._forget import FORGET_TIMEOUT, wait_forgotten
from ._leases import Leases
from ._logs import HeldSerializationErrors
from ._remote import run_coroutine
from ._transfer import Transfers

__all__ = [
    "CANCEL_CHUNK",
    "SCHEDULER_LOST",
    "DaskCore",
    "SubmitOptions",
    "logger",
]

logger = logging.getLogger("dask_anyio")

T = TypeVar("T")

#: Options passed through to :meth:`distributed.Client.submit` and ``map``.
SubmitOptions = Mapping[str, Any]

#: The most keys in one cancel message (see DaskCore.cancel).
CANCEL_CHUNK = 200
#: The reason Dask gives to futures cancelled because the scheduler connection was lost.
SCHEDULER_LOST = "scheduler-connection-lost"


_CLIENT_SUBMIT_PARAMETERS = frozenset(inspect.signature(distributed.Client.submit).parameters)
_CLIENT_MAP_PARAMETERS = frozenset(inspect.signature(distributed.Client.map).parameters)
#: Whether Dask's client drops a key's reference as :meth:`Core.release` expects.
_DEC_REF = hasattr(distributed.Client, "_dec_ref")


def _new_key(
    fn: Callable[..., Any],
    options: SubmitOptions,
    args: list[Any],
    kwargs: Mapping[str, Any],
    prefix: str | None = None,
) -> str:
    """The key Dask would give ``fn(*args, **kwargs)``: a token of the call if ``pure``."""
    token = tokenize(fn, kwargs, *args) if options.get("pure") else uuid.uuid4()
    return f"{prefix or funcname(fn)}-{token}"


def _raise_if_unpicklable(parts: Iterable[tuple[str, Any]], held: HeldSerializationErrors) -> None:
    """After ``submit`` failed: if one of ``parts`` cannot be pickled, raise a
    :exc:`TypeError` naming it (Dask's own message names only its internal graph).

    Our message replaces what Dask said: the ``held`` records of its failed pickling are
    dropped, and its chain of exceptions (the graph's, then the part's) stays in
    ``__context__``, not printed.
    """
    for what, obj in parts:
        try:
            distributed.protocol.pickle.dumps(obj)
        except Exception as cause:
            held.drop()
            raise TypeError(
                f"cannot send the {what} ({reprlib.repr(obj)}) to the cluster: it cannot be "
                f"pickled ({cause})"
            ) from None


class DaskCore:
    """One Dask client (and possibly one cluster) on the running asyncio loop."""

    def __init__(self, connection: Connection) -> None:
        self.client: distributed.Client = connection.client
        self._connection = connection
        #: Tasks waiting for futures (see watch); the items done this loop turn, by deliverer.
        self._watching: set[asyncio.Task[None]] = set()
        self._done: dict[Callable[[list[Any]], object], list[Any]] = {}
        self._transfers = Transfers(self.client)
        #: Leases (locks, semaphores); queues, events and variables; actors: the core's parts.
        self.leases: Leases = Leases(self.client)
        self.exchange: Exchange = Exchange(self.client)
        self.actors: Actors = Actors(self.client)

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    async def open(cls, **arguments: Any) -> DaskCore:
        """Connect as the executor's arguments ask (see :func:`open_connection`). Must run on
        the core loop."""
        return cls(await open_connection(**arguments))

    async def close(self) -> None:
        """Close the core's parts, then what this core owns: client, cluster."""
        connection = self._connection
        try:
            await self._close_parts()
        finally:
            if connection.owns_client:
                await self.client.close()
            if connection.owns_cluster and connection.cluster is not None:
                await connection.cluster.close()

    async def _close_parts(self) -> None:
        """Before the client closes: release the leases held, give back queue items."""
        await self.leases.close()
        await self.exchange.close()

    @property
    def scheduler_address(self) -> str | None:
        return None if (scheduler := self.client.scheduler) is None else str(scheduler.address)

    @property
    def dashboard_link(self) -> str | None:
        link = self.client.dashboard_link
        return link if isinstance(link, str) else None

    @property
    def connected(self) -> bool:
        """Whether the client is connected (not reconnecting after losing the scheduler)."""
        return bool(self.client.status == "running")

    @property
    def scheduler_identity(self) -> Mapping[str, Any]:
        """What the scheduler last told the client of itself (workers, threads, memory):
        a plain read, no request."""
        identity = getattr(self.client, "_scheduler_identity", None)
        return identity if isinstance(identity, Mapping) else {}

    # -- watching (on the core loop) -------------------------------------------------------

    def watch(
        self,
        future: distributed.Future[Any],
        item: Any,
        deliver: Callable[[list[Any]], object],
    ) -> None:
        """Once ``future`` is done (finished, failed or cancelled), call ``deliver`` with
        ``item``, in a list with the other items of that ``deliver`` done in the same loop
        turn: one call per batch, on this loop. Must run on the core loop.

        A task of this loop waits for the future, as Dask's own done-callbacks do, but no
        thread is involved: :meth:`distributed.Future.add_done_callback` hands each callback
        to a thread pool, a thread switch per completed task that costs the client more CPU
        than the rest of the task's round trip. A lost task (its worker died) counts as
        done, as for Dask's done-callbacks.
        """
        task = asyncio.ensure_future(self._when_done(future, item, deliver))
        self._watching.add(task)
        task.add_done_callback(self._watching.discard)

    async def _when_done(
        self, future: distributed.Future[Any], item: Any, deliver: Callable[[list[Any]], object]
    ) -> None:
        # What Dask's own done-callbacks wait on (distributed.client.done_callback): the
        # future's state, which the client's loop sets. (distributed.wait would do, but looks
        # up the default client, which may be another one, for every future.)
        state = future._state
        assert state is not None, "a future made by this client has a state"
        try:
            while future.status == "pending":
                await state.wait()
        finally:  # also if this task is cancelled: the front then looks, and watches again
            batch = self._done.get(deliver)
            if batch is None:
                batch = self._done[deliver] = []
                asyncio.get_running_loop().call_soon(self._hand_over, deliver)
            batch.append(item)

    def _hand_over(self, deliver: Callable[[list[Any]], object]) -> None:
        deliver(self._done.pop(deliver))

    # -- submitting (thread-safe) ----------------------------------------------------------

    def submit(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any],
        kwargs: Mapping[str, Any],
        options: SubmitOptions,
    ) -> distributed.Future[Any]:
        """Submit one task. Thread-safe: the client's ``submit`` sends through its loop.

        :raises TypeError: naming the function or argument that cannot be pickled.
        """
        args = list(args)
        with HeldSerializationErrors() as held:
            try:
                coroutine = iscoroutinefunction(fn)
                if _CLIENT_SUBMIT_PARAMETERS.isdisjoint(kwargs) and not coroutine:
                    return self.client.submit(fn, *args, **options, **kwargs)
                # Keywords of the function named like Client.submit's own (key=, pure=, ...):
                # pass them inside a dict, where Dask still replaces futures by their values.
                # A coroutine function runs so that cancelling its task cancels it there.
                key = options.get("key") or _new_key(fn, options, args, kwargs)
                wrapper = (run_coroutine, key) if coroutine else (apply,)
                return self.client.submit(
                    *wrapper, fn, args, dict(kwargs), **{**options, "key": key}
                )
            except Exception:
                _raise_if_unpicklable(
                    [("function", fn)]
                    + [(f"argument {i}", a) for i, a in enumerate(args)]
                    + [(f"keyword argument {k!r}", v) for k, v in kwargs.items()],
                    held,
                )
                raise

    def map(
        self,
        fn: Callable[..., Any],
        iterables: list[list[Any]],
        kwargs: Mapping[str, Any],
        options: SubmitOptions,
        start: int = 0,
    ) -> list[distributed.Future[Any]]:
        """Submit one task per item. Thread-safe, like :meth:`submit`. ``start`` is the
        position of the first item, for error messages."""
        futures: list[distributed.Future[Any]]
        with HeldSerializationErrors() as held:
            try:
                coroutine = iscoroutinefunction(fn)
                if _CLIENT_MAP_PARAMETERS.isdisjoint(kwargs) and not coroutine:
                    futures = self.client.map(fn, *iterables, **options, **kwargs)
                else:  # as in submit: the function's keywords travel in a dict
                    rows = [list(row) for row in zip(*iterables, strict=False)]
                    prefix = options.get("key")
                    keys = [_new_key(fn, options, row, kwargs, prefix) for row in rows]
                    n = len(rows)
                    wrapper = (run_coroutine, keys) if coroutine else (apply,)
                    futures = self.client.map(
                        *wrapper, [fn] * n, rows, [dict(kwargs)] * n, **{**options, "key": keys}
                    )
            except Exception:
                _raise_if_unpicklable(
                    [("function", fn)]
                    + [
                        (f"item {start + i} of iterable {j}", a)
                        for j, column in enumerate(iterables)
                        for i, a in enumerate(column)
                    ],
                    held,
                )
                raise
        return futures

    def compute(
        self, collections: list[Any], options: SubmitOptions
    ) -> list[distributed.Future[Any]]:
        """Submit the graph of Dask collections, as one graph (shared parts computed once);
        return the futures of their results. ``options`` are :meth:`distributed.Client.compute`'s.

        Thread-safe, and meant to be called from a worker thread: Dask optimises the graph
        in the calling thread, which may take long for a big graph.
        """
        return list(self.client.compute(collections, sync=False, traverse=False, **options))

    def persist(
        self, collections: list[Any], options: SubmitOptions
    ) -> tuple[list[Any], list[distributed.Future[Any]]]:
        """Submit the graph of Dask collections, as :meth:`compute` does; return the persisted
        collections and their futures.

        Thread-safe; call it from a worker thread, as :meth:`compute`.
        """
        persisted = list(self.client.persist(collections, **options))
        return persisted, list(distributed.futures_of(persisted))

    async def wait_fetches(self, keys: Collection[Any]) -> None:
        """Wait until the transfers of ``keys`` that their callers stopped waiting for have
        ended (for :data:`FORGET_TIMEOUT` at most): released under a transfer, a key makes
        Dask's client warn that it "couldn't gather" it, though we dropped it on purpose."""
        await self._transfers.wait(keys, FORGET_TIMEOUT)

    @staticmethod
    def release(future: distributed.Future[Any]) -> None:
        """Drop our reference to ``future``'s key, as Dask does (a loop turn later).
        Thread-safe; the scheduler is told with the messages of that turn."""
        future.release()

    @staticmethod
    def release_now(future: distributed.Future[Any]) -> None:
        """Drop our reference to ``future``'s key at once (core loop only): for a release
        that crossed from another thread, already a turn or more behind the calls made
        beside it there.

        Dask's client sends at most one batch of messages per 10 ms, and a release must go
        in the batch of the next call's submit: sent alone, it holds that submit back by up
        to 10 ms. From the caller's loop on the core's own thread, ``Future.release`` (a
        turn later) puts it there; after a crossing, a turn later is one too many, and
        trio's sequential round trip was 1.14-1.28x the raw client's (p95 20 against 12
        ms)."""
        client = future.client
        if not (_DEC_REF and hasattr(future, "_cleared") and hasattr(future, "_generation")):
            future.release()  # pragma: no cover - Dask changed: its own way, a turn later
        elif not future._cleared and client.generation == future._generation:
            future._cleared = True  # (what Future.release does, and _dec_ref a turn later)
            client._dec_ref(future.key)

    async def wait_released(self, keys: Collection[Any]) -> None:
        """Wait until the client has sent the release of ``keys`` (released with
        :meth:`release`): a submit made after this reaches the scheduler after the release.
        Dask sends both on one ordered stream, a loop turn or two after the key's reference
        count drops to zero."""
        for _ in range(100):  # bounded, in case Dask changes how it releases
            if self.client.refcount.keys().isdisjoint(keys):
                return
            await asyncio.sleep(0)
        logger.warning(
            "the Dask client did not release %d keys in time: a result stream may briefly "
            "hold more than max_in_flight tasks on the cluster",
            len(keys),
        )

    # -- coroutines (core loop only) -------------------------------------------------------

    async def result(self, future: distributed.Future[Any]) -> Any:
        """Fetch the value of a finished future. Cancelling this stops the waiting only."""
        return await self._transfers.fetch(future.result, frozenset([future.key]))

    async def call(
        self, fn: Callable[..., object], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Any:
        """``fn(client, *args, **kwargs)``, awaited if it returns an awaitable."""
        result = fn(self.client, *args, **kwargs)
        if inspect.isawaitable(result):
            return await result
        return result

    async def gather(self, futures: list[distributed.Future[Any]]) -> list[Any]:
        """Fetch the values of finished futures, in one request per worker."""
        if not futures:
            return []
        keys = frozenset(f.key for f in futures)
        gather = functools.partial(self.client.gather, futures)
        values: list[Any] = await self._transfers.fetch(gather, keys)
        return values

    async def scatter(self, data: list[Any] | dict[Any, Any], broadcast: bool) -> Any:
        """Send ``data`` to the workers; return futures in the same shape.

        The scheduler registers the data even if the caller stops waiting: a cancelled
        scatter finishes, then releases what it sent.
        """
        task = asyncio.ensure_future(self.client.scatter(data, broadcast=broadcast, hash=False))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                sent = await task
                futures = list(sent.values() if isinstance(sent, dict) else sent)
                for future in futures:
                    future.release()
                keys = {f.key for f in futures}
                await self.wait_forgotten(keys, arrived=keys)
            raise

    @staticmethod
    async def cancel_reason(future: distributed.Future[Any]) -> str:
        """Why Dask cancelled ``future`` (its ``FutureCancelledError``): one of the reasons
        given to :meth:`cancel`, or :data:`SCHEDULER_LOST`."""
        try:
            await future.result()
        except FutureCancelledError as error:
            return str(error.reason or error)
        except Exception as error:  # pragma: no cover - the future was cancelled, not failed
            return repr(error)
        return "unknown reason"  # pragma: no cover

    async def exception(self, future: distributed.Future[Any]) -> BaseException:
        """Return the remote exception of an erred future, carrying its remote traceback."""
        exc = await future.exception()
        tb = await future.traceback()
        assert isinstance(exc, BaseException)
        return exc.with_traceback(tb)

    async def cancel(self, futures: Collection[distributed.Future[Any]], reason: str) -> None:
        """Cancel ``futures`` on the cluster; return once the scheduler has forgotten them."""
        if not futures:
            return
        keys = {f.key for f in futures}
        arrived = {f.key for f in futures if f.status in ("finished", "error")}
        ordered = list(futures)
        # The scheduler handles one cancel of n keys in O(n**2) steps: send several small ones.
        for start in range(0, len(ordered), CANCEL_CHUNK):
            chunk = ordered[start : start + CANCEL_CHUNK]
            await self.client.cancel(chunk, force=True, reason=reason, msg=reason)
        await self.wait_forgotten(keys, arrived=arrived)

    async def wait_forgotten(
        self,
        keys: Collection[Any],
        *,
        arrived: Collection[Any] = (),
        give_up_after: float = FORGET_TIMEOUT,
    ) -> None:
        """Wait until the scheduler has forgotten ``keys`` (see :func:`wait_forgotten`)."""
        await wait_forgotten(self.client, keys, arrived=arrived, give_up_after=give_up_after)
