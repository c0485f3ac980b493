"""anyio front end: the scheduler's queues, events and variables, cancel-safe:
:class:`Queue`, :class:`Event` and :class:`Variable`, made by :meth:`DaskExecutor.queue`,
:meth:`DaskExecutor.event` and :meth:`DaskExecutor.variable`.

A request that takes something (an item, a variable's value, a place in a full queue) is
shielded from cancellation: it waits on the scheduler for ``_exchange.PROMPT`` at most and
ends with what it got, which the caller receives even if it was cancelled meanwhile; the
cancellation is raised between requests. So a cancelled ``get`` either returns its item or
leaves it in the queue, and a caller notices a cancellation within ``PROMPT`` while the
scheduler answers promptly. An event's wait takes nothing, and stops at once. (asyncio's
own cancellation passes the shield: the request ends all the same, then an item it took goes
back to the head of its queue, a variable's value is let go.)
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVarTuple

import anyio
import anyio.lowlevel
import distributed

from ._exchange import MISSING, NOTHING, PROMPT, UNKNOWN
from ._handle import TaskHandle, check_owner, map_handles
from ._tasks import Adopt

if TYPE_CHECKING:
    from ._scope import ExecutorScope

__all__ = ["Event", "Queue", "Variable"]

Ts = TypeVarTuple("Ts")

#: How long a put waits for the scheduler to know the key of a handle before it gives up.
_UNKNOWN_FOR = 5.0


def _to_dask(scope: ExecutorScope, value: Any, what: str) -> Any:
    """``value`` as Dask's queues and variables take it: a handle of this executor as its
    future (its data stays on the cluster), anything else as it is.

    :raises ValueError: for a handle of another executor, or of a cancelled task.
    :raises TypeError: for handles inside a value.
    """
    if isinstance(value, TaskHandle):
        check_owner(value, scope.table)
        if value.cancelled():
            raise ValueError(f"{what} takes a handle whose task is not cancelled, not {value!r}")
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
        return scope.table.adopt(value, Adopt.BORROWED)
    return value


async def _once(scope: ExecutorScope, request: Callable[[*Ts], Awaitable[Any]], *args: *Ts) -> Any:
    """``request(*args)``, a checkpoint first, the handlers registered on the scheduler if it
    lacks them: for the requests that take nothing."""
    await anyio.lowlevel.checkpoint_if_cancelled()
    while True:
        scope.gate.check_open()
        await _ready(scope)
        reply = await scope.runner.run(request, *args)
        if reply is not MISSING:
            return reply


async def _ready(scope: ExecutorScope) -> None:
    """The handlers registered on the scheduler (a request that cancellation may stop)."""
    scope.check_connected()
    try:
        await scope.runner.run(scope.core.exchange.ready)
    except OSError:  # (Dask's CommClosedError among them)
        scope.check_connected()  # SchedulerLost, if that is what it was
        raise


async def _until_done(
    scope: ExecutorScope,
    request: Callable[[*Ts], Awaitable[Any]],
    *args: *Ts,
    dropped: Callable[[Any], object] | None = None,
) -> Any:
    """Send ``request(*args)`` until it gets something, each one run to its end (see the
    module's docstring): a checkpoint between requests, not in them. ``dropped`` takes what
    a request got for a caller cancelled all the same (by asyncio, through the shield).

    :raises ValueError: if the scheduler does not know a handle's key (see UNKNOWN).
    """
    await anyio.lowlevel.checkpoint_if_cancelled()
    unknown = 0
    while True:
        scope.gate.check_open()
        await _ready(scope)
        with scope.gate.call_under_way():
            try:
                got = await scope.runner.finish(request, *args, dropped=dropped)
            except OSError:  # (Dask's CommClosedError among them)
                scope.check_connected()
                raise
            if got is UNKNOWN:
                unknown += 1
                if unknown * PROMPT >= _UNKNOWN_FOR:
                    raise ValueError(
                        f"the scheduler does not know the task of the handle put, for "
                        f"{_UNKNOWN_FOR:g} s: it was cancelled or released"
                    )
            elif got is not NOTHING and got is not MISSING:
                return _from_dask(scope, got)
        await anyio.lowlevel.checkpoint_if_cancelled()


class Queue:
    """A queue of the cluster's scheduler, shared by every client that uses its name.

    Made by :meth:`DaskExecutor.queue`; not created directly. Items are handles of this
    executor (the queue then holds the task's key, and its data stays on the cluster) or
    small values (they travel through the scheduler). Handles, strings, bytes, numbers,
    booleans and ``None`` are shared with Dask's own ``Queue`` of the name; other values
    travel pickled, which Dask's ``Queue`` returns as a one-key dict.

    :meth:`get` and :meth:`put` are checkpoints and cancel-safe: a cancelled :meth:`get`
    either returned its item or left it in the queue, in its place; a cancelled :meth:`put`
    either put its item (and returned) or did not. Either notices a cancellation within
    0.2 s while the scheduler answers promptly. Under asyncio's own cancellation
    (``Task.cancel()``, ``asyncio.timeout``), which anyio's shields do not stop, a get that
    took an item as it was cancelled gives it back to the head of the queue, and a put that
    raised ``CancelledError`` may have put its item. The queue lives on the scheduler as
    long as the scheduler does (as Dask's), its items with it.
    """

    def __init__(self, scope: ExecutorScope, name: str, maxsize: int) -> None:
        self._scope = scope
        #: The queue's name on the scheduler.
        self.name: str = name
        #: The bound asked for (0: none). It counts only if the queue is new on the
        #: scheduler when this object's first request reaches it.
        self.maxsize: int = maxsize

    async def put(self, item: Any) -> None:
        """Put ``item`` at the end of the queue; wait while it is full. Checkpoint.

        :raises ValueError: for a handle of another executor, or of a cancelled task (also
            if the scheduler does not know its task for 5 s).
        :raises TypeError: for a value with handles inside.
        """
        value = _to_dask(self._scope, item, "put()")
        await _until_done(
            self._scope, self._scope.core.exchange.queue_put, self.name, self.maxsize, value
        )

    async def get(self) -> Any:
        """Take the first item of the queue; wait while it is empty. Checkpoint. A handle
        comes back as a handle of this executor, which owns it from then on."""
        exchange = self._scope.core.exchange
        give_back = functools.partial(exchange.give_back, self.name, self.maxsize)
        return await _until_done(
            self._scope, exchange.queue_get, self.name, self.maxsize, dropped=give_back
        )

    async def qsize(self) -> int:
        """How many items the queue holds now. Checkpoint."""
        exchange = self._scope.core.exchange
        size: int = await _once(self._scope, exchange.queue_size, self.name, self.maxsize)
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
        await anyio.lowlevel.checkpoint_if_cancelled()
        await scope.runner.run(scope.core.exchange.variable_set, self.name, dask_value)

    async def get(self) -> Any:
        """The variable's value; wait until it has one. Checkpoint. A handle comes back as a
        handle of this executor, which owns it from then on."""
        exchange = self._scope.core.exchange
        return await _until_done(
            self._scope, exchange.variable_get, self.name, dropped=exchange.let_go
        )

    async def delete(self) -> None:
        """Delete the variable from the scheduler, and let its value go (and every handle
        value it held). Checkpoint; returns once the scheduler has deleted it."""
        await _once(self._scope, self._scope.core.exchange.variable_delete, self.name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class Event:
    """An event of the cluster's scheduler, shared by every client that uses its name.

    Made by :meth:`DaskExecutor.event`; not created directly. :meth:`wait` is a checkpoint
    and stops at once when cancelled; the request it leaves on the scheduler ends within a
    second (Dask's own ``Event.wait`` leaves its waiter there until the event is set). A
    wait asks the scheduler again every second: a set and a clear that both fall between
    two of its requests (a millisecond apart) go unseen by it.
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
            try:
                if await scope.runner.run(scope.core.exchange.event_wait, self.name):
                    return
            except OSError:  # (Dask's CommClosedError among them)
                scope.check_connected()
                raise

    async def set(self) -> None:
        """Set the event: the waits wake, and later waits return at once. Checkpoint."""
        await self._flag(True)

    async def clear(self) -> None:
        """Clear the event: later waits wait until it is set again. Checkpoint."""
        await self._flag(False)

    async def is_set(self) -> bool:
        """Whether the event is set. Checkpoint."""
        scope = self._scope
        scope.gate.check_open()
        await anyio.lowlevel.checkpoint_if_cancelled()
        is_set: bool = await scope.runner.run(scope.core.exchange.event_is_set, self.name)
        return is_set

    async def _flag(self, flag: bool) -> None:
        scope = self._scope
        scope.gate.check_open()
        await anyio.lowlevel.checkpoint_if_cancelled()
        await scope.runner.run(scope.core.exchange.event_set, self.name, flag)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
