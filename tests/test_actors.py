"""Actors (``ex.actor``) on a real cluster, on every backend."""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

import anyio
import pytest

from dask_anyio import Actor, DaskExecutor
from dask_anyio._actors import Actors

from .actor_tasks import (
    Counter,
    CounterError,
    MadeAtOnce,
    SlowToMake,
    TakesActor,
    add_through,
)
from .conftest import ExternalCluster
from .tasks import inc, set_event

pytestmark = pytest.mark.anyio

WAIT = 10.0


async def test_an_actor_keeps_its_state(external_cluster: ExternalCluster) -> None:
    """Methods (plain and coroutine) and attributes, on one object on one worker; the
    executor's exit releases it."""
    async with DaskExecutor(external_cluster.address) as ex:
        counter = await ex.actor(Counter, 5)
        assert isinstance(counter, Actor)
        assert counter.worker in external_cluster.workers
        assert await counter.add(2) == 7
        assert await counter.n == 7
        assert await counter.call(Counter.add, 1) == 8
        assert await counter.add_later(2) == 10
        assert await counter.call(Counter.add_later, by=1) == 11
        key = counter.handle.key
        assert key.startswith("Counter-")
        assert key in external_cluster.scheduler_keys()
    await external_cluster.wait_forgotten(key)


@pytest.mark.parametrize("builtin", [True, False], ids=["builtin", "users"])
async def test_an_actors_error_has_its_remote_traceback(ex: DaskExecutor, builtin: bool) -> None:
    """A method's exception is raised with the method's own frame in its traceback, for
    a builtin exception class and for one of the actor's module."""
    counter = await ex.actor(Counter)
    with pytest.raises(ValueError if builtin else CounterError) as caught:
        await counter.fail(builtin)
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert "fail" in frames
    assert await counter.add() == 1  # (the actor serves on)


async def test_a_cancelled_call_leaves_the_actor_serving(
    ex: DaskExecutor,
) -> None:
    """A call cancelled while its method runs returns at once; the method runs to its end
    on the worker, and the actor serves the next calls."""
    counter = await ex.actor(Counter)
    started = f"hold-{counter.handle.key}"
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(counter.hold, 100, started)
            with anyio.fail_after(WAIT):
                await ex.event(started).wait()
            scope.cancel()
    assert scope.cancelled_caught
    await counter.release()
    assert await counter.add(1) == 101  # hold() ran to its end, then this call


async def test_a_cancelled_creation_leaves_no_actor(external_cluster: ExternalCluster) -> None:
    """Cancelled while the constructor runs on a worker, ex.actor cancels its task: the
    scheduler forgets the key, and the executor owns nothing."""
    event = f"make-{anyio.get_current_task().id}"
    async with DaskExecutor(external_cluster.address) as ex:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ex.actor, SlowToMake, event)
            await external_cluster.wait_held("SlowToMake-")
            tg.cancel_scope.cancel()
        await ex.run(set_event, event)  # (lets the worker thread go)
        await external_cluster.wait_forgotten("SlowToMake-")
        assert ex.statistics().pending == 0


async def test_a_creation_cancelled_once_made_leaves_no_actor(
    external_cluster: ExternalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled after its task made the actor (while it asks where the actor lives, held
    there), ex.actor releases it: the scheduler forgets the key, the executor owns nothing."""

    async def never(self: Actors, future: Any) -> str:
        await asyncio.Event().wait()
        raise AssertionError("not reached")

    monkeypatch.setattr(Actors, "address", never)
    async with DaskExecutor(external_cluster.address) as ex:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ex.actor, MadeAtOnce)
            with anyio.fail_after(WAIT):
                while "memory" not in _states(external_cluster, "MadeAtOnce-"):  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        assert not _states(external_cluster, "MadeAtOnce-")
        assert ex.statistics().pending == 0


def _states(cluster: ExternalCluster, prefix: str) -> list[str]:
    return [state for key, state in cluster.task_states().items() if key.startswith(prefix)]


async def test_an_actors_handle_reaches_a_task_as_dasks_proxy(
    ex: DaskExecutor,
) -> None:
    """A task given the actor's handle calls the actor through Dask's proxy; the Actor
    itself is not sent (it says so)."""
    counter = await ex.actor(Counter, 1)
    assert await ex.run(add_through, counter.handle, 2) == 3
    assert await counter.n == 3
    with pytest.raises(TypeError, match="pass its handle"):
        ex.submit(add_through, counter, 2)


async def test_submit_refuses_actor_true(ex: DaskExecutor) -> None:
    """``actor=True`` to submit, run or map would reach the class: an error naming
    ex.actor. A function that names a parameter ``actor`` still gets it."""
    with pytest.raises(TypeError, match=r"ex\.actor\(cls, \*args\)"):
        ex.submit(Counter, actor=True)
    with pytest.raises(TypeError, match=r"run\(\) passes every keyword.*ex\.actor"):
        await ex.run(Counter, actor=True)
    with pytest.raises(TypeError, match=r"map\(\) passes every keyword.*ex\.actor"):
        ex.map(Counter, [1], actors=True)
    made = await ex.run(TakesActor, actor="value")
    assert made.actor == "value"


async def test_bad_use_is_named(external_cluster: ExternalCluster) -> None:
    async with (
        DaskExecutor(external_cluster.address) as ex,
        DaskExecutor(external_cluster.address) as other,
    ):
        with pytest.raises(TypeError, match="actor\\(\\) needs a class, not <built-in"):
            await ex.actor(len)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="belongs to another DaskExecutor"):
            await ex.actor(Counter, other.submit(inc, 1))
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            await ex.actor(Counter, nope=1)  # type: ignore[call-arg]
        counter = await ex.actor(Counter)
        with pytest.raises(ValueError, match="call\\(\\) takes a method of Counter"):
            await counter.call(len, [])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="'n' is not a method of Counter"):
            await counter.n()
        with pytest.raises(AttributeError, match="missing"):
            await counter.missing
    with pytest.raises(RuntimeError, match="cannot be used any more"):
        await counter.add()
