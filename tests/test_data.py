"""gather, scatter and statistics: values in and out of the cluster, and counts."""

from __future__ import annotations

import operator
import uuid

import anyio
import distributed
import pytest

from dask_anyio import DaskExecutor, ExecutorStatistics, TaskCancelled

from .conftest import ABSENT, ExternalCluster
from .tasks import (
    RemoteOnlyError,
    inc,
    raise_remote_only,
    set_event,
    total,
    wait_for_event,
)

pytestmark = pytest.mark.anyio


async def test_gather_keeps_the_structure(ex: DaskExecutor) -> None:
    """gather() replaces handles by values in nested lists, tuples, sets and dicts."""
    a, b, c = ex.map(inc, [1, 2, 3])
    assert await ex.gather(a) == 2
    assert await ex.gather([a, b, c]) == [2, 3, 4]
    nested = {"x": [a, (b, "plain")], "y": {c}, "z": 5}
    assert await ex.gather(nested) == {"x": [2, (3, "plain")], "y": {4}, "z": 5}
    assert await ex.gather([]) == []


async def test_gather_raises_the_first_failure_at_once(ex: DaskExecutor) -> None:
    """errors="raise" raises a failure as soon as it is known, without waiting for tasks
    that are still pending."""
    never = ex.submit(inc, 0, resources=ABSENT)
    bad = ex.submit(raise_remote_only, "gathered")
    with pytest.raises(RemoteOnlyError, match="gathered"):
        await ex.gather([never, bad])
    never.cancel()
    with pytest.raises(TaskCancelled):
        await ex.gather({"never": never})


async def test_gather_skip_leaves_failures_out(ex: DaskExecutor) -> None:
    """errors="skip" leaves failed and cancelled tasks out of lists, tuples, sets and
    dicts, and their failures are not raised again at exit."""
    ok = ex.submit(inc, 1)
    bad = ex.submit(raise_remote_only, "skipped")
    cancelled = ex.submit(inc, 2, resources=ABSENT)
    cancelled.cancel()
    got = await ex.gather([ok, bad, (bad, ok), {"a": bad, "b": ok}, cancelled], errors="skip")
    assert got == [2, (2,), {"b": 2}]
    assert await ex.gather(bad, errors="skip") is None
    with pytest.raises(ValueError, match="errors must be"):
        await ex.gather([ok], errors="ignore")  # type: ignore[arg-type]


async def test_scatter_shapes_and_use_as_arguments(external_cluster: ExternalCluster) -> None:
    """scatter() gives a handle per list item, per dict value, or one for anything else;
    the handles are arguments like any other, and are released at exit."""
    async with DaskExecutor(external_cluster.address) as ex:
        listed = await ex.scatter([1, 2, 3])
        assert len(listed) == 3
        assert all(h.done() for h in listed)
        assert await ex.run(total, listed) == 6
        named = await ex.scatter({"a": 10, "b": 20})
        assert set(named) == {"a", "b"}
        assert await ex.run(operator.add, named["a"], named["b"]) == 30
        single = await ex.scatter((1, 2))
        assert await ex.retrieve(single) == (1, 2)
        assert await ex.run(len, single) == 2
        keys = {h.key for h in [*listed, *named.values(), single]}
        assert len(keys) == 6  # every item its own key, none derived from the content
        same = await ex.scatter([1, 2, 3])
        assert {h.key for h in same}.isdisjoint(keys)
    assert external_cluster.scheduler_keys() == set()


async def test_scatter_broadcast(ex: DaskExecutor, external_cluster: ExternalCluster) -> None:
    """broadcast=True puts a copy on every worker."""
    handle = await ex.scatter(b"x" * 1000, broadcast=True)
    holders = external_cluster.observer.run_on_scheduler(_holders, key=handle.key)
    assert holders == len(external_cluster.workers)
    with pytest.raises(TypeError, match="broadcast"):
        await ex.scatter([1], broadcast="yes")  # type: ignore[call-overload]


def _holders(dask_scheduler: object, key: str) -> int:
    return len(dask_scheduler.tasks[key].who_has)  # type: ignore[attr-defined]


async def test_statistics(external_cluster: ExternalCluster) -> None:
    """statistics() counts tasks by outcome, including those run() released at once."""
    gate = f"gate-{uuid.uuid4()}"
    async with DaskExecutor(external_cluster.address) as ex:
        assert ex.statistics() == ExecutorStatistics(0, 0, 0, 0, 0, 0)
        done = ex.submit(inc, 1)
        bad = ex.submit(raise_remote_only, "counted")
        blocked = ex.submit(wait_for_event, gate)
        never = ex.submit(inc, 0, resources=ABSENT)
        await done
        with pytest.raises(RemoteOnlyError):
            await bad
        never.cancel()
        assert await ex.run(inc, 2) == 3
        stats = ex.statistics()
        assert stats == ExecutorStatistics(
            submitted=5, pending=1, finished=2, failed=1, cancelled=1, in_flight=4
        )
        with pytest.raises(AttributeError):
            stats.pending = 0  # type: ignore[misc]
        await ex.run(set_event, gate)
        await blocked
        assert ex.statistics().pending == 0
    final = ex.statistics()
    assert (final.submitted, final.finished, final.in_flight) == (6, 4, 0)


async def test_await_handle_in_a_timeout_leaves_the_task(external_cluster: ExternalCluster) -> None:
    """A timeout around `await handle` stops the waiting only: the executor owns the task,
    which keeps running and can be awaited again."""
    gate = f"gate-{uuid.uuid4()}"
    async with DaskExecutor(external_cluster.address) as ex:
        handle = ex.submit(wait_for_event, gate)
        with anyio.move_on_after(0.2) as scope:
            await handle
        assert scope.cancelled_caught
        assert not handle.done()
        assert handle.key in external_cluster.scheduler_keys()
        await ex.run(set_event, gate)
        await handle
        assert await ex.retrieve(handle) == gate


async def test_call_client(ex: DaskExecutor, external_cluster: ExternalCluster) -> None:
    """call_client() calls a function with the Dask client on the client's loop and awaits
    its result: the escape hatch to the rest of Dask's API, on every backend."""
    workers = await ex.call_client(lambda client: client.run_on_scheduler(_workers))
    assert workers == external_cluster.workers
    assert await ex.call_client(lambda client, x: (client.id, x), 1) == (ex.client.id, 1)
    handle = ex.submit(inc, 1)
    await handle
    who_has = await ex.call_client(distributed.Client.who_has, [handle.future])
    assert list(who_has) == [handle.key]


def _workers(dask_scheduler: object) -> list[str]:
    return sorted(dask_scheduler.workers)  # type: ignore[attr-defined]


async def test_cancelled_retrieves_never_break_retrieving(
    external_cluster: ExternalCluster,
) -> None:
    """Cancelling retrieve() or gather() at any point leaves later ones working (Dask's
    client shares one gathering task between callers)."""
    from .tasks import make_bytes

    async with DaskExecutor(external_cluster.address) as ex:
        handle = ex.submit(make_bytes, 1 << 16)
        await handle
        for turns in range(25):
            for fetch in (ex.retrieve, ex.gather):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(fetch, handle)
                    for _ in range(turns):
                        await anyio.lowlevel.checkpoint()
                    tg.cancel_scope.cancel()
                assert len(await ex.retrieve(handle)) == 1 << 16


async def test_a_cancelled_gather_through_the_client_does_not_break_fetching(
    external_cluster: ExternalCluster,
) -> None:
    """A gather of the user's through call_client, cancelled at any point, leaves the
    executor's own fetches working (Dask's client shares its gathering task)."""
    from .tasks import make_bytes

    async with DaskExecutor(external_cluster.address) as ex:
        handle = ex.submit(make_bytes, 1 << 16)
        await handle
        for turns in range(25):
            async with anyio.create_task_group() as tg:
                tg.start_soon(ex.call_client, lambda c: c.gather([handle.future]))
                for _ in range(turns):
                    await anyio.lowlevel.checkpoint()
                tg.cancel_scope.cancel()
            assert len(await ex.retrieve(handle)) == 1 << 16
            assert await ex.gather([handle, 1]) == [make_bytes(1 << 16), 1]
