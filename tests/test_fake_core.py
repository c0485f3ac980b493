"""Collaboration tests of the front end over a fake core (tests/fakecore.py): every
interleaving of submit, finish, failure, cancel, await and exit, fast enough to be
exhaustive. The real-cluster tests check the same rules slowly, on Dask itself."""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import pytest

from dask_anyio import (
    ExecutorStatistics,
    SchedulerLost,
    TaskCancelled,
    TaskHandle,
    TaskStatus,
)
from dask_anyio._core import DaskCore
from dask_anyio._errors import CancelReason

from .fakecore import FakeCore

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


class Boom(Exception):
    pass


def work(x: int) -> int:
    return x + 1


def test_the_fake_core_offers_what_dask_core_offers() -> None:
    """FakeCore has every public method and property of DaskCore, with its parameters:
    the fake cannot drift from the real core unnoticed."""
    for name, real in inspect.getmembers(DaskCore):
        if name.startswith("_") or name == "open":
            continue
        fake = getattr(FakeCore, name, None)
        if isinstance(real, property) or not callable(real):
            assert hasattr(FakeCore(), name), name
            continue
        assert fake is not None, name
        real_params = [p for p in inspect.signature(real).parameters if p != "self"]
        fake_params = [p for p in inspect.signature(fake).parameters if p != "self"]
        assert fake_params == real_params, name
        assert inspect.iscoroutinefunction(fake) == inspect.iscoroutinefunction(real), name


# -- every fate of every task, every exit ------------------------------------------------

FATES = ["finish", "fail", "cancel", "pending"]
#: "lost": the scheduler is lost before a normal exit (Dask cancels what is pending).
EXITS = ["normal", "error", "cancelled", "lost"]


async def _one_case(fates: tuple[str, ...], observed: tuple[bool, ...], exit: str) -> None:
    """Submit a task per fate, apply the fates in order, await those ``observed``, exit;
    then check what the exit raised, the statistics and that nothing is left."""
    core = FakeCore()
    handles: list[TaskHandle[Any]] = []
    raised: BaseException | None = None
    ex = core.executor()
    submitted = anyio.Event()

    async def body() -> None:
        nonlocal handles, raised
        try:
            with anyio.CancelScope() as scope:
                async with ex:
                    handles = [ex.submit(work, i) for i in range(len(fates))]
                    for handle, fate in zip(handles, fates, strict=True):
                        if fate == "finish":
                            core.finish(handle, 1)
                        elif fate == "fail":
                            core.fail(handle, Boom(handle.key))
                        elif fate == "cancel":
                            assert handle.cancel()
                    submitted.set()
                    for handle, fate, seen in zip(handles, fates, observed, strict=True):
                        if seen and fate == "finish":
                            await handle
                        elif seen and fate != "pending":
                            with pytest.raises((Boom, TaskCancelled)):
                                await handle
                    if exit == "lost":
                        core.lose_scheduler()
                    if exit == "error":
                        raise KeyError("body")  # noqa: TRY301
                    if exit == "cancelled":
                        scope.cancel()
                        await anyio.sleep_forever()
        except BaseException as error:
            raised = error

    async def finish_pending() -> None:  # as the normal exit waits for each
        await submitted.wait()
        while core.pending():
            core.finish((await core.watched_pending()).key, 1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(body)
        if exit == "normal" and "pending" in fates:
            tg.start_soon(finish_pending)
    core.check_clean()
    expected_failures = [
        h.key
        for h, fate, seen in zip(handles, fates, observed, strict=True)
        if fate == "fail" and not seen
    ]
    lost = fates.count("pending") if exit == "lost" else 0
    if exit in ("normal", "lost"):
        if expected_failures or lost:
            assert isinstance(raised, ExceptionGroup), raised
            booms = [e for e in raised.exceptions if isinstance(e, Boom)]
            assert sorted(str(e) for e in booms) == sorted(expected_failures)
            losses = [e for e in raised.exceptions if isinstance(e, SchedulerLost)]
            assert len(raised.exceptions) == len(booms) + len(losses)
            assert len(losses) == min(lost, 1)  # told once, however many were pending
            if lost > 1:
                assert f"{lost} tasks nobody awaited" in "".join(losses[0].__notes__)
        else:
            assert raised is None, raised
    elif exit == "error":
        assert isinstance(raised, KeyError)
        notes = "".join(getattr(raised, "__notes__", []))
        for key in expected_failures:
            assert key in notes
    else:
        assert raised is None, raised  # the scope caught its own cancellation
    if exit in ("error", "cancelled"):  # the pending tasks were cancelled, for the exit's reason
        pending = {h.key for h, fate in zip(handles, fates, strict=True) if fate == "pending"}
        exit_cancels = {k for keys, why in core.cancels if why == CancelReason.EXIT for k in keys}
        assert exit_cancels == pending
    statuses = [h.status for h in handles]
    stats = ex.statistics()
    assert stats == ExecutorStatistics(
        submitted=len(fates),
        pending=0,
        finished=statuses.count(TaskStatus.FINISHED),
        failed=statuses.count(TaskStatus.ERROR),
        cancelled=statuses.count(TaskStatus.CANCELLED),
        in_flight=0,
    )


async def test_every_fate_and_exit() -> None:
    """Three tasks, each finished, failed, cancelled or still pending at exit, awaited or
    not, in every order, for each kind of exit (normal, error, cancelled, after losing the
    scheduler): the exit raises exactly the unobserved failures (or notes them on the
    body's error; tasks pending when the scheduler was lost as one SchedulerLost), cancels
    what was pending on an error exit, counts every task, and leaves no key, future or
    watch behind."""
    cases = 0
    for fates in itertools.product(FATES, repeat=3):  # (every order of the fates, too)
        for observed in itertools.product([False, True], repeat=3):
            for exit in EXITS:
                await _one_case(fates, observed, exit)
                cases += 1
    assert cases == 4**3 * 2**3 * 4


# -- batches: one request for what happens together ---------------------------------------


async def test_run_calls_cancelled_together_send_one_cancel() -> None:
    """A cancelled task group of 50 run() calls: one cancel request with all 50 keys, for
    the scope's reason; each call's key is then released and nothing is left."""
    core = FakeCore()
    async with core.executor() as ex:
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(ex.run, work, i)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        assert [(len(keys), why) for keys, why in core.cancels] == [(50, CancelReason.SCOPE)]
        assert ex.statistics().in_flight == 0
    core.check_clean()


async def test_a_burst_of_handle_cancels_sends_one_request() -> None:
    core = FakeCore()
    async with core.executor() as ex:
        handles = ex.map(work, range(30))
        assert all(h.cancel() for h in handles)
        assert all(h.status is TaskStatus.CANCELLED for h in handles)  # at once
        await anyio.wait_all_tasks_blocked()
        assert [(len(keys), why) for keys, why in core.cancels] == [(30, CancelReason.HANDLE)]
        assert not handles[0].cancel()  # done already
    core.check_clean()


async def test_keys_released_by_run_are_confirmed_in_batches() -> None:
    """Released keys are confirmed with the scheduler in batches of ``confirm_batch``
    while the executor is open (memory stays bounded), the rest at exit."""
    core = FakeCore()
    core.auto = work
    async with core.executor(confirm_batch=3) as ex:
        for i in range(7):
            assert await ex.run(work, i) == i + 1
        await anyio.wait_all_tasks_blocked()
        assert [len(keys) for keys in core.confirmed] == [3, 3]
    assert [len(keys) for keys in core.confirmed] == [3, 3, 1]
    core.check_clean()


# -- single rules -------------------------------------------------------------------------


async def test_cancel_after_done_does_nothing() -> None:
    core = FakeCore()
    async with core.executor() as ex:
        handle = ex.submit(work, 1)
        core.finish(handle, 2)
        assert not handle.cancel()
        assert await ex.retrieve(handle) == 2
    assert core.cancels == []
    core.check_clean()


async def test_pure_calls_share_one_task_and_one_handle() -> None:
    core = FakeCore()
    async with core.executor() as ex:
        first = ex.submit(work, 1, pure=True)
        assert ex.submit(work, 1, pure=True) is first
        assert ex.submit(work, 2, pure=True) is not first
        assert ex.statistics().submitted == 2
        for task in core.pending():
            core.finish(task.key, 0)
    core.check_clean()


async def test_a_cancelled_retrieve_leaves_the_task_to_retrieve_again() -> None:
    """Cancelling a retrieve stops the waiting only: the task runs on, no watch is left,
    and a later retrieve gets the value."""
    core = FakeCore()
    async with core.executor() as ex:
        handle = ex.submit(work, 1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(ex.retrieve, handle)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        assert handle.status is TaskStatus.PENDING
        assert core.cancels == []
        core.finish(handle, 7)
        assert await ex.retrieve(handle) == 7
    core.check_clean()


async def test_scheduler_loss_fails_waits_and_submits_and_is_told_once_at_exit() -> None:
    core = FakeCore()
    ex = core.executor()

    async def body() -> None:
        async with ex:
            awaited = ex.submit(work, 0)
            ex.map(work, range(3))  # nobody awaits these
            core.lose_scheduler()
            with pytest.raises(SchedulerLost):
                await awaited
            with pytest.raises(SchedulerLost):
                ex.submit(work, 1)
            with pytest.raises(SchedulerLost):
                await ex.run(work, 1)

    with pytest.raises(ExceptionGroup) as info:
        await body()
    [lost] = info.value.exceptions
    assert isinstance(lost, SchedulerLost)
    assert "3 tasks nobody awaited were pending" in "".join(lost.__notes__)
    core.check_clean()


# -- result streams -----------------------------------------------------------------------


async def test_imap_never_holds_more_than_max_in_flight() -> None:
    core = FakeCore()
    core.auto = work
    async with core.executor() as ex, ex.imap(work, range(200), max_in_flight=4) as results:
        got = [value async for value in results]
    assert got == [i + 1 for i in range(200)]
    assert core.most_held == 4
    core.check_clean()


async def test_leaving_an_imap_early_cancels_what_is_in_flight() -> None:
    core = FakeCore()
    async with core.executor() as ex:
        async with ex.imap(work, itertools.count(), max_in_flight=3) as results:
            got = []

            async def first() -> None:
                got.append(await anext(results))

            async with anyio.create_task_group() as tg:
                tg.start_soon(first)  # (the stream starts with its first iteration)
                await anyio.wait_all_tasks_blocked()
                assert len(core.pending()) == 3
                core.finish(0, "first")
            assert got == ["first"]
            await anyio.wait_all_tasks_blocked()
            in_flight = {t.key for t in core.pending()}
            assert len(in_flight) == 3  # the next item took the free slot
        cancelled = {k for keys, why in core.cancels if why == CancelReason.STREAM for k in keys}
        assert cancelled == in_flight
    core.check_clean()


async def test_the_exit_is_a_checkpoint_with_nothing_outstanding() -> None:
    """As a nursery's: a scope cancelled in the body is caught at the executor's exit."""
    core = FakeCore()
    with anyio.CancelScope() as scope:
        async with core.executor():
            scope.cancel()
    assert scope.cancelled_caught
    core.check_clean()


# -- waiting for many together (Watcher.watch_together) -----------------------------------


def _count_deliveries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the batches of completions the core hands to the caller's loop."""
    from dask_anyio._watch import Watcher

    count = [0]
    settle_all = Watcher._settle_all

    def counting(self: Watcher, handles: list[TaskHandle[Any]]) -> None:
        count[0] += 1
        settle_all(self, handles)

    monkeypatch.setattr(Watcher, "_settle_all", counting)
    return count


async def test_a_gather_whose_tasks_finish_one_by_one_wakes_its_caller_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core = FakeCore()
    deliveries = _count_deliveries(monkeypatch)
    got: list[Any] = []
    async with core.executor() as ex:
        handles = ex.map(work, range(5))
        async with anyio.create_task_group() as tg:

            async def gather() -> None:
                got.append(await ex.gather(handles))

            tg.start_soon(gather)
            for i, handle in enumerate(handles):
                await anyio.wait_all_tasks_blocked()
                core.finish(handle, i)  # each in a loop turn of its own
    assert got == [[0, 1, 2, 3, 4]]
    assert deliveries == [1]
    core.check_clean()


async def _gather_holding(
    core: FakeCore, tg: anyio.abc.TaskGroup, gather: Callable[[], Awaitable[object]], held: Any
) -> None:
    """Start ``gather`` in ``tg``; once it waits, finish ``held`` (its completion is then
    held back for the gather, whose other tasks are pending)."""
    tg.start_soon(gather)
    await anyio.wait_all_tasks_blocked()
    core.finish(held, 0)
    await anyio.wait_all_tasks_blocked()


async def test_a_gather_hears_of_a_failure_at_once() -> None:
    """A finished task is held back, then another fails while a third is pending: the
    gather raises at once."""
    core = FakeCore()
    async with core.executor() as ex:
        a, b, c = ex.map(work, range(3))
        raised = anyio.Event()

        async def gather() -> None:
            with pytest.raises(Boom, match="second"):
                await ex.gather([a, b, c])
            raised.set()

        async with anyio.create_task_group() as tg:
            await _gather_holding(core, tg, gather, a)
            core.fail(b, Boom("second"))
            with anyio.fail_after(5):
                await raised.wait()
            assert not c.done()
        core.finish(c, 2)
    core.check_clean()


async def test_a_second_gather_of_a_task_held_for_the_first_gets_it_at_once() -> None:
    """gather([a, b]), then gather([a, c]); a and c finish: the second returns while b is
    pending (a's completion is not kept for the first gather)."""
    core = FakeCore()
    async with core.executor() as ex:
        a, b, c = ex.map(work, range(3))
        second: list[Any] = []
        returned = anyio.Event()

        async def gather_second() -> None:
            second.append(await ex.gather([a, c]))
            returned.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(ex.gather, [a, b])
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(gather_second)
            await anyio.wait_all_tasks_blocked()
            core.finish(a, 0)
            core.finish(c, 2)
            with anyio.fail_after(5):
                await returned.wait()
            assert second == [[0, 2]]
            assert not b.done()
            core.finish(b, 1)
    core.check_clean()


async def test_a_task_cancelled_by_us_ends_the_holding_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gather(errors="skip") of [a, b]; a finishes (held back), then b is cancelled through
    its handle: the gather returns [a's value] without waiting for the cluster's word."""
    core = FakeCore()
    cluster_told = anyio.Event()
    cancel = core.cancel

    async def slow_cancel(futures: Any, reason: str) -> None:
        await cluster_told.wait()
        await cancel(futures, reason)

    monkeypatch.setattr(core, "cancel", slow_cancel)
    got: list[Any] = []
    async with core.executor() as ex:
        a, b = ex.map(work, range(2))
        returned = anyio.Event()

        async def gather() -> None:
            got.append(await ex.gather([a, b], errors="skip"))
            returned.set()

        async with anyio.create_task_group() as tg:
            await _gather_holding(core, tg, gather, a)
            assert b.cancel()
            try:
                with anyio.fail_after(5):
                    await returned.wait()
            finally:
                cluster_told.set()
    assert got == [[0]]
    core.check_clean()


async def test_a_task_held_back_for_a_gather_is_told_at_once_to_another_waiter() -> None:
    """A gather of [a, b]; then someone awaits a. a finishes: its waiter hears of it while
    b is still pending, not when the gather's last task is in."""
    core = FakeCore()
    woken: list[str] = []
    async with core.executor() as ex:
        a, b = ex.map(work, range(2))
        async with anyio.create_task_group() as tg:

            async def gather() -> None:
                await ex.gather([a, b])
                woken.append("gather")

            a_woken = anyio.Event()

            async def wait_for_a() -> None:
                await a
                woken.append("a")
                a_woken.set()

            tg.start_soon(gather)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(wait_for_a)
            await anyio.wait_all_tasks_blocked()
            core.finish(a, 0)
            with anyio.fail_after(5):
                await a_woken.wait()
            assert woken == ["a"]
            core.finish(b, 1)
        assert woken == ["a", "gather"]
    core.check_clean()


async def test_a_cancelled_gather_lets_go_of_what_the_core_held_back() -> None:
    from dask_anyio._handle import state_of

    core = FakeCore()
    async with core.executor() as ex:
        a, b = ex.map(work, range(2))
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                await _gather_holding(core, tg, functools.partial(ex.gather, [a, b]), a)
                assert state_of(a).watched not in (True, False)
                scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert state_of(a).watched is False  # delivered: the watch is over
        assert await ex.retrieve(a) == 0
        core.finish(b, 1)
    core.check_clean()
