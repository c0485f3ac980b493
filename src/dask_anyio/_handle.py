"""Task handles: :class:`TaskHandle`, thin, over a :class:`TaskState` record that its owner
(the executor's task table, through the small :class:`TaskOwner` protocol) keeps; the
:class:`TaskStatus` enum and the :class:`ExecutorStatistics` record.

Never imports the executor: a handle knows its owner only through :class:`TaskOwner`.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar, cast, final

import distributed
from dask.task_spec import TaskRef

from ._errors import CancelReason

__all__ = [
    "DONE",
    "SKIP",
    "ExecutorStatistics",
    "TaskHandle",
    "TaskOwner",
    "TaskState",
    "TaskStatus",
    "check_owner",
    "map_handles",
    "new_handle",
    "state_of",
]

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


#: The statuses of a done task.
DONE = frozenset({TaskStatus.FINISHED, TaskStatus.ERROR, TaskStatus.CANCELLED})


@dataclass(frozen=True, slots=True)
class ExecutorStatistics:
    """Counts of an executor's tasks at one moment, from :meth:`DaskExecutor.statistics`.

    Scattered data counts as finished tasks.
    """

    #: Tasks submitted (and data scattered) since the executor opened.
    submitted: int
    #: Not done yet: queued, waiting for inputs or running.
    pending: int
    #: Finished with a value.
    finished: int
    #: Raised an exception.
    failed: int
    #: Cancelled (by the caller, by Dask, or because the scheduler was lost).
    cancelled: int
    #: Keys this executor holds on the cluster now (pending, or done and not released).
    in_flight: int


class TaskOwner(Protocol):
    """What a handle asks of the task table that owns it."""

    def cancel(self, handle: TaskHandle[Any], /) -> bool:
        """:meth:`TaskHandle.cancel`."""
        ...

    def wait(self, handle: TaskHandle[Any], /) -> Awaitable[None]:
        """``await handle``."""
        ...


@dataclass(eq=False, slots=True)
class TaskState:
    """What is known of one task: read by its handle, written by its owner only."""

    owner: TaskOwner
    future: distributed.Future[Any]
    #: Called on the front loop once the task is done (see Watcher.watch). A tuple: most
    #: tasks never have a watcher, and the empty tuple costs no memory of its own.
    watchers: tuple[Callable[[], object], ...] = ()
    #: Whether the core watches the future for this task; if a watch of many together
    #: may hold its completion back (see Watcher.watch_together), the call that lets go.
    watched: bool | Callable[[], object] = False
    #: Whether its failure was told to someone (then the exit does not raise it).
    observed: bool = False
    #: Why the executor cancelled it, if it did.
    cancel_reason: CancelReason | None = None
    #: Whether it came from a queue or a variable (see ``Adopt.BORROWED``).
    borrowed: bool = False
    #: Its status once its owner let go of it (its key released): it no longer changes.
    final_status: TaskStatus | None = None
    #: What ``await handle`` raises once ``final_status`` is set, if anything.
    failure: Exception | None = None
    #: Its remote traceback, set again on every raise (a raise adds the raiser's frames).
    failure_traceback: TracebackType | None = None

    @property
    def key(self) -> str:
        return str(self.future.key)

    @property
    def status(self) -> TaskStatus:
        if self.final_status is not None:
            return self.final_status
        if self.cancel_reason is not None:
            return TaskStatus.CANCELLED
        return TaskStatus(cast(str, self.future.status))

    def done(self) -> bool:
        return self.status in DONE


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

    __slots__ = ("__weakref__", "_state")

    def __init__(self, state: TaskState) -> None:
        self._state = state

    @property
    def key(self) -> str:  # type: ignore[override]  # (a TaskRef's is an attribute)
        """The task's key on the scheduler."""
        return self._state.key

    @property
    def future(self) -> distributed.Future[T_co]:
        """The task's :class:`distributed.Future`, for the rest of Dask's API.

        The executor owns it and releases it at exit, as it releases the handle: keep the
        handle, not the future. Under trio, call the future's methods that talk to the
        scheduler only through :meth:`DaskExecutor.call_client`, or from a worker thread.
        """
        future: distributed.Future[T_co] = self._state.future
        return future

    @property
    def status(self) -> TaskStatus:
        """The task's current :class:`TaskStatus`. Frozen when the executor closes."""
        return self._state.status

    def done(self) -> bool:
        """Return whether the task has finished, failed or been cancelled. A plain call."""
        return self._state.done()

    def cancelled(self) -> bool:
        """Return whether the task was cancelled. A plain call."""
        return self._state.status is TaskStatus.CANCELLED

    def cancel(self) -> bool:
        """Cancel the task on the cluster, and any task that depends on it.

        A plain call: it returns at once and the cluster is told in the background (the
        executor's exit waits for that). Call it from the executor's event loop thread.

        :return: ``True`` if the task is now cancelled, ``False`` if it was already done.
        """
        return self._state.owner.cancel(self)

    # One handle is one object, whatever Dask's task references say of equal keys.
    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return object.__hash__(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # As a Future pickles: by its key (a worker's client binds it there).
        return distributed.Future, (self._state.future.key,)

    def __copy__(self) -> TaskHandle[T_co]:  # one task, one handle (pickling gives a Future)
        return self

    def __deepcopy__(self, memo: object) -> TaskHandle[T_co]:
        return self

    def __await__(self) -> Generator[Any, None, None]:
        return self._state.owner.wait(self).__await__()

    def __repr__(self) -> str:
        return f"<TaskHandle {self.key!r} {self.status.value}>"


def new_handle(owner: TaskOwner, future: distributed.Future[Any]) -> TaskHandle[Any]:
    """A handle of ``future``'s task, owned by ``owner``."""
    return TaskHandle(TaskState(owner, future))


def state_of(handle: TaskHandle[Any]) -> TaskState:
    """The record behind ``handle``, for its owner."""
    return handle._state


def check_owner(handle: object, owner: object) -> TaskState:
    """The record behind ``handle`` if ``owner`` owns it.

    :raises TypeError: if ``handle`` is not a handle.
    :raises ValueError: if another executor owns it.
    """
    if not isinstance(handle, TaskHandle):
        raise TypeError(f"expected a TaskHandle, not {handle!r}")
    state = handle._state
    if state.owner is not owner:
        raise ValueError(f"{handle!r} belongs to another DaskExecutor")
    return state


_SCALARS = (str, bytes, int, float, complex, bool, type(None))
#: Returned by the function given to :func:`map_handles`: leave the item out.
SKIP: Any = object()


def map_handles(obj: Any, fn: Callable[[TaskHandle[Any]], Any]) -> Any:
    """``obj`` with each handle ``h`` in it (in lists, tuples, sets, dicts, nested) replaced
    by ``fn(h)``; a :data:`SKIP` result leaves the item out."""
    if isinstance(obj, _SCALARS):
        return obj
    if isinstance(obj, TaskHandle):
        return fn(obj)
    kind = type(obj)
    if kind in (list, tuple, set, frozenset):
        mapped = (map_handles(x, fn) for x in obj)
        return kind(x for x in mapped if x is not SKIP)
    if kind is dict:
        pairs = ((k, map_handles(v, fn)) for k, v in obj.items())
        return {k: v for k, v in pairs if v is not SKIP}
    return obj
