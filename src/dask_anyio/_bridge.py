"""Thread bridge: the two ways of running the core, over the one thread-crossing primitive
(:class:`LoopToken`, in :mod:`dask_anyio._token`).

Two kinds of thread meet in dask-anyio:

* the *front-end* thread, where the caller's event loop runs (asyncio or trio);
* the *core* loop, the asyncio loop that owns the :class:`distributed.Client`: the caller's
  own loop under asyncio, a private loop thread owned by the executor under trio.

(Dask runs :meth:`distributed.Future.add_done_callback` callbacks on a thread of its own;
dask-anyio does not use them: it watches futures on the core loop.)

Code on one of them never touches another loop's objects directly: every crossing goes
through :meth:`LoopToken.run_sync_soon`. The difference between the two backends lives in
:func:`open_core_runner`, chosen once per executor; nothing above this module tests which
backend it runs on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar, TypeVarTuple

import anyio
import anyio.lowlevel

from ._token import LoopToken, current_loop_token

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

__all__ = ["CoreRunner", "LoopToken", "current_loop_token", "open_core_runner", "run_on_loop"]

LOOP_THREAD_NAME = "dask-anyio-loop"
#: How long :meth:`CoreRunner.finish` goes on after its caller was cancelled (a scheduler
#: that does not answer): then it gives up, as a cancelled call does.
FINISH_PATIENCE = 10.0

logger = logging.getLogger("dask_anyio")


class CoreRunner(Protocol):
    """How the front end reaches the asyncio core. Chosen once per executor."""

    #: The caller's event loop.
    front: LoopToken
    #: The asyncio loop that owns the Dask client.
    core: LoopToken

    async def run(
        self,
        fn: Callable[[*Ts], Awaitable[T]],
        *args: *Ts,
        dropped: Callable[[T], object] | None = None,
    ) -> T:  # pragma: no cover - protocol
        """Run the coroutine ``fn(*args)`` on the core loop and return its result.

        Checkpoint. If the caller is cancelled, the coroutine is cancelled too, and this
        returns (raising the cancellation) only once the coroutine has finished. If it
        finished with a result all the same, ``dropped(result)`` gets it, on the core loop.
        """
        ...

    async def finish(
        self,
        fn: Callable[[*Ts], Awaitable[T]],
        *args: *Ts,
        dropped: Callable[[T], object] | None = None,
    ) -> T:  # pragma: no cover - protocol
        """Run the coroutine ``fn(*args)`` on the core loop to its end, whatever happens to
        the caller: for cleanup (a release, a close) and for requests that must not be cut
        short (one that takes an item). Not a checkpoint: it runs in a cancelled scope too,
        and nothing cancels it: anyio's cancellation waits, and so does asyncio's own
        (``Task.cancel()``, an ``asyncio.timeout``), which passes anyio's shields; once
        ``fn`` has ended, such a cancellation is raised, and ``dropped(result)`` gets what
        ``fn`` returned, on the core loop. After :data:`FINISH_PATIENCE` seconds of waiting
        for a cancelled caller (a scheduler that does not answer), it gives up: ``fn`` is
        cancelled, with a warning."""
        ...


async def _wait_to_end(done: anyio.Event, patience: float = math.inf) -> bool:
    """Wait for ``done``, shielded, also through asyncio's own cancellations (which pass
    anyio's shields): each one is taken and the wait goes on, for ``patience`` seconds at
    most. Return whether ``done`` is set. The caller raises one of the cancellations
    afterwards."""
    deadline = anyio.current_time() + patience
    while True:
        try:
            with anyio.CancelScope(shield=True, deadline=deadline):
                await done.wait()
        except anyio.get_cancelled_exc_class():  # (the caller raises one afterwards)
            continue
        return done.is_set()


async def _run_as_core_task(
    front: LoopToken,
    core: LoopToken,
    fn: Callable[[*Ts], Awaitable[T]],
    *args: *Ts,
    dropped: Callable[[T], object] | None = None,
    cancellable: bool = True,
) -> T:
    """Run ``fn(*args)`` as its own asyncio task on the core loop and await it from the front.

    Its own task, even when both loops are one: a cancelled caller then cancels the core
    coroutine exactly once (unless not ``cancellable``), so that its cleanup (closing a
    half-opened client, say) runs to the end, and the caller waits for that, shielded, before
    the cancellation propagates.
    """
    done = anyio.Event()
    task: asyncio.Future[T] | None = None
    start_error: BaseException | None = None

    def start() -> None:  # on the core loop
        nonlocal task, start_error
        try:
            task = asyncio.ensure_future(fn(*args))
        except BaseException as error:  # never leave the caller waiting for nothing
            start_error = error
            front.run_sync_soon(done.set)
            return
        task.add_done_callback(lambda _: front.run_sync_soon(done.set))

    def cancel() -> None:  # on the core loop, always after start()
        if task is not None:
            task.cancel()

    if not core.run_sync_soon(start):
        raise RuntimeError("the executor's event loop has stopped")
    try:
        await done.wait()
    except BaseException:
        if not cancellable and not await _wait_to_end(done, FINISH_PATIENCE):
            logger.warning(
                "a cleanup request of the executor (%s) did not end within %g s of its "
                "caller's cancellation: given up",
                getattr(fn, "__qualname__", fn),
                FINISH_PATIENCE,
            )
            cancellable = True
        if cancellable:
            core.run_sync_soon(cancel)
            await _wait_to_end(done)
        # (task.exception(): retrieved, so that asyncio does not log it as never retrieved)
        if task is not None and not task.cancelled() and task.exception() is None and dropped:
            core.run_sync_soon(dropped, task.result())
        raise
    if start_error is not None:
        raise start_error
    assert task is not None
    if task.cancelled():
        raise RuntimeError("the executor's event loop cancelled this operation")
    # The task is done, and its done-callback ran on the core loop before ``done`` was set
    # on this thread: reading its outcome here is safe.
    return task.result()


async def run_on_loop(
    loop: LoopToken,
    fn: Callable[[*Ts], Awaitable[T]],
    *args: *Ts,
    dropped: Callable[[T], object] | None = None,
) -> T:
    """Run the coroutine ``fn(*args)`` on the asyncio loop ``loop`` (another thread's) and
    return its result, as :meth:`CoreRunner.run` does for the core loop: a checkpoint, and a
    cancelled caller cancels the coroutine and waits for it to end (``dropped`` gets a result
    it returned all the same, on ``loop``)."""
    return await _run_as_core_task(current_loop_token(), loop, fn, *args, dropped=dropped)


class _SameLoopRunner:
    """asyncio: the core runs on the caller's own loop (no thread hop)."""

    def __init__(self, token: LoopToken) -> None:
        self.front = self.core = token

    async def run(
        self,
        fn: Callable[[*Ts], Awaitable[T]],
        *args: *Ts,
        dropped: Callable[[T], object] | None = None,
    ) -> T:
        return await _run_as_core_task(self.front, self.core, fn, *args, dropped=dropped)

    async def finish(
        self,
        fn: Callable[[*Ts], Awaitable[T]],
        *args: *Ts,
        dropped: Callable[[T], object] | None = None,
    ) -> T:
        with anyio.CancelScope(shield=True):
            result = await _run_as_core_task(
                self.front, self.core, fn, *args, dropped=dropped, cancellable=False
            )
        return result


class _LoopThreadRunner(_SameLoopRunner):
    """trio: the core runs on a private asyncio loop in a thread that this runner owns.

    Running a core call is the same as on one loop; only the loop's lifetime differs."""

    def __init__(self, front: LoopToken) -> None:
        self.front = front
        self.core: LoopToken
        self._stop: asyncio.Event
        self._thread: threading.Thread

    async def start(self) -> None:
        started = anyio.Event()
        self._stopped = anyio.Event()
        self._thread = threading.Thread(
            target=self._main, args=(started,), name=LOOP_THREAD_NAME, daemon=True
        )
        self._thread.start()
        with anyio.CancelScope(shield=True):  # a cancelled caller still gets a stoppable loop
            await started.wait()

    def _main(self, started: anyio.Event) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(started))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            self.front.run_sync_soon(self._stopped.set)

    async def _serve(self, started: anyio.Event) -> None:
        self._stop = asyncio.Event()
        self.core = current_loop_token()
        self.front.run_sync_soon(started.set)
        await self._stop.wait()

    async def aclose(self) -> None:
        """Stop the loop thread and join it. Cancel-shielded; call once everything has run."""
        with anyio.CancelScope(shield=True):
            self.core.run_sync_soon(self._stop.set)
            await self._stopped.wait()
        # The thread has closed its loop and made its last call: this join is immediate.
        self._thread.join()


@asynccontextmanager
async def open_core_runner() -> AsyncIterator[CoreRunner]:
    """Choose how to run the asyncio core for the event loop running in this thread.

    Under asyncio (any asyncio loop, uvloop included) the core shares the caller's loop. Under
    trio a private asyncio loop thread is started here and joined when the context exits.
    """
    native = anyio.lowlevel.current_token().native_token
    front = LoopToken(native)
    if isinstance(native, asyncio.AbstractEventLoop):
        yield _SameLoopRunner(front)
        return
    runner = _LoopThreadRunner(front)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.aclose()
