"""Cancellation that reaches code already running on a worker (dask_anyio.checkpoint)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
import anyio.abc
import distributed
import pytest

from dask_anyio import CancelledOnWorker, DaskExecutor, checkpoint

from .conftest import ExternalCluster
from .tasks import inc, spin_until_cancelled, wait_forever_reporting

pytestmark = pytest.mark.anyio


def _name() -> str:
    return f"remote-{uuid.uuid4()}"


async def _wait_event(ex: DaskExecutor, name: str) -> None:
    await ex.call_client(lambda client: distributed.Event(name, client=client).wait())


async def test_a_cooperative_task_stops_and_frees_its_slot(
    external_cluster: ExternalCluster,
) -> None:
    """A running task that calls checkpoint() stops once its executor's scope is cancelled,
    and its worker slot serves the next task."""
    started, stopped = _name(), _name()
    slot = {"resources": {"SLOT": 1}, "workers": [external_cluster.workers[0]]}
    async with DaskExecutor(external_cluster.address) as helper:
        with anyio.CancelScope() as scope:
            async with DaskExecutor(external_cluster.address) as ex:
                ex.submit(spin_until_cancelled, started, stopped, **slot)
                await _wait_event(helper, started)
                cancelled_at = time.monotonic()
                scope.cancel()
        with anyio.fail_after(10):
            await _wait_event(helper, stopped)
        elapsed = time.monotonic() - cancelled_at
        # the slot (one per worker) is free: a new task gets it
        with anyio.fail_after(10):
            assert await helper.retrieve(helper.submit(inc, 1, **slot)) == 2
    print(f"stopped {elapsed * 1000:.0f} ms after the cancellation")


async def test_an_async_task_is_cancelled_on_the_worker(
    external_cluster: ExternalCluster,
) -> None:
    """A coroutine task is cancelled on the worker when its caller's scope is: its finally
    block runs there, and its slot serves the next task."""
    slot = {"resources": {"SLOT": 1}, "workers": [external_cluster.workers[0]]}
    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        DaskExecutor(external_cluster.address) as helper,
    ):
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        with anyio.CancelScope() as scope:
            async with DaskExecutor(external_cluster.address) as ex:
                ex.submit(wait_forever_reporting, port, **slot)
                connection = await _accept(listener)
                assert await connection.receive() == b"started\n"
                scope.cancel()
        with anyio.fail_after(10):
            assert await connection.receive() == b"finally\n"
        await connection.aclose()
        with anyio.fail_after(10):
            assert await helper.retrieve(helper.submit(inc, 1, **slot)) == 2


async def _accept(listener: Any) -> anyio.abc.SocketStream:
    """The first connection to ``listener``."""
    accepted: list[anyio.abc.SocketStream] = []
    async with anyio.create_task_group() as tg:

        async def take(stream: anyio.abc.SocketStream) -> None:
            accepted.append(stream)
            tg.cancel_scope.cancel()

        tg.start_soon(listener.serve, take)
    return accepted[0]


def test_checkpoint_outside_a_task_does_nothing() -> None:
    checkpoint()


async def test_checkpoint_costs_little(external_cluster: ExternalCluster) -> None:
    """Measured on the worker: what a call costs while the task is wanted (reported)."""
    async with DaskExecutor(external_cluster.address) as ex:
        cost = await ex.run(_checkpoint_cost, 200_000)
    assert cost < 5e-6, cost  # far above the ~0.1 µs measured: only catches a slow path
    print(f"checkpoint(): {cost * 1e9:.0f} ns per call")


def _checkpoint_cost(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        checkpoint()
    return (time.perf_counter() - start) / n


def test_cancelled_on_worker_is_a_reschedule() -> None:
    assert issubclass(CancelledOnWorker, distributed.Reschedule)
