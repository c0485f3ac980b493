"""The front end's exceptions, and why the front end cancels tasks. Imports nothing of the
package: every other module may use it."""

from __future__ import annotations

import enum

__all__ = ["CancelReason", "SchedulerLost", "TaskCancelled", "one_scheduler_lost"]


class CancelReason(enum.StrEnum):
    """Why the executor cancelled a task: the reason Dask records with the cancellation,
    which :exc:`TaskCancelled` tells. Cancellations of one reason are sent together."""

    #: A ``run()`` or ``compute()`` call's scope was cancelled.
    SCOPE = "the scope that owned it was cancelled"
    #: :meth:`TaskHandle.cancel`.
    HANDLE = "TaskHandle.cancel() was called"
    #: The executor's exit, after an error or a cancellation.
    EXIT = "the DaskExecutor exited with an error"
    #: A result stream was closed with the task in flight.
    STREAM = "the result stream was closed"

    @classmethod
    def is_ours(cls, reason: str) -> bool:
        """Whether Dask's ``reason`` for a cancellation is one of ours (also for a task
        that Dask cancelled because it depends on one we cancelled: the reason cascades)."""
        return reason in cls._value2member_map_


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
        self.reason: str = str(reason)


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


def one_scheduler_lost(failures: list[Exception]) -> list[Exception]:
    """``failures`` with its :exc:`SchedulerLost` errors (one per pending task) told once."""
    lost = [f for f in failures if isinstance(f, SchedulerLost)]
    if len(lost) <= 1:
        return failures
    summary = SchedulerLost(lost[0].address)
    summary.add_note(f"{len(lost)} tasks nobody awaited were pending: their outcome is unknown")
    return [f for f in failures if not isinstance(f, SchedulerLost)] + [summary]
