"""Dask's own API inside an executor's scope: its blocking calls find the executor's client
(in worker threads), never block the event loop, and handles reach the rest of Dask."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import dask
import dask.array as da
import distributed
import pytest

from dask_anyio import DaskExecutor

from .conftest import ExternalCluster
from .tasks import inc, worker_address

pytestmark = pytest.mark.anyio


async def test_blocking_dask_api_in_a_worker_thread_uses_the_executor(
    external_cluster: ExternalCluster, tmp_path: Path
) -> None:
    """In a worker thread of the executor's scope, .compute() of a persisted collection,
    dask.compute(), get_client(), Lock and performance_report run on the executor's client
    and its cluster (not on Dask's local threaded scheduler)."""
    report = tmp_path / "report.html"
    async with DaskExecutor(external_cluster.address) as ex:
        ours = ex.client
        persisted = await ex.persist(da.arange(10, chunks=5))
        handle = ex.submit(inc, 1)
        lock = f"lock-{uuid.uuid4()}"

        def blocking() -> dict[str, Any]:
            with distributed.performance_report(filename=str(report)):
                locked = distributed.Lock(lock)
                assert locked.acquire(timeout=10)
                locked.release()
                return {
                    "persisted": persisted.sum().compute(),
                    "compute": dask.compute(dask.delayed(worker_address)()),
                    "handle": dask.compute(dask.delayed(inc)(handle)),
                    "client": distributed.get_client() is ours,
                }

        found = await anyio.to_thread.run_sync(blocking)
        assert found["persisted"] == 45
        assert found["compute"][0] in external_cluster.workers
        assert found["handle"] == (3,)
        assert found["client"]
    assert "Dask Performance Report" in report.read_text()
    await external_cluster.wait_forgotten()


async def test_blocking_dask_api_on_the_event_loop_is_refused(
    ex: DaskExecutor, anyio_backend_name: str
) -> None:
    """dask.compute() on the event loop's thread raises RuntimeError at once (under trio
    our own, saying what to use; under asyncio Dask's, as its asynchronous client does);
    under trio, so do the client's other blocking calls (Future.result(), who_has(),
    performance_report())."""
    expected = "anyio.to_thread.run_sync" if anyio_backend_name == "trio" else "asynchronous"
    with pytest.raises(RuntimeError, match=expected):
        dask.compute(dask.delayed(inc)(1))
    if anyio_backend_name == "trio":
        handle = ex.submit(inc, 1)
        for blocking in (
            handle.future.result,
            distributed.get_client().who_has,
            distributed.performance_report().__enter__,
        ):
            with pytest.raises(RuntimeError, match="would block the event loop"):
                blocking()
        await handle
    assert await ex.compute(dask.delayed(inc)(1)) == 2  # the executor's way


async def test_the_executor_is_current_only_in_its_scope(external_cluster: ExternalCluster) -> None:
    """After the exit, Dask's blocking API no longer finds the executor's client."""
    async with DaskExecutor(external_cluster.address) as ex:
        ours = ex.client
        assert await anyio.to_thread.run_sync(distributed.get_client) is ours
    with pytest.raises(ValueError, match="No global client"):
        await anyio.to_thread.run_sync(distributed.get_client)


async def test_call_client_takes_handles(ex: DaskExecutor) -> None:
    """call_client() replaces handles in its arguments by their futures, as submit() does,
    and handle.future is the task's Dask future."""
    handle = ex.submit(inc, 1)
    await handle
    await ex.call_client(distributed.Client.replicate, [handle], n=2)
    who_has = await ex.call_client(lambda c, fs: c.who_has(fs), [handle])
    assert len(who_has[handle.key]) == 2
    assert handle.future.key == handle.key
    assert isinstance(handle.future, distributed.Future)
    assert await ex.call_client(lambda c, f: f.result(), handle) == 2
