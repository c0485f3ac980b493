"""Thread bridge: :class:`LoopToken`, the one thread-crossing primitive (its runners are
in :mod:`dask_anyio._bridge`)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TypeVarTuple

import anyio.lowlevel

sniffio: ModuleType | None
try:
    import sniffio
except ImportError:  # pragma: no cover - anyio then tells asyncio by its running loop
    sniffio = None

Ts = TypeVarTuple("Ts")

__all__ = ["LoopToken", "current_loop_token"]


class LoopToken:
    """A reference to one running event loop (asyncio or trio) that other threads may call into.

    Obtain one with :func:`current_loop_token` from inside the loop.

    Calls are *coalesced*: those scheduled before the loop gets to them wait in one queue,
    and the loop runs them in one callback, so that a burst of calls (a thousand tasks
    watched at once, the completions of a loop turn) costs one wake-up of the loop, not
    one each (a write to its wake-up socket and, across threads, a thread switch).
    """

    __slots__ = (
        "_calls",
        "_closed",
        "_failed",
        "_finished",
        "_is_current",
        "_lock",
        "_report",
        "_schedule",
        "_schedule_here",
    )

    def __init__(self, native: object) -> None:
        self._calls: list[tuple[Callable[..., object], tuple[object, ...]]] = []
        # Reentrant, as trio's own: code that runs in the middle of a call here on the
        # same thread (a __del__ run by the garbage collector) may call in. (Not a signal
        # handler on an asyncio loop's thread: from there the loop is not woken. asyncio's
        # loop.add_signal_handler runs handlers as callbacks, where calls are fine.)
        self._lock = threading.RLock()
        if isinstance(native, asyncio.AbstractEventLoop):
            # Callbacks run in the context of the thread that schedules them, where nothing
            # says which async library runs the loop: anyio's calls (a task group's
            # start_soon, say) would fail there. Run them in a context that says "asyncio".
            context = contextvars.copy_context()
            if sniffio is not None:
                context.run(sniffio.current_async_library_cvar.set, "asyncio")
            self._schedule: Callable[[Callable[[], object]], object] = functools.partial(
                native.call_soon_threadsafe, context=context
            )
            # From the loop's own thread: no wake-up needed.
            self._schedule_here = functools.partial(native.call_soon, context=context)
            self._finished: tuple[type[BaseException], ...] = (RuntimeError,)
            self._is_current: Callable[[], bool] = functools.partial(_is_running_loop, native)
            # A loop closed with our drain still queued would never run it.
            self._closed: Callable[[], bool] = native.is_closed
            # asyncio's rule for a failed callback: each goes to the exception handler.
            self._failed: Callable[[Exception], object] = functools.partial(_to_handler, native)
            self._report: Callable[[list[Exception]], None] = _nothing_to_report
        else:  # trio.lowlevel.TrioToken: the only other backend that anyio supports
            import trio

            self._schedule = self._schedule_here = native.run_sync_soon  # type: ignore[attr-defined]
            self._finished = (trio.RunFinishedError,)
            current = trio.lowlevel.current_trio_token
            self._is_current = functools.partial(_is_current_trio_run, current, native)
            # trio runs every call it accepted, also at the very end of its run.
            self._closed = _never
            # trio's rule: a failed callback ends the run (raised once the batch has run).
            self._failed = _keep
            self._report = _raise_failures

    def run_sync_soon(self, fn: Callable[[*Ts], object], *args: *Ts) -> bool:
        """Schedule ``fn(*args)`` to run soon on this token's event loop.

        **This method is thread-safe.** It is the only way dask-anyio crosses from one thread
        to another: from the trio thread to the private asyncio loop and back (and, under
        asyncio, from the core's callbacks to the loop they share). It never blocks and never
        runs ``fn`` inline. The calls made through one token run in the order they were
        scheduled, from whatever thread (one queue per token). If ``fn`` raises, the other
        calls still run, and the loop handles the exception as its own callbacks' (asyncio's
        exception handler; trio ends the run).

        :return: ``True`` if the call was scheduled, ``False`` if the loop has already
            finished (the call is then dropped).
        """
        with self._lock:  # (a drain on another thread waits here: it cannot run before)
            if not self._calls:  # no drain is due: schedule one, then join the queue
                if not self._wake():
                    return False
            elif self._closed():  # one is due on a loop that will never run it
                return False
            self._calls.append((fn, args))
        return True

    def _wake(self) -> bool:
        """Schedule a drain of the queue (under the lock). Return whether the loop took it."""
        schedule = self._schedule_here if self._is_current() else self._schedule
        try:
            schedule(self._drain)
        except self._finished:
            return False
        return True

    def _drain(self) -> None:
        """On the loop: run the calls scheduled so far (those scheduled meanwhile get a new
        drain: a bounded amount of work per callback). A KeyboardInterrupt or SystemExit
        from a call (or landing here) propagates at once; the calls not run stay queued."""
        calls: list[tuple[Callable[..., object], tuple[object, ...]]] | None = None
        failures: list[Exception] = []
        ran = 0
        try:
            with self._lock:
                calls, self._calls = self._calls, []
            for fn, args in calls:
                ran += 1
                try:
                    fn(*args)
                except Exception as error:  # the rest still run
                    failures.append(error)
                    self._failed(error)
        finally:
            if calls is None:  # interrupted before it took the queue: its drain is used up
                self._requeue([], due=False)
            elif ran < len(calls):  # interrupted by a call: the rest go first
                self._requeue(calls[ran:], due=True)
        self._report(failures)

    def _requeue(
        self, calls: list[tuple[Callable[..., object], tuple[object, ...]]], *, due: bool
    ) -> None:
        """After an interrupted drain: queue ``calls`` again, ahead of those scheduled
        since, and wake the loop for the queue unless a drain is ``due`` for it (one is for
        the calls scheduled after the drain took the queue)."""
        with self._lock:
            due = due and bool(self._calls)
            self._calls[:0] = calls
            if self._calls and not due and not self._wake():
                self._calls.clear()  # the loop has finished: dropped

    def is_current(self) -> bool:
        """Return whether the calling code runs on this token's event loop: not on another
        thread, nor on another loop or run in this thread (a later ``trio.run``).

        **This method is thread-safe**, and cheap enough for every call of the front end.
        """
        return self._is_current()


def _never() -> bool:
    return False


def _keep(error: Exception) -> None:
    pass  # (raised by _raise_failures once the batch has run)


def _nothing_to_report(failures: list[Exception]) -> None:
    pass


def _raise_failures(failures: list[Exception]) -> None:
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise ExceptionGroup("calls scheduled with LoopToken.run_sync_soon failed", failures)


def _to_handler(loop: asyncio.AbstractEventLoop, error: Exception) -> None:
    """A failed call, as asyncio reports a failed callback: to its exception handler."""
    message = "Exception in a call scheduled with LoopToken.run_sync_soon"
    loop.call_exception_handler({"message": message, "exception": error})


def _is_running_loop(loop: asyncio.AbstractEventLoop) -> bool:
    return asyncio._get_running_loop() is loop


def _is_current_trio_run(current: Callable[[], object], token: object) -> bool:
    try:
        return current() is token
    except RuntimeError:  # no trio run in this thread
        return False


def current_loop_token() -> LoopToken:
    """Return a :class:`LoopToken` for the event loop running in this thread."""
    return LoopToken(anyio.lowlevel.current_token().native_token)
