"""Keeping distributed's log records that we explain better away from the user.

Two such records, each scoped to what we do, never to distributed's logging as a whole:

- In the client, :class:`HeldSerializationErrors`: an argument that cannot be pickled makes
  ``distributed.protocol.pickle`` log ``Failed to serialize`` with three chained tracebacks,
  for the graph and again for the object as we look for it, before :meth:`DaskCore.submit`
  raises a :exc:`TypeError` that names it. While one of our submits runs, that logger's
  records *of the submitting thread* are held; if we raise our own error they are dropped,
  otherwise (the call worked, or failed for another reason) they are logged as they were.
- On the workers of the embedded LocalCluster, :class:`QuietCancelledClose`: a worker that
  closes while a thread still runs a task that was cancelled (one that has not reached its
  next :func:`checkpoint` yet, or is still ending) logs ``Async instruction for <Task
  cancelled name="execute(...)"...> ended with CancelledError`` as a WARNING. The task was
  already let go; the record is logged at DEBUG instead (as ``logger.debug`` would).
"""

from __future__ import annotations

import logging
import re
import threading
from types import TracebackType

from distributed import Worker, WorkerPlugin

__all__ = ["HeldSerializationErrors", "QuietCancelledClose"]

#: The logger of distributed's pickling (distributed/protocol/pickle.py).
_PICKLE_LOGGER = "distributed.protocol.pickle"

_holding = threading.local()


class _HoldInThisThread(logging.Filter):
    """Holds the records of the thread that is in a :class:`HeldSerializationErrors`."""

    def filter(self, record: logging.LogRecord) -> bool:
        held: list[logging.LogRecord] | None = getattr(_holding, "records", None)
        if held is None:
            return True
        held.append(record)
        return False


_HOLD = _HoldInThisThread()
logging.getLogger(_PICKLE_LOGGER).addFilter(_HOLD)  # (at import: under the import lock)


class HeldSerializationErrors:
    """``with HeldSerializationErrors() as held:`` holds what distributed's pickling logs in
    this thread inside the block; ``held.drop()`` forgets it, and the block's end logs the
    rest. Thread-safe: each thread holds its own records."""

    __slots__ = ("_outer", "_records")

    def __enter__(self) -> HeldSerializationErrors:
        self._outer: list[logging.LogRecord] | None = getattr(_holding, "records", None)
        self._records: list[logging.LogRecord] = []
        _holding.records = self._records
        return self

    def drop(self) -> None:
        """Forget the records held so far: the caller reports the failure itself."""
        self._records.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _holding.records = self._outer
        for record in self._records:  # as if never held (an outer hold holds them again)
            logging.getLogger(record.name).handle(record)


#: distributed/worker_state_machine.py, BaseWorker._finish_async_instruction
_CANCELLED_AT_CLOSE = re.compile(
    r"Async instruction for <Task .*name=\"execute\((?P<key>.*)\)\".*> ended with CancelledError"
)


class _DebugIfCancelled(logging.Filter):
    """Logs the close's warning about a task that ``worker`` had cancelled at DEBUG."""

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        # On the worker's event loop, as the worker's state machine runs.
        if record.levelno != logging.WARNING:
            return True
        match = _CANCELLED_AT_CLOSE.fullmatch(record.getMessage())
        if match is None:
            return True
        if not any(
            ts.state == "cancelled" and repr(key) == match["key"]
            for key, ts in self.worker.state.tasks.items()
        ):
            return True
        # As if logged with logger.debug(): shown only where debug logging is on.
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


class QuietCancelledClose(WorkerPlugin):
    """A worker plugin (for the embedded cluster's workers): the worker closing does not
    warn about a task that it had already cancelled, whose thread was still ending."""

    name = "dask-anyio-quiet-cancelled-close"

    def setup(self, worker: Worker) -> None:
        self._filter = _DebugIfCancelled(worker)
        logging.getLogger("distributed.worker.state_machine").addFilter(self._filter)

    def teardown(self, worker: Worker) -> None:
        logging.getLogger("distributed.worker.state_machine").removeFilter(self._filter)
