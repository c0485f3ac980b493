"""Cancellation that reaches code already running on a worker (dask_anyio.checkpoint)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import distributed
import psutil
import pytest

from dask_anyio import CancelledOnWorker, DaskExecutor, checkpoint, kill_on_cancel

from .conftest import ExternalCluster, start_external_cluster, stop_processes
from .tasks import (
    RemoteOnlyError,
    add_async,
    checkpoint_as,
    exit_process,
    inc,
    leave_a_thread_running,
    make_bytes,
    raise_remote_only,
    signal_process,
    spin_forever_reporting,
    spin_until_cancelled,
    start_sleeper,
    wait_forever_reporting,
    write_at_exit,
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
        # and the worker took the stop for what it is, not for the task's failure
        logs = await helper.call_client(lambda client: client.get_worker_logs())
        failed = [m for log in logs.values() for _, m in log if "spin_until_cancelled" in m]
        assert not failed, failed
    print(f"stopped {elapsed * 1000:.0f} ms after the cancellation")


async def test_an_async_task_is_cancelled_on_the_worker(
    external_cluster: ExternalCluster,
) -> None:
    """A coroutine task is cancelled on the worker when its caller's scope is: its finally
    block runs there, and its slot serves the next task."""
    slot = {"resources": {"SLOT": 1}, "workers": [external_cluster.workers[0]]}
    async with DaskExecutor(external_cluster.address) as helper:
        async with reported_then_cancelled(
            external_cluster, lambda ex, port: ex.submit(wait_forever_reporting, port, **slot)
        ) as (connection, report):
            assert report == b"started\n"
            with anyio.fail_after(10):
                assert await connection.receive() == b"finally\n"
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


@asynccontextmanager
async def reported_then_cancelled(
    cluster: ExternalCluster, submit: Callable[[DaskExecutor, int], object]
) -> AsyncIterator[tuple[anyio.abc.SocketStream, bytes]]:
    """``submit(ex, port)`` submits a task that connects to 127.0.0.1:``port`` and reports;
    once its first report came, ``ex``'s scope is cancelled. Yields the connection (closed
    when the block ends) and that report."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        with anyio.CancelScope() as scope:
            async with DaskExecutor(cluster.address) as ex:
                submit(ex, port)
                connection = await _accept(listener)
                report = await connection.receive()
                scope.cancel()
    async with connection:
        yield connection, report


async def test_kill_on_cancel_stops_code_that_never_checks(
    external_cluster: ExternalCluster,
) -> None:
    """`while True: pass` in kill_on_cancel's child: the child is killed when the caller's
    scope is cancelled; the worker (same process) keeps serving, on the slot it freed."""
    slot = {"resources": {"SLOT": 1}, "workers": [external_cluster.workers[0]]}
    spin = kill_on_cancel(spin_forever_reporting)
    async with DaskExecutor(external_cluster.address) as helper:
        worker_pid = await helper.retrieve(helper.submit(worker_pid_task, **slot))
        async with reported_then_cancelled(
            external_cluster, lambda ex, port: ex.submit(spin, port, **slot)
        ) as (connection, report):
            child_pid = int(report)
            assert child_pid != worker_pid
            with anyio.fail_after(10):  # the child's end of the connection closes: it died
                with pytest.raises(anyio.EndOfStream):
                    await connection.receive()
        with anyio.fail_after(10):  # the slot is free: the thread returned, the child reaped
            assert await helper.retrieve(helper.submit(worker_pid_task, **slot)) == worker_pid
        with pytest.raises(ProcessLookupError):
            os.kill(child_pid, 0)  # gone, not a zombie


async def test_kill_on_cancel_returns_values_and_raises_errors(
    ex: DaskExecutor,
) -> None:
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


async def test_kill_on_cancel_runs_coroutine_functions(ex: DaskExecutor) -> None:
    assert await ex.run(kill_on_cancel(add_async), 1, 2) == 3


async def test_kill_on_cancel_reports_a_child_that_died(ex: DaskExecutor) -> None:
    """A child that exits without an outcome: the task fails naming the call and the exit
    status; the worker is unaffected."""
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


async def test_kill_on_cancel_lets_the_child_exit_as_a_process_does(
    external_cluster: ExternalCluster, tmp_path: Path
) -> None:
    """A call that returns is not cut short: its process exits by itself (atexit handlers
    run, buffers are flushed) before the task ends."""
    path = tmp_path / "at-exit"
    async with DaskExecutor(external_cluster.address) as ex:
        await ex.run(kill_on_cancel(write_at_exit), str(path))
    assert path.read_text() == "ran at exit"


async def test_kill_on_cancel_turns_an_exit_into_an_error(
    external_cluster: ExternalCluster,
) -> None:
    """sys.exit() in the call would end the worker if raised there: it is a task error
    that names it, and the worker serves on."""
    slot = {"resources": {"SLOT": 1}, "workers": [external_cluster.workers[0]]}
    async with DaskExecutor(external_cluster.address) as ex:
        worker_pid = await ex.retrieve(ex.submit(worker_pid_task, **slot))
        with pytest.raises(RuntimeError, match=r"raised SystemExit\(3\) in its process"):
            await ex.retrieve(ex.submit(kill_on_cancel(sys.exit), 3, **slot))
        assert await ex.retrieve(ex.submit(worker_pid_task, **slot)) == worker_pid


async def test_kill_on_cancel_sends_large_arguments(external_cluster: ExternalCluster) -> None:
    """Arguments far larger than a pipe's buffer reach the child."""
    data = make_bytes(3_000_000)
    async with DaskExecutor(external_cluster.address) as ex:
        assert await ex.run(kill_on_cancel(len), data) == len(data)


async def test_kill_on_cancel_children_end_with_their_worker(tmp_path: Path) -> None:
    """If the worker process dies (here: SIGKILL), the child it was running a call in
    ends too, with what it started: it reads the end of its lifeline."""
    address, procs = start_external_cluster(tmp_path, n_workers=1, nthreads=1)
    try:
        async with (
            await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
            DaskExecutor(address) as ex,
        ):
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            worker_pid = await ex.run(worker_pid_task)
            handle = ex.submit(kill_on_cancel(spin_forever_reporting), port)
            connection = await _accept(listener)
            child_pid = int(await connection.receive())
            os.kill(worker_pid, signal.SIGKILL)
            handle.cancel()  # (or Dask runs it again on the worker its nanny restarts)
            with anyio.fail_after(10):  # the child's end of the connection closes: it died
                with pytest.raises(anyio.EndOfStream):
                    await connection.receive()
            await connection.aclose()
            with anyio.fail_after(10):
                while _alive(child_pid):  # noqa: ASYNC110 - another process's state
                    await anyio.sleep(0.01)
    finally:
        stop_processes(procs)


async def test_coroutine_tasks_keep_dask_keys(ex: DaskExecutor) -> None:
    """A coroutine function submitted with key= keeps that key, pure=True gives equal calls
    one key, and map runs coroutine functions too."""
    key = f"mine-{uuid.uuid4()}"
    handle = ex.submit(add_async, 1, 2, key=key)
    assert handle.key == key
    assert await ex.retrieve(handle) == 3
    one, two = ex.submit(add_async, 5, 6, pure=True), ex.submit(add_async, 5, 6, pure=True)
    assert one.key == two.key
    assert await ex.gather(ex.map(add_async, [1, 2], [10, 20])) == [11, 22]


async def test_checkpoint_in_an_actor_method_does_nothing(
    ex: DaskExecutor,
) -> None:
    """An actor's method runs with the actor's key, which is not a running task: checkpoint()
    must not take it for a cancelled one (a key that is not running does raise)."""
    assert await ex.run(checkpoint_as, f"gone-{uuid.uuid4()}", actor=True) == "returned"
    assert await ex.run(checkpoint_as, f"gone-{uuid.uuid4()}", actor=False) == "raised"


async def test_kill_on_cancel_delivers_when_the_child_does_not_exit(
    ex: DaskExecutor,
) -> None:
    """A call that returns but leaves a thread that keeps its process alive: after a grace
    period for the exit, the process is killed and the value delivered."""
    assert await ex.run(kill_on_cancel(leave_a_thread_running)) == "done"


def test_an_outcome_cut_short_is_told_from_a_whole_one() -> None:
    """The child frames its outcome: a child killed while writing it is not unpickled."""
    from dask_anyio import _child

    data = b"outcome"
    whole = _child.header(data) + data
    assert _child.complete(whole)
    assert not _child.complete(whole[:-1])
    assert not _child.complete(whole[:3])
    assert not _child.complete(b"")


def test_a_child_that_dies_before_reading_its_call_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The child exits before reading a call larger than a pipe's buffer (the write breaks
    the pipe): the call fails naming its exit status. (Worker-side logic, run in-process.)"""
    from dask_anyio import _remote

    monkeypatch.setattr(sys, "executable", shutil.which("false"))
    with pytest.raises(RuntimeError, match=r"died with exit status 1, without an outcome"):
        _remote._run_in_child(len, (make_bytes(3_000_000),), {})
