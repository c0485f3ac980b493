"""An executor's lifetime: :class:`ExecutorScope` enters (runner, core, Dask's current
client, a task group, the parts that work in it) and leaves by the exit rules of a task
group. The façade, :class:`~dask_anyio.DaskExecutor`, holds one and delegates to its parts.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from ._bridge import CoreRunner
from ._client import current_client
from ._connect import seconds_to_connect
from ._core import DaskCore, logger
from ._errors import CancelReason, SchedulerLost, TaskCancelled, one_scheduler_lost
from ._fetch import Fetcher
from ._gate import Gate, Phase
from ._handle import TaskHandle, TaskStatus, state_of
from ._host import start_background
from ._options import Source, check_given_client, read_scheduler_file
from ._pace import Pace
from ._parts import Parts
from ._tasks import TaskTable
from ._watch import Watcher

__all__ = ["UNOBSERVED", "CoreOpener", "ExecutorScope", "ExitTimeout", "RunnerOpener"]

#: The message of the group that a normal exit raises with the failures nobody awaited.
UNOBSERVED = "tasks failed and nobody awaited them"


class ExitTimeout(TimeoutError):
    """A normal exit given a patience (``leave(None, patience=)``) found tasks still
    pending when it ran out: it cancelled them, as an exit by an error does."""

    def __init__(self, pending: int, patience: float) -> None:
        super().__init__(f"{pending} task(s) still pending {patience:g} s into the exit")
        self.pending = pending


#: How an executor opens its core, given the address of a scheduler file if it has one.
CoreOpener = Callable[[str | None], Awaitable[DaskCore]]
RunnerOpener = Callable[[], AbstractAsyncContextManager[CoreRunner]]


class ExecutorScope:
    """The parts of one executor, made on entry, and its exit. Front loop only."""

    def __init__(
        self,
        source: Source,
        open_runner: RunnerOpener,
        open_core: CoreOpener,
        confirm_batch: int,
    ) -> None:
        self.source: Source = source
        self.gate: Gate = Gate()
        self.pace: Pace = Pace()
        self.runner: CoreRunner
        self.core: DaskCore
        self.tasks: TaskTable | None = None
        self.fetcher: Fetcher
        self.parts: Parts
        self._open_runner = open_runner
        self._open_core = open_core
        self._confirm_batch = confirm_batch
        self._core_opened = False
        self._stack: AsyncExitStack
        #: The task that entered, which must leave.
        self._entered_in = 0
        self._exited: anyio.Event | None = None

    @property
    def table(self) -> TaskTable:
        """The task table (made on entry)."""
        assert self.tasks is not None
        return self.tasks

    def check_connected(self) -> None:
        """Refuse new work while Dask's client is not connected (it lost the scheduler)."""
        if not self.core.connected:
            raise SchedulerLost(self.core.scheduler_address)

    # -- entering --------------------------------------------------------------------------

    async def enter(self, guard: str | None) -> None:
        """Open everything; a checkpoint, and cancelling it closes what was opened.
        ``guard``: the name of a background task that closes the core if the event loop's
        run ends while the scope is open (``None`` for a scope that a host holds)."""
        if self.gate.phase is not Phase.NEW:
            raise RuntimeError("a DaskExecutor can be entered only once")
        await anyio.lowlevel.checkpoint_if_cancelled()  # cancelled already: start nothing
        self._entered_in = anyio.get_current_task().id
        address = None
        if self.source.scheduler_file is not None:
            patience = seconds_to_connect(self.source.connect_timeout)
            address = await read_scheduler_file(self.source.scheduler_file, patience)
        async with AsyncExitStack() as stack:
            runner = self.runner = await stack.enter_async_context(self._open_runner())
            other_thread = runner.core is not runner.front
            if self.source.client is not None:
                check_given_client(self.source.client, other_thread)
            stack.push_async_callback(self._close_core)
            await runner.run(self._start_core, address)
            # Dask's own API (dask.compute, get_client, Lock...) finds this client, in the
            # body and the worker threads it starts; under trio it refuses to block the
            # event loop's thread (the core runs on another).
            never_block = threading.get_ident() if other_thread else None
            stack.enter_context(current_client(self.core.client, never_block))
            tg = await stack.enter_async_context(anyio.create_task_group())
            self._make_parts(tg)
            self._stack = stack.pop_all()
        self.gate.phase = Phase.OPEN
        if guard is not None:
            self._exited = anyio.Event()
            start_background(self._close_at_run_end, guard)

    def _make_parts(self, tg: anyio.abc.TaskGroup) -> None:
        runner, core, gate = self.runner, self.core, self.gate
        gate.front = runner.front
        watcher = Watcher(runner, core, gate, tg)
        tasks = self.tasks = TaskTable(
            runner, core, gate, watcher, tg, confirm_batch=self._confirm_batch
        )
        self.fetcher = Fetcher(runner, core, gate, watcher, tasks, self.pace)
        self.parts = Parts(gate, tasks, watcher, self.fetcher, tg, runner.front)

    async def _start_core(self, address: str | None) -> None:
        # On the core loop. Stored here, not returned, so that a caller cancelled just as the
        # core opened still finds it to close.
        self.core = await self._open_core(address)
        self._core_opened = True

    async def _close_core(self) -> None:
        if self._core_opened:
            await self.runner.finish(self.core.close)

    async def _close_at_run_end(self) -> None:
        """In the background: if the run of the event loop ends while the executor is open
        (entered in one notebook cell and never left), close what it opened (client,
        cluster), before the run closes the core runner under them. Never raises."""
        assert self._exited is not None
        try:
            await self._exited.wait()
        except anyio.get_cancelled_exc_class():
            if self.gate.phase is Phase.OPEN:  # (no exit under way: nobody will leave it)
                self.gate.phase = Phase.CLOSED
                self.gate.ended_with_run = True
                with anyio.CancelScope(shield=True):
                    try:
                        await self._close_core()
                    except Exception:
                        logger.warning("could not close an abandoned DaskExecutor", exc_info=True)

    # -- leaving ---------------------------------------------------------------------------

    async def leave(self, exc: BaseException | None, patience: float | None = None) -> bool | None:
        """``__aexit__``: the exit rules of the class docstring of DaskExecutor. With a
        ``patience``, a normal exit waits that many seconds at most for what is outstanding,
        then cancels it and raises :class:`ExitTimeout` (for the pytest plugin)."""
        if self.gate.phase is not Phase.OPEN:
            self.gate.check_open()  # raises, saying why
        self.gate.check_loop()
        try:
            return await self._leave(exc, patience)
        finally:
            if self._exited is not None:
                self._exited.set()

    async def _leave(self, exc: BaseException | None, patience: float | None) -> bool | None:
        other_task = anyio.get_current_task().id != self._entered_in
        gate, tasks = self.gate, self.table
        gate.phase = Phase.CLOSING
        for close in list(gate.closers):  # nobody reads them any more
            await close()
        error = exc
        if error is None:
            try:
                # (inside the task group's scope, opened and closed here: nested as it must)
                limit = math.inf if patience is None else patience
                with anyio.move_on_after(limit) as waited:
                    await self._wait_outstanding()
            except BaseException as wait_error:  # cancelled while waiting: as for an error
                error = wait_error
            else:
                if waited.cancelled_caught:  # (a patience was given)
                    error = ExitTimeout(tasks.statistics().pending, limit)
        unobserved: list[Exception] = []
        cleanup_errors: list[Exception] = []
        try:
            with anyio.CancelScope(shield=True):
                if error is not None:
                    tasks.cancelling_all = True
                    await tasks.cancel_outstanding()
                    await gate.wait_calls()  # (what they adopt is cancelled at once)
                    gate.releasing = True  # (no await since the wait: none is under way)
                    await tasks.cancel_outstanding()  # (what persist() adopted meanwhile)
                gate.releasing = True  # (a normal exit: no await since the last wait)
                released = await tasks.release_all()
                unobserved = _unobserved(released, error_exit=error is not None)
        except Exception as cleanup_error:
            cleanup_errors.append(cleanup_error)
        finally:
            gate.phase = Phase.CLOSED
            # Outside any scope opened after the task group: waits for background
            # cancellations, closes the client and what we own, then stops the private loop
            # thread (trio). Each step shields itself.
            try:
                await self._stack.aclose()
            except Exception as cleanup_error:
                cleanup_errors.append(cleanup_error)
        if error is not None:
            _tell_after_error(error, cleanup_errors, unobserved)
            if error is not exc:
                raise error
            return None
        if other_task:  # anyio refused to leave the task group (cleanup_errors), and said why
            raise RuntimeError(
                "a DaskExecutor's `async with` is left by the task that entered it: in a "
                "notebook, where every cell runs as a task of its own, keep one executor "
                "across cells with `ex = await DaskExecutor(...).open()` and `await "
                "ex.aclose()`. This executor is closed now."
            ) from (cleanup_errors[0] if cleanup_errors else None)
        if cleanup_errors:
            raise cleanup_errors[0]
        failures = one_scheduler_lost(unobserved) + tasks.background_errors
        if failures:
            raise ExceptionGroup(UNOBSERVED, failures)
        return None

    async def _wait_outstanding(self) -> None:
        """A normal exit: wait for every handle, and for every call under way (run(),
        compute(), retrieve(), gather() of another task): each gets its value."""
        tasks, gate = self.table, self.gate
        await anyio.lowlevel.checkpoint()  # also with nothing to wait for, as trio's exits
        while True:
            for handle in list(tasks.handles.values()):
                await self.parts.watcher.wait_done(handle)
            if not gate.calls_under_way:  # (none starts now: the executor is closing)
                return
            await gate.wait_calls()  # then wait for what they adopted (persist)


def _unobserved(released: list[TaskHandle[Any]], error_exit: bool) -> list[Exception]:
    """The failures of ``released`` that nobody saw, for the exit to raise."""
    failures = []
    for handle in released:
        state = state_of(handle)
        failure = state.failure
        if (
            failure is not None
            and not state.observed
            and state.cancel_reason is None
            # on an error exit, the executor itself cancelled what was pending
            and (not error_exit or state.final_status is TaskStatus.ERROR)
            # a dependent of a task this executor cancelled: cancelled with it
            and not (isinstance(failure, TaskCancelled) and CancelReason.is_ours(failure.reason))
        ):
            failures.append(failure)
    return failures


def _tell_after_error(
    error: BaseException, cleanup_errors: list[Exception], unobserved: list[Exception]
) -> None:
    """After an error exit, the body's error (or cancellation) wins: cleanup failures must
    not hide it, and task failures nobody saw are still told."""
    for failed in cleanup_errors:
        logger.warning("closing the DaskExecutor after %r failed", error, exc_info=failed)
    if unobserved:
        summary = "; ".join(f"{type(f).__name__}: {f}" for f in unobserved)
        if isinstance(error, Exception):
            error.add_note(f"Also, tasks of the DaskExecutor failed unobserved: {summary}")
        else:
            logger.warning("tasks of the DaskExecutor failed unobserved: %s", summary)
