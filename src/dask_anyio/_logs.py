"""Keeping distributed's log records that we explain better away from the user.

Scoped to what we do, never to distributed's logging as a whole. In the client,
:class:`HeldSerializationErrors`: an argument that cannot be pickled makes
``distributed.protocol.pickle`` log ``Failed to serialize`` with three chained tracebacks,
for the graph and again for the object as we look for it, before :meth:`DaskCore.submit`
raises a :exc:`TypeError` that names it. While one of our submits runs, that logger's
records *of the submitting thread* are held; if we raise our own error they are dropped,
otherwise (the call worked, or failed for another reason) they are logged as they were.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

__all__ = ["HeldSerializationErrors"]

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
