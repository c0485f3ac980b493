"""Queues, events and variables of the scheduler (``ex.queue``, ``ex.event``,
``ex.variable``) on a real cluster, on every backend. Each cancel-safety test also runs
against Dask's own primitive, which fails it (xfail, strict)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import distributed
import pytest

from dask_anyio import (
    DaskExecutor,
    Event,
    Queue,
    TaskCancelled,
    TaskHandle,
    TaskStatus,
    Variable,
)
from dask_anyio._exchange import PROMPT, Exchange

from .conftest import ABSENT, ASYNCIO_BACKENDS, ExternalCluster
from .tasks import inc, set_event, wait_for_event

pytestmark = pytest.mark.anyio

#: Long enough for any request on a loaded machine.
WAIT = 10.0
#: How long a request that dask-anyio left behind may last on the scheduler, with room for
#: a loaded machine: Dask's stay for good, and their tests fail after it.
SOON = 3.0

Starter = Callable[[DaskExecutor, str], Callable[[], Awaitable[Any]]]


def _name(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex}"


async def _cancel_while_waiting(
    external_cluster: ExternalCluster, start: Callable[[], Awaitable[Any]], kind: str, name: str
) -> list[Any]:
    """Run ``start()`` until it waits on the scheduler, then cancel it; what it returned
    (a request that got something just as it was cancelled may return it)."""
    returned: list[Any] = []

    async def call() -> None:
        returned.append(await start())

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await external_cluster.wait_waiting(kind, name, 1)
        tg.cancel_scope.cancel()
    return returned


# -- queues ----------------------------------------------------------------------------


async def test_a_queue_carries_values_and_handles_in_order(
    external_cluster: ExternalCluster,
) -> None:
    """Two executors (two clients): what one puts, the other gets, in order; a handle's
    data stays on the cluster, and the getter owns the handle it gets."""
    name, prefix = _name("queue"), _name("in-queue")
    async with DaskExecutor(external_cluster.address) as ex:
        handle = ex.submit(inc, 1, key=f"{prefix}-1")
        await handle
        queue = ex.queue(name)
        assert isinstance(queue, Queue)
        for item in (1, "two", [3, {"four": 4}], handle):
            await queue.put(item)
        assert await queue.qsize() == 4
    async with DaskExecutor(external_cluster.address) as other:
        queue = other.queue(name)
        assert [await queue.get() for _ in range(3)] == [1, "two", [3, {"four": 4}]]
        got = await queue.get()
        assert isinstance(got, TaskHandle)
        assert got.key == f"{prefix}-1"
        assert await other.retrieve(got) == 2
        assert await queue.qsize() == 0
    await external_cluster.wait_forgotten(prefix)


def _our_get(ex: DaskExecutor, name: str) -> Callable[[], Awaitable[Any]]:
    return ex.queue(name).get


def _dasks_get(ex: DaskExecutor, name: str) -> Callable[[], Awaitable[Any]]:
    async def get(client: distributed.Client) -> Any:
        return await (await distributed.Queue(name, client=client)).get()

    return lambda: ex.call_client(get)


def _dask_fails(reason: str, fn: Starter) -> Any:
    return pytest.param(
        fn, id="dask", marks=pytest.mark.xfail(strict=True, raises=TimeoutError, reason=reason)
    )


@pytest.mark.parametrize("how", ["handle", "exit"])
async def test_a_getter_lets_go_of_a_handle_it_does_not_cancel_the_task(
    external_cluster: ExternalCluster, how: str
) -> None:
    """A handle got from a queue may be another client's task: cancelling it, or leaving
    the getter's scope with an error, lets go of it; the putter's task runs on and gives
    its value."""
    name, event = _name("borrowed"), _name("borrowed-go")
    async with DaskExecutor(external_cluster.address) as owner:
        task = owner.submit(wait_for_event, event)
        await owner.queue(name).put(task)
        with pytest.raises(LookupError) if how == "exit" else contextlib.nullcontext():
            async with DaskExecutor(external_cluster.address) as getter:
                got = await getter.queue(name).get()
                assert isinstance(got, TaskHandle)
                if how == "exit":
                    raise LookupError
                assert got.cancel()
                assert got.status is TaskStatus.CANCELLED
        assert not task.done()
        await owner.run(set_event, event)
        with anyio.fail_after(WAIT):
            assert await owner.retrieve(task) == event


@pytest.mark.parametrize(
    "getter",
    [
        pytest.param(_our_get, id="dask-anyio"),
        _dask_fails("the scheduler gives the next item to the cancelled get: lost", _dasks_get),
    ],
)
async def test_a_cancelled_get_never_loses_an_item(
    external_cluster: ExternalCluster, getter: Starter
) -> None:
    """A get cancelled while it waits on the scheduler: each item put afterwards is either
    returned by it or still in the queue, in order."""
    name = _name("queue")
    async with DaskExecutor(external_cluster.address) as ex:
        queue = ex.queue(name)
        await queue.qsize()  # (the queue exists on the scheduler: Dask's get needs it)
        returned = await _cancel_while_waiting(external_cluster, getter(ex, name), "get", name)
        await queue.put("a")
        await queue.put("b")
        with anyio.fail_after(SOON):
            rest = [await queue.get() for _ in range(2 - len(returned))]
        assert returned + rest == ["a", "b"]


async def test_a_get_in_a_cancelled_scope_takes_nothing(
    ex: DaskExecutor,
) -> None:
    """A checkpoint: in a cancelled scope, get raises at once and the item stays."""
    queue = ex.queue(_name("queue"))
    await queue.put("kept")
    with anyio.CancelScope() as scope:
        scope.cancel()
        await queue.get()
    assert scope.cancelled_caught
    assert await queue.qsize() == 1
    assert await queue.get() == "kept"


async def test_a_full_queue_holds_back_a_put(external_cluster: ExternalCluster) -> None:
    """``maxsize=1``: a second put waits on the scheduler until a get makes room; a put
    cancelled while it waits puts nothing."""
    name = _name("queue")
    async with DaskExecutor(external_cluster.address) as ex:
        queue = ex.queue(name, maxsize=1)
        await queue.put("first")
        returned = await _cancel_while_waiting(
            external_cluster, lambda: queue.put("cancelled"), "put", name
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.put, "second")
            await external_cluster.wait_waiting("put", name, 1)
            assert await queue.get() == "first"
        assert await queue.get() == "second"
        # A put that got in just as it was cancelled returned normally: it put its item.
        assert await queue.qsize() == len(returned)
        for _ in returned:
            assert await queue.get() == "cancelled"


# -- events ----------------------------------------------------------------------------


async def test_an_event_wakes_its_waiters(external_cluster: ExternalCluster) -> None:
    """A wait waits on the scheduler until another client sets the event; a set event
    lets waits through at once, a cleared one holds them again."""
    name = _name("event")
    async with (
        DaskExecutor(external_cluster.address) as ex,
        DaskExecutor(external_cluster.address) as other,
    ):
        event = ex.event(name)
        assert isinstance(event, Event)
        assert not await event.is_set()
        woken: list[int] = []

        async def wait(number: int) -> None:
            await event.wait()
            woken.append(number)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, 1)
            tg.start_soon(wait, 2)
            await external_cluster.wait_waiting("wait", name, 2)
            assert woken == []
            await other.event(name).set()
        assert sorted(woken) == [1, 2]
        assert await event.is_set()
        with anyio.fail_after(WAIT):
            await event.wait()
        await other.event(name).clear()
        assert not await event.is_set()


def _our_wait(ex: DaskExecutor, name: str) -> Callable[[], Awaitable[Any]]:
    return ex.event(name).wait


def _dasks_wait(ex: DaskExecutor, name: str) -> Callable[[], Awaitable[Any]]:
    return lambda: ex.call_client(lambda client: distributed.Event(name, client=client).wait())


@pytest.mark.parametrize(
    "waiter",
    [
        pytest.param(_our_wait, id="dask-anyio"),
        _dask_fails("the scheduler keeps the cancelled waiter until the event is set", _dasks_wait),
    ],
)
async def test_a_cancelled_wait_leaves_no_waiter(
    external_cluster: ExternalCluster, waiter: Starter
) -> None:
    """A wait cancelled while it waits on the scheduler leaves nothing waiting there (Dask's
    stays until the event is set: a trio loop of timed-out waits piles them up)."""
    name = _name("event")
    async with DaskExecutor(external_cluster.address) as ex:
        await _cancel_while_waiting(external_cluster, waiter(ex, name), "wait", name)
        await external_cluster.wait_waiting("wait", name, 0, within=SOON)


# -- variables -------------------------------------------------------------------------


async def test_a_variable_carries_values_and_handles(external_cluster: ExternalCluster) -> None:
    """A get waits until the variable is set; a handle's key is held by the variable until
    it is set to something else; delete lets the value go."""
    name, prefix = _name("variable"), _name("in-variable")
    async with (
        DaskExecutor(external_cluster.address) as ex,
        DaskExecutor(external_cluster.address) as other,
    ):
        variable = ex.variable(name)
        assert isinstance(variable, Variable)
        got: list[Any] = []

        async def get() -> None:
            got.append(await other.variable(name).get())

        async with anyio.create_task_group() as tg:
            tg.start_soon(get)
            await external_cluster.wait_waiting("unset", name, 1)
            await variable.set({"answer": 42})
        assert got == [{"answer": 42}]
        handle = ex.submit(inc, 1, key=f"{prefix}-1")
        await variable.set(handle)
        theirs = await other.variable(name).get()
        assert isinstance(theirs, TaskHandle)
        assert await other.retrieve(theirs) == 2
        await variable.set(0)
        assert await other.variable(name).get() == 0
        await variable.delete()
    await external_cluster.wait_forgotten(prefix)


def _our_variable_get(ex: DaskExecutor, name: str) -> Callable[[], Awaitable[Any]]:
    return ex.variable(name).get


def _dasks_variable_get(ex: DaskExecutor, name: str) -> Callable[[], Awaitable[Any]]:
    return lambda: ex.call_client(lambda client: distributed.Variable(name, client=client).get())


@pytest.mark.parametrize(
    "getter",
    [
        pytest.param(_our_variable_get, id="dask-anyio"),
        _dask_fails(
            "the cancelled get receives the key for nobody, who never confirms it",
            _dasks_variable_get,
        ),
    ],
)
async def test_a_cancelled_variable_get_holds_nothing(
    external_cluster: ExternalCluster, getter: Starter
) -> None:
    """A get of an unset variable, cancelled: once the variable's handle value is replaced
    and its executor exits, the scheduler forgets the key."""
    name, prefix = _name("variable"), _name("in-variable")
    async with DaskExecutor(external_cluster.address) as ex:
        await _cancel_while_waiting(external_cluster, getter(ex, name), "unset", name)
        variable = ex.variable(name)
        await variable.set(ex.submit(inc, 1, key=f"{prefix}-1"))
        # A get still waiting there (Dask's) has woken and taken the handle, not the 0 next
        await external_cluster.wait_waiting("unset", name, 0)
        await variable.set(0)  # (not delete(): that lets every key of the variable go)
    try:
        await external_cluster.wait_forgotten(prefix, within=SOON)
    finally:  # (Dask's leaves the key held: let the later tests find the scheduler empty)
        async with DaskExecutor(external_cluster.address) as ex:
            await ex.variable(name).delete()
        # No get left waiting (ours ends within PROMPT): the next test counts its own only.
        await external_cluster.wait_waiting("unset", name, 0)


# -- bad input -------------------------------------------------------------------------


async def test_bad_use_is_named(external_cluster: ExternalCluster) -> None:
    async with (
        DaskExecutor(external_cluster.address) as ex,
        DaskExecutor(external_cluster.address) as other,
    ):
        for make in (ex.queue, ex.event, ex.variable):
            with pytest.raises(ValueError, match="the empty string names nothing"):
                make("")
            with pytest.raises(TypeError, match="needs a name"):
                make(3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="maxsize must be an integer, 0 or more"):
            ex.queue("q", maxsize=-1)
        theirs = other.submit(inc, 1)
        queue, variable = ex.queue(_name("queue")), ex.variable(_name("variable"))
        with pytest.raises(ValueError, match="belongs to another DaskExecutor"):
            await queue.put(theirs)
        with pytest.raises(ValueError, match="belongs to another DaskExecutor"):
            await variable.set(theirs)
        mine = ex.submit(inc, 1)
        with pytest.raises(TypeError, match="put\\(\\) each handle on its own"):
            await queue.put([mine])
        with pytest.raises(TypeError, match="set\\(\\) each handle on its own"):
            await variable.set({"h": mine})
        await mine
    with pytest.raises(RuntimeError, match="cannot be used any more"):
        await queue.get()
    with pytest.raises(RuntimeError, match="cannot be used any more"):
        ex.event("e")


# -- what the review of the first version found ------------------------------------------


async def test_every_call_is_a_checkpoint(external_cluster: ExternalCluster) -> None:
    """In a cancelled scope every awaited call raises at once and does nothing."""
    name = _name("checkpoints")
    async with DaskExecutor(external_cluster.address) as ex:
        queue, event, variable = ex.queue(name), ex.event(name), ex.variable(name)
        await variable.set("before")
        calls = [
            lambda: queue.put("never"),
            queue.get,
            queue.qsize,
            event.set,
            event.clear,
            event.is_set,
            event.wait,
            lambda: variable.set("after"),
            variable.get,
            variable.delete,
        ]
        for call in calls:
            with anyio.CancelScope() as scope:
                scope.cancel()
                await call()
            assert scope.cancelled_caught
        assert await queue.qsize() == 0
        assert not await event.is_set()
        assert await variable.get() == "before"
        await variable.delete()


async def test_delete_is_done_when_it_returns(ex: DaskExecutor) -> None:
    """A get after delete() waits for a new value (Dask's delete is a one-way message that
    a later get overtakes)."""
    variable = ex.variable(_name("variable"))
    for _ in range(3):
        await variable.set(1)
        await variable.delete()
        with anyio.move_on_after(PROMPT * 2) as scope:
            await variable.get()
        assert scope.cancelled_caught


async def test_dasks_own_queue_shares_plain_values(external_cluster: ExternalCluster) -> None:
    """Strings, numbers and the like travel as Dask's Queue sends them, both ways."""
    name = _name("queue")
    async with DaskExecutor(external_cluster.address) as ex:

        async def dask_queue(client: distributed.Client) -> Any:
            return await distributed.Queue(name, client=client)

        queue = ex.queue(name)
        theirs = await ex.call_client(dask_queue)
        for value in ("text", 3, 2.5, None, True, b"raw"):
            await queue.put(value)
            assert await ex.call_client(lambda _: theirs.get(timeout=WAIT)) == value
        await ex.call_client(lambda _: theirs.put("from dask"))
        assert await queue.get() == "from dask"


async def test_a_handle_the_scheduler_forgot(
    external_cluster: ExternalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled handle is refused by put; a handle whose task was cancelled while in the
    queue comes out cancelled (awaiting it raises: it does not hang), and the exit ends."""
    name = _name("queue")
    async with (
        DaskExecutor(external_cluster.address) as ex,
        DaskExecutor(external_cluster.address) as other,
    ):
        queue = ex.queue(name)
        stuck = ex.submit(inc, 1, resources=ABSENT)
        await queue.put(stuck)
        stuck.cancel()
        await external_cluster.wait_forgotten(stuck.key)
        with pytest.raises(ValueError, match="whose task is not cancelled"):
            await queue.put(stuck)
        got = await other.queue(name).get()
        with anyio.fail_after(WAIT), pytest.raises(TaskCancelled, match="scheduler forgot"):
            await got
        assert got.status is TaskStatus.CANCELLED


async def test_handlers_gone_from_the_scheduler_come_back(
    external_cluster: ExternalCluster,
) -> None:
    """A scheduler without the handlers (restarted, say) gets them again, and a queue it
    does not have is made again: requests go on working."""
    name = _name("queue")
    async with DaskExecutor(external_cluster.address) as ex:
        queue = ex.queue(name)
        await queue.put("before")
        assert await queue.get() == "before"
        external_cluster.observer.run_on_scheduler(_forget_exchange, name=name)
        await queue.put("after")
        assert await queue.qsize() == 1
        assert await queue.get() == "after"


def _forget_exchange(dask_scheduler: Any, name: str) -> None:
    """As a restarted scheduler: no handlers of dask-anyio, no queue ``name``."""
    dask_scheduler.remove_plugin("dask-anyio-exchange")
    for op in list(dask_scheduler.handlers):
        if op.startswith("dask_anyio_"):
            del dask_scheduler.handlers[op]
    del dask_scheduler.extensions["queues"].queues[name]


# -- asyncio's own cancellation ------------------------------------------------------------


async def _natively_cancelled_get(
    ex: DaskExecutor, other: DaskExecutor, name: str, maxsize: int
) -> list[Any]:
    """A get cancelled by Task.cancel() just after another client put "a" (which it takes)
    and "b": what it returned (it may have returned "a" first)."""
    import asyncio

    task = asyncio.ensure_future(ex.queue(name, maxsize=maxsize).get())
    await anyio.wait_all_tasks_blocked()
    await other.queue(name, maxsize=maxsize).put("a")
    await other.queue(name, maxsize=maxsize).put("b")  # (room: the get took "a")
    task.cancel()
    try:
        return [await task]
    except asyncio.CancelledError:
        return []


async def _wait_size(ex: DaskExecutor, name: str, size: int) -> None:
    with anyio.fail_after(WAIT):
        while await ex.queue(name).qsize() != size:  # noqa: ASYNC110 - the scheduler's state
            await anyio.sleep(0.02)


@pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)
@pytest.mark.parametrize("maxsize", [0, 1])
async def test_a_natively_cancelled_get_gives_its_item_back(
    external_cluster: ExternalCluster, maxsize: int
) -> None:
    """asyncio's cancellation passes anyio's shield: an item the get took all the same goes
    back to the head of the queue (past a bounded queue's maxsize), before what was put
    after it, for any client's next get; an executor's exit waits until it is back."""
    name = _name("queue")
    async with (
        DaskExecutor(external_cluster.address) as ex,
        DaskExecutor(external_cluster.address) as other,
    ):
        for _ in range(5):
            returned = await _natively_cancelled_get(ex, other, name, maxsize)
            await _wait_size(other, name, 2 - len(returned))
            with anyio.fail_after(WAIT):
                rest = [await other.queue(name).get() for _ in range(2 - len(returned))]
            assert returned + rest == ["a", "b"]
        async with DaskExecutor(external_cluster.address) as leaving:
            returned = await _natively_cancelled_get(leaving, other, name, maxsize)
        assert await other.queue(name).qsize() == 2 - len(returned)
        for _ in range(2 - len(returned)):
            await other.queue(name).get()


@pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)
async def test_a_get_natively_cancelled_as_its_reply_comes_gives_it_back(
    external_cluster: ExternalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncio's cancellation reaching a get whose request took "a" and is still on its way
    back (held there): the request ends all the same, and "a" goes back to the queue."""
    import asyncio

    name = _name("queue")
    arrived, go_on = asyncio.Event(), asyncio.Event()
    original = Exchange._ask

    async def held_reply(self: Exchange, op: str, /, **arguments: Any) -> Any:
        reply = await original(self, op, **arguments)
        if op == "queue_get" and isinstance(reply, dict):
            arrived.set()
            await go_on.wait()
        return reply

    monkeypatch.setattr(Exchange, "_ask", held_reply)
    async with (
        DaskExecutor(external_cluster.address) as ex,
        DaskExecutor(external_cluster.address) as other,
    ):
        task = asyncio.ensure_future(ex.queue(name).get())
        await anyio.wait_all_tasks_blocked()
        await other.queue(name).put("a")
        await arrived.wait()
        task.cancel()
        await anyio.wait_all_tasks_blocked()
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        monkeypatch.undo()
        with anyio.fail_after(WAIT):
            assert await other.queue(name).get() == "a"
