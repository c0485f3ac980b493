"""Scheduler side: the requests of dask-anyio's queues and variables that Dask's scheduler
lacks, added to it by a scheduler plugin. Imports nothing of the package.

Dask's ``queue_get`` and ``variable_get`` raise ``TimeoutError`` when their wait ends with
nothing, and the scheduler logs each as an error with its traceback; dask-anyio's requests
wait a fifth of a second at a time (see ``_exchange``). These handlers call Dask's own and
say :data:`EMPTY` instead. Dask's ``queue_put`` takes the queue's hold on a key before it
waits for room, and keeps it if the wait times out; this one takes it once the item is in.
A queue is made on the scheduler by the first request that names it (a scheduler that
restarted has none). Every reply is a dict: a scheduler without these handlers replies
``None``, and the client then registers them again.

The module travels pickled by value (``cloudpickle.register_pickle_by_value``), so that a
scheduler without dask-anyio installed runs it.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import cloudpickle
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.utils import wait_for

__all__ = ["EMPTY", "OK", "UNKNOWN_KEY", "ExchangeHandlers", "handler"]

#: The replies that carry no value.
OK: dict[str, str] = {"status": "OK"}
EMPTY: dict[str, str] = {"status": "empty"}
UNKNOWN_KEY: dict[str, str] = {"status": "unknown-key"}


def handler(name: str) -> str:
    """The name of the scheduler's request handler ``name`` (``queue_get``, ...)."""
    return f"dask_anyio_{name}"


class ExchangeHandlers(SchedulerPlugin):
    """Adds the handlers below to the scheduler it starts on."""

    name = "dask-anyio-exchange"
    idempotent = True

    async def start(self, scheduler: Any) -> None:
        self._scheduler = scheduler
        scheduler.handlers.update(
            {
                handler("queue_get"): self.queue_get,
                handler("queue_put"): self.queue_put,
                handler("queue_size"): self.queue_size,
                handler("queue_unget"): self.queue_unget,
                handler("variable_get"): self.variable_get,
                handler("variable_delete"): self.variable_delete,
            }
        )

    def _queue(self, name: str, maxsize: int) -> asyncio.Queue[Any]:
        extension = self._scheduler.extensions["queues"]
        if name not in extension.queues:
            extension.create(name=name, maxsize=maxsize)
        queue: asyncio.Queue[Any] = extension.queues[name]
        return queue

    async def queue_get(self, name: str, maxsize: int, seconds: float) -> dict[str, Any]:
        """``{"status": "OK", "record": ...}``: Dask's ``queue_get`` of one item; or
        :data:`EMPTY` after ``seconds``."""
        self._queue(name, maxsize)
        try:
            record = await self._scheduler.extensions["queues"].get(name=name, timeout=seconds)
        except TimeoutError:
            return EMPTY
        return {"status": "OK", "record": record}

    async def queue_put(
        self, name: str, maxsize: int, seconds: float, key: Any = None, data: Any = None
    ) -> dict[str, Any]:
        """Put a key (held by the queue from then on) or data: :data:`OK`, or :data:`EMPTY`
        if the queue stayed full for ``seconds``, or :data:`UNKNOWN_KEY` if the scheduler did
        not know the key for that long."""
        scheduler = self._scheduler
        queue = self._queue(name, maxsize)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while key is not None and key not in scheduler.tasks:  # (its submit is on the way)
            if loop.time() > deadline:
                return UNKNOWN_KEY
            await asyncio.sleep(0.01)
        try:
            await wait_for(queue.put(_record(key, data)), max(0.0, deadline - loop.time()))
        except TimeoutError:
            return EMPTY
        if key is not None:  # (no await since the put: no get can have taken it yet)
            self._hold(name, key)
        return OK

    def queue_unget(
        self, name: str, maxsize: int, key: Any = None, data: Any = None
    ) -> dict[str, Any]:
        """Give back an item that a get took for a caller who was gone by then: at the head
        of the queue, where it was taken from (past ``maxsize``: its place was kept), to the
        next getter waiting if there is one. :data:`OK`, or :data:`UNKNOWN_KEY` for a key the
        scheduler forgot meanwhile."""
        queue: Any = self._queue(name, maxsize)
        if key is not None:
            if key not in self._scheduler.tasks:
                return UNKNOWN_KEY
            self._hold(name, key)
        # asyncio.Queue.put_nowait(), at the head and past maxsize
        queue._queue.appendleft(_record(key, data))
        queue._unfinished_tasks += 1
        queue._finished.clear()
        queue._wakeup_next(queue._getters)
        return OK

    def _hold(self, name: str, key: Any) -> None:
        """The queue ``name`` holds ``key`` (as Dask's own queue's put does)."""
        self._scheduler.extensions["queues"].future_refcount[name, key] += 1
        self._scheduler.client_desires_keys(keys=[key], client=f"queue-{name}")

    def queue_size(self, name: str, maxsize: int) -> dict[str, Any]:
        return {"status": "OK", "size": self._queue(name, maxsize).qsize()}

    async def variable_get(self, name: str, client: str, seconds: float) -> dict[str, Any]:
        """``{"status": "OK", "record": ...}``: Dask's ``variable_get``; or :data:`EMPTY` if
        the variable stays unset ``seconds``."""
        variables = self._scheduler.extensions["variables"]
        try:
            record = await variables.get(name=name, client=client, timeout=seconds)
        except TimeoutError:
            return EMPTY
        return {"status": "OK", "record": record}

    async def variable_delete(self, name: str) -> dict[str, Any]:
        """Dask's ``variable_delete``, answered once done (Dask's is a one-way message that a
        later request may overtake)."""
        await self._scheduler.extensions["variables"].delete(name=name)
        return OK


def _record(key: Any, data: Any) -> dict[str, Any]:
    """A queue's item as Dask's queue keeps it: a key, or data."""
    if key is None:
        return {"type": "msgpack", "value": data}
    return {"type": "Future", "value": key}


cloudpickle.register_pickle_by_value(sys.modules[__name__])
