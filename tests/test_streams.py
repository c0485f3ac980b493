"""as_completed and imap: completion order, backpressure proven on the scheduler, closing."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from typing import Any

import anyio
import distributed
import pytest

from dask_anyio import DaskExecutor, TaskCancelled, TaskHandle

from .conftest import ABSENT, ExternalCluster
from .tasks import (
    KeyCounter,
    RemoteOnlyError,
    fail_on,
    gated,
    inc,
    key_counts,
    raise_remote_only,
    set_event,
    slow_identity,
    wait_for_event,
)

pytestmark = pytest.mark.anyio


@contextmanager
def key_counter(cluster: ExternalCluster) -> Iterator[tuple[str, Any]]:
    """A fresh key prefix, and a function returning what the scheduler saw of its keys."""
    prefix = f"imap-{uuid.uuid4().hex[:8]}"
    name = f"counter-{prefix}"
    cluster.observer.register_plugin(KeyCounter(prefix), name=name)
    try:
        yield prefix, lambda: cluster.observer.run_on_scheduler(key_counts, name=name)
    finally:
        cluster.observer.unregister_scheduler_plugin(name)


async def collect(results: AsyncIterator[Any], into: list[Any]) -> None:
    async for value in results:
        into.append(value)


# -- as_completed ----------------------------------------------------------------------------


async def test_as_completed_yields_in_completion_order(external_cluster: ExternalCluster) -> None:
    """A task that finishes first is yielded first, whatever the order of submission."""
    event = f"gate-{uuid.uuid4()}"
    async with DaskExecutor(external_cluster.address) as ex:
        slow = ex.submit(wait_for_event, event)
        fast = ex.submit(inc, 1)
        order: list[TaskHandle[Any]] = []
        async for handle in ex.as_completed([slow, fast]):
            order.append(handle)
            if handle is fast:
                await ex.run(set_event, event)
        assert order == [fast, slow]


async def test_as_completed_yields_failed_and_cancelled(ex: DaskExecutor) -> None:
    """Failed and cancelled handles are yielded like the others, none dropped, no hang."""
    ok = ex.submit(inc, 1)
    bad = ex.submit(raise_remote_only, "boom")
    never = ex.submit(inc, 2, resources=ABSENT)
    seen = []
    async for handle in ex.as_completed([ok, bad, never]):
        seen.append(handle)
        if handle is ok:
            never.cancel()
    assert set(seen) == {ok, bad, never}
    assert len(seen) == 3
    assert never.cancelled()
    with pytest.raises(RemoteOnlyError):
        await bad


async def test_as_completed_accepts_handles_while_iterating(
    ex: DaskExecutor,
) -> None:
    """Handles added during the iteration are yielded too; the iteration ends after them."""
    stream = ex.as_completed([ex.submit(inc, 0)])
    values = []
    async for handle in stream:
        value = await ex.retrieve(handle)
        values.append(value)
        if value < 5:
            stream.add(ex.submit(inc, value))
    assert values == [1, 2, 3, 4, 5]
    assert len(stream) == 0


async def test_as_completed_with_results(ex: DaskExecutor) -> None:
    """with_results yields (handle, value); a failure raises, or with raise_errors=False
    is yielded as (handle, exception)."""
    handles = ex.map(inc, range(5))
    pairs = [pair async for pair in ex.as_completed(handles, with_results=True)]
    assert sorted(v for _, v in pairs) == [1, 2, 3, 4, 5]
    assert {h for h, _ in pairs} == set(handles)

    bad = ex.submit(raise_remote_only, "boom")
    with pytest.raises(RemoteOnlyError, match="boom"):
        async for _ in ex.as_completed([bad], with_results=True):
            pass

    good = ex.submit(inc, 41)
    bad = ex.submit(raise_remote_only, "boom")
    outcomes = {
        h: v async for h, v in ex.as_completed([good, bad], with_results=True, raise_errors=False)
    }
    assert outcomes[good] == 42
    assert isinstance(outcomes[bad], RemoteOnlyError)


async def test_cancelled_as_completed_loses_nothing(external_cluster: ExternalCluster) -> None:
    """Cancelling an iteration stops the waiting only: the handle is yielded later."""
    event = f"gate-{uuid.uuid4()}"
    async with DaskExecutor(external_cluster.address) as ex:
        handle = ex.submit(wait_for_event, event)
        stream = ex.as_completed([handle], with_results=True)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await anext(stream)
        assert scope.cancelled_caught
        await ex.run(set_event, event)
        assert [pair async for pair in stream] == [(handle, event)]


async def test_as_completed_of_nothing(ex: DaskExecutor) -> None:
    """No handles: the iteration ends at once."""
    assert [h async for h in ex.as_completed()] == []


# -- imap ------------------------------------------------------------------------------------


async def test_imap_ordered_bound_seen_by_scheduler(external_cluster: ExternalCluster) -> None:
    """imap yields results in order, and the scheduler never holds more than max_in_flight
    of its tasks, counting results not yet yielded."""
    with key_counter(external_cluster) as (prefix, counts):
        async with DaskExecutor(external_cluster.address) as ex:
            async with ex.imap(slow_identity, range(40), max_in_flight=4, key=prefix) as results:
                assert [v async for v in results] == list(range(40))
            seen = counts()
            assert seen["created"] == 40
            assert seen["max_held"] == 4  # the bound, reached: tasks did run side by side
            assert seen["held"] == 0


async def test_imap_unordered_yields_as_completed(external_cluster: ExternalCluster) -> None:
    """ordered=False yields results as tasks finish: a blocked first item comes last."""
    event = f"gate-{uuid.uuid4()}"
    items = [("wait", event), 1, 2, 3]
    async with DaskExecutor(external_cluster.address) as ex:
        got = []
        async with ex.imap(gated, items, max_in_flight=4, ordered=False) as results:
            async for value in results:
                got.append(value)
                if len(got) == 3:
                    await ex.run(set_event, event)
        assert got[:3] == [1, 2, 3] or sorted(got[:3]) == [1, 2, 3]
        assert got[3] == ("wait", event)


async def test_imap_endless_async_source_left_early(external_cluster: ExternalCluster) -> None:
    """An endless async iterable is consumed only as far as needed; leaving the block
    cancels and releases what is in flight."""

    async def numbers() -> AsyncIterator[int]:
        i = 0
        while True:
            yield i
            i += 1

    with key_counter(external_cluster) as (prefix, counts):
        async with DaskExecutor(external_cluster.address) as ex:
            got = []
            async with (
                aclosing(numbers()) as source,
                ex.imap(inc, source, max_in_flight=5, key=prefix) as results,
            ):
                async for value in results:
                    got.append(value)
                    if len(got) == 20:
                        break
            assert got == list(range(1, 21))
            assert not any(k.startswith(prefix) for k in external_cluster.scheduler_keys())
            seen = counts()
            assert seen["max_held"] <= 5
            assert seen["created"] <= 25
            assert ex.statistics().in_flight == 0


async def test_imap_dropped_stream_is_closed(external_cluster: ExternalCluster) -> None:
    """Leaving a bare `async for` early drops the stream, which cancels its tasks."""
    with key_counter(external_cluster) as (prefix, _):
        async with DaskExecutor(external_cluster.address) as ex:
            async for value in ex.imap(inc, range(1000), max_in_flight=3, key=prefix):
                if value == 2:
                    break
            await external_cluster.wait_forgotten(prefix)
            assert ex.statistics().in_flight == 0


async def test_imap_failure_stops_the_stream(external_cluster: ExternalCluster) -> None:
    """A failed task raises its exception after the results before it, and the stream
    cancels and releases the rest."""
    with key_counter(external_cluster) as (prefix, _):
        async with DaskExecutor(external_cluster.address) as ex:
            got: list[Any] = []
            results = ex.imap(fail_on, range(100), max_in_flight=4, bad=3, key=prefix)
            with pytest.raises(RemoteOnlyError, match="item 3 is bad"):
                await collect(results, got)
            assert got == [0, 1, 2]
            assert not any(k.startswith(prefix) for k in external_cluster.scheduler_keys())


async def test_imap_source_error_after_earlier_results(external_cluster: ExternalCluster) -> None:
    """An exception from the source comes after the results of the items before it."""

    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise LookupError("source broke")

    async with DaskExecutor(external_cluster.address) as ex:
        got: list[Any] = []
        with pytest.raises(LookupError, match="source broke"):
            await collect(ex.imap(inc, items(), max_in_flight=8), got)
        assert got == [2, 3]


async def test_imap_timeout_cancels_in_flight(external_cluster: ExternalCluster) -> None:
    """A timeout around imap cancels the tasks in flight: the scheduler has forgotten them
    when the timeout's scope exits."""
    with key_counter(external_cluster) as (prefix, counts):
        async with DaskExecutor(external_cluster.address) as ex:
            with anyio.move_on_after(0.2) as scope:
                async with ex.imap(
                    inc, range(10), max_in_flight=3, key=prefix, resources=ABSENT
                ) as results:
                    async for _ in results:
                        pytest.fail("a task that cannot start finished")
            assert scope.cancelled_caught
            assert not any(k.startswith(prefix) for k in external_cluster.scheduler_keys())
            assert counts()["created"] == 3


async def test_imap_open_at_exit_is_cancelled(external_cluster: ExternalCluster) -> None:
    """A stream still open when the executor exits is closed first: no wait, no leak."""
    event = f"gate-{uuid.uuid4()}"
    with key_counter(external_cluster) as (prefix, _):
        async with DaskExecutor(external_cluster.address) as ex:
            results = ex.imap(gated, [1, ("wait", event)], max_in_flight=2, key=prefix)
            assert await anext(results) == 1
        assert not any(k.startswith(prefix) for k in external_cluster.scheduler_keys())
        assert [v async for v in results] == []
    external_cluster.observer.submit(set_event, event, pure=False).result()


async def test_imap_bad_arguments(ex: DaskExecutor) -> None:
    """Bad arguments fail at once; an unpicklable item fails the iteration, naming it."""
    with pytest.raises(ValueError, match="max_in_flight"):
        ex.imap(inc, range(3), max_in_flight=0)
    with pytest.raises(TypeError, match="iterable"):
        ex.imap(inc, 3, max_in_flight=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        ex.imap(3, range(3), max_in_flight=1)  # type: ignore[arg-type]
    got: list[Any] = []
    results = ex.imap(slow_identity, [1, threading.Lock()], max_in_flight=2)
    with pytest.raises(TypeError, match="cannot be pickled"):
        await collect(results, got)
    assert got == [1]


async def test_imap_handles_as_items_and_keywords(ex: DaskExecutor) -> None:
    """Items and keyword arguments may hold handles; their values are used on the cluster."""
    handles = ex.map(inc, range(3))
    offset = ex.submit(inc, 9)
    from .tasks import add

    async with ex.imap(add, handles, max_in_flight=2, y=offset) as results:
        assert [v async for v in results] == [11, 12, 13]


async def test_imap_task_cancelled_elsewhere(external_cluster: ExternalCluster) -> None:
    """A task of the stream cancelled by someone else raises TaskCancelled from the stream."""
    event = f"gate-{uuid.uuid4()}"
    with key_counter(external_cluster) as (prefix, _):
        async with DaskExecutor(external_cluster.address) as ex:
            results = ex.imap(gated, [("wait", event)], max_in_flight=1, key=prefix)
            async with anyio.create_task_group() as tg:

                async def cancel_elsewhere() -> None:
                    await external_cluster.wait_held(prefix)
                    keys = [k for k in external_cluster.scheduler_keys() if k.startswith(prefix)]
                    other = external_cluster.observer
                    other.cancel([distributed.Future(keys[0], other)], force=True)

                tg.start_soon(cancel_elsewhere)
                with pytest.raises(TaskCancelled):
                    await anext(results)
            await ex.run(set_event, event)


async def test_as_completed_shared_by_two_tasks(ex: DaskExecutor) -> None:
    """Two tasks iterating one as_completed share its handles; neither hangs."""
    handles = ex.map(inc, range(10))
    stream = ex.as_completed(handles)
    seen: list[list[TaskHandle[int]]] = [[], []]

    async def drain(into: list[TaskHandle[int]]) -> None:
        async for handle in stream:
            into.append(handle)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, seen[0])
            tg.start_soon(drain, seen[1])
    assert sorted(seen[0] + seen[1], key=handles.index) == handles


async def test_result_stream_has_one_reader(external_cluster: ExternalCluster) -> None:
    """A second task iterating a stream at the same time gets BusyResourceError."""
    event = f"gate-{uuid.uuid4()}"
    async with DaskExecutor(external_cluster.address) as ex:
        results = ex.imap(gated, [("wait", event)], max_in_flight=1)
        async with results, anyio.create_task_group() as tg:
            tg.start_soon(anext, results)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(anyio.BusyResourceError):
                await anext(results)
            await ex.run(set_event, event)
        assert [v async for v in results] == []


async def test_stream_closed_while_an_iteration_waits(external_cluster: ExternalCluster) -> None:
    """aclose() from another task, or the executor's exit, wakes a waiting iteration with
    ClosedResourceError: no hang, no silent end."""
    async with DaskExecutor(external_cluster.address) as ex:
        results = ex.imap(inc, range(3), max_in_flight=1, resources=ABSENT)
        async with anyio.create_task_group() as tg:

            async def close_soon() -> None:
                await anyio.wait_all_tasks_blocked()
                await results.aclose()

            tg.start_soon(close_soon)
            with pytest.raises(anyio.ClosedResourceError):
                await anext(results)

    outcome: list[BaseException] = []

    async def consume(results: Any) -> None:
        try:
            await anext(results)
        except Exception as error:
            outcome.append(error)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg, DaskExecutor(external_cluster.address) as ex:
            tg.start_soon(consume, ex.imap(inc, range(3), max_in_flight=1, resources=ABSENT))
            await anyio.wait_all_tasks_blocked()
    assert len(outcome) == 1
    assert isinstance(outcome[0], anyio.ClosedResourceError)
    assert external_cluster.scheduler_keys() == set()


async def test_imap_unpicklable_item_is_named_by_position(
    ex: DaskExecutor,
) -> None:
    """The error for an item that cannot be pickled gives its position in the source."""
    items = [0, 1, 2, 3, 4, threading.Lock(), 6]
    got: list[Any] = []
    with pytest.raises(TypeError, match="item 5 of"):
        await collect(ex.imap(slow_identity, items, max_in_flight=8), got)
    assert got == [0, 1, 2, 3, 4]


async def test_as_completed_with_results_yields_cancelled_tasks(
    ex: DaskExecutor,
) -> None:
    """with_results yields a cancelled task as (handle, TaskCancelled) and goes on, with
    raise_errors either way (as Dask yields its CancelledError); only task errors raise."""
    for raise_errors in (True, False):
        cancelled = ex.submit(inc, 1, resources=ABSENT)
        good = ex.submit(inc, 41)
        cancelled.cancel()
        outcomes = {
            h: v
            async for h, v in ex.as_completed(
                [cancelled, good], with_results=True, raise_errors=raise_errors
            )
        }
        assert outcomes[good] == 42
        assert isinstance(outcomes[cancelled], TaskCancelled)
        assert "TaskHandle.cancel()" in str(outcomes[cancelled])
