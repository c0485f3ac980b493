"""Cancel a checkpoint()-ing task and a coroutine task, then close the embedded cluster.

``python cancel_then_close.py BACKEND`` (asyncio, asyncio+uvloop or trio) prints "closed" at
the end. The thread task's clean-up takes a while: the cluster closes while it still runs.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import anyio
import distributed

from dask_anyio import DaskExecutor, checkpoint

#: How long the cancelled thread task takes to clean up (closing a connection, say).
CLEANUP = 1.0


def compute_until_cancelled(started: str) -> None:
    """Tell ``started``, compute until cancelled, then clean up for a while."""
    distributed.Event(started).set()
    try:
        while True:
            checkpoint()
            time.sleep(0.001)  # a piece of work
    finally:
        time.sleep(CLEANUP)


async def wait_until_cancelled(started: str) -> None:
    """A coroutine task: tell ``started``, then wait until cancelled."""
    await distributed.Event(started).set()
    await asyncio.Event().wait()


async def run_until_started(ex: DaskExecutor, fn: object) -> None:
    """Run ``fn`` as a task; once it has started, cancel it (leave the scope)."""
    started = f"started-{uuid.uuid4()}"
    async with anyio.create_task_group() as tg:
        tg.start_soon(ex.run, fn, started)
        await ex.call_client(lambda client: distributed.Event(started, client=client).wait())
        tg.cancel_scope.cancel()


async def main() -> None:
    async with DaskExecutor(n_workers=1, threads_per_worker=2) as ex:
        await run_until_started(ex, compute_until_cancelled)
        await run_until_started(ex, wait_until_cancelled)
    print("closed")


if __name__ == "__main__":
    backend, _, loop = sys.argv[1].partition("+")
    anyio.run(main, backend=backend, backend_options={"use_uvloop": True} if loop else {})
