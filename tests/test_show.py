"""How executors and streams show themselves: repr and Jupyter's HTML, with their counts."""

from __future__ import annotations

import re
import uuid

import anyio
import anyio.to_thread
import pytest

from dask_anyio import DaskExecutor

from .conftest import ABSENT, ExternalCluster
from .tasks import inc, set_event, wait_for_event

pytestmark = pytest.mark.anyio


async def test_executor_repr_and_html(external_cluster: ExternalCluster) -> None:
    """repr and _repr_html_ show the state, the scheduler, the dashboard link, the workers
    and the counts of tasks, before, during and after the scope, from no request."""
    ex = DaskExecutor(external_cluster.address)
    assert repr(ex) == "<DaskExecutor new: tasks unknown from this thread>"
    async with ex:
        await ex.submit(inc, 1)
        pending = ex.submit(inc, 2, resources=ABSENT)
        assert repr(ex) == (
            f"<DaskExecutor open on {external_cluster.address}: "
            "1 pending, 1 finished, 0 failed, 0 cancelled>"
        )
        page = ex._repr_html_()
        assert "<table>" in page
        assert f"<code>{external_cluster.address}</code>" in page
        assert "1 pending, 1 finished" in page
        assert "Keys held</th><td" in page
        assert 'Workers</th><td style="text-align: left">2 (16 threads' in page
        # from another thread: no counts (they live on the event loop), and no error
        shown = await anyio.to_thread.run_sync(repr, ex)
        assert (
            shown
            == f"<DaskExecutor open on {external_cluster.address}: tasks unknown from this thread>"
        )
        pending.cancel()
    assert repr(ex) == "<DaskExecutor closed: 0 pending, 1 finished, 0 failed, 1 cancelled>"
    assert "closed" in ex._repr_html_()


async def test_stream_reprs_show_their_counts(external_cluster: ExternalCluster) -> None:
    """AsCompleted and ResultStream reprs say how many items are done, pending, in flight."""
    gate = f"gate-{uuid.uuid4()}"
    async with DaskExecutor(external_cluster.address) as ex:
        done = ex.submit(inc, 1)
        await done
        waiting = ex.submit(wait_for_event, gate)
        stream = ex.as_completed([done, waiting])
        assert repr(stream) == "<AsCompleted 1 done, 1 pending>"
        results = ex.imap(inc, range(5), max_in_flight=2)
        assert repr(results) == "<ResultStream not started: 0 submitted, 0 in flight>"
        async with results:
            assert await anext(results) == 1
            assert "<ResultStream open: " in repr(results)
        # (how many the feeder submitted before the close depends on the cluster's speed)
        assert re.fullmatch(r"<ResultStream closed: [1-4] submitted, 0 in flight>", repr(results))
        await ex.run(set_event, gate)
        assert [h async for h in stream] == [done, waiting]
        assert repr(stream) == "<AsCompleted 0 done, 0 pending>"
