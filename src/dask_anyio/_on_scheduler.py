"""Scheduler side: the requests of dask-anyio's queues and variables that Dask's scheduler
lacks, added to it by a scheduler plugin. Imports nothing of the package.

Dask's ``queue_get`` and ``variable_get`` raise ``TimeoutError`` when their wait ends with
nothing, and the scheduler logs each as an error with its traceback; dask-anyio's requests
wait a fifth of a second at a time (see ``_exchange``). These handlers call Dask's own and
return ``None`` instead. Dask's ``queue_put`` takes the queue's hold on a key before it
waits for room, and keeps it if the wait times out; this one takes it once the item is in.

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

__all__ = ["HANDLERS", "QUEUE_GET", "QUEUE_PUT", "VARIABLE_GET", "ExchangeHandlers"]

QUEUE_GET = "dask_anyio_queue_get"
QUEUE_PUT = "dask_anyio_queue_put"
VARIABLE_GET = "dask_anyio_variable_get"
HANDLERS = (QUEUE_GET, QUEUE_PUT, VARIABLE_GET)


class ExchangeHandlers(SchedulerPlugin):
    """Adds :data:`HANDLERS` to the scheduler it starts on."""

    name = "dask-anyio-exchange"
    idempotent = True

    async def start(self, scheduler: Any) -> None:
        self._scheduler = scheduler
        scheduler.handlers.update(
            {QUEUE_GET: self.queue_get, QUEUE_PUT: self.queue_put, VARIABLE_GET: self.variable_get}
        )

    async def queue_get(self, name: str, seconds: float) -> Any:
        """Dask's ``queue_get`` of one item, or ``None`` after ``seconds``."""
        try:
            return await self._scheduler.extensions["queues"].get(name=name, timeout=seconds)
        except TimeoutError:
            return None

    async def queue_put(self, name: str, seconds: float, key: Any = None, data: Any = None) -> bool:
        """Put a key (held by the queue from then on) or data; ``False`` if the queue stayed
        full, or the key unknown, for ``seconds``."""
        scheduler = self._scheduler
        extension = scheduler.extensions["queues"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while key is not None and key not in scheduler.tasks:  # (its submit is on the way)
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.01)
        record = (
            {"type": "msgpack", "value": data} if key is None else {"type": "Future", "value": key}
        )
        try:
            await wait_for(extension.queues[name].put(record), max(0.0, deadline - loop.time()))
        except TimeoutError:
            return False
        if key is not None:  # (no await since the put: no get can have taken it yet)
            extension.future_refcount[name, key] += 1
            scheduler.client_desires_keys(keys=[key], client=f"queue-{name}")
        return True

    async def variable_get(self, name: str, client: str, seconds: float) -> Any:
        """Dask's ``variable_get``, or ``None`` if the variable stays unset ``seconds``."""
        variables = self._scheduler.extensions["variables"]
        try:
            return await variables.get(name=name, client=client, timeout=seconds)
        except TimeoutError:
            return None


cloudpickle.register_pickle_by_value(sys.modules[__name__])
