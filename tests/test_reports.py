"""Dask's diagnostics around code of every backend: ``ex.performance_report``,
``ex.task_stream``, ``ex.progress``, on a real cluster."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from dask_anyio import DaskExecutor, PerformanceReport, TaskStream

from .conftest import ABSENT, ExternalCluster
from .tasks import inc, raise_remote_only

pytestmark = pytest.mark.anyio


async def test_a_performance_report_of_the_block(
    external_cluster: ExternalCluster, tmp_path: Path
) -> None:
    """The report is Dask's HTML page, with this function's code in it."""
    path = tmp_path / "report.html"
    async with DaskExecutor(external_cluster.address) as ex:
        report = ex.performance_report(str(path))
        assert isinstance(report, PerformanceReport)
        async with report:
            assert await ex.gather(ex.map(inc, range(10))) == list(range(1, 11))
    html = path.read_text()
    assert "Dask Performance Report" in html
    assert "test_a_performance_report_of_the_block" in html  # the calling code


async def test_a_report_is_written_however_the_block_is_left(
    ex: DaskExecutor, tmp_path: Path
) -> None:
    """A cancelled block still writes its report; entering in a cancelled scope does
    nothing and raises."""
    cancelled = tmp_path / "cancelled.html"
    with anyio.CancelScope() as scope:
        async with ex.performance_report(str(cancelled)):
            scope.cancel()
            await anyio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert "Dask Performance Report" in cancelled.read_text()
    never = tmp_path / "never.html"
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with ex.performance_report(str(never)):
            pytest.fail("entered in a cancelled scope")
    assert not never.exists()
    with pytest.raises(TypeError, match="needs a file name"):
        ex.performance_report(None)  # type: ignore[arg-type]


async def test_the_task_stream_of_the_block(ex: DaskExecutor) -> None:
    """``ts.data`` holds the block's task runs, not those before it; ``plot=True`` gives
    Dask's bokeh figure."""
    await ex.run(inc, 0)
    stream = ex.task_stream()
    assert isinstance(stream, TaskStream)
    async with stream as ts:
        handles = ex.map(inc, range(5), key="streamed")
        await ex.gather(handles)
    keys = {str(item["key"]) for item in ts.data}
    assert {h.key for h in handles} <= keys
    assert all(key.startswith("streamed") for key in keys)
    async with ex.task_stream(plot=True) as plotted:
        await ex.run(inc, 1)
    assert plotted.figure is not None
    assert len(plotted.data) >= 1
    with pytest.raises(ValueError, match='plot must be True, False or "save"'):
        ex.task_stream(plot="yes")  # type: ignore[arg-type]


async def test_progress_waits_for_every_task_and_observes_none(
    external_cluster: ExternalCluster,
) -> None:
    """It returns once all are done, a failed one included, and leaves that failure to be
    observed: the exit raises it, as for any unobserved failure."""

    async def run() -> None:
        async with DaskExecutor(external_cluster.address) as ex:
            handles = [*ex.map(inc, range(5)), ex.submit(raise_remote_only, "remote only")]
            await ex.progress(handles, description="squares")
            assert all(h.done() for h in handles)
            assert await ex.gather(handles[:5]) == [1, 2, 3, 4, 5]

    with pytest.raises(ExceptionGroup, match="nobody awaited them") as caught:
        await run()
    assert [str(e) for e in caught.value.exceptions] == ["remote only"]


async def test_a_cancelled_progress_leaves_the_tasks(external_cluster: ExternalCluster) -> None:
    async with (
        DaskExecutor(external_cluster.address) as ex,
        DaskExecutor(external_cluster.address) as other,
    ):
        stuck = ex.submit(inc, 1, resources=ABSENT)
        with anyio.move_on_after(0.2) as scope:
            await ex.progress([stuck])
        assert scope.cancelled_caught
        assert not stuck.done()
        stuck.cancel()
        with pytest.raises(ValueError, match="belongs to another DaskExecutor"):
            await ex.progress([other.submit(inc, 1)])
