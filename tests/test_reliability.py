"""Reliability: workers killed mid-work, loopback-only listeners, no busy waiting."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
import traceback
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import distributed
import psutil
import pytest

from dask_anyio import DaskExecutor, TaskHandle, TaskStatus
from dask_anyio._leaks import snapshot

from .conftest import ExternalCluster, start_external_cluster, stop_processes
from .reliability_tasks import sleep_then_return, ten_ms_step, wait_when_recomputed

pytestmark = pytest.mark.anyio

LOOPBACK = {"127.0.0.1", "::1"}


# -- a worker dies in the middle of a map ------------------------------------------------


#: Why a waiter of a value lost with a worker never wakes on asyncio; pinned by
#: test_waiters_of_a_lost_value_wake.
class LoopCallbackFailed(ExceptionGroup):
    """Exceptions that callbacks of the asyncio event loop raised (outside any task)."""


@contextlib.asynccontextmanager
async def loop_callback_errors() -> AsyncIterator[None]:
    """On asyncio, stop the block at the first exception that an event loop callback raises
    and raise it here, as :exc:`LoopCallbackFailed`, its frames cleared.

    anyio's test runner would report it only after the test, and its traceback would keep
    what the callback held (a coroutine never started) alive into a later test."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # trio: an exception in its callbacks ends the run anyway
        yield
        return
    errors: list[Exception] = []
    previous = loop.get_exception_handler()

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        errors.append(error if isinstance(error, Exception) else RuntimeError(context))
        scope.cancel()

    loop.set_exception_handler(handler)
    try:
        with anyio.CancelScope() as scope:
            yield
    finally:
        loop.set_exception_handler(previous)
    if errors:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "coroutine never awaited"
            for error in errors:
                traceback.clear_frames(error.__traceback__)
            gc.collect()
        raise LoopCallbackFailed("event loop callbacks raised", errors)


def _own_cluster(tmp_path: Path, n_workers: int) -> Iterator[ExternalCluster]:
    """A scheduler and one-thread workers, each under its nanny (as `dask worker` starts
    them), of this test's own; every process it ever had is gone afterwards."""
    address, procs = start_external_cluster(tmp_path, n_workers=n_workers, nthreads=1)
    seen: dict[int, psutil.Process] = {}
    try:
        observer = distributed.Client(address, timeout=60, set_as_default=False)
        try:
            observer.wait_for_workers(n_workers, timeout=60)
            seen |= _family(procs)
            workers = sorted(observer.scheduler_info(n_workers=-1)["workers"])
            yield ExternalCluster(address, workers, procs, observer, tmp_path / "scheduler.json")
        finally:
            observer.close()
    finally:
        seen |= _family(procs)  # the workers the nannies started again, too
        stop_processes(procs)
        _, alive = psutil.wait_procs(list(seen.values()), timeout=15)
        assert alive == [], f"processes of the cluster survived: {alive}"


def _family(procs: list[Any]) -> dict[int, psutil.Process]:
    """The processes started and everything they started, alive now."""
    found: dict[int, psutil.Process] = {}
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(proc.pid)
            found |= {p.pid: p for p in [parent, *parent.children(recursive=True)]}
    return found


@pytest.fixture
def four_nanny_workers(tmp_path: Path) -> Iterator[ExternalCluster]:
    """Four one-thread workers under nannies, for this test only."""
    yield from _own_cluster(tmp_path, 4)


@pytest.fixture
def one_nanny_worker(tmp_path: Path) -> Iterator[ExternalCluster]:
    """One one-thread worker under its nanny, for this test only."""
    yield from _own_cluster(tmp_path, 1)


@pytest.mark.timeout(240)
async def test_worker_killed_mid_map(
    four_nanny_workers: ExternalCluster,
) -> None:
    """SIGKILL of a worker process when 30 % of a 1000-task map is done: as_completed yields
    every handle once, gather returns all 1000 correct values, the exit leaves no key."""
    cluster = four_nanny_workers
    async with loop_callback_errors(), DaskExecutor(cluster.address) as ex:
        handles = ex.map(ten_ms_step, range(1000))
        yielded: list[TaskHandle[int]] = []
        with anyio.fail_after(120):  # a bound, not a timing assertion: no hang
            async for handle in ex.as_completed(handles):
                yielded.append(handle)
                if len(yielded) == 300:
                    await kill_busiest_worker(ex, cluster, {h.key for h in handles})
            assert len(yielded) == 1000
            assert {h.key for h in yielded} == {h.key for h in handles}
            values = await ex.gather(handles)
        assert values == [10 * i + 1 for i in range(1000)]
        assert all(h.status is TaskStatus.FINISHED for h in handles)
    assert cluster.scheduler_keys() == set()


async def kill_busiest_worker(ex: DaskExecutor, cluster: ExternalCluster, keys: set[str]) -> None:
    """SIGKILL the worker process that holds most of ``keys`` in memory."""
    has_what: dict[str, Any] = await ex.call_client(lambda c: c.has_what())
    held = {worker: len(keys.intersection(held)) for worker, held in has_what.items()}
    busiest = max(held, key=held.__getitem__)
    assert sum(held.values()) >= 300  # what as_completed yielded is in memory somewhere
    assert held[busiest] >= 75  # so the busiest of four holds a quarter of it, to be redone
    await kill_worker_process(ex, cluster, busiest)


async def kill_worker_process(ex: DaskExecutor, cluster: ExternalCluster, worker: str) -> None:
    """SIGKILL the process of ``worker`` (not its nanny) and wait until the scheduler has
    removed it."""
    pids: dict[str, int] = await ex.call_client(lambda c: c.run(os.getpid, workers=[worker]))
    victim = psutil.Process(pids[worker])
    nannies = {p.pid for p in cluster.processes[1:]}  # the `dask worker` processes
    assert victim.pid not in nannies
    assert victim.ppid() in nannies  # the nanny's child: the process that runs the tasks
    victim.kill()
    # Polling other processes' state, bounded: the nanny reaps its child, the scheduler
    # removes the worker.
    with anyio.fail_after(60):
        while victim.is_running() or worker in await _workers(ex):  # noqa: ASYNC110
            await anyio.sleep(0.05)


async def _workers(ex: DaskExecutor) -> set[str]:
    identity: dict[str, Any] = await ex.call_client(lambda c: c.scheduler.identity(n_workers=-1))
    return set(identity["workers"])


@pytest.mark.timeout(180)
async def test_waiters_of_a_lost_value_wake(
    one_nanny_worker: ExternalCluster,
    tmp_path: Path,
) -> None:
    """`await handle` on a task whose value was lost with its worker (status LOST) returns
    once Dask has computed the value again."""
    cluster = one_nanny_worker
    runs = tmp_path / "runs"
    runs.mkdir()
    event = f"recompute-{uuid.uuid4()}"
    async with loop_callback_errors(), DaskExecutor(cluster.address) as ex:
        handle = ex.submit(wait_when_recomputed, str(runs), event)
        await handle
        (worker,) = await _workers(ex)
        await kill_worker_process(ex, cluster, worker)
        # The recomputation, on the worker the nanny starts anew, waits for the event: the
        # value stays lost until then. Bounded polling of the client's and a worker's state.
        with anyio.fail_after(60):
            while handle.status is not TaskStatus.LOST:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                # (not wait_all_tasks_blocked: on asyncio, Dask's client keeps tasks of its
                # own busy while the worker comes back, and it timed out in about half the runs)
                waiting = anyio.Event()
                tg.start_soon(_wait, handle, waiting)
                await waiting.wait()
                while not (runs / "again").exists():  # noqa: ASYNC110
                    await anyio.sleep(0.02)
                assert handle.status is TaskStatus.LOST
                await ex.call_client(lambda c: distributed.Event(event, client=c).set())
        assert handle.status is TaskStatus.FINISHED
        assert await ex.retrieve(handle) == "value"
    assert cluster.scheduler_keys() == set()


async def _wait(handle: TaskHandle[Any], waiting: anyio.Event) -> None:
    waiting.set()  # (the await below starts before the test goes on: no checkpoint between)
    await handle


# -- listening on the loopback interface only ---------------------------------------------


async def test_embedded_cluster_listens_on_loopback_only() -> None:
    """Every listening socket of the embedded LocalCluster (scheduler, dashboard, nannies,
    worker processes and their HTTP servers) is bound to 127.0.0.1 or ::1."""
    before = snapshot()
    async with DaskExecutor(n_workers=2, threads_per_worker=1) as ex:
        identity: dict[str, Any] = await ex.call_client(
            lambda c: c.scheduler.identity(n_workers=-1)
        )
        assert len(identity["workers"]) == 2
        me = psutil.Process()
        started = [c for c in me.children(recursive=True) if c.pid not in before.children]
        listening = {
            (conn.laddr.ip, conn.laddr.port)
            for process in [me, *started]
            for conn in process.net_connections(kind="inet")
            if conn.status == psutil.CONN_LISTEN
        }
        expected = {_ip_port(identity["address"])}
        expected |= {("127.0.0.1", port) for port in identity["services"].values()}
        for address, worker in identity["workers"].items():
            expected |= {_ip_port(address), _ip_port(worker["nanny"])}
            expected |= {("127.0.0.1", port) for port in worker["services"].values()}
        link = ex.dashboard_link
        if link is not None:  # the scheduler's HTTP server; bokeh adds the dashboard to it
            assert link.startswith("http://127.0.0.1:")
            expected.add(("127.0.0.1", int(link.split(":")[2].split("/")[0])))
    assert {ip for ip, _ in listening} <= LOOPBACK, sorted(listening)
    assert expected <= listening, (sorted(expected), sorted(listening))


def test_test_cluster_listens_on_loopback_ports_of_the_os(
    external_cluster: ExternalCluster,
) -> None:
    """The suite's own cluster binds 127.0.0.1 only, on ports the OS chose: never Dask's
    fixed default 8787 (other programs on the machine may run Dask too)."""
    processes = []
    for proc in external_cluster.processes:
        parent = psutil.Process(proc.pid)
        processes += [parent, *parent.children(recursive=True)]
    listening = {
        (conn.laddr.ip, conn.laddr.port)
        for process in processes
        for conn in process.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }
    assert len(listening) >= 1 + 2 * len(external_cluster.workers)  # comm and HTTP each
    assert {ip for ip, _ in listening} <= LOOPBACK, sorted(listening)
    assert 8787 not in {port for _, port in listening}


def _ip_port(address: str) -> tuple[str, int]:
    """``("127.0.0.1", 1234)`` for ``"tcp://127.0.0.1:1234"``."""
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    return host.strip("[]"), int(port)


# -- no busy waiting ---------------------------------------------------------------------


async def test_awaiting_a_handle_does_not_busy_wait(external_cluster: ExternalCluster) -> None:
    """While `await handle` waits for a task that sleeps 2 s on a worker, this process
    (every thread of it: the event loop, trio's private asyncio loop, Dask's threads) uses
    less CPU time than 10 % of the time waited."""
    me = psutil.Process()
    async with DaskExecutor(external_cluster.address) as ex:
        assert await ex.run(sleep_then_return, 0, 0.0) == 0  # connected, functions sent once
        handle = ex.submit(sleep_then_return, 1, 2.0)
        assert not handle.done()
        cpu_before, wall_before = _cpu_seconds(me), time.monotonic()
        await handle
        cpu, wall = _cpu_seconds(me) - cpu_before, time.monotonic() - wall_before
        assert await ex.retrieve(handle) == 1
    assert cpu < 0.1 * wall, f"{cpu:.3f} s of CPU time in {wall:.3f} s of waiting"


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system
