"""Streaming results with backpressure: :class:`ResultStream`, the stream of ``imap()``.

It runs on the caller's event loop and learns that a task is done through the executor's
:class:`~dask_anyio._watch.Watcher`, so it inherits its one thread crossing. It works with
the executor's parts (its gate, task table, watcher and fetcher), never with the executor.
"""

from __future__ import annotations

import functools
import itertools
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
)
from contextlib import aclosing
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel

from ._errors import CancelReason
from ._handle import TaskHandle, TaskStatus, state_of
from ._parts import Parts
from ._signal import Signal

__all__ = ["ResultStream", "StreamState"]

T = TypeVar("T")
Y_co = TypeVar("Y_co", covariant=True)

#: The most values fetched in one request.
_FETCH_BATCH = 1000


class StreamState:
    """The state behind a :class:`ResultStream`, shared with its feeder task.

    Separate from the object users hold, so that dropping that object (leaving an
    ``async for`` loop early) can close the stream even while the feeder runs.
    """

    def __init__(
        self,
        parts: Parts,
        submit: Callable[[list[Any], int], list[TaskHandle[Any]]],
        source: Iterable[Any] | AsyncIterable[Any],
        max_in_flight: int,
        ordered: bool,
    ) -> None:
        self.parts = parts
        self.submit = submit
        self.source = source
        #: Slots free: tasks that may be submitted now, the tasks that had them having been
        #: yielded and released.
        self.free: int = max_in_flight
        #: How many slots must be free before a sync source is read again.
        self.refill: int = max(1, max_in_flight // 8)
        self.ordered = ordered
        #: Submitted, not yet yielded, in submission order (a dict: removal in O(1)).
        self.in_flight: dict[str, TaskHandle[Any]] = {}
        #: Done, in completion order (used when not ordered).
        self.ready: deque[TaskHandle[Any]] = deque()
        #: Values fetched together, not yet yielded: the first handles of the queue.
        self.fetched: deque[tuple[TaskHandle[Any], Any]] = deque()
        #: Yielded; to release before the next submission.
        self.consumed: list[TaskHandle[Any]] = []
        self.source_error: Exception | None = None
        self.started: bool = False
        self.reading: bool = False
        #: How many items were submitted.
        self.position: int = 0
        self.fed_all: bool = False
        self.closed: bool = False
        self.feeder_done: anyio.Event = anyio.Event()
        self.close_done: anyio.Event = anyio.Event()
        self.feeder_scope: anyio.CancelScope = anyio.CancelScope()
        #: Set when a slot frees up, and when something happens that the reader awaits.
        self.space: Signal = Signal()
        self.news: Signal = Signal()

    def wake(self) -> None:
        """Wake the reader waiting in :meth:`fetch`, if any."""
        self.news.set()

    def on_done(self, handle: TaskHandle[Any]) -> None:
        """On the front loop: ``handle`` is done; queue it (if unordered) and wake the reader."""
        if not self.closed:
            if not self.ordered:
                self.ready.append(handle)
            self.wake()

    def start(self) -> None:
        """Start the feeder task in the executor's task group (on the first iteration)."""
        self.started = True
        self.parts.gate.closers.add(self.aclose)
        self.parts.tg.start_soon(self.feed)

    async def feed(self) -> None:
        """Pull items from the source and submit them, at most ``max_in_flight`` at a time."""
        try:
            with self.feeder_scope:
                if isinstance(self.source, AsyncIterable):
                    async with aclosing(_async_items(self.source)) as items:
                        await self.feed_async(items)
                else:
                    await self.feed_sync(iter(self.source))
        except Exception as error:  # from the source, or an item that cannot be submitted
            self.source_error = error
        finally:
            self.fed_all = True
            self.feeder_done.set()
            self.wake()

    async def feed_async(self, items: AsyncIterator[Any]) -> None:
        """Submit each item as it comes (an async source may pause between items)."""
        while True:
            await self.wait_for_space(1)
            try:
                item = await anext(items)
            except StopAsyncIteration:
                return
            self.submit_batch([item])

    async def feed_sync(self, items: Iterator[Any]) -> None:
        """Submit the items in batches, once a good share of the slots is free: one graph
        message for many tasks costs the scheduler far less than one message each."""
        while True:
            await self.wait_for_space(self.refill)
            batch, error, exhausted = _take(items, self.free)
            if batch:
                self.submit_batch(batch)
            if error is not None:
                raise error
            if exhausted:
                return

    async def wait_for_space(self, slots: int) -> None:
        """Wait until ``slots`` slots are free: their tasks yielded, and released."""
        await anyio.lowlevel.checkpoint()
        while True:
            if self.consumed and self.free + len(self.consumed) >= slots:
                await self.release_consumed()
            if self.free >= slots:
                return
            await self.space.wait()

    def submit_batch(self, items: list[Any]) -> None:
        """Submit ``items``; if one cannot be submitted, submit those before it, then raise."""
        if self.closed:
            return
        try:
            handles = self.submit(items, self.position)
        except Exception:
            if len(items) == 1:
                raise
            for item in items:  # find the culprit, keeping the items before it
                self.submit_batch([item])
            return
        self.position += len(items)
        for handle in handles:
            self.free -= 1
            self.in_flight[handle.key] = handle
            self.parts.watcher.watch(handle, functools.partial(self.on_done, handle))
        self.wake()

    async def release_consumed(self) -> None:
        """Release yielded tasks; the scheduler forgets them before the next submission."""
        consumed, self.consumed = self.consumed, []
        await self.parts.table.release_and_send(consumed)
        self.free += len(consumed)

    def queue(self) -> Iterator[TaskHandle[Any]]:
        """The handles in the order they are to be yielded, as far as known."""
        return iter(self.in_flight.values()) if self.ordered else iter(self.ready)

    def take(self, handle: TaskHandle[Any]) -> None:
        """``handle`` was yielded: free its slot."""
        del self.in_flight[handle.key]
        if not self.ordered:
            self.ready.popleft()
        state_of(handle).observed = True
        self.consumed.append(handle)
        self.space.set()

    async def next(self) -> Any:
        """The next result, for :meth:`ResultStream.__anext__`; closes the stream at the end
        or on an error."""
        self.parts.gate.check_loop()
        if self.closed:
            raise StopAsyncIteration
        if self.reading:
            raise anyio.BusyResourceError("iterating")
        if not self.started:
            self.parts.gate.check_open()
            self.start()
        self.reading = True
        try:
            try:
                await anyio.lowlevel.checkpoint()
                if not self.fetched:
                    await self.fetch()
            except BaseException as failure:  # a failed task, or the caller cancelled: stop
                closed_elsewhere = self.closed
                with anyio.CancelScope(shield=True):
                    await self.aclose()
                if closed_elsewhere and isinstance(failure, Exception):
                    raise _closed_elsewhere() from failure
                raise
        finally:
            self.reading = False
        if self.closed:  # by another task, or by the executor's exit, while we waited
            raise _closed_elsewhere()
        if not self.fetched:  # the source is exhausted and every result yielded
            error = self.source_error
            await self.aclose()
            if error is not None:
                raise error
            raise StopAsyncIteration
        handle, value = self.fetched.popleft()
        self.take(handle)
        return value

    async def fetch(self) -> None:
        """Wait for the next task to be done, and fetch its value with those of the tasks
        done after it (in one request per worker); raise its failure if it failed."""
        while (first := next(self.queue(), None)) is None or not first.done():
            if self.closed or (self.fed_all and not self.in_flight):
                return
            await self.news.wait()
        batch = list(
            itertools.islice(
                itertools.takewhile(lambda h: h.status is TaskStatus.FINISHED, self.queue()),
                _FETCH_BATCH,
            )
        )
        if not batch:  # the first one failed or was cancelled: raise that
            value, failure = await self.parts.fetcher.retrieve(first)
            if failure is not None:
                raise failure
            if not self.closed:
                self.fetched.append((first, value))
            return
        values = await self.parts.fetcher.fetch(batch)
        if not self.closed:
            self.fetched.extend(zip(batch, values, strict=True))

    async def aclose(self) -> None:
        """Stop submitting, cancel what is in flight, release it all. Idempotent."""
        if self.closed:
            with anyio.CancelScope(shield=True):
                await self.close_done.wait()
            return
        self.closed = True
        self.feeder_scope.cancel()
        self.wake()
        with anyio.CancelScope(shield=True):
            if self.started:
                await self.feeder_done.wait()
            self.parts.gate.closers.discard(self.aclose)
            leftover = [*self.consumed, *self.in_flight.values()]
            self.consumed.clear()
            self.in_flight.clear()
            self.ready.clear()
            self.fetched.clear()
            for handle in leftover:
                state_of(handle).observed = True  # the stream stopped caring about them
            try:
                await self.parts.table.abandon(leftover, CancelReason.STREAM)
            finally:
                self.close_done.set()

    def close_soon(self) -> None:
        """On the front loop: close in the background (the user dropped the stream)."""
        if not self.closed and self.started and self.parts.gate.accepts_background:
            self.parts.tg.start_soon(self.aclose)


def _closed_elsewhere() -> anyio.ClosedResourceError:
    return anyio.ClosedResourceError(
        "the result stream was closed (by another task or by the executor's exit) while "
        "this iteration waited"
    )


async def _async_items(source: AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
    """The items of ``source``, in a generator the stream can close (``source`` itself is the
    caller's to close)."""
    async for item in source:
        yield item


def _take(items: Iterator[Any], n: int) -> tuple[list[Any], Exception | None, bool]:
    """Up to ``n`` items; the exception the iterator raised, if any; whether it ended."""
    batch: list[Any] = []
    try:
        for _ in range(n):
            batch.append(next(items))
    except StopIteration:
        return batch, None, True
    except Exception as error:
        return batch, error, True
    return batch, None, False


class ResultStream(Generic[T]):
    """An async iterator over the results of :meth:`DaskExecutor.imap`.

    Use it as ``async with ex.imap(...) as results: async for value in results: ...``:
    leaving the block (early, by an error or by cancellation) stops submitting, cancels the
    tasks in flight and releases them. Iterated directly, the stream closes itself when it is
    exhausted, when an iteration raises, when the object is dropped (leaving ``async for``
    early) and at the latest when the executor exits. :meth:`aclose` closes it explicitly.

    Each iteration is a checkpoint. A failed task raises its exception from the iteration and
    closes the stream; so does an exception from the source iterable, after the results of
    the items before it. One task at a time may iterate a stream (another one gets
    :exc:`anyio.BusyResourceError`); an iteration that waits while the stream is closed
    elsewhere (by :meth:`aclose` in another task, or by the executor's exit) raises
    :exc:`anyio.ClosedResourceError`. Iterating a closed stream ends at once.
    """

    def __init__(self, stream: StreamState) -> None:
        self._stream = stream

    def __repr__(self) -> str:
        stream = self._stream
        state = "closed" if stream.closed else "open" if stream.started else "not started"
        return (
            f"<ResultStream {state}: {stream.position} submitted, "
            f"{len(stream.in_flight)} in flight>"
        )

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        value: T = await self._stream.next()
        return value

    async def aclose(self) -> None:
        """Stop the stream: cancel and release what is in flight. Checkpoint; idempotent."""
        await anyio.lowlevel.checkpoint()
        await self._stream.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self._stream.aclose()

    def __del__(self) -> None:
        stream = self._stream
        if not stream.closed and stream.started:
            # Maybe on another thread (the garbage collector's): cross over, as always.
            stream.parts.front.run_sync_soon(stream.close_soon)
