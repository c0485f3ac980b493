"""anyio front end: the part of :class:`~dask_anyio.DaskExecutor` that coordinates work
through the scheduler and its workers (its base class :class:`ExecutorCoordination`):
locks, semaphores, queues, events and variables, cancel-safe; actors."""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from ._actor import Actor, make_actor
from ._lifetime import ExecutorLifetime
from ._primitives import Lock, Semaphore, check_name
from ._shared import Event, Queue, Variable

__all__ = ["ExecutorCoordination"]

P = ParamSpec("P")
T = TypeVar("T")


class ExecutorCoordination(ExecutorLifetime):
    """Coordination through the scheduler (a base class of DaskExecutor; see there)."""

    def lock(self, name: str) -> Lock:
        """A lock of the cluster's scheduler named ``name``, shared with every client that
        uses the name (Dask's ``distributed.Lock`` of that name included): ``async with
        ex.lock("name"):``. A plain call; acquiring is a checkpoint, and a cancelled
        acquire never holds the lock afterwards. The executor's exit releases it if it is
        still held.

        :raises TypeError, ValueError: if ``name`` is not a non-empty string.
        """
        self._scope.gate.check_open()
        return Lock(self._scope, check_name("lock()", name), 1)

    def semaphore(self, name: str, *, max_leases: int) -> Semaphore:
        """A semaphore of the cluster's scheduler named ``name`` with ``max_leases`` leases,
        shared with every client that uses the name: ``async with ex.semaphore("gpu",
        max_leases=2):``. As :meth:`lock`: a cancelled acquire never holds a lease.

        :raises TypeError, ValueError: for a bad name or a ``max_leases`` that is not a
            positive integer; acquiring raises :exc:`ValueError` if the name is a semaphore
            of another number of leases on the cluster.
        """
        self._scope.gate.check_open()
        if not isinstance(max_leases, int) or isinstance(max_leases, bool) or max_leases < 1:
            raise ValueError(f"max_leases must be a positive integer, not {max_leases!r}")
        return Semaphore(self._scope, check_name("semaphore()", name), max_leases)

    def queue(self, name: str, *, maxsize: int = 0) -> Queue:
        """A queue of the cluster's scheduler named ``name``, shared with every client that
        uses the name (Dask's ``distributed.Queue`` of that name too, for handles and plain
        values): ``await q.put(x)``, ``x = await q.get()``. A plain call. Cancel-safe: a
        cancelled get either returned its item or left it in the queue. ``maxsize`` (0: no
        limit) counts only if the queue is new on the scheduler when this object's first
        request reaches it.

        :raises TypeError, ValueError: for a bad name or a negative ``maxsize``.
        """
        self._scope.gate.check_open()
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
            raise ValueError(f"maxsize must be an integer, 0 or more, not {maxsize!r}")
        return Queue(self._scope, check_name("queue()", name), maxsize)

    def event(self, name: str) -> Event:
        """An event of the cluster's scheduler named ``name``, shared with every client
        that uses the name: ``await ev.wait()``, ``await ev.set()``, ``await ev.clear()``.
        A plain call; a cancelled wait stops at once, and leaves nothing waiting on the
        scheduler after a second.

        :raises TypeError, ValueError: if ``name`` is not a non-empty string.
        """
        self._scope.gate.check_open()
        return Event(self._scope, check_name("event()", name))

    def variable(self, name: str) -> Variable:
        """A variable of the cluster's scheduler named ``name``, shared with every client
        that uses the name: ``await var.set(x)``, ``x = await var.get()``. A plain call;
        a cancelled get leaves nothing held on the scheduler.

        :raises TypeError, ValueError: if ``name`` is not a non-empty string.
        """
        self._scope.gate.check_open()
        return Variable(self._scope, check_name("variable()", name))

    async def actor(self, cls: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Actor[T]:
        """``cls(*args, **kwargs)`` made on a worker, where it stays, its state with it:
        ``counter = await ex.actor(Counter)``, then ``await counter.add(1)``. Checkpoint: it
        returns once the actor exists (raising its constructor's exception if that failed);
        a cancelled call leaves no actor. Handles in the arguments stand for their values.
        The actor belongs to this executor's scope: the exit releases it.

        :raises TypeError: if ``cls`` is not a class.
        """
        return await make_actor(self._scope, cls, args, kwargs)  # type: ignore[arg-type]
