"""asyncio core: the scheduler's queues, events and variables, one request at a time. Runs
on the core loop.

Dask's own ``Queue``, ``Event`` and ``Variable`` wait on the scheduler for as long as they
are told to, and a client that stops waiting does not withdraw the request: the scheduler
goes on waiting for nobody. A ``get`` left behind takes the next item and sends it down a
connection nobody reads (the item is lost), a variable's value fetched for nobody is never
confirmed (the scheduler holds its key for good), an event's waiter stays until the event
is set. Here every request waits on the scheduler :data:`PROMPT` (events:
:data:`PATIENCE`) at most, and says whether it got what it asked for (queues and variables
through handlers of ``_on_scheduler``, which end quietly); the front end sends the requests
that take something shielded from cancellation, one after another, and looks for a
cancellation between them.

Values other than futures travel pickled, so that what a get returns is what was put (Dask
sends values as msgpack, which turns lists into tuples, and unpickles on the scheduler what
msgpack cannot carry: the scheduler would need the user's classes).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import distributed
from distributed.protocol import pickle

from ._leases import PATIENCE
from ._on_scheduler import QUEUE_GET, QUEUE_PUT, VARIABLE_GET, ExchangeHandlers

__all__ = ["NOTHING", "PROMPT", "Exchange"]

#: How long a queue's or a variable's request waits on the scheduler: how soon its caller
#: notices a cancellation.
PROMPT = 0.2
#: How long a request may take beyond its wait on the scheduler before it is given up: a
#: reply lost with the connection.
GIVE_UP_AFTER = 10.0


class _Nothing:
    def __repr__(self) -> str:
        return "NOTHING"


#: What a request returns when it waited on the scheduler and got nothing.
NOTHING: Final = _Nothing()

#: The one key of the record that carries a pickled value through the scheduler.
PICKLED = "dask-anyio-pickled"


def _unpacked(value: Any) -> Any:
    """What :func:`_packed` sent; a value that Dask's own queue or variable sent, as it is."""
    if type(value) is dict and len(value) == 1 and PICKLED in value:
        return pickle.loads(value[PICKLED])
    return value


class Exchange:
    """Queues, events and variables of the scheduler, as seen by one client."""

    def __init__(self, client: distributed.Client) -> None:
        self._client = client
        #: The handlers registered on the scheduler, then each queue made there, by name.
        self._ready: dict[str | None, asyncio.Future[None]] = {}

    @property
    def _scheduler(self) -> Any:
        scheduler = self._client.scheduler
        if scheduler is None:
            raise RuntimeError("the Dask client is not connected to a scheduler")
        return scheduler

    async def queue_put(self, name: str, maxsize: int, item: Any) -> Any:
        """Put ``item`` (a Future: its key) in the queue ``name``: ``None``, or
        :data:`NOTHING` if it stayed full for :data:`PROMPT`."""
        await self._queue(name, maxsize)
        request: dict[str, Any] = {"data": {PICKLED: pickle.dumps(item)}}
        if isinstance(item, distributed.Future):
            request = {"key": item.key}
        put = getattr(self._scheduler, QUEUE_PUT)(name=name, seconds=PROMPT, **request)
        return None if await _bounded(put) else NOTHING

    async def queue_get(self, name: str, maxsize: int) -> Any:
        """The next item of the queue ``name`` (a Future for a key), or :data:`NOTHING`."""
        await self._queue(name, maxsize)
        record = await _bounded(getattr(self._scheduler, QUEUE_GET)(name=name, seconds=PROMPT))
        if record is None:
            return NOTHING
        if record["type"] != "Future":
            return _unpacked(record["value"])
        # As Dask's Queue: this client holds the key, then the queue lets it go.
        future: distributed.Future[Any] = distributed.Future(record["value"], self._client)
        self._client._send_to_scheduler(
            {"op": "queue-future-release", "name": name, "key": record["value"]}
        )
        return future

    async def queue_size(self, name: str, maxsize: int) -> int:
        await self._queue(name, maxsize)
        size: int = await self._scheduler.queue_qsize(name=name)
        return size

    async def variable_set(self, name: str, value: Any) -> None:
        if not isinstance(value, distributed.Future):
            value = {PICKLED: pickle.dumps(value)}
        await distributed.Variable(name, client=self._client).set(value)

    async def variable_get(self, name: str) -> Any:
        """The value of the variable ``name`` (a Future for a key), or :data:`NOTHING` if it
        stayed unset for :data:`PROMPT`."""
        await self._ensure(None, self._register)
        get = getattr(self._scheduler, VARIABLE_GET)
        record = await _bounded(get(name=name, client=self._client.id, seconds=PROMPT))
        if record is None:
            return NOTHING
        if record["type"] != "Future":
            return _unpacked(record["value"])
        # As Dask's Variable: this client holds the key, then confirms it got it.
        future: distributed.Future[Any] = distributed.Future(record["value"], self._client)
        self._client._send_to_scheduler(
            {
                "op": "variable-future-received-confirm",
                "name": name,
                "key": record["value"],
                "token": record["token"],
            }
        )
        return future

    async def variable_delete(self, name: str) -> None:
        distributed.Variable(name, client=self._client).delete()

    async def event_wait(self, name: str) -> bool:
        """Whether the event ``name`` was set within :data:`PATIENCE`. May be cancelled:
        the scheduler's waiter then ends by itself."""
        done: bool = await distributed.Event(name, client=self._client).wait(timeout=PATIENCE)
        return done

    async def event_set(self, name: str, flag: bool) -> None:
        event = distributed.Event(name, client=self._client)
        await (event.set() if flag else event.clear())

    async def event_is_set(self, name: str) -> bool:
        flag: bool = await distributed.Event(name, client=self._client).is_set()
        return flag

    async def _queue(self, name: str, maxsize: int) -> None:
        """Make the queue ``name`` on the scheduler, once for this client (``maxsize``
        counts only if it is new there)."""
        await self._ensure(None, self._register)
        await self._ensure(name, self._scheduler.queue_create, name=name, maxsize=maxsize)

    async def _register(self) -> None:
        try:
            await self._client.register_plugin(ExchangeHandlers())
        except Exception as error:
            raise RuntimeError(
                "the scheduler refused dask-anyio's handlers for queues and variables "
                f"({error!r}); they need a scheduler that unpickles what clients send "
                "(Dask's distributed.scheduler.pickle, true by default)"
            ) from error

    async def _ensure(self, what: str | None, make: Any, **arguments: Any) -> None:
        """Run ``make(**arguments)`` once, until it succeeds."""
        made = self._ready.get(what)
        if made is None:
            made = self._ready[what] = asyncio.ensure_future(make(**arguments))
        try:
            await asyncio.shield(made)
        except Exception:
            if made.done() and self._ready.get(what) is made:
                del self._ready[what]  # (the next use tries again)
            raise


async def _bounded(request: Any) -> Any:
    """``await request``, given up after its wait on the scheduler plus
    :data:`GIVE_UP_AFTER`: the reply was lost with the connection. A :exc:`TimeoutError`
    of the request itself (the scheduler's) passes through."""
    deadline = asyncio.timeout(PROMPT + GIVE_UP_AFTER)
    try:
        async with deadline:
            return await request
    except TimeoutError:
        if deadline.expired():
            raise ConnectionError("the scheduler did not answer") from None
        raise
