"""Fifty open/use/close cycles leave nothing behind and make nothing grow."""

from __future__ import annotations

import gc
import threading
from typing import Any

import psutil
import pytest

from dask_anyio import DaskExecutor
from dask_anyio._bridge import LOOP_THREAD_NAME
from dask_anyio._leaks import Snapshot, new_threads, snapshot

from .conftest import ExternalCluster
from .tasks import inc

pytestmark = pytest.mark.anyio

CYCLES = 50
WARM_UP = 5  # process-wide helpers (Dask's thread pools, the resource tracker) start lazily


async def cycle(i: int, **executor: Any) -> None:
    async with DaskExecutor(**executor) as ex:
        assert await ex.run(inc, i) == i + 1
        ex.submit(inc, i)  # outstanding at exit: waited for, then released
    assert not [t for t in threading.enumerate() if t.name == LOOP_THREAD_NAME]


def assert_no_growth(before: Snapshot, after: Snapshot) -> None:
    assert len(after.fds) <= len(before.fds)
    assert after.children <= before.children
    assert new_threads(before) == []


async def test_open_close_cycles_external(external_cluster: ExternalCluster) -> None:
    """50 cycles against an external cluster: no growth in threads, file descriptors, child
    processes or scheduler keys, the private loop thread joined each time."""
    for i in range(WARM_UP):
        await cycle(i, address=external_cluster.address)
    warm = snapshot()
    for i in range(CYCLES - WARM_UP):
        await cycle(i, address=external_cluster.address)
        assert external_cluster.scheduler_keys() == set()
    gc.collect()  # a ResourceWarning from a finaliser fails the test (filterwarnings=error)
    assert_no_growth(warm, snapshot())


@pytest.mark.timeout(300)  # 50 LocalCluster starts and closes: about a minute a backend
async def test_open_close_cycles_embedded() -> None:
    """50 cycles with an embedded LocalCluster (worker processes): every cluster closed,
    its processes reaped, no growth in threads or file descriptors."""
    options = {"n_workers": 1, "threads_per_worker": 1}
    for i in range(WARM_UP):
        await cycle(i, **options)
    warm = snapshot()
    for i in range(CYCLES - WARM_UP):
        await cycle(i, **options)
        alive = [c for c in psutil.Process().children(recursive=True) if c.pid not in warm.children]
        _, still = psutil.wait_procs(alive, timeout=10)
        assert still == []
    gc.collect()
    assert_no_growth(warm, snapshot())
