"""Cancellation that reaches code already running on a worker (dask_anyio.checkpoint)."""

from __future__ import annotations

import os
import signal
import time
import traceback
import uuid
from typing import Any

import anyio
import anyio.abc
import distributed
import psutil
import pytest

from dask_anyio import CancelledOnWorker, DaskExecutor, checkpoint, kill_on_cancel

from .conftest import ExternalCluster
from .tasks import (
    RemoteOnlyError,
    add_async,
    exit_process,
    inc,
    make_bytes,
    raise_remote_only,
    signal_process,
    spin_forever_reporting,
    spin_until_cancelled,
    start_sleeper,
    wait_forever_reporting,
)
from .tasks import worker_pid as worker_pid_task

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


async def test_kill_on_cancel_stops_code_that_never_checks(
    external_cluster: ExternalCluster,
) -> None:
    """`while True: pass` in kill_on_cancel's child: the child is killed when the caller's
    scope is cancelled; the worker (same process) keeps serving, on the slot it freed."""
    slot = {"resources": {"SLOT": 1}, "workers": [external_cluster.workers[0]]}
    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        DaskExecutor(external_cluster.address) as helper,
    ):
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        worker_pid = await helper.retrieve(helper.submit(worker_pid_task, **slot))
        with anyio.CancelScope() as scope:
            async with DaskExecutor(external_cluster.address) as ex:
                ex.submit(kill_on_cancel(spin_forever_reporting), port, **slot)
                connection = await _accept(listener)
                child_pid = int(await connection.receive())
                assert child_pid != worker_pid
                scope.cancel()
        with anyio.fail_after(10):  # the child's end of the connection closes: it died
            with pytest.raises(anyio.EndOfStream):
                await connection.receive()
        await connection.aclose()
        with anyio.fail_after(10):  # the slot is free: the thread returned, the child reaped
            assert await helper.retrieve(helper.submit(worker_pid_task, **slot)) == worker_pid
        with pytest.raises(ProcessLookupError):
            os.kill(child_pid, 0)  # gone, not a zombie


async def test_kill_on_cancel_returns_values_and_raises_errors(
    external_cluster: ExternalCluster,
) -> None:
    async with DaskExecutor(external_cluster.address) as ex:
        assert await ex.run(kill_on_cancel(inc), 1) == 2
        assert await ex.gather(ex.map(kill_on_cancel(inc), range(3))) == [1, 2, 3]
        assert await ex.run(kill_on_cancel(make_bytes), 3_000_000) == make_bytes(3_000_000)
        with pytest.raises(RemoteOnlyError, match="remote only"):
            await ex.run(kill_on_cancel(raise_remote_only), "remote only")


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


async def test_kill_on_cancel_error_keeps_the_child_traceback(
    external_cluster: ExternalCluster,
) -> None:
    """The child's exception is raised with its traceback: the frame that raised is shown."""
    async with DaskExecutor(external_cluster.address) as ex:
        with pytest.raises(RemoteOnlyError) as caught:
            await ex.run(kill_on_cancel(raise_remote_only), "in the child")
    frames = traceback.extract_tb(caught.value.__traceback__)
    assert frames[-1].name == "raise_remote_only"
    assert frames[-1].filename.endswith("tasks.py")


async def test_kill_on_cancel_runs_coroutine_functions(external_cluster: ExternalCluster) -> None:
    async with DaskExecutor(external_cluster.address) as ex:
        assert await ex.run(kill_on_cancel(add_async), 1, 2) == 3


async def test_kill_on_cancel_reports_a_child_that_died(external_cluster: ExternalCluster) -> None:
    """A child that exits without an outcome: the task fails naming the call and the exit
    status; the worker is unaffected."""
    async with DaskExecutor(external_cluster.address) as ex:
        with pytest.raises(RuntimeError, match=r"exit_process.* died with exit status 3"):
            await ex.run(kill_on_cancel(exit_process), 3)
        with pytest.raises(RuntimeError, match=r"signal_process.* was killed by SIGKILL"):
            await ex.run(kill_on_cancel(signal_process), signal.SIGKILL)
        assert await ex.run(inc, 1) == 2


def test_kill_on_cancel_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="needs a callable"):
        kill_on_cancel(42)  # type: ignore[arg-type]


async def test_kill_on_cancel_ends_what_the_call_left_running(
    external_cluster: ExternalCluster,
) -> None:
    """A process that the call started and left running ends with the call (its process
    group is killed), once the call returned normally too."""
    async with DaskExecutor(external_cluster.address) as ex:
        pid = await ex.run(kill_on_cancel(start_sleeper))
    with anyio.fail_after(10):
        while _alive(pid):  # noqa: ASYNC110 - another process's state: nothing to wait on
            await anyio.sleep(0.01)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie waiting to be reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
