"""Reliability under load: cancellation storms of 10 000 tasks (handles, and run() calls),
and many concurrent run() calls cancelled at random."""

from __future__ import annotations

import gc
import logging
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import distributed
import pytest

from dask_anyio import DaskExecutor, TaskHandle, TaskStatus

from .conftest import ABSENT, ExternalCluster, sent_together
from .stress_tasks import after, triple
from .tasks import wait_for_event

pytestmark = pytest.mark.anyio

#: Tasks in one cancellation storm, as the issue asks.
STORM = 10_000
#: Bound on the time a scope that owns a storm takes to exit once it breaks out.
STORM_EXIT_BOUND = 60
#: Concurrent tasks, and run() calls each makes, in the concurrency stress test.
CALLERS, CALLS = 100, 50
#: What a healthy run never logs, in this process or in the cluster's.
BAD_LOG_LINES = ("Task exception was never retrieved", "Event loop was unresponsive")


@dataclass
class LogWatch:
    """Log records of this process (caplog) and new lines of the cluster's own log file."""

    caplog: pytest.LogCaptureFixture
    cluster_log: Path
    offset: int

    def bad_lines(self) -> list[str]:
        """Lines telling of an unretrieved task exception or of a blocked event loop, logged
        here or by the cluster's processes since the watch began."""
        gc.collect()  # asyncio tells of an unretrieved task exception when the task is collected
        ours = [r.getMessage() for r in self.caplog.records]
        with self.cluster_log.open("rb") as log:
            log.seek(self.offset)
            theirs = log.read().decode(errors="replace").splitlines()
        return [line for line in ours + theirs if any(bad in line for bad in BAD_LOG_LINES)]

    def warnings(self) -> list[str]:
        """Records at WARNING or above that this process logged since the watch began."""
        return [r.getMessage() for r in self.caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture
def log_watch(
    caplog: pytest.LogCaptureFixture, external_cluster: ExternalCluster
) -> Iterator[LogWatch]:
    """Watch this process's logs (root, asyncio, distributed) and the external cluster's."""
    args = [str(a) for a in external_cluster.processes[0].args]
    cluster_log = Path(args[args.index("--scheduler-file") + 1]).parent / "cluster.log"
    # distributed's loggers do not propagate to the root logger: hand them caplog's handler.
    # "Event loop was unresponsive" is an INFO record in this version of distributed.
    dask_logger = logging.getLogger("distributed")
    caplog.set_level(logging.WARNING)
    caplog.set_level(logging.WARNING, logger="asyncio")
    caplog.set_level(logging.INFO, logger="distributed")
    dask_logger.addHandler(caplog.handler)
    try:
        yield LogWatch(caplog, cluster_log, cluster_log.stat().st_size)
    finally:
        dask_logger.removeHandler(caplog.handler)


@pytest.fixture
def gate(external_cluster: ExternalCluster) -> Iterator[str]:
    """The name of a Dask event that "on-workers" tasks wait for; set at teardown in any
    case, so that a failed test does not leave worker threads blocked for later tests."""
    name = f"stress-gate-{uuid.uuid4()}"
    yield name
    distributed.Event(name, client=external_cluster.observer).set()


async def _open_gate(ex: DaskExecutor, gate: str) -> None:
    """Set the event ``gate`` from the client: no worker thread is needed (all may wait)."""
    await ex.call_client(lambda client: distributed.Event(gate, client=client).set())


async def _wait_held(external_cluster: ExternalCluster, count: int) -> None:
    """Wait until the scheduler holds ``count`` keys. (No barrier task: with every worker
    thread waiting for a gate it could not run.)"""
    with anyio.fail_after(60):
        while len(external_cluster.scheduler_keys()) < count:  # noqa: ASYNC110
            await anyio.sleep(0.05)


@dataclass
class StormExit:
    """Bounds and times the exit of a storm's scope, from the moment it breaks out."""

    bound: anyio.CancelScope
    started: float = 0.0

    def break_out(self) -> None:
        self.started = anyio.current_time()
        self.bound.deadline = self.started + STORM_EXIT_BOUND

    def exited(self, what: str) -> None:
        print(f"{what}: exit took {anyio.current_time() - self.started:.2f} s")
        # fail_after raises TimeoutError if its cancellation was delivered; the exit's cleanup
        # is shielded, so an overrun may also show only as the cancellation having been called
        # (and pytest-timeout stops a hang).
        assert not self.bound.cancel_called, f"{what}: exit took more than {STORM_EXIT_BOUND} s"


async def _handle_storm(
    external_cluster: ExternalCluster, work: str, how: str, gate: str
) -> list[TaskHandle[Any]]:
    """Submit a storm of handles, then leave the executor as ``how`` says; return them."""
    handles: list[TaskHandle[Any]] = []

    async def body() -> None:
        async with DaskExecutor(external_cluster.address) as ex:
            if work == "never-starts":  # no worker has the resource: held by the scheduler
                handles.extend(ex.map(triple, range(STORM), resources=ABSENT))
            else:  # 16 wait for the gate on worker threads, the rest queue (mostly on the
                # scheduler, a few on the workers)
                handles.extend(ex.map(wait_for_event, [gate] * STORM))
            await _wait_held(external_cluster, STORM)
            storm_exit.break_out()
            if how == "body-raises":
                raise LookupError("the body failed")
            scope.cancel()
            await anyio.sleep_forever()

    with anyio.fail_after(None) as bound, anyio.CancelScope() as scope:
        storm_exit = StormExit(bound)
        if how == "body-raises":
            with pytest.raises(LookupError, match="the body failed"):
                await body()
        else:
            await body()
    storm_exit.exited(f"{STORM} handles, {work}, {how}")
    assert scope.cancelled_caught == (how == "scope-cancelled")
    return handles


@pytest.mark.timeout(180)
@pytest.mark.parametrize("work", ["never-starts", "on-workers"])
@pytest.mark.parametrize("how", ["scope-cancelled", "body-raises"])
async def test_cancellation_storm(
    external_cluster: ExternalCluster,
    log_watch: LogWatch,
    gate: str,
    work: str,
    how: str,
) -> None:
    """Leaving the executor by cancellation or error cancels 10 000 tasks, promptly, quietly."""
    handles = await _handle_storm(external_cluster, work, how, gate)
    assert external_cluster.scheduler_keys() == set()
    assert len(handles) == STORM
    assert {h.status for h in handles} == {TaskStatus.CANCELLED}
    if work == "on-workers":
        async with DaskExecutor(external_cluster.address) as helper:
            await _open_gate(helper, gate)  # the tasks that had started end now
    assert log_watch.warnings() == []
    assert log_watch.bad_lines() == []


async def _run_storm(
    external_cluster: ExternalCluster, ex: DaskExecutor, calls: int, work: str, gate: str
) -> TaskHandle[int]:
    """``calls`` concurrent run() calls in a task group whose scope is then cancelled.

    Return the task that the "never-starts" calls wait for (pending, never finishing)."""
    blocker = ex.submit(triple, 0, resources=ABSENT)

    async def call(i: int) -> None:
        if work == "never-starts":  # queued behind the blocker, on the scheduler
            await ex.run(after, blocker, i)
        else:  # 16 wait for the gate on worker threads, the rest queue
            await ex.run(wait_for_event, gate)

    with anyio.fail_after(None) as bound:
        storm_exit = StormExit(bound)
        async with anyio.create_task_group() as tg:
            for i in range(calls):
                tg.start_soon(call, i)
            await anyio.wait_all_tasks_blocked()  # every call has submitted its task
            await _wait_held(external_cluster, calls + 1)
            storm_exit.break_out()
            tg.cancel_scope.cancel()
    storm_exit.exited(f"{calls} run() calls, {work}")
    return blocker


async def _check_run_storm(
    external_cluster: ExternalCluster, log_watch: LogWatch, calls: int, work: str, gate: str
) -> None:
    async with DaskExecutor(external_cluster.address) as ex:
        blocker = await _run_storm(external_cluster, ex, calls, work, gate)
        # The calls were cancelled together: one cancellation, sent in chunks.
        assert external_cluster.cancel_requests(ex.client.id) == sent_together(calls)
        # run() returns only once the scheduler forgot its task: no waiting here
        assert external_cluster.scheduler_keys() == {blocker.key}
        stats = ex.statistics()
        assert (stats.pending, stats.in_flight, stats.cancelled) == (1, 1, calls)
        blocker.cancel()
        if work == "on-workers":
            await _open_gate(ex, gate)  # the calls that had started end now
    assert external_cluster.scheduler_keys() == set()
    assert log_watch.warnings() == []
    assert log_watch.bad_lines() == []


@pytest.mark.timeout(180)
@pytest.mark.parametrize("work", ["never-starts", "on-workers"])
async def test_run_storm_in_cancelled_task_group(
    external_cluster: ExternalCluster,
    log_watch: LogWatch,
    gate: str,
    work: str,
) -> None:
    """10 000 run() calls in a task group whose scope is cancelled: all forgotten, promptly
    (the calls cancelled together share one cancel and one confirmation)."""
    await _check_run_storm(external_cluster, log_watch, STORM, work, gate)


@pytest.mark.timeout(180)
async def test_concurrent_runs_with_random_cancellations(
    external_cluster: ExternalCluster, log_watch: LogWatch
) -> None:
    """100 tasks x 50 run() calls, cancelled at random: every result right, nothing left."""
    rng = random.Random(20_261_126)
    # Per call: a timeout around it (for a fifth of them), or none.
    timeouts = [
        [rng.uniform(0, 0.05) if rng.random() < 0.2 else None for _ in range(CALLS)]
        for _ in range(CALLERS)
    ]
    # A tenth of the callers are cancelled by a sibling once the group has done that many
    # calls: mid-call, or between two.
    victims = {v: rng.randrange(1, CALLERS * CALLS // 2) for v in rng.sample(range(CALLERS), 10)}
    scopes = [anyio.CancelScope() for _ in range(CALLERS)]
    results: dict[tuple[int, int], int] = {}
    timed_out: set[tuple[int, int]] = set()
    calls_done = 0

    async def caller(ex: DaskExecutor, me: int) -> None:
        nonlocal calls_done
        with scopes[me]:
            for call in range(CALLS):
                with anyio.move_on_after(timeouts[me][call] or float("inf")) as timeout:
                    results[me, call] = await ex.run(triple, me * CALLS + call)
                if timeout.cancelled_caught:
                    timed_out.add((me, call))
                calls_done += 1
                for victim, when in victims.items():
                    if calls_done == when:
                        scopes[victim].cancel()

    start = anyio.current_time()
    async with DaskExecutor(external_cluster.address) as ex:
        with anyio.fail_after(150):
            async with anyio.create_task_group() as tg:
                for me in range(CALLERS):
                    tg.start_soon(caller, ex, me)
        stats = ex.statistics()
        assert (stats.pending, stats.in_flight) == (0, 0)
        assert stats.failed == 0
        assert stats.submitted == stats.finished + stats.cancelled
    assert external_cluster.scheduler_keys() == set()
    print(
        f"{CALLERS} x {CALLS} run() calls in {anyio.current_time() - start:.1f} s: "
        f"{len(results)} returned, {len(timed_out)} timed out, "
        f"{sum(s.cancelled_caught for s in scopes)} callers cancelled; {stats}"
    )
    assert results == {(me, call): 3 * (me * CALLS + call) for me, call in results}
    # Every call returned or was cancelled by its timeout, but those of a cancelled caller
    # from the call it was in.
    assert len(results) + len(timed_out) == calls_done
    for me, scope in enumerate(scopes):
        ended = {call for who, call in results.keys() | timed_out if who == me}
        expected = len(ended) if scope.cancelled_caught else CALLS
        assert ended == set(range(expected)), me
    assert timed_out  # the random cancellations did happen
    assert any(scope.cancelled_caught for scope in scopes)
    assert log_watch.warnings() == []
    assert log_watch.bad_lines() == []
