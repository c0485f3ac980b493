"""Reliability under load: cancellation storms of 10 000 tasks, many concurrent run() calls."""

from __future__ import annotations

import gc
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from dask_anyio import DaskExecutor, TaskHandle, TaskStatus

from .conftest import ABSENT, ExternalCluster, Snapshot
from .tasks import add, set_event, wait_for_event

pytestmark = pytest.mark.anyio

#: Tasks in one cancellation storm.
STORM = 10_000
#: Bound on the time a cancelled scope that owns a storm takes to exit.
STORM_EXIT_BOUND = 60
#: Concurrent tasks, and run() calls each makes, in the concurrency stress test.
CALLERS, CALLS = 100, 50
#: What a healthy run never logs, here or in the cluster's processes.
BAD_LOG_LINES = ("Task exception was never retrieved", "Event loop was unresponsive")


@dataclass
class LogWatch:
    """Log records of this process (caplog) and new lines of the cluster's own log file."""

    caplog: pytest.LogCaptureFixture
    cluster_log: Path
    offset: int

    def bad_lines(self) -> list[str]:
        """Lines that match BAD_LOG_LINES, logged since the watch began."""
        gc.collect()  # asyncio tells of unretrieved task exceptions when the task is collected
        ours = [r.getMessage() for r in self.caplog.records]
        with self.cluster_log.open("rb") as log:
            log.seek(self.offset)
            theirs = log.read().decode(errors="replace").splitlines()
        return [line for line in ours + theirs if any(bad in line for bad in BAD_LOG_LINES)]


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


def _gate() -> str:
    return f"stress-gate-{uuid.uuid4()}"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("work", ["never-starts", "on-workers"])
@pytest.mark.parametrize("how", ["scope-cancelled", "body-raises"])
async def test_cancellation_storm(
    external_cluster: ExternalCluster,
    log_watch: LogWatch,
    no_leaks: Snapshot,
    work: str,
    how: str,
) -> None:
    """Leaving the executor by cancellation or error cancels 10 000 tasks promptly, quietly."""
    gate = _gate()
    handles: list[TaskHandle[object]] = []
    broke_out: list[float] = []

    async def storm() -> None:
        async with DaskExecutor(external_cluster.address) as ex:
            if work == "never-starts":  # no worker has the resource: queued on the scheduler
                handles.extend(ex.map(add, range(STORM), range(STORM), resources=ABSENT))
            else:  # 16 wait on worker threads for the gate, the rest queue behind them
                handles.extend(ex.map(wait_for_event, [gate] * STORM))
            await ex.run(add, 0, 0)  # ordered after the map: the scheduler holds them all
            broke_out.append(anyio.current_time())
            bound.deadline = broke_out[0] + STORM_EXIT_BOUND
            if how == "body-raises":
                raise LookupError("the body failed")
            scope.cancel()
            await anyio.sleep_forever()

    # The bound starts when the scope breaks out. The exit's cleanup is shielded, so an
    # overrun shows as the bound's cancellation having been called (pytest-timeout stops a hang).
    with anyio.fail_after(None) as bound, anyio.CancelScope() as scope:
        if how == "body-raises":
            with pytest.raises(LookupError, match="the body failed"):
                await storm()
        else:
            await storm()
    print(f"storm {work} {how}: exit took {anyio.current_time() - broke_out[0]:.2f} s")
    assert not bound.cancel_called, f"the exit took more than {STORM_EXIT_BOUND} s"
    assert scope.cancelled_caught == (how == "scope-cancelled")
    assert external_cluster.scheduler_keys() == set()
    assert len(handles) == STORM
    assert {h.status for h in handles} == {TaskStatus.CANCELLED}
    if work == "on-workers":
        async with DaskExecutor(external_cluster.address) as helper:
            await helper.run(set_event, gate)  # free the worker threads of the started ones
    assert log_watch.bad_lines() == []
