"""Releasing a key on the core after a crossing from the trio thread
(``DaskCore.release_now``): the client drops its reference at once, not a loop turn later,
so that the release goes to the scheduler with the messages sent beside it (a turn later, it
often went alone, and held the next submit up to Dask's 10 ms between batches: trio's
sequential round trip was 1.14-1.28x the raw client's)."""

from __future__ import annotations

import operator
import uuid
from typing import Any

import distributed
import pytest

from dask_anyio import DaskExecutor
from dask_anyio._core import DaskCore

from .conftest import ExternalCluster

pytestmark = pytest.mark.anyio


def _submit_and_release(client: distributed.Client) -> dict[str, Any]:
    """On the core loop, in one turn: submit a task, release it, and say whether the
    client still counts a reference to its key."""
    future = client.submit(operator.add, 1, 2, key=f"released-{uuid.uuid4()}")
    key = future.key
    DaskCore.release_now(future)
    held_now = key in client.refcount
    DaskCore.release_now(future)  # a second release drops nothing more
    return {"key": key, "held_now": held_now, "tasks": key in client.futures}


async def test_release_drops_the_reference_in_the_same_turn(
    external_cluster: ExternalCluster,
) -> None:
    async with DaskExecutor(external_cluster.address) as ex:
        seen = await ex.call_client(_submit_and_release)
    assert seen["held_now"] is False
    assert seen["tasks"] is False  # the client let go of the task too
    await external_cluster.wait_forgotten(seen["key"])
