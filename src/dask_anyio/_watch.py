"""Learning that tasks are done, and what they ended with: :class:`Watcher`.

One watch on the core loop per task serves every watcher on the front loop (waiters,
``as_completed``, ``imap``, ``gather``); completions come back in batches, one thread crossing
per batch.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from ._bridge import CoreRunner
from ._core import SCHEDULER_LOST, DaskCore, logger
from ._errors import SchedulerLost, TaskCancelled
from ._gate import Gate, Phase
from ._handle import TaskHandle, TaskStatus, state_of

__all__ = ["Watcher"]

#: How often to look at a task whose value was lost with a worker (rare).
_LOST_RECHECK = 0.1


class Watcher:
    """Watches tasks for the front loop, and tells what a done task ended with."""

    def __init__(
        self, runner: CoreRunner, core: DaskCore, gate: Gate, tg: anyio.abc.TaskGroup
    ) -> None:
        self._runner = runner
        self._core = core
        self._gate = gate
        self._tg = tg

    def watch(self, handle: TaskHandle[Any], callback: Callable[[], object]) -> None:
        """Call ``callback()`` on the front loop once ``handle`` is done: at once if it is.

        :raises RuntimeError: if the core's event loop has ended.
        """
        if self._join(handle, callback):
            self._start_watching(handle, self._deliver)

    def watch_together(
        self, watches: Sequence[tuple[TaskHandle[Any], Callable[[], object]]]
    ) -> Callable[[], object]:
        """As :meth:`watch` for each ``(handle, callback)``, for a caller that needs all of
        them (or the first failure): the core holds the completions of finished tasks back
        until the last one is in, or one ended otherwise (failed, cancelled, lost), so that
        the caller's loop is woken once rather than once per task. Call what this returns
        once done with them: it lets go of what is still held (as does a :meth:`watch` of
        one of the handles meanwhile).

        :raises RuntimeError: if the core's event loop has ended.
        """
        held = _Held(self._deliver)
        let_go = functools.partial(self._runner.core.run_sync_soon, held.let_go)
        # (one watch per handle, also if it is listed twice)
        fresh = list({id(h): h for h, callback in watches if self._join(h, callback)}.values())
        held.expected = len(fresh)  # (set before the core can see it)
        for handle in fresh:
            self._start_watching(handle, held)
            state_of(handle).watched = let_go
        return let_go

    @staticmethod
    def _join(handle: TaskHandle[Any], callback: Callable[[], object]) -> bool:
        """Add ``callback`` to ``handle``'s watchers (or call it at once if done); return
        whether the core must start watching ``handle``. A handle held back with others
        (see :meth:`watch_together`) is let go: this watcher wants it now."""
        state = state_of(handle)
        if state.done():
            callback()
            return False
        state.watchers = (*state.watchers, callback)
        if callable(state.watched):
            state.watched()
        return not state.watched

    @staticmethod
    def unwatch(handle: TaskHandle[Any], callback: Callable[[], object]) -> None:
        """Forget ``callback``, if it was not called yet."""
        state = state_of(handle)
        if callback in state.watchers:
            at = state.watchers.index(callback)
            state.watchers = state.watchers[:at] + state.watchers[at + 1 :]

    @staticmethod
    def notify(handle: TaskHandle[Any]) -> None:
        """Call ``handle``'s watchers now (it is done, or cancelled by us)."""
        state = state_of(handle)
        if callable(state.watched):  # held back with others: done for us now
            state.watched()
        watchers, state.watchers = state.watchers, ()
        for callback in watchers:
            callback()

    def _start_watching(
        self, handle: TaskHandle[Any], deliver: Callable[[list[TaskHandle[Any]]], object]
    ) -> None:
        state = state_of(handle)
        state.watched = True
        watch = self._core.watch
        if not self._runner.core.run_sync_soon(watch, state.future, handle, deliver):
            state.watched = False  # (a wait for it would never be woken)
            raise RuntimeError("the executor's Dask client has stopped: its event loop ended")

    def _deliver(self, handles: list[TaskHandle[Any]]) -> None:
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
        state = state_of(handle)
        state.watched = False
        if state.done():
            self.notify(handle)
        elif state.watchers:
            if state.status is TaskStatus.LOST and self._gate.phase is not Phase.CLOSED:
                # The watch ends at once for a task lost with a worker: look
                # again after a pause, until Dask has recomputed it.
                self._tg.start_soon(self._look_again, handle)
            else:
                self._start_watching(handle, self._deliver)

    async def _look_again(self, handle: TaskHandle[Any]) -> None:
        await anyio.sleep(_LOST_RECHECK)
        if not state_of(handle).watched:
            self._settle(handle)

    async def wait_done(self, handle: TaskHandle[Any]) -> None:
        """Wait until ``handle`` is done. Checkpoint; cancelling it only stops the waiting."""
        await anyio.lowlevel.checkpoint()
        if handle.done():
            return
        event = anyio.Event()
        self.watch(handle, event.set)
        try:
            await event.wait()
        finally:
            self.unwatch(handle, event.set)

    async def outcome(self, handle: TaskHandle[Any]) -> Exception | None:
        """Wait until ``handle`` is done; return what ``await handle`` raises (then observed:
        the caller raises it), or ``None``."""
        await self.wait_done(handle)
        failure = await self.failure_of(handle)
        if failure is not None:
            state_of(handle).observed = True
        return failure

    async def failure_of(self, handle: TaskHandle[Any]) -> Exception | None:
        """What ``await handle`` raises for a done task: its remote exception or
        :exc:`TaskCancelled`; ``None`` if it finished (or is not done)."""
        state = state_of(handle)
        if state.final_status is not None:
            if state.failure is None:
                return None
            return state.failure.with_traceback(state.failure_traceback)
        status = state.status
        if state.cancel_reason is not None:
            return TaskCancelled(state.key, state.cancel_reason)
        if status is TaskStatus.ERROR:
            error = await self._runner.run(self._core.exception, state.future)
            if isinstance(error, Exception):
                return error
            # A BaseException from the worker (an async task's CancelledError, say) must not
            # pass for one of ours: it would look like a local cancellation or exit.
            if isinstance(error, asyncio.CancelledError):
                failure: Exception = TaskCancelled(state.key, "it raised CancelledError")
            else:
                failure = RuntimeError(f"task {state.key!r} raised {error!r}")
            failure.__cause__ = error
            return failure
        if status is TaskStatus.CANCELLED:
            reason = await self._runner.run(self._core.cancel_reason, state.future)
            if reason == SCHEDULER_LOST:
                return SchedulerLost(self._core.scheduler_address, state.key)
            return TaskCancelled(state.key, reason)
        return None

    async def freeze(self, handle: TaskHandle[Any]) -> None:
        """Keep what ``await handle`` reports once the key is released (releasing marks it
        cancelled in Dask's client)."""
        state = state_of(handle)
        failure = state.failure = await self.failure_of(handle)
        state.failure_traceback = None if failure is None else failure.__traceback__
        state.final_status = state.status


class _Held:
    """The core's side of :meth:`Watcher.watch_together`: a deliverer that holds the
    completions of finished tasks back until the last expected one, or one that did not
    finish, comes in. Core loop only, once made."""

    __slots__ = ("_deliver", "_holding", "_items", "expected")

    def __init__(self, deliver: Callable[[list[TaskHandle[Any]]], object]) -> None:
        self._deliver = deliver
        self._items: list[TaskHandle[Any]] = []
        self._holding = True
        #: How many watches deliver here and have not yet.
        self.expected = 0

    def __call__(self, handles: list[TaskHandle[Any]]) -> None:
        self.expected -= len(handles)
        self._items.extend(handles)
        if (
            self._holding
            and self.expected > 0
            and all(state_of(h).future.status == "finished" for h in handles)
        ):
            return
        self._hand_over()

    def let_go(self) -> None:
        """Deliver what is held; from now on, hold nothing."""
        self._holding = False
        self._hand_over()

    def _hand_over(self) -> None:
        items, self._items = self._items, []
        if items:
            self._deliver(items)
