"""asyncio core: the core of an executor that a running task owns (``dask_anyio.subtasks``).

While it is open it holds its task's *marker* (:func:`._forget.marker_of`): a key that never
runs, which tells whoever cancels the task that the task's scope is still closing. The
canceller's confirmation (:func:`._forget.wait_forgotten`) waits for the marker too, and the
marker goes last, once the scope's own tasks (the next level's owners, with their markers)
are forgotten: a cancelled tree is gone when its root's cancellation is confirmed.

A scope whose task was cancelled on the scheduler before its marker arrived there would not
be waited for: it looks, once the marker has arrived, whether the scheduler still holds its
task, and gives up (before any child is submitted) if not. Runs on the core loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import distributed

from ._connect import open_connection, seconds_to_connect
from ._core import DaskCore
from ._forget import NEVER, marker_of, wait_forgotten
from ._running import CancelledOnWorker

__all__ = ["OwnedCore"]

#: States of a task on the scheduler that is gone, or going.
_GONE = frozenset({None, "released", "forgotten", "erred"})


class OwnedCore(DaskCore):
    """A :class:`DaskCore` owned by the task ``owner``, holding its marker while open."""

    _marker: distributed.Future[Any] | None = None

    @classmethod
    async def open_owned(cls, owner: Any, **arguments: Any) -> OwnedCore:
        """Connect as :meth:`DaskCore.open` does, then hold the marker of ``owner``.

        :raises CancelledOnWorker: if the scheduler no longer holds the task ``owner``.
        """
        core = cls(await open_connection(**arguments))
        try:
            patience = seconds_to_connect(arguments.get("connect_timeout"))
            async with asyncio.timeout(patience):
                await core._hold_marker(owner)
        except BaseException:
            await core.close()
            raise
        return core

    async def _hold_marker(self, owner: Any) -> None:
        key = marker_of(owner)
        if key is None:  # (only tasks with str keys can be waited for)
            return
        self._marker = self.client.submit(int, key=key, resources=NEVER, pure=False)
        scheduler = self.client.scheduler
        assert scheduler is not None
        delay = 0.001
        while True:  # until the marker has arrived (it comes before any child)
            states = await scheduler.get_task_status(keys=[key, owner])
            if states.get(key) is not None:
                break
            if self._marker.status in ("error", "cancelled", "lost"):
                raise RuntimeError(f"the scheduler refused the subtasks marker of {owner!r}")
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.02)
        if states.get(owner) in _GONE:
            raise CancelledOnWorker(f"task {owner!r} was cancelled")

    async def _close_parts(self) -> None:
        """The parts, then the marker: let it go and see it forgotten."""
        try:
            await super()._close_parts()
        finally:
            marker, self._marker = self._marker, None
            if marker is not None:
                marker.release()
                await wait_forgotten(self.client, [marker.key], arrived=[marker.key])
