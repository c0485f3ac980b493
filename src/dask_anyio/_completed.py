"""Iterating over tasks as they finish: :class:`AsCompleted`.

It runs on the caller's event loop and learns that a task is done through the executor's
:class:`~dask_anyio._watch.Watcher`, so it inherits its one thread crossing.
"""

from __future__ import annotations

import functools
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Generic, Self, TypeVar

import anyio.lowlevel

from ._errors import TaskCancelled
from ._handle import TaskHandle, check_owner
from ._parts import Parts
from ._signal import Signal

__all__ = ["AsCompleted"]

Y_co = TypeVar("Y_co", covariant=True)


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
        parts: Parts,
        handles: Iterable[TaskHandle[Any]],
        *,
        with_results: bool,
        raise_errors: bool,
    ) -> None:
        self._parts = parts
        self._with_results = with_results
        self._raise_errors = raise_errors
        self._ready: deque[TaskHandle[Any]] = deque()
        self._waiting: dict[int, tuple[TaskHandle[Any], Callable[[], None]]] = {}
        self._tokens = itertools.count()
        self._wakeup = Signal()
        self.update(handles)

    def add(self, handle: TaskHandle[Any]) -> None:
        """Add a handle to yield once it is done. A plain call."""
        check_owner(handle, self._parts.table)
        self._parts.gate.check_loop()
        token = next(self._tokens)
        callback = functools.partial(self._on_done, token)
        self._waiting[token] = (handle, callback)
        self._parts.watcher.watch(handle, callback)

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
        self._wakeup.set()  # wake every waiting iteration; the next waits anew

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Y_co:
        self._parts.gate.check_loop()
        await anyio.lowlevel.checkpoint()
        while not self._ready:
            if not self._waiting:
                raise StopAsyncIteration
            await self._wakeup.wait()
        handle = self._ready.popleft()
        if not self._with_results:
            item: Any = handle
            return item  # type: ignore[no-any-return]
        try:
            value, failure = await self._parts.fetcher.retrieve(handle)
        except Exception as error:  # not the task's (the executor closed, say)
            value, failure = None, error
        except BaseException:  # cancelled: yield this one next time
            self._ready.appendleft(handle)
            raise
        if failure is None:
            return (handle, value)  # type: ignore[return-value]
        # A cancellation is an outcome, as Dask's as_completed yields its CancelledError.
        if self._raise_errors and not isinstance(failure, TaskCancelled):
            raise failure
        return (handle, failure)  # type: ignore[return-value]
