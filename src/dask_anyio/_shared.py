"""anyio front end: the scheduler's queues, events and variables, cancel-safe:
:class:`Queue`, :class:`Event` and :class:`Variable`, made by :meth:`DaskExecutor.queue`,
:meth:`DaskExecutor.event` and :meth:`DaskExecutor.variable`.

A request that takes something (an item, a variable's value, a place in a full queue) is
shielded from cancellation: it waits on the scheduler for ``_exchange.PROMPT`` at most and
ends with what it got, which the caller receives even if it was cancelled meanwhile; the
cancellation is raised between requests. So a cancelled ``get`` either returns its item or
leaves it in the queue, and a caller notices a cancellation within ``PROMPT``. An event's
wait takes nothing, and stops at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVarTuple

import anyio
import anyio.lowlevel
import distributed

from ._exchange import NOTHING
from ._handle import TaskHandle, check_owner, map_handles

if TYPE_CHECKING:
    from ._scope import ExecutorScope

__all__ = ["Event", "Queue", "Variable"]

Ts = TypeVarTuple("Ts")


def _to_dask(scope: ExecutorScope, value: Any, what: str) -> Any:
    """``value`` as Dask's queues and variables take it: a handle of this executor as its
    future (its data stays on the cluster), anything else as it is.

    :raises ValueError: for a handle of another executor.
    :raises TypeError: for handles inside a value.
    """
    if isinstance(value, TaskHandle):
        check_owner(value, scope.table)
        return scope.table.future_of(value)
    found: list[TaskHandle[Any]] = []
    map_handles(value, found.append)
    if found:
        raise TypeError(
            f"{what} takes a handle, or a value with no handle in it, not {value!r}: "
            f"{what} each handle on its own"
        )
    return value


def _from_dask(scope: ExecutorScope, value: Any) -> Any:
    """A value from Dask's queue or variable, a future adopted as a handle of this executor."""
    if isinstance(value, distributed.Future):
        return scope.table.adopt(value)
    return value


async def _until_done(
    scope: ExecutorScope, request: Callable[[*Ts], Awaitable[Any]], *args: *Ts
) -> Any:
    """Send ``request(*args)`` until it gets something, each time shielded (see the module's
    docstring): a checkpoint between requests, not in them."""
    await anyio.lowlevel.checkpoint_if_cancelled()
    while True:
        scope.gate.check_open()
        scope.check_connected()
        with scope.gate.call_under_way(), anyio.CancelScope(shield=True):
            try:
                got = await scope.runner.run(request, *args)
            except OSError:  # (Dask's CommClosedError among them)
                scope.check_connected()  # SchedulerLost, if that is what it was
                raise
            if got is not NOTHING:
                return _from_dask(scope, got)
        await anyio.lowlevel.checkpoint_if_cancelled()


class Queue:
    """A queue of the cluster's scheduler, shared by every client that uses its name.

    Made by :meth:`DaskExecutor.queue`; not created directly. Items are handles of this
    executor (the queue then holds the task's key, and its data stays on the cluster) or
    small values (they travel through the scheduler, as Dask's ``Queue`` items do).

    :meth:`get` and :meth:`put` are checkpoints and cancel-safe: a cancelled :meth:`get`
    either returned its item or left it in the queue, in its place; a cancelled :meth:`put`
    either put its item or did not. Either notices a cancellation within 0.2 s. The queue
    lives on the scheduler as long as the scheduler does (as Dask's), its items with it.
    """

    def __init__(self, scope: ExecutorScope, name: str, maxsize: int) -> None:
        self._scope = scope
        #: The queue's name on the scheduler.
        self.name: str = name
        #: The most items it holds (0: no limit) if this executor made it on the scheduler.
        self.maxsize: int = maxsize

    async def put(self, item: Any) -> None:
        """Put ``item`` at the end of the queue; wait while it is full. Checkpoint.

        :raises ValueError: for a handle of another executor.
        :raises TypeError: for a value with handles inside.
        """
        value = _to_dask(self._scope, item, "put()")
        await _until_done(
            self._scope, self._scope.core.exchange.queue_put, self.name, self.maxsize, value
        )

    async def get(self) -> Any:
        """Take the first item of the queue; wait while it is empty. Checkpoint. A handle
        comes back as a handle of this executor, which owns it from then on."""
        return await _until_done(
            self._scope, self._scope.core.exchange.queue_get, self.name, self.maxsize
        )

    async def qsize(self) -> int:
        """How many items the queue holds now. Checkpoint."""
        scope = self._scope
        scope.gate.check_open()
        size: int = await scope.runner.run(scope.core.exchange.queue_size, self.name, self.maxsize)
        return size

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class Variable:
    """A variable of the cluster's scheduler, shared by every client that uses its name.

    Made by :meth:`DaskExecutor.variable`; not created directly. Its value is a handle of
    this executor (the variable then holds the task's key) or a small value. :meth:`get`
    is cancel-safe: a cancelled get leaves nothing held on the scheduler (Dask's own
    ``Variable.get`` may leave the key of a value fetched for nobody held for good).
    """

    def __init__(self, scope: ExecutorScope, name: str) -> None:
        self._scope = scope
        #: The variable's name on the scheduler.
        self.name: str = name

    async def set(self, value: Any) -> None:
        """Give the variable ``value``; the value it had is let go. Checkpoint.

        :raises ValueError: for a handle of another executor.
        :raises TypeError: for a value with handles inside.
        """
        scope = self._scope
        scope.gate.check_open()
        dask_value = _to_dask(scope, value, "set()")
        await scope.runner.run(scope.core.exchange.variable_set, self.name, dask_value)

    async def get(self) -> Any:
        """The variable's value; wait until it has one. Checkpoint. A handle comes back as a
        handle of this executor, which owns it from then on."""
        return await _until_done(self._scope, self._scope.core.exchange.variable_get, self.name)

    async def delete(self) -> None:
        """Delete the variable from the scheduler, and let its value go. Checkpoint."""
        scope = self._scope
        scope.gate.check_open()
        await scope.runner.run(scope.core.exchange.variable_delete, self.name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class Event:
    """An event of the cluster's scheduler, shared by every client that uses its name.

    Made by :meth:`DaskExecutor.event`; not created directly. :meth:`wait` is a checkpoint
    and stops at once when cancelled; the request it leaves on the scheduler ends within a
    second (Dask's own ``Event.wait`` leaves its waiter there until the event is set).
    """

    def __init__(self, scope: ExecutorScope, name: str) -> None:
        self._scope = scope
        #: The event's name on the scheduler.
        self.name: str = name

    async def wait(self) -> None:
        """Wait until the event is set. Checkpoint."""
        scope = self._scope
        await anyio.lowlevel.checkpoint_if_cancelled()
        while True:
            scope.gate.check_open()
            scope.check_connected()
            if await scope.runner.run(scope.core.exchange.event_wait, self.name):
                return

    async def set(self) -> None:
        """Set the event: every waiter wakes, and later waits return at once. Checkpoint."""
        await self._flag(True)

    async def clear(self) -> None:
        """Clear the event: later waits wait until it is set again. Checkpoint."""
        await self._flag(False)

    async def is_set(self) -> bool:
        """Whether the event is set. Checkpoint."""
        scope = self._scope
        scope.gate.check_open()
        flag: bool = await scope.runner.run(scope.core.exchange.event_is_set, self.name)
        return flag

    async def _flag(self, flag: bool) -> None:
        scope = self._scope
        scope.gate.check_open()
        await scope.runner.run(scope.core.exchange.event_set, self.name, flag)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
