# pyright: strict, reportUnnecessaryTypeIgnoreComment=true
"""The types users see, pinned with ``assert_type``; checked by type checkers, never run.

``nox -s typecheck`` runs ``mypy --strict`` and ``pyright`` on this file. Not collected by
pytest (its name does not start with ``test_``): the functions here only need to type-check.

An expected error is marked ``# type: ignore[CODE]`` (mypy's error code), and both tools
prove that the error is there: mypy --strict (``warn_unused_ignores``) reports a
``type: ignore`` that suppresses nothing, or one whose code is not the error's, and pyright,
with ``reportUnnecessaryTypeIgnoreComment`` on (first line of this file), reports a
``type: ignore`` that suppresses nothing. Pyright honours ``type: ignore`` whatever its code,
and before any ``pyright: ignore[RULE]`` on the same line, which would therefore always be
reported as unnecessary: so there is none, and only mypy checks the kind of the error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, assert_type

import distributed
from dask.delayed import Delayed

import dask_anyio
from dask_anyio import (
    Actor,
    AsCompleted,
    CancelledOnWorker,
    DaskExecutor,
    Event,
    ExecutorStatistics,
    Lock,
    PerformanceReport,
    Queue,
    ResultStream,
    Semaphore,
    TaskCancelled,
    TaskHandle,
    TaskStatus,
    TaskStream,
    Variable,
    checkpoint,
    kill_on_cancel,
)


def double(x: int) -> int:
    return 2 * x


def describe(n: int, label: str) -> float:
    return float(n)


def nothing() -> None:
    pass


async def check_executor() -> None:
    async with DaskExecutor() as ex:
        assert_type(ex, DaskExecutor)
        assert_type(ex.client, distributed.Client)
        assert_type(ex.dashboard_link, str | None)
        assert_type(ex.statistics(), ExecutorStatistics)
        assert_type(ex.lock("name"), Lock)
        async with ex.semaphore("name", max_leases=2) as sem:
            assert_type(sem, Semaphore)
            assert_type(sem.held, int)
        async with ex.lock("name") as lock:
            assert_type(lock, Lock)
    async with DaskExecutor("tcp://127.0.0.1:8786", connect_timeout=5) as ex:
        assert_type(ex, DaskExecutor)
    kept = await DaskExecutor().open()  # a notebook's, across cells
    assert_type(kept, DaskExecutor)
    assert_type(await kept.aclose(), None)


async def check_several_collections(ex: DaskExecutor, collection: Delayed) -> None:
    assert_type(await ex.persist(collection), Delayed)
    assert_type(await ex.persist(collection, collection, workers="w"), tuple[Any, ...])
    assert_type(ex.submit(double, 1).future, distributed.Future[int])


async def check_submit_and_retrieve(ex: DaskExecutor) -> None:
    handle = ex.submit(double, 1)
    assert_type(handle, TaskHandle[int])
    assert_type(ex.submit(double, 1, key="k", pure=True, retries=2), TaskHandle[int])
    assert_type(ex.submit(nothing), TaskHandle[None])
    # a handle as an argument stands for its value on the cluster
    assert_type(ex.submit(double, handle), TaskHandle[int])

    assert_type(await ex.retrieve(handle), int)
    assert_type(await handle, None)
    assert_type(handle.status, TaskStatus)
    assert_type(handle.key, str)
    assert_type(handle.done(), bool)
    assert_type(handle.cancel(), bool)

    handles = ex.map(double, [1, 2, 3])
    assert_type(handles, list[TaskHandle[int]])
    assert_type(await ex.retrieve(handles[0]), int)

    # TaskHandle is covariant: a handle of bool is a handle of int, not of str
    flag = ex.submit(bool, 1)
    assert_type(flag, TaskHandle[bool])
    as_int: TaskHandle[int] = flag
    as_str: TaskHandle[str] = flag  # type: ignore[assignment]
    del as_int, as_str


async def check_run(ex: DaskExecutor) -> None:
    assert_type(await ex.run(describe, 1, "x"), float)
    assert_type(await ex.run(describe, 1, label="x"), float)
    assert_type(await ex.run(double, 2), int)
    assert_type(await ex.run(nothing), None)
    # run() checks the arguments against the function's parameters
    await ex.run(describe, "1", "x")  # type: ignore[arg-type]
    await ex.run(describe, 1, 2)  # type: ignore[arg-type]
    await ex.run(describe, 1)  # type: ignore[call-arg]
    await ex.run(describe, 1, "x", 2)  # type: ignore[call-arg]
    await ex.run(describe, 1, lable="x")  # type: ignore[call-arg]


async def check_as_completed(ex: DaskExecutor, flag: bool) -> None:
    handles = ex.map(double, [1, 2, 3])

    done = ex.as_completed(handles)
    assert_type(done, AsCompleted[TaskHandle[int]])
    async for handle in done:
        assert_type(handle, TaskHandle[int])
    done.add(ex.submit(double, 4))
    assert_type(len(done), int)

    async for handle, value in ex.as_completed(handles, with_results=True):
        assert_type(handle, TaskHandle[int])
        assert_type(value, int | TaskCancelled)
    async for pair in ex.as_completed(handles, with_results=True, raise_errors=True):
        assert_type(pair, tuple[TaskHandle[int], int | TaskCancelled])

    async for handle, outcome in ex.as_completed(handles, with_results=True, raise_errors=False):
        assert_type(handle, TaskHandle[int])
        assert_type(outcome, int | Exception)

    async for pair2 in ex.as_completed(handles, with_results=False, raise_errors=False):
        assert_type(pair2, TaskHandle[int])

    # flags known only at run time: either kind of item
    async for item in ex.as_completed(handles, with_results=flag, raise_errors=flag):
        assert_type(item, TaskHandle[int] | tuple[TaskHandle[int], int | Exception])

    # no handles yet: say what will be added (the checkers cannot guess it)
    later: AsCompleted[TaskHandle[int]] = ex.as_completed()
    later.update(handles)
    async for handle in later:
        assert_type(handle, TaskHandle[int])
    later_pairs: AsCompleted[tuple[TaskHandle[int], int | TaskCancelled]] = ex.as_completed(
        with_results=True
    )
    del later_pairs
    # AsCompleted is covariant, like any iterator
    general: AsCompleted[TaskHandle[object]] = ex.as_completed(handles)
    del general


async def check_imap(ex: DaskExecutor) -> None:
    stream = ex.imap(double, [1, 2, 3], max_in_flight=2)
    assert_type(stream, ResultStream[int])
    async with stream as results:
        assert_type(results, ResultStream[int])
        async for value in results:
            assert_type(value, int)

    async def numbers() -> AsyncIterator[int]:
        yield 1

    async for value in ex.imap(double, numbers(), max_in_flight=2, ordered=False):
        assert_type(value, int)
    # keyword arguments go to every call
    async with ex.imap(describe, [1], max_in_flight=1, label="x") as floats:
        async for number in floats:
            assert_type(number, float)
    # fn takes the item as its first argument
    ex.imap(nothing, [1], max_in_flight=1)  # type: ignore[arg-type]


async def check_scatter(ex: DaskExecutor, pair: tuple[int, str]) -> None:
    assert_type(await ex.scatter([1, 2]), list[TaskHandle[int]])
    assert_type(await ex.scatter({"a": 1.0}), dict[str, TaskHandle[float]])
    assert_type(await ex.scatter(3), TaskHandle[int])
    assert_type(await ex.scatter(pair), TaskHandle[tuple[int, str]])
    assert_type(await ex.scatter([1, 2], broadcast=True), list[TaskHandle[int]])
    # scattered data goes into tasks like any handle
    [one, _] = await ex.scatter([1, 2])
    assert_type(ex.submit(double, one), TaskHandle[int])


async def check_collections(ex: DaskExecutor, lazy: Delayed) -> None:
    persisted = await ex.persist(lazy)
    assert_type(persisted, Delayed)
    assert_type(await ex.compute(persisted), Any)
    assert_type(await ex.gather([ex.submit(double, 1)]), Any)


def client_info(client: distributed.Client, n: int) -> str:
    return f"{client.id}: {n}"


async def check_call_client(ex: DaskExecutor) -> None:
    assert_type(await ex.call_client(client_info, 1), Any)
    await ex.call_client(client_info, "one")  # type: ignore[arg-type]
    await ex.call_client(client_info)  # type: ignore[call-arg]


async def double_later(x: int) -> int:
    return 2 * x


async def check_running_code(ex: DaskExecutor) -> None:
    """Tasks stopped where they run: kill_on_cancel keeps the call's types."""
    assert_type(checkpoint(), None)
    assert_type(await ex.run(kill_on_cancel(double), 1), int)
    assert_type(await ex.run(kill_on_cancel(double_later), 1), int)  # its result, awaited
    assert_type(ex.submit(kill_on_cancel(describe), 1, "a"), TaskHandle[float])
    await ex.run(kill_on_cancel(double), "one")  # type: ignore[arg-type]
    kill_on_cancel(double)(1, 2)  # type: ignore[call-arg]
    reschedule: type[distributed.Reschedule] = CancelledOnWorker  # Dask's own kind
    del reschedule


class Tally:
    def __init__(self, start: int) -> None:
        self.n = start

    def add(self, by: int) -> int:
        self.n += by
        return self.n

    async def add_later(self, by: int) -> int:
        return self.add(by)


async def check_shared(ex: DaskExecutor) -> None:
    """Queues, events, variables; actors, whose methods call() sees with their types."""
    assert_type(ex.queue("q"), Queue)
    assert_type(await ex.queue("q").get(), Any)
    assert_type(ex.event("e"), Event)
    assert_type(await ex.event("e").is_set(), bool)
    assert_type(ex.variable("v"), Variable)
    tally = await ex.actor(Tally, 1)
    assert_type(tally, Actor[Tally])
    assert_type(await tally.call(Tally.add, 2), int)
    assert_type(await tally.call(Tally.add_later, 2), int)  # a coroutine method's value
    assert_type(tally.handle, TaskHandle[Any])
    await tally.call(Tally.add, "two")  # type: ignore[call-overload]
    await ex.actor(Tally, "one")  # type: ignore[arg-type]


async def check_diagnostics(ex: DaskExecutor, handle: TaskHandle[int]) -> None:
    async with ex.performance_report("report.html") as report:
        assert_type(report, PerformanceReport)
    async with ex.task_stream(plot="save") as ts:
        assert_type(ts, TaskStream)
    assert_type(ts.data, list[dict[str, Any]])
    assert_type(await ex.progress([handle], description="work"), None)
    ex.task_stream(plot="yes")  # type: ignore[arg-type]


async def _twice(x: int) -> int:
    return 2 * x


async def check_task_trees() -> None:
    """subtasks() gives an executor; run_async() returns what the async function returns."""
    async with dask_anyio.subtasks() as ex:
        assert_type(ex, DaskExecutor)
    assert_type(dask_anyio.run_async(_twice, 1), int)
    assert_type(dask_anyio.run_async(_twice, 1, backend="trio"), int)
    dask_anyio.run_async(_twice, "one")  # type: ignore[arg-type]
    dask_anyio.run_async(_twice, 1, backend="curio")  # type: ignore[arg-type]
