"""Iterating over tasks as they finish: :class:`AsCompleted` and :class:`ResultStream`.

Both run on the caller's event loop and learn that a task is done through
:meth:`DaskExecutor._watch`, so they inherit its one thread crossing.
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
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

import anyio
import anyio.lowlevel

from ._handle import TaskCancelled, TaskHandle, TaskStatus

if TYPE_CHECKING:
    from ._executor import DaskExecutor

__all__ = ["AsCompleted", "ResultStream"]

T = TypeVar("T")
Y_co = TypeVar("Y_co", covariant=True)

_REASON_STREAM = "the result stream was closed"
#: The most values fetched in one request.
_FETCH_BATCH = 1000


class AsCompleted(Generic[Y_co]):
    """An async iterator over tasks in the order they finish.

    Returned by :meth:`DaskExecutor.as_completed`; not created directly. Every handle added is
    yielded exactly once (twice if added twice), whether it finished, failed or was
    cancelled; the iteration ends when every handle added so far has been yielded. Handles
    may be added while iterating, with :meth:`add` or :meth:`update`.

    Iterating is a checkpoint. Cancelling it loses nothing: a handle being yielded when
    the caller was cancelled is yielded by the next iteration.
    """

    def __init__(
        self,
        executor: DaskExecutor,
        handles: Iterable[TaskHandle[Any]],
        *,
        with_results: bool,
        raise_errors: bool,
    ) -> None:
        self._executor = executor
        self._with_results = with_results
        self._raise_errors = raise_errors
        self._ready: deque[TaskHandle[Any]] = deque()
        self._waiting: dict[int, tuple[TaskHandle[Any], Callable[[], None]]] = {}
        self._tokens = itertools.count()
        self._wakeup: anyio.Event | None = None
        self.update(handles)

    def add(self, handle: TaskHandle[Any]) -> None:
        """Add a handle to yield once it is done. A plain call."""
        self._executor._check_handle(handle)
        self._executor._check_loop()
        token = next(self._tokens)
        callback = functools.partial(self._on_done, token)
        self._waiting[token] = (handle, callback)
        self._executor._watch(handle, callback)

    def update(self, handles: Iterable[TaskHandle[Any]]) -> None:
        """Add several handles. A plain call."""
        for handle in handles:
            self.add(handle)

    def __len__(self) -> int:
        """How many handles are still to be yielded."""
        return len(self._ready) + len(self._waiting)

    def __repr__(self) -> str:
        return f"<AsCompleted {len(self._ready)} done, {len(self._waiting)} pending>"

    def _on_done(self, token: int) -> None:
        handle, _ = self._waiting.pop(token)
        self._ready.append(handle)
        if self._wakeup is not None:  # wake every waiting iteration; the next waits anew
            self._wakeup.set()
            self._wakeup = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Y_co:
        self._executor._check_loop()
        await anyio.lowlevel.checkpoint()
        while not self._ready:
            if not self._waiting:
                raise StopAsyncIteration
            if self._wakeup is None:
                self._wakeup = anyio.Event()
            await self._wakeup.wait()
        handle = self._ready.popleft()
        if not self._with_results:
            item: Any = handle
            return item  # type: ignore[no-any-return]
        try:
            value: Any = await self._executor.retrieve(handle)
        except TaskCancelled as cancelled:  # an outcome, as Dask yields its CancelledError
            return (handle, cancelled)  # type: ignore[return-value]
        except Exception as failure:
            if self._raise_errors:
                raise
            return (handle, failure)  # type: ignore[return-value]
        except BaseException:  # cancelled: yield this one next time
            self._ready.appendleft(handle)
            raise
        return (handle, value)  # type: ignore[return-value]


class _Stream:
    """The state behind a :class:`ResultStream`, shared with its feeder task.

    Separate from the object users hold, so that dropping that object (leaving an
    ``async for`` loop early) can close the stream even while the feeder runs.
    """

    def __init__(
        self,
        executor: DaskExecutor,
        submit: Callable[[list[Any], int], list[TaskHandle[Any]]],
        source: Iterable[Any] | AsyncIterable[Any],
        max_in_flight: int,
        ordered: bool,
    ) -> None:
        self.executor = executor
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
        self.space: anyio.Event = anyio.Event()
        self.wakeup: anyio.Event | None = None

    def wake(self) -> None:
        """Wake the reader waiting in :meth:`wait_next`, if any."""
        if self.wakeup is not None:
            self.wakeup.set()

    def on_done(self, handle: TaskHandle[Any]) -> None:
        """On the front loop: ``handle`` is done; queue it (if unordered) and wake the reader."""
        if not self.closed:
            if not self.ordered:
                self.ready.append(handle)
            self.wake()

    def start(self) -> None:
        """Start the feeder task in the executor's task group (on the first iteration)."""
        self.started = True
        self.executor._streams.add(self)
        self.executor._tg.start_soon(self.feed)

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
            self.space = anyio.Event()
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
            self.executor._watch(handle, functools.partial(self.on_done, handle))
        self.wake()

    async def release_consumed(self) -> None:
        """Release yielded tasks; the scheduler forgets them before the next submission."""
        consumed, self.consumed = self.consumed, []
        executor = self.executor
        for handle in consumed:  # released here and now, whatever happens to this task
            executor._forget_handle(handle)
        keys = [h._future.key for h in consumed]
        executor._confirm_released(*keys)
        await executor._runner.run(executor._core.wait_released, keys)
        self.free += len(consumed)

    def queue(self) -> Iterator[TaskHandle[Any]]:
        """The handles in the order they are to be yielded, as far as known."""
        return iter(self.in_flight.values()) if self.ordered else iter(self.ready)

    def take(self, handle: TaskHandle[Any]) -> None:
        """``handle`` was yielded: free its slot."""
        del self.in_flight[handle.key]
        if not self.ordered:
            self.ready.popleft()
        handle._observed = True
        self.consumed.append(handle)
        self.space.set()

    async def next(self) -> Any:
        """The next result, for :meth:`ResultStream.__anext__`; closes the stream at the end
        or on an error."""
        self.executor._check_loop()
        if self.closed:
            raise StopAsyncIteration
        if self.reading:
            raise anyio.BusyResourceError("iterating")
        if not self.started:
            self.executor._check_open()
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
            self.wakeup = anyio.Event()
            await self.wakeup.wait()
        batch = list(
            itertools.islice(
                itertools.takewhile(lambda h: h.status is TaskStatus.FINISHED, self.queue()),
                _FETCH_BATCH,
            )
        )
        if not batch:  # the first one failed or was cancelled: raise that
            value = await self.executor.retrieve(first)
            if not self.closed:
                self.fetched.append((first, value))
            return
        executor = self.executor
        values = await executor._runner.run(executor._core.gather, [h._future for h in batch])
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
            executor = self.executor
            executor._streams.discard(self)
            leftover = [*self.consumed, *self.in_flight.values()]
            self.consumed.clear()
            self.in_flight.clear()
            self.ready.clear()
            self.fetched.clear()
            for handle in leftover:
                handle._observed = True  # the stream stopped caring about them
            try:
                await executor._forget_handles(leftover, _REASON_STREAM)
            finally:
                self.close_done.set()

    def close_soon(self) -> None:
        """On the front loop: close in the background (the user dropped the stream)."""
        if not self.closed and self.started and self.executor._accepts_background():
            self.executor._tg.start_soon(self.aclose)


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

    def __init__(self, stream: _Stream) -> None:
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
            stream.executor._runner.front.run_sync_soon(stream.close_soon)
