"""anyio front end: Dask's semaphores and locks, cancel-safe: :class:`Semaphore` and
:class:`Lock`, made by :meth:`DaskExecutor.semaphore` and :meth:`DaskExecutor.lock`.

A lease is named on the client before it is asked for; the core never lets a cancelled
request hold it (``_leases``), and the front end releases it if the caller was cancelled
just as it was granted.
"""

from __future__ import annotations

import uuid
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Self

import anyio
import anyio.lowlevel

from ._gate import Phase

if TYPE_CHECKING:
    from ._scope import ExecutorScope

__all__ = ["Lock", "Semaphore", "check_name"]


def check_name(what: str, name: object) -> str:
    """:raises TypeError, ValueError: unless ``name`` is a non-empty string."""
    if not isinstance(name, str):
        raise TypeError(f"{what} needs a name (a string), not {name!r}")
    if not name:
        raise ValueError(f"{what} needs a name: the empty string names nothing")
    return name


class Semaphore:
    """A semaphore of the cluster's scheduler, shared by every client that uses its name.

    Made by :meth:`DaskExecutor.semaphore`; not created directly. Best used as
    ``async with sem:``. :meth:`acquire` is a checkpoint; if it is cancelled, this
    semaphore holds no lease afterwards (Dask's own ``Semaphore`` may then hold one that
    nobody releases). A lease is released when the ``async with`` block is left, however
    it is left, by :meth:`release`, or at the latest when the executor exits; if the client
    loses the scheduler, the scheduler lets the lease go once it times out (Dask's
    ``distributed.scheduler.locks.lease-timeout``).

    One object may hold several leases (one per :meth:`acquire`); it belongs to the
    executor's event loop.
    """

    def __init__(self, scope: ExecutorScope, name: str, max_leases: int) -> None:
        self._scope = scope
        #: The semaphore's name on the scheduler.
        self.name: str = name
        #: How many leases it has in all.
        self.max_leases: int = max_leases
        self._held: deque[str] = deque()

    @property
    def held(self) -> int:
        """How many leases this object holds."""
        return len(self._held)

    async def acquire(self) -> None:
        """Wait for a lease and hold it. Checkpoint; a cancelled acquire holds nothing.

        :raises ValueError: if the name is a semaphore of another number of leases.
        """
        scope = self._scope
        scope.gate.check_open()
        await anyio.lowlevel.checkpoint_if_cancelled()
        lease_id = uuid.uuid4().hex
        try:
            await scope.runner.run(scope.core.leases.acquire, self.name, self.max_leases, lease_id)
        except BaseException:  # granted just as the caller was cancelled: let it go
            await scope.runner.finish(scope.core.leases.release, lease_id)
            raise
        self._held.append(lease_id)

    async def release(self) -> None:
        """Release the oldest lease this object holds. Shielded from cancellation, so that
        a cancelled caller still releases it.

        :raises RuntimeError: if it holds none. Once the executor has exited (which released
            every lease), it does nothing.
        """
        if self._scope.gate.phase is Phase.CLOSED:  # the exit released them all
            self._held.clear()
            return
        self._scope.gate.check_open(fetching=True)
        if not self._held:
            raise RuntimeError(f"{self!r} holds no lease to release")
        lease_id = self._held.popleft()
        await self._scope.runner.finish(self._scope.core.leases.release, lease_id)

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {self.held} of {self.max_leases} held here>"


class Lock(Semaphore):
    """A lock of the cluster's scheduler (a :class:`Semaphore` of one lease), shared by
    every client that uses its name. Made by :meth:`DaskExecutor.lock`; best used as
    ``async with lock:``; one object may serve many tasks, each waiting its turn. Not
    reentrant: a task that holds it and acquires it again gets an error, not a deadlock."""

    def __init__(self, scope: ExecutorScope, name: str, max_leases: int) -> None:
        super().__init__(scope, name, max_leases)
        self._holder: int | None = None

    async def acquire(self) -> None:
        """Wait for the lock and hold it. Checkpoint; a cancelled acquire holds nothing.

        :raises RuntimeError: if this task holds it already (it would wait for itself).
        """
        me = anyio.get_current_task().id
        if self._holder == me:
            raise RuntimeError(f"{self!r} is held by this task already: it would wait for itself")
        await super().acquire()
        self._holder = me

    async def release(self) -> None:
        """Release the lock (from any task: the lease is the client's). Shielded."""
        self._holder = None
        await super().release()
