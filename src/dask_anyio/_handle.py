"""Task handles, their status enum, the executor's statistics record and its exceptions."""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, final

import distributed
from dask.task_spec import TaskRef

if TYPE_CHECKING:
    from ._executor import DaskExecutor

__all__ = ["ExecutorStatistics", "SchedulerLost", "TaskCancelled", "TaskHandle", "TaskStatus"]

T_co = TypeVar("T_co", covariant=True)


class TaskStatus(enum.StrEnum):
    """The state of a task, as the Dask client knows it."""

    #: Submitted, not finished yet (queued, waiting for inputs or running).
    PENDING = "pending"
    #: Finished; its value is on the cluster.
    FINISHED = "finished"
    #: Raised an exception on the worker.
    ERROR = "error"
    #: Cancelled (by :meth:`TaskHandle.cancel`, by a cancelled scope, or by Dask).
    CANCELLED = "cancelled"
    #: Its value was lost with a worker; Dask recomputes it.
    LOST = "lost"


class TaskCancelled(Exception):
    """A task was cancelled, so it has no value.

    Raised by ``await handle`` and :meth:`DaskExecutor.retrieve`. It is an ordinary
    :class:`Exception`, never the backend's cancellation exception: the *caller* was not
    cancelled, the remote task was.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"task {key!r} was cancelled: {reason}")
        #: The task's key.
        self.key = key
        #: Why, as far as known (for example ``"scheduler-connection-lost"``).
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ExecutorStatistics:
    """Counts of an executor's tasks at one moment, from :meth:`DaskExecutor.statistics`.

    Scattered data counts as finished tasks.
    """

    #: Tasks submitted (and data scattered) since the executor opened.
    submitted: int
    #: Not done yet: queued, waiting for inputs or running.
    pending: int
    #: Running on a worker, where known. The Dask client is not told when a task starts,
    #: so this is ``None``; the dashboard shows it.
    running: int | None
    #: Finished with a value.
    finished: int
    #: Raised an exception.
    failed: int
    #: Cancelled (by the caller, by Dask, or because the scheduler was lost).
    cancelled: int
    #: Keys this executor holds on the cluster now (pending, or done and not released).
    in_flight: int


class SchedulerLost(ConnectionError):
    """The connection to the Dask scheduler was lost.

    Raised promptly by every pending ``await handle``, :meth:`DaskExecutor.retrieve`,
    :meth:`DaskExecutor.run` and the other waiting calls once Dask's client notices the loss;
    the task's outcome is then unknown: it may have run, or may still run on a worker.
    Also raised by calls that submit work while Dask's client is reconnecting. It is a
    :exc:`ConnectionError`, never the backend's cancellation exception.
    """

    def __init__(self, address: str | None, key: str | None = None) -> None:
        where = f" at {address}" if address else ""
        if key is None:
            what = "; Dask's client is reconnecting or closed"
        else:
            what = f" while task {key!r} was pending; its outcome is unknown"
        super().__init__(f"lost the connection to the Dask scheduler{where}{what}")
        #: The scheduler's address, if known.
        self.address = address
        #: The key of the task whose outcome is unknown, or ``None``.
        self.key = key


@final
class TaskHandle(TaskRef, Generic[T_co]):
    """A task on the cluster, owned by the :class:`~dask_anyio.DaskExecutor` that submitted it.

    Returned by :meth:`DaskExecutor.submit` and :meth:`DaskExecutor.map`; not created directly.
    Pass it as an argument to further ``submit`` calls to use its value on the cluster without
    moving the data through the client.

    ``await handle`` waits until the task is done, without transferring its value. It is a
    checkpoint; it returns ``None``, raises the task's own exception if the task failed, or
    :exc:`TaskCancelled` if it was cancelled. Cancelling the awaiting scope only stops the
    waiting: the task belongs to the executor and keeps running.

    Dask sees a handle as it sees a :class:`distributed.Future` (both are task references):
    in ``dask.delayed(f)(handle)`` or any collection's graph it stands for its task's value,
    and it is pickled as a future of its key.
    """

    __slots__ = (
        "__weakref__",
        "_cancel_reason",
        "_executor",
        "_failure",
        "_failure_traceback",
        "_final_status",
        "_future",
        "_observed",
        "_registered",
        "_watchers",
    )

    def __init__(self, executor: DaskExecutor, future: distributed.Future[Any]) -> None:
        self._executor = executor
        self._future = future
        #: Called on the front loop once the task is done (see DaskExecutor._watch).
        self._watchers: list[Callable[[], object]] = []
        #: Whether the core watches the future for this handle.
        self._registered = False
        self._observed = False
        #: Why the executor cancelled it, if it did.
        self._cancel_reason: str | None = None
        self._final_status: TaskStatus | None = None
        self._failure: Exception | None = None
        #: Its remote traceback, set again on every raise (a raise adds the raiser's frames).
        self._failure_traceback: TracebackType | None = None

    @property
    def key(self) -> str:  # type: ignore[override]  # (a TaskRef's is an attribute)
        """The task's key on the scheduler."""
        return str(self._future.key)

    @property
    def future(self) -> distributed.Future[T_co]:
        """The task's :class:`distributed.Future`, for the rest of Dask's API.

        The executor owns it and releases it at exit, as it releases the handle: keep the
        handle, not the future. Under trio, call the future's methods that talk to the
        scheduler only through :meth:`DaskExecutor.call_client`, or from a worker thread.
        """
        future: distributed.Future[T_co] = self._future
        return future

    @property
    def status(self) -> TaskStatus:
        """The task's current :class:`TaskStatus`. Frozen when the executor closes."""
        if self._final_status is not None:
            return self._final_status
        if self._cancel_reason is not None:
            return TaskStatus.CANCELLED
        return TaskStatus(cast(str, self._future.status))

    def done(self) -> bool:
        """Return whether the task has finished, failed or been cancelled. A plain call."""
        return self.status in (TaskStatus.FINISHED, TaskStatus.ERROR, TaskStatus.CANCELLED)

    def cancelled(self) -> bool:
        """Return whether the task was cancelled. A plain call."""
        return self.status is TaskStatus.CANCELLED

    def cancel(self) -> bool:
        """Cancel the task on the cluster, and any task that depends on it.

        A plain call: it returns at once and the cluster is told in the background (the
        executor's exit waits for that). Call it from the executor's event loop thread.

        :return: ``True`` if the task is now cancelled, ``False`` if it was already done.
        """
        return self._executor._cancel_handle(self)

    # One handle is one object, whatever Dask's task references say of equal keys.
    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return object.__hash__(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # As a Future pickles: by its key (a worker's client binds it there).
        return distributed.Future, (self._future.key,)

    def __copy__(self) -> TaskHandle[T_co]:  # one task, one handle (pickling gives a Future)
        return self

    def __deepcopy__(self, memo: object) -> TaskHandle[T_co]:
        return self

    def __await__(self) -> Generator[Any, None, None]:
        return self._executor._wait(self).__await__()

    def __repr__(self) -> str:
        return f"<TaskHandle {self.key!r} {self.status.value}>"
