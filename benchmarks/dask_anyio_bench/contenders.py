"""The contenders of the benchmarks: one way each of driving Dask from an async program.

Every contender offers the same small set of operations (:class:`Session`), in its own idiom,
so that the workloads (:mod:`dask_anyio_bench.workloads`) are written once:

* ``raw-asyncio``: ``distributed.Client(asynchronous=True)`` under asyncio, the baseline;
* ``dask-anyio-asyncio`` and ``dask-anyio-trio``: :class:`~dask_anyio.DaskExecutor`;
* ``trio-asyncio``: the raw asynchronous client on a trio-asyncio loop, from trio (today's
  way from trio);
* ``sync-to-thread``: the synchronous client, every call through ``anyio.to_thread``, from
  trio (the naive way).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import anyio
import anyio.to_thread
import distributed

from .tasks import trip

#: Contender name -> the backend its process runs on.
CONTENDERS = {
    "raw-asyncio": "asyncio",
    "dask-anyio-asyncio": "asyncio",
    "dask-anyio-trio": "trio",
    "trio-asyncio": "trio",
    "sync-to-thread": "trio",
}
BASELINE = "raw-asyncio"


class Session:
    """The operations the workloads use. ``unit()`` brackets one timed unit of work: what
    a contender must do to let go of the unit's tasks happens on leaving it, untimed."""

    #: Whether cancelling the caller of ``cancellable_run`` cancels the remote task.
    cancels_remote_work = True
    #: Whether that also cancels a coroutine function's coroutine running on the worker
    #: (Dask runs it in the worker's own task, which nothing cancels).
    stops_coroutines = False
    #: How many calls can be in flight at once.
    max_in_flight: float = math.inf

    def unit(self) -> contextlib.AbstractAsyncContextManager[Session]:
        return _nothing(self)

    async def map(self, fn: Callable[..., Any], items: Iterable[Any], **options: Any) -> list[Any]:
        raise NotImplementedError

    async def submit(self, fn: Callable[..., Any], *args: Any, **options: Any) -> Any:
        raise NotImplementedError

    async def gather(self, futures: list[Any]) -> list[Any]:
        raise NotImplementedError

    async def wait(self, future: Any) -> None:
        raise NotImplementedError

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Submit, wait for the value, let go of the key."""
        raise NotImplementedError

    async def cancellable_run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """As run(); if the caller is cancelled, cancel the remote task (if the idiom can)."""
        raise NotImplementedError

    async def cancel(self, future: Any) -> None:
        raise NotImplementedError

    async def let_go(self, futures: list[Any]) -> None:
        """Let go of pending tasks (the list is emptied): a raw client releases them as
        their futures are dropped."""
        futures.clear()


@contextlib.asynccontextmanager
async def _nothing(session: Session) -> AsyncIterator[Session]:
    yield session


# -- the raw asynchronous client ------------------------------------------------------------


class RawSession(Session):
    """The raw client, on the asyncio loop it runs on (asyncio, or trio-asyncio's)."""

    def __init__(self, client: distributed.Client) -> None:
        self.client = client

    async def map(self, fn: Callable[..., Any], items: Iterable[Any], **options: Any) -> list[Any]:
        futures: list[Any] = self.client.map(fn, list(items), pure=False, **options)
        return futures

    async def submit(self, fn: Callable[..., Any], *args: Any, **options: Any) -> Any:
        return self.client.submit(fn, *args, pure=False, **options)

    async def gather(self, futures: list[Any]) -> list[Any]:
        values: list[Any] = await self.client.gather(futures)
        return values

    async def wait(self, future: Any) -> None:
        await distributed.wait([future])

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.client.submit(fn, *args, pure=False)

    async def cancellable_run(self, fn: Callable[..., Any], *args: Any) -> Any:
        # The asyncio idiom: cancel the future when the caller is cancelled.
        future = self.client.submit(fn, *args, pure=False)
        try:
            return await future
        except asyncio.CancelledError:
            await self.client.cancel([future])
            raise

    async def cancel(self, future: Any) -> None:
        await self.client.cancel([future])


@contextlib.asynccontextmanager
async def raw_asyncio(address: str) -> AsyncIterator[Session]:
    async with distributed.Client(address, asynchronous=True) as client:
        yield RawSession(client)


# -- dask-anyio ------------------------------------------------------------------------------


class ExecutorSession(Session):
    """dask-anyio: every unit has an executor of its own, for a handle keeps its key until
    its executor exits (that exit, which confirms the keys were forgotten, is untimed)."""

    stops_coroutines = True

    def __init__(self, address: str, executor: Any = None) -> None:
        self.address = address
        self.ex = executor

    @contextlib.asynccontextmanager
    async def _unit(self) -> AsyncIterator[Session]:
        from dask_anyio import DaskExecutor

        async with DaskExecutor(self.address) as ex:
            # A new executor has a new client: its first call opens connections (untimed).
            await ex.run(trip, -1)
            yield ExecutorSession(self.address, ex)

    def unit(self) -> contextlib.AbstractAsyncContextManager[Session]:
        return self._unit()

    async def map(self, fn: Callable[..., Any], items: Iterable[Any], **options: Any) -> list[Any]:
        handles: list[Any] = self.ex.map(fn, items, **options)
        return handles

    async def submit(self, fn: Callable[..., Any], *args: Any, **options: Any) -> Any:
        return self.ex.submit(fn, *args, **options)

    async def gather(self, futures: list[Any]) -> list[Any]:
        values: list[Any] = await self.ex.gather(futures)
        return values

    async def wait(self, future: Any) -> None:
        await future

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.ex.run(fn, *args)

    async def cancellable_run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.ex.run(fn, *args)

    async def cancel(self, future: Any) -> None:
        future.cancel()

    async def let_go(self, futures: list[Any]) -> None:
        # Handles belong to the executor, whose exit waits for pending ones: cancel them
        # (one burst, sent as one request).
        for handle in futures:
            handle.cancel()
        futures.clear()


@contextlib.asynccontextmanager
async def dask_anyio(address: str) -> AsyncIterator[Session]:
    yield ExecutorSession(address)


# -- the raw client on trio-asyncio ----------------------------------------------------------


class TrioAsyncioSession(Session):
    """Each operation of :class:`RawSession`, run on the trio-asyncio loop."""

    def __init__(self, raw: RawSession) -> None:
        self.raw = raw

    async def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        import trio_asyncio

        return await trio_asyncio.aio_as_trio(method)(*args, **kwargs)

    async def map(self, fn: Callable[..., Any], items: Iterable[Any], **options: Any) -> list[Any]:
        futures: list[Any] = await self._call(self.raw.map, fn, items, **options)
        return futures

    async def submit(self, fn: Callable[..., Any], *args: Any, **options: Any) -> Any:
        return await self._call(self.raw.submit, fn, *args, **options)

    async def gather(self, futures: list[Any]) -> list[Any]:
        values: list[Any] = await self._call(self.raw.gather, futures)
        return values

    async def wait(self, future: Any) -> None:
        await self._call(self.raw.wait, future)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._call(self.raw.run, fn, *args)

    async def cancellable_run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._call(self.raw.cancellable_run, fn, *args)

    async def cancel(self, future: Any) -> None:
        await self._call(self.raw.cancel, future)


@contextlib.asynccontextmanager
async def trio_asyncio_raw(address: str) -> AsyncIterator[Session]:
    import trio_asyncio

    async with trio_asyncio.open_loop():
        # Not `async with Client(...)`: its __aexit__ resets a context variable that its
        # __aenter__ set, and trio-asyncio runs the two in different contexts.
        client = await trio_asyncio.aio_as_trio(_connect)(address)
        try:
            yield TrioAsyncioSession(RawSession(client))
        finally:
            await trio_asyncio.aio_as_trio(client.close)()


async def _connect(address: str) -> distributed.Client:
    client: distributed.Client = await distributed.Client(address, asynchronous=True)
    return client


# -- the synchronous client through anyio.to_thread -------------------------------------------


class ThreadSession(Session):
    """The synchronous client, every call in a worker thread. Cancelling a caller abandons
    its thread: the remote task is not cancelled (the naive way cannot), and the thread
    keeps its capacity-limiter token until the task ends: at most 40 calls (anyio's default
    limiter) can be in flight at once."""

    cancels_remote_work = False

    @property
    def max_in_flight(self) -> float:  # type: ignore[override]
        return float(anyio.to_thread.current_default_thread_limiter().total_tokens)

    def __init__(self, client: distributed.Client) -> None:
        self.client = client
        self.own_limiter = anyio.CapacityLimiter(1)

    async def map(self, fn: Callable[..., Any], items: Iterable[Any], **options: Any) -> list[Any]:
        listed = list(items)
        futures: list[Any] = await anyio.to_thread.run_sync(
            lambda: self.client.map(fn, listed, pure=False, **options)
        )
        return futures

    async def submit(self, fn: Callable[..., Any], *args: Any, **options: Any) -> Any:
        return await anyio.to_thread.run_sync(
            lambda: self.client.submit(fn, *args, pure=False, **options)
        )

    async def gather(self, futures: list[Any]) -> list[Any]:
        values: list[Any] = await anyio.to_thread.run_sync(self.client.gather, futures)
        return values

    async def wait(self, future: Any) -> None:
        # (exception() waits without fetching the value, as distributed.wait does)
        await anyio.to_thread.run_sync(future.exception)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(
            lambda: self.client.submit(fn, *args, pure=False).result()
        )

    async def cancellable_run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(
            lambda: self.client.submit(fn, *args, pure=False).result(), abandon_on_cancel=True
        )

    async def cancel(self, future: Any) -> None:
        # Not through the default limiter: an abandoned thread keeps its token until the
        # call it runs returns, so cancelled calls can take every token there is.
        await anyio.to_thread.run_sync(future.cancel, limiter=self.own_limiter)


@contextlib.asynccontextmanager
async def sync_to_thread(address: str) -> AsyncIterator[Session]:
    client = await anyio.to_thread.run_sync(
        lambda: distributed.Client(address, set_as_default=False)
    )
    try:
        yield ThreadSession(client)
    finally:
        await anyio.to_thread.run_sync(client.close)


OPEN: dict[str, Callable[[str], contextlib.AbstractAsyncContextManager[Session]]] = {
    "raw-asyncio": raw_asyncio,
    "dask-anyio-asyncio": dask_anyio,
    "dask-anyio-trio": dask_anyio,
    "trio-asyncio": trio_asyncio_raw,
    "sync-to-thread": sync_to_thread,
}
