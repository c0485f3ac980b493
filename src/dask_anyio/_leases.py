"""asyncio core: leases of Dask's semaphores (and locks, semaphores of one lease), taken so
that a cancelled acquire never holds one. Runs on the core loop.

Dask's scheduler grants a lease to an acquire request that waits on it; a client that
stops waiting (its caller cancelled) does not withdraw the request, so the scheduler grants
the lease to nobody, and the next acquirer waits until the lease times out, or forever if
leases never time out. Here every request waits on the scheduler for :data:`PATIENCE` at
most and names its lease; a request whose caller was cancelled is left to finish, and a
lease it was granted is released at once. The leases held are refreshed, as Dask's
``Semaphore`` refreshes its own, and released when the core closes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import dask.config
import distributed
from dask.utils import parse_timedelta

__all__ = ["PATIENCE", "Leases"]

logger = logging.getLogger("dask_anyio")

#: How long one acquire request waits on the scheduler before it is sent again.
PATIENCE = 1.0


def _lease_timeout() -> float | None:
    """Dask's ``distributed.scheduler.locks.lease-timeout``, in seconds (``None``: never)."""
    timeout = dask.config.get("distributed.scheduler.locks.lease-timeout")
    if timeout == "inf":
        return None
    seconds = parse_timedelta(timeout, default="s")
    return None if seconds is None else float(seconds)


class Leases:
    """The leases one client holds or asks for."""

    def __init__(self, client: distributed.Client) -> None:
        self._client = client
        #: The name of each lease held, by lease id.
        self._held: dict[str, str] = {}
        #: Requests whose caller stopped waiting, and the releases of what they were granted.
        self._orphans: set[asyncio.Future[Any]] = set()
        #: The tasks waiting in acquire(), cancelled when the core closes.
        self._acquiring: set[asyncio.Task[Any]] = set()
        self._stopped: set[asyncio.Task[Any]] = set()
        self._registered: dict[str, int] = {}
        self._refresher: asyncio.Task[None] | None = None
        #: Refreshes and releases go one at a time: a refresh overtaken by the release of a
        #: lease it names would make the scheduler hold that lease again.
        self._sending = asyncio.Lock()
        self._closed = False

    @property
    def _scheduler(self) -> Any:
        scheduler = self._client.scheduler
        if scheduler is None:
            raise RuntimeError("the Dask client is not connected to a scheduler")
        return scheduler

    async def acquire(self, name: str, max_leases: int, lease_id: str) -> None:
        """Wait until the scheduler grants ``lease_id`` of semaphore ``name``. If the caller
        is cancelled, the lease is never held (see the module's docstring).

        :raises ValueError: if ``name`` exists with another number of leases.
        :raises RuntimeError: if the core closes meanwhile.
        """
        if self._closed:
            raise RuntimeError("the DaskExecutor is closing: it takes no lease any more")
        task = asyncio.current_task()
        assert task is not None
        self._acquiring.add(task)
        try:
            await self._register(name, max_leases)
            while not await self._ask(name, lease_id):
                pass
        except asyncio.CancelledError:
            if task in self._stopped:  # by close(), not by the caller
                raise RuntimeError("the DaskExecutor closed while this acquire waited") from None
            raise
        finally:
            self._acquiring.discard(task)
        self._held[lease_id] = name
        if self._refresher is None and (timeout := _lease_timeout()) is not None:
            self._refresher = asyncio.ensure_future(self._refresh(timeout / 5))

    async def release(self, lease_id: str) -> None:
        """Release a lease held (a no-op if it is not)."""
        name = self._held.pop(lease_id, None)
        if name is not None:
            await self._send_release(name, lease_id)

    async def close(self) -> None:
        """Stop the acquires still waiting (their requests are left to end, and what they
        get released), release every lease held, stop refreshing."""
        self._closed = True
        self._stopped.update(self._acquiring)
        for task in self._acquiring:
            task.cancel()
        await asyncio.sleep(0)  # (they leave their requests to the orphans)
        if self._refresher is not None:
            # Never in the middle of its request: a refresh cut short could reach the
            # scheduler after the releases below, and hold their leases again.
            async with self._sending:
                self._refresher.cancel()
        if self._client.status != "running":
            self._held.clear()  # the scheduler lets the leases go when they time out
            return
        for lease_id in list(self._held):
            self._keep_until_done(asyncio.ensure_future(self.release(lease_id)))
        while self._orphans:  # (an orphan's grant is released by another orphan)
            done, _ = await asyncio.wait(list(self._orphans), timeout=10)
            if not done:
                logger.warning("lease requests of a closing DaskExecutor did not end")
                return

    async def _register(self, name: str, max_leases: int) -> None:
        known = self._registered.get(name)
        if known == max_leases:
            return
        try:
            await self._scheduler.semaphore_register(
                name=name, max_leases=max_leases, lease_timeout=_lease_timeout()
            )
        except ValueError as error:  # the scheduler's: "Inconsistent max leases ..."
            raise ValueError(
                f"{name!r} is a semaphore of another number of leases on this cluster "
                f"({error}); use that number, or another name"
            ) from None
        self._registered[name] = max_leases

    async def _ask(self, name: str, lease_id: str) -> bool:
        request = asyncio.ensure_future(
            self._scheduler.semaphore_acquire(name=name, timeout=PATIENCE, lease_id=lease_id)
        )
        try:
            return bool(await asyncio.shield(request))
        except asyncio.CancelledError:  # the request goes on: what it is granted, we release
            self._orphans.add(request)
            request.add_done_callback(lambda done: self._orphan_ended(done, name, lease_id))
            raise
        except Exception:  # the scheduler may still grant it: release once it cannot
            self._release_later(name, lease_id)
            raise

    def _orphan_ended(self, request: asyncio.Future[Any], name: str, lease_id: str) -> None:
        self._orphans.discard(request)
        if request.cancelled():  # (the loop shuts down)
            return
        if request.exception() is not None:
            self._release_later(name, lease_id)
        elif request.result():
            self._keep_until_done(asyncio.ensure_future(self._send_release(name, lease_id)))

    def _release_later(self, name: str, lease_id: str) -> None:
        """Release ``lease_id`` once a request for it that failed here has surely ended on
        the scheduler (it waits :data:`PATIENCE` at most): sooner, the release could come
        before the grant, and do nothing."""

        async def release() -> None:
            await asyncio.sleep(PATIENCE + 0.5)
            await self._send_release(name, lease_id)

        self._keep_until_done(asyncio.ensure_future(release()))

    def _keep_until_done(self, task: asyncio.Future[Any]) -> None:
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    async def _send_release(self, name: str, lease_id: str) -> None:
        try:
            async with self._sending:
                await self._scheduler.semaphore_release(name=name, lease_id=lease_id)
        except Exception:  # the scheduler lets it go when it times out
            logger.warning("could not release a lease of %r", name, exc_info=True)

    async def _refresh(self, interval: float) -> None:
        """Tell the scheduler that the leases held are still in use, as Dask's Semaphore
        does, so that it does not time them out."""
        while True:
            await asyncio.sleep(interval)
            async with self._sending:
                by_name: dict[str, list[str]] = {}
                for lease_id, name in self._held.items():  # (read under the lock: current)
                    by_name.setdefault(name, []).append(lease_id)
                for name, ids in by_name.items():
                    try:
                        await self._scheduler.semaphore_refresh_leases(name=name, lease_ids=ids)
                    except Exception:
                        logger.debug("could not refresh the leases of %r", name, exc_info=True)
