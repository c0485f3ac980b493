"""Pacing of run() calls (dask_anyio._pace): a burst of calls submits over several turns of
the event loop, a budget of submitting per turn, so that timers and I/O are not kept waiting.
On the fake core, with a clock that only submitting advances: deterministic."""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from dask_anyio import _pace

from .fakecore import FakeCore

pytestmark = pytest.mark.anyio

#: What one submit costs on the fake clock.
COST = 0.0003


def work(x: int) -> int:
    return x


def _core_whose_submits_cost(monkeypatch: pytest.MonkeyPatch) -> FakeCore:
    """A fake core on a clock that only its submits advance, by COST each."""
    now = [0.0]
    monkeypatch.setattr(_pace, "clock", lambda: now[0])
    core = FakeCore()
    submit = core.submit

    def costly_submit(*args: Any, **kwargs: Any) -> Any:
        now[0] += COST
        return submit(*args, **kwargs)

    monkeypatch.setattr(core, "submit", costly_submit)
    return core


async def _submits_per_turn(monkeypatch: pytest.MonkeyPatch, calls: int) -> list[int]:
    """Start ``calls`` run() calls at once; how many submits each turn of a ticker saw."""
    core = _core_whose_submits_cost(monkeypatch)
    seen: list[int] = []
    async with core.executor() as ex, anyio.create_task_group() as tg:

        async def tick() -> None:
            while len(core.tasks) < calls:
                seen.append(len(core.tasks))
                await anyio.lowlevel.checkpoint()
            seen.append(len(core.tasks))

        tg.start_soon(tick)
        for i in range(calls):
            tg.start_soon(ex.run, work, i)
        await anyio.wait_all_tasks_blocked()
        for task in list(core.tasks):
            core.finish(task)
    core.check_clean()
    assert seen[-1] == calls  # (the ticker's first step may come after some submits)
    return [b - a for a, b in itertools.pairwise(seen)]


async def test_a_burst_of_calls_submits_over_several_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100 calls at once, 0.3 ms of submitting each: no turn of the loop submits much more
    than its 2 ms budget (one submit may overrun it), and all of them are submitted. (A
    ticker sees the turns: between two of its steps, one turn under asyncio, which runs
    tasks in order; up to two under trio, which runs a turn's tasks in any order.) Without
    pacing, all 100 are submitted in the first turn."""
    per_turn = await _submits_per_turn(monkeypatch, 100)
    most = 2 * (int(_pace.BUDGET / COST) + 1)
    assert max(per_turn) <= most, per_turn
    assert len([n for n in per_turn if n]) >= 100 // most


async def test_calls_far_apart_never_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls one after another, each after a pause (the loop did other things): each
    starts a budget of its own, and none waits for a turn."""
    now = [0.0]
    monkeypatch.setattr(_pace, "clock", lambda: now[0])
    pace = _pace.Pace()
    for _ in range(100):
        now[0] += _pace.PAUSE * 2
        await pace.turn()
        assert pace._budget == 0
        with pace.spending():
            now[0] += COST
        assert pace._spent == pytest.approx(COST)


async def test_calls_that_finish_together_take_their_values_over_several_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100 pending calls whose tasks all finish at once: each completion is charged
    COMPLETION, and they fetch their values over several turns of the loop, not in one;
    every call gets its value. Without pacing, all 100 fetch in the first turn."""
    monkeypatch.setattr(_pace, "clock", lambda: 0.0)  # (only the charges count)
    core = FakeCore()
    result = core.result
    fetched: list[int] = []

    async def counted_result(future: Any) -> Any:
        fetched.append(1)
        return await result(future)

    monkeypatch.setattr(core, "result", counted_result)
    values: list[int] = []
    seen: list[int] = []
    async with core.executor() as ex, anyio.create_task_group() as tg:

        async def call(i: int) -> None:
            values.append(await ex.run(work, i))

        for i in range(100):
            tg.start_soon(call, i)
        await anyio.wait_all_tasks_blocked()
        for task in list(core.tasks.values()):
            core.finish(task.key, task.args[0] + 1)
        while len(fetched) < 100:
            seen.append(len(fetched))
            await anyio.lowlevel.checkpoint()
        seen.append(len(fetched))
    core.check_clean()
    assert sorted(values) == list(range(1, 101))
    per_turn = [b - a for a, b in itertools.pairwise(seen)]
    most = 2 * (int(_pace.BUDGET / _pace.COMPLETION) + 1)  # (two turns a step under trio)
    assert max(per_turn) <= most, per_turn


@pytest.mark.parametrize("race", [False, True], ids=["spent", "pause-over-meanwhile"])
async def test_a_cancelled_caller_submits_nothing_while_the_budget_is_spent(
    monkeypatch: pytest.MonkeyPatch, race: bool
) -> None:
    """The budget spent, a cancelled caller raises at its wait for a turn and submits
    nothing: also when the clock, read again, says the pause has passed meanwhile (the
    wait then still checkpoints once)."""
    now = [0.0]
    monkeypatch.setattr(_pace, "clock", lambda: now[0])
    core = FakeCore()
    async with core.executor() as ex:
        with ex._scope.pace.spending():
            now[0] += _pace.BUDGET
        if race:  # the first look: spent; every look after: the pause is over
            reads = itertools.chain([now[0]], itertools.repeat(now[0] + 2 * _pace.PAUSE))
            monkeypatch.setattr(_pace, "clock", lambda: next(reads))
        with anyio.CancelScope() as scope:
            scope.cancel()
            await ex.run(work, 1)
        assert scope.cancelled_caught
        assert not core.tasks
    core.check_clean()


async def test_calls_waiting_their_turn_when_the_executor_closes_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20 calls at once, the budget spent after 7, and the executor's exit begins while
    the others wait for their turn: those are refused (the executor is closing), none
    submits after the exit began, the submitted ones finish, and nothing is left."""
    core = _core_whose_submits_cost(monkeypatch)
    refused: list[RuntimeError] = []

    async def finish_all() -> None:
        await anyio.wait_all_tasks_blocked()
        for task in list(core.tasks.values()):
            core.finish(task.key, 0)

    async with anyio.create_task_group() as outer, core.executor() as ex:

        async def call(i: int) -> None:
            try:
                await ex.run(work, i)
            except RuntimeError as error:
                refused.append(error)

        for i in range(20):
            outer.start_soon(call, i)
        while len(core.tasks) < 7:
            await anyio.lowlevel.checkpoint()
        outer.start_soon(finish_all)
        submitted = len(core.tasks)  # (7, or 14 if trio ran this after a second turn's)
    assert submitted < 20
    assert len(core.tasks) == submitted  # none after the exit began
    assert len(refused) == 20 - submitted, refused
    assert all("clos" in str(error) for error in refused), refused
    core.check_clean()
