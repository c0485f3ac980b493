"""asyncio core: transfers of values that outlive a caller who stopped waiting. Runs on
the core loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

import distributed

__all__ = ["Transfers"]

T = TypeVar("T")


class Transfers:
    """Dask's gathers, each in a task of its own that a cancelled caller leaves running.

    Dask's client shares one gathering task between concurrent gathers and keeps it for
    the next ones: cancelled before it ran (by a cancelled caller, here or through
    ``ex.client``), it fails that gather and every later one with CancelledError. So a
    cancelled caller leaves its gather running (it finishes, and its data is dropped), a
    shared task found cancelled is let go, and a gather failed by someone else's
    cancellation is made again.
    """

    def __init__(self, client: distributed.Client) -> None:
        self._client = client
        #: Transfers whose caller stopped waiting, still running, with their keys.
        self._orphans: dict[asyncio.Future[Any], frozenset[Any]] = {}

    async def fetch(self, fetch: Callable[[], Awaitable[T]], keys: frozenset[Any]) -> T:
        """Run Dask's ``fetch()`` (a gather of ``keys``), never cancelled by the caller."""
        client = self._client
        for _ in range(3):
            shared = getattr(client, "_gather_future", None)
            if shared is not None and shared.cancelled():  # see above: Dask cannot recover
                client._gather_future = None
            task = asyncio.ensure_future(fetch())
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():  # our caller: let it finish
                    task.add_done_callback(_retrieve_outcome)
                    self._orphans[task] = keys
                    task.add_done_callback(self._orphans.pop)
                    raise
                # else Dask's shared gathering task was cancelled under us: again
        raise RuntimeError("Dask's client kept cancelling this transfer")

    async def wait(self, keys: Collection[Any], give_up_after: float) -> None:
        """Wait until the transfers of ``keys`` that their callers stopped waiting for have
        ended (for ``give_up_after`` seconds at most)."""
        wanted = set(keys)
        running = [task for task, of in self._orphans.items() if not wanted.isdisjoint(of)]
        if running:
            await asyncio.wait(running, timeout=give_up_after)


def _retrieve_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: asyncio must not log it as never retrieved
