"""The thread bridge's one primitive, LoopToken.run_sync_soon: calls keep their order, a burst
of them wakes the loop once, a failed one does not stop the others, and a finished loop says
so. On every backend, and on loops of their own where a loop must end or fail."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import trio

from dask_anyio._bridge import LOOP_THREAD_NAME, LoopToken, current_loop_token

CALLS = 200


def _before_each_schedule(token: LoopToken, before: Callable[[], object]) -> None:
    """Make ``token`` call ``before()`` each time it wakes its loop (schedules a callback)."""
    for name in ("_schedule", "_schedule_here"):
        schedule = getattr(token, name, None)
        if schedule is None:  # (one way of scheduling only)
            continue

        def wrapped(fn: Callable[..., object], *args: Any, schedule: Any = schedule) -> object:
            before()
            return schedule(fn, *args)

        setattr(token, name, wrapped)


def _count_schedules(token: LoopToken) -> list[int]:
    """Count how often ``token`` wakes its loop."""
    scheduled = [0]
    _before_each_schedule(token, lambda: scheduled.__setitem__(0, scheduled[0] + 1))
    return scheduled


@pytest.mark.anyio
@pytest.mark.parametrize("source", ["the loop itself", "another thread"])
async def test_a_burst_of_calls_runs_in_order_in_one_wakeup(source: str) -> None:
    token = current_loop_token()
    scheduled = _count_schedules(token)
    ran: list[int] = []
    done = anyio.Event()

    def burst() -> None:
        for i in range(CALLS):
            assert token.run_sync_soon(ran.append, i)
        assert ran == []  # never inline
        token.run_sync_soon(done.set)

    if source == "another thread":
        thread = threading.Thread(target=burst)
        thread.start()
        thread.join()  # the loop is held meanwhile: nothing can run before the whole burst
    else:
        burst()
    with anyio.fail_after(10):
        await done.wait()
    assert ran == list(range(CALLS))
    assert scheduled == [1]


@pytest.mark.anyio
async def test_calls_from_two_threads_keep_each_threads_order() -> None:
    token = current_loop_token()
    ran: list[tuple[str, int]] = []
    finished = anyio.Event()
    left = [2]

    def one_done() -> None:
        left[0] -= 1
        if not left[0]:
            finished.set()

    def burst(name: str) -> None:
        for i in range(CALLS):
            token.run_sync_soon(ran.append, (name, i))
        token.run_sync_soon(one_done)

    async with anyio.create_task_group() as tg:
        for name in "ab":
            tg.start_soon(anyio.to_thread.run_sync, burst, name)
    with anyio.fail_after(10):
        await finished.wait()
    for name in "ab":
        assert [i for n, i in ran if n == name] == list(range(CALLS))


@pytest.mark.anyio
async def test_a_call_scheduled_while_the_loop_runs_a_batch_gets_a_new_one() -> None:
    token = current_loop_token()
    ran: list[str] = []
    done = anyio.Event()

    def first() -> None:
        ran.append("first")
        token.run_sync_soon(second)  # in the middle of a batch: runs after it

    def second() -> None:
        ran.append("second")
        done.set()

    token.run_sync_soon(first)
    token.run_sync_soon(ran.append, "batch")
    with anyio.fail_after(10):
        await done.wait()
    assert ran == ["first", "batch", "second"]


# -- failures and finished loops: on loops of the test's own ---------------------------------


class Boom(Exception):
    pass


def _boom() -> None:
    raise Boom


def test_asyncio_a_failed_call_goes_to_the_exception_handler_and_the_rest_still_run() -> None:
    handled: list[dict[str, Any]] = []
    ran: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: handled.append(context))
        token = current_loop_token()
        done = asyncio.Event()
        token.run_sync_soon(ran.append, 1)
        token.run_sync_soon(_boom)
        token.run_sync_soon(ran.append, 2)
        token.run_sync_soon(done.set)
        await asyncio.wait_for(done.wait(), 10)

    asyncio.run(main())
    assert ran == [1, 2]
    assert len(handled) == 1
    assert isinstance(handled[0]["exception"], Boom)


def test_trio_a_failed_call_ends_the_run_as_trio_does_and_the_rest_still_run() -> None:
    ran: list[int] = []

    async def main() -> None:
        token = current_loop_token()
        token.run_sync_soon(ran.append, 1)
        token.run_sync_soon(_boom)
        token.run_sync_soon(ran.append, 2)
        await trio.sleep_forever()

    with pytest.raises(trio.TrioInternalError) as caught:
        trio.run(main)
    cause = caught.value.__cause__
    assert isinstance(cause, BaseExceptionGroup)
    assert cause.subgroup(Boom) is not None
    assert ran == [1, 2]


def test_asyncio_a_closed_loop_refuses_calls() -> None:
    loop = asyncio.new_event_loop()
    token = LoopToken(loop)
    assert token.run_sync_soon(print)  # accepted: the loop is not closed yet
    loop.close()  # (with that call still queued: it never runs)
    assert not token.run_sync_soon(print)
    fresh = LoopToken(loop)
    assert not fresh.run_sync_soon(print)


def test_trio_a_finished_run_refuses_calls_and_runs_those_it_accepted() -> None:
    ran: list[int] = []

    async def main() -> LoopToken:
        token = current_loop_token()
        token.run_sync_soon(ran.append, 1)  # accepted at the very end of the run
        return token

    token = trio.run(main)
    assert ran == [1]
    assert not token.run_sync_soon(ran.append, 2)
    assert ran == [1]


@pytest.mark.anyio
async def test_a_call_made_while_scheduling_on_the_same_thread_does_not_deadlock() -> None:
    """Code that runs in the middle of run_sync_soon on the same thread (a __del__ run by
    the garbage collector, a signal handler) may call it again."""
    token = current_loop_token()
    ran: list[str] = []
    done = anyio.Event()
    reentered = [False]

    def reenter() -> None:
        if not reentered[0]:
            reentered[0] = True
            token.run_sync_soon(ran.append, "inner")

    _before_each_schedule(token, reenter)

    def outer() -> None:
        token.run_sync_soon(ran.append, "outer")
        token.run_sync_soon(done.set)

    thread = threading.Thread(target=outer, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "run_sync_soon deadlocked on its own lock"
    with anyio.fail_after(10):
        await done.wait()
    assert sorted(ran) == ["inner", "outer"]


@pytest.mark.anyio
async def test_an_interrupt_while_scheduling_leaves_the_token_working() -> None:
    token = current_loop_token()
    interrupted = [False]

    def interrupt_once() -> None:
        if not interrupted[0]:
            interrupted[0] = True
            raise KeyboardInterrupt

    _before_each_schedule(token, interrupt_once)
    with pytest.raises(KeyboardInterrupt):
        token.run_sync_soon(print, "never")
    done = anyio.Event()
    assert token.run_sync_soon(done.set)
    with anyio.fail_after(10):
        await done.wait()


def test_asyncio_every_failure_of_a_batch_goes_to_the_handler() -> None:
    handled: list[BaseException] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: handled.append(context["exception"]))
        token = current_loop_token()
        done = asyncio.Event()
        token.run_sync_soon(_boom)
        token.run_sync_soon(_boom)
        token.run_sync_soon(done.set)
        await asyncio.wait_for(done.wait(), 10)

    asyncio.run(main())
    assert [type(e) for e in handled] == [Boom, Boom]


def test_asyncio_an_interrupt_from_a_call_leaves_the_rest_queued() -> None:
    loop = asyncio.new_event_loop()
    try:
        token = LoopToken(loop)
        ran: list[int] = []

        def interrupt() -> None:
            raise KeyboardInterrupt

        token.run_sync_soon(ran.append, 1)
        token.run_sync_soon(interrupt)
        token.run_sync_soon(ran.append, 2)
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(asyncio.sleep(0))
        assert ran == [1]
        loop.run_until_complete(asyncio.sleep(0))  # the loop goes on: so do the calls
        assert ran == [1, 2]
    finally:
        loop.close()


class _InterruptingLock:
    """A reentrant lock that raises KeyboardInterrupt once, when next taken, once armed."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.armed = False

    def __enter__(self) -> bool:
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        return self._lock.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(*exc)


def test_asyncio_an_interrupt_landing_in_the_drain_before_it_took_the_queue() -> None:
    """The drain that was due is used up: it wakes the loop again, else every later call
    would wait for a drain that never comes."""
    loop = asyncio.new_event_loop()
    try:
        token = LoopToken(loop)
        lock = _InterruptingLock()
        token._lock = lock  # type: ignore[assignment]
        ran: list[int] = []
        token.run_sync_soon(ran.append, 1)
        lock.armed = True  # the drain's own taking of the lock
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(asyncio.sleep(0))
        assert ran == []
        token.run_sync_soon(ran.append, 2)
        loop.run_until_complete(asyncio.sleep(0))
        assert ran == [1, 2]
    finally:
        loop.close()


def test_trio_several_failures_of_a_batch_end_the_run_together() -> None:
    async def main() -> None:
        token = current_loop_token()
        token.run_sync_soon(_boom)
        token.run_sync_soon(_boom)
        await trio.sleep_forever()

    with pytest.raises(trio.TrioInternalError) as caught:
        trio.run(main)
    cause = caught.value.__cause__
    assert isinstance(cause, BaseExceptionGroup)
    booms = cause.subgroup(Boom)
    assert booms is not None
    assert sum(1 for _ in _leaves(booms)) == 2


def _leaves(group: BaseExceptionGroup[Any]) -> Any:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from _leaves(error)
        else:
            yield error


# -- what crosses with the bridge: Dask's client on its own loop -----------------------------


@pytest.mark.anyio
async def test_keys_are_released_on_the_core_loop(
    external_cluster: Any, monkeypatch: pytest.MonkeyPatch, anyio_backend: Any
) -> None:
    """Dask's Future.release() from another thread wakes the client's loop once per key:
    dask-anyio releases on the core loop, where it costs nothing, the keys of a loop turn
    crossing together. (Under asyncio the core loop is the caller's.)"""
    from dask_anyio import DaskExecutor
    from dask_anyio._core import DaskCore

    from .tasks import inc

    threads: list[str] = []

    def spy(release: Any) -> Any:
        def spied(future: Any) -> None:
            threads.append(threading.current_thread().name)
            release(future)

        return staticmethod(spied)

    # (a release that crossed from the trio thread drops the reference at once)
    monkeypatch.setattr(DaskCore, "release", spy(DaskCore.release))
    monkeypatch.setattr(DaskCore, "release_now", spy(DaskCore.release_now))
    caller = threading.current_thread().name
    core_thread = LOOP_THREAD_NAME if anyio_backend[0] == "trio" else caller
    async with DaskExecutor(external_cluster.address) as ex:
        assert await ex.run(inc, 1) == 2
        assert await ex.gather(ex.map(inc, range(10))) == list(range(1, 11))
    assert external_cluster.scheduler_keys() == set()
    assert len(threads) == 11
    assert set(threads) == {core_thread}
