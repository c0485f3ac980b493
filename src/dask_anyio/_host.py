"""Scopes that no caller's task holds: an executor opened with ``open()`` (notebooks, where
each cell is a task of its own, or a trio.run of its own), and the guard that closes an
executor whose event loop's run ends while it is open.

The one other place, beside ``_bridge``, where the backends differ: asyncio runs such work
in a task of the loop, trio in a *system task*, which trio cancels once the run's main task
has returned and waits for before ``trio.run`` returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import anyio.lowlevel

__all__ = ["Host", "start_background"]

#: asyncio keeps only weak references to its tasks.
_BACKGROUND: set[asyncio.Task[None]] = set()


def start_background(fn: Callable[[], Awaitable[None]], name: str) -> None:
    """Start ``fn()`` in a task of the running event loop that belongs to no caller's scope.

    It ends when the run ends at the latest: cancelled by ``asyncio.run()`` once its main
    coroutine returned, or by trio once its main task returned (trio then waits for it).
    ``fn`` must not raise: a system task that raises crashes trio's run.
    """
    native = anyio.lowlevel.current_token().native_token
    if isinstance(native, asyncio.AbstractEventLoop):
        task: asyncio.Task[None] = native.create_task(_awaited(fn), name=name)
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
    else:  # trio, the only other backend that anyio supports
        import trio

        trio.lowlevel.spawn_system_task(fn, name=name)


async def _awaited(fn: Callable[[], Awaitable[None]]) -> None:
    await fn()


class Host:
    """Holds a scope (``async with`` a context manager) in a background task, from
    :meth:`open` to :meth:`close`, which any task of the same event loop may call."""

    def __init__(
        self,
        scope: AbstractAsyncContextManager[Any],
        name: str,
        on_run_end: Callable[[], object] = lambda: None,
    ) -> None:
        self._scope = scope
        self._name = name
        self._on_run_end = on_run_end
        self._opened = anyio.Event()
        self._close = anyio.Event()
        self._done = anyio.Event()
        self._cancel = anyio.CancelScope()
        #: What the scope raised (entering or leaving), for open() or close() to raise.
        self._error: BaseException | None = None
        #: Whether the run ended while the scope was held (it was left, cancelled).
        self.ended_with_run = False

    @property
    def done(self) -> bool:
        """Whether the scope was left (a plain read: safe from any event loop)."""
        return self._done.is_set()

    async def open(self) -> None:
        """Enter the scope in the background task; return once it is entered. Checkpoint:
        cancelling it leaves what was entered, then raises."""
        start_background(self._hold, self._name)
        await self._wait(self._opened)

    async def close(self) -> None:
        """Leave the scope, as a normal exit, and raise what the exit raised. Checkpoint:
        cancelling it makes the exit an exit by cancellation, waited for, then raised."""
        self._close.set()
        await self._wait(self._done)

    async def _wait(self, event: anyio.Event) -> None:
        """Wait for ``event``, then raise what the scope raised. If the caller is cancelled
        meanwhile, cancel the scope's task, wait until it has left the scope, and raise."""
        try:
            await event.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                self._cancel.cancel()
                await self._done.wait()
            raise
        error, self._error = self._error, None
        if error is not None:
            raise error

    async def _hold(self) -> None:
        try:
            with self._cancel:
                async with self._scope:
                    self._opened.set()
                    await self._close.wait()
        except anyio.get_cancelled_exc_class():  # not ours (those stop at self._cancel)
            self.ended_with_run = True  # the run ends: the scope was left, cancelled
            self._on_run_end()
        except BaseException as error:  # for open() or close() to raise, not trio's run
            self._error = error
        finally:
            self._opened.set()
            self._done.set()
