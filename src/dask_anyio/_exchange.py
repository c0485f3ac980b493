"""asyncio core: the scheduler's queues, events and variables, one request at a time. Runs
on the core loop.

Dask's own ``Queue``, ``Event`` and ``Variable`` wait on the scheduler for as long as they
are told to, and a client that stops waiting does not withdraw the request: the scheduler
goes on waiting for nobody. A ``get`` left behind takes the next item and sends it down a
connection nobody reads (the item is lost), a variable's value fetched for nobody is never
confirmed (the scheduler holds its key for good), an event's waiter stays until the event
is set. Here every request waits on the scheduler :data:`PROMPT` (events:
:data:`PATIENCE`) at most, and says whether it got what it asked for (queues and variables
through the handlers of ``_on_scheduler``, which end quietly). The front end sends the
requests that take something shielded from cancellation, one after another, and looks for
a cancellation between them. If one is cancelled all the same (asyncio's own cancellation
passes anyio's shield), the front end lets the request end all the same, and what it took
goes back: an item to the head of its queue (:meth:`Exchange.give_back`), a variable's
value is let go.

Values travel as they are if Dask's own queues and variables carry them unchanged (str,
bytes, int, float, bool, None: shared with Dask's ``Queue`` and ``Variable``), others
pickled, so that a get returns what was put (Dask sends msgpack, which turns lists into
tuples, and unpickles on the scheduler what msgpack cannot carry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

import distributed
from distributed.protocol import pickle

from ._leases import PATIENCE
from ._on_scheduler import EMPTY, UNKNOWN_KEY, ExchangeHandlers, handler

__all__ = ["MISSING", "NOTHING", "PROMPT", "UNKNOWN", "Exchange"]

logger = logging.getLogger("dask_anyio")

#: How long a queue's or a variable's request waits on the scheduler: how soon its caller
#: notices a cancellation.
PROMPT = 0.2


class _Reply:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: What a request returns when it waited on the scheduler and got nothing.
NOTHING: Final = _Reply("NOTHING")
#: What a put returns when the scheduler did not know the key of its future.
UNKNOWN: Final = _Reply("UNKNOWN")
#: What a request returns when the scheduler lacks the handlers (it restarted, say).
MISSING: Final = _Reply("MISSING")

#: Why a handle from a queue or a variable is cancelled when the scheduler forgot its task.
FORGOTTEN = "the scheduler forgot this task while a queue or a variable held it"

#: The one key of the record that carries a pickled value through the scheduler.
PICKLED = "dask-anyio-pickled"
_AS_IS = (str, bytes, int, float, bool, type(None))


def _packed(value: Any) -> Any:
    return value if type(value) in _AS_IS else {PICKLED: pickle.dumps(value)}


def _item_request(item: Any) -> dict[str, Any]:
    """How a queue's handler takes ``item``: a Future's key, or packed data."""
    if isinstance(item, distributed.Future):
        return {"key": item.key}
    return {"data": _packed(item)}


def _unpacked(value: Any) -> Any:
    if type(value) is dict and len(value) == 1 and PICKLED in value:
        return pickle.loads(value[PICKLED])
    return value


class Exchange:
    """Queues, events and variables of the scheduler, as seen by one client."""

    def __init__(self, client: distributed.Client) -> None:
        self._client = client
        self._registered: asyncio.Future[None] | None = None
        #: Items given back to their queues, on their way.
        self._giving_back: set[asyncio.Future[None]] = set()

    async def ready(self) -> None:
        """Register the handlers on the scheduler (once, until a reply says they are gone)."""
        if self._registered is None:
            self._registered = asyncio.ensure_future(self._register())
        registered = self._registered
        try:
            await asyncio.shield(registered)
        except Exception:
            if registered.done() and self._registered is registered:
                self._registered = None  # (the next use tries again)
            raise

    async def queue_put(self, name: str, maxsize: int, item: Any) -> Any:
        """Put ``item`` (a Future: its key) in the queue ``name``: ``None``; or
        :data:`NOTHING` if the queue stayed full, :data:`UNKNOWN` if the scheduler did not
        know the key, for :data:`PROMPT`."""
        reply = await self._ask("queue_put", name=name, maxsize=maxsize, **_item_request(item))
        if reply is MISSING:
            return MISSING
        if reply == EMPTY:
            return NOTHING
        return UNKNOWN if reply == UNKNOWN_KEY else None

    async def queue_get(self, name: str, maxsize: int) -> Any:
        """The next item of the queue ``name`` (a Future for a key), or :data:`NOTHING`."""
        reply = await self._ask("queue_get", name=name, maxsize=maxsize)
        if reply is MISSING or reply is NOTHING:
            return reply
        record = reply["record"]
        if record["type"] != "Future":
            return _unpacked(record["value"])
        # As Dask's Queue: this client holds the key, then the queue lets it go.
        future = self._future(record)
        self._client._send_to_scheduler(
            {"op": "queue-future-release", "name": name, "key": record["value"]}
        )
        return future

    def give_back(self, name: str, maxsize: int, item: Any) -> None:
        """Give ``item``, taken from the queue ``name`` for a caller who was cancelled all
        the same, back to the head of the queue, in the background (:meth:`close` waits)."""
        if item is not NOTHING and item is not MISSING:
            task = asyncio.ensure_future(self._give_back(name, maxsize, item))
            self._giving_back.add(task)
            task.add_done_callback(self._giving_back.discard)

    async def _give_back(self, name: str, maxsize: int, item: Any) -> None:
        request = _item_request(item)
        for _ in range(25):  # (the handlers may need registering again)
            if self._client.status != "running":
                break
            with contextlib.suppress(Exception):
                await self.ready()
                reply = await self._ask("queue_unget", name=name, maxsize=maxsize, **request)
                if reply is not MISSING:  # (UNKNOWN_KEY: forgotten, nothing to give back)
                    break
            await asyncio.sleep(0.2)
        else:
            logger.warning("an item taken from the queue %r for nobody was lost", name)
        self.let_go(item)  # (the queue holds the key again)

    @staticmethod
    def let_go(value: Any) -> None:
        """Let go of a variable's value fetched for a caller who was cancelled all the same."""
        if isinstance(value, distributed.Future):
            value.release()

    async def close(self) -> None:
        """Wait until the items given back are in their queues (10 s at most)."""
        if self._giving_back:
            await asyncio.wait(list(self._giving_back), timeout=10)

    async def queue_size(self, name: str, maxsize: int) -> Any:
        reply = await self._ask("queue_size", name=name, maxsize=maxsize)
        return reply if reply is MISSING else reply["size"]

    async def variable_set(self, name: str, value: Any) -> None:
        if not isinstance(value, distributed.Future):
            value = _packed(value)
        await distributed.Variable(name, client=self._client).set(value)

    async def variable_get(self, name: str) -> Any:
        """The value of the variable ``name`` (a Future for a key), or :data:`NOTHING` if it
        stayed unset for :data:`PROMPT`."""
        reply = await self._ask("variable_get", name=name, client=self._client.id)
        if reply is MISSING or reply is NOTHING:
            return reply
        record = reply["record"]
        if record["type"] != "Future":
            return _unpacked(record["value"])
        # As Dask's Variable: this client holds the key, then confirms it got it.
        future = self._future(record)
        self._client._send_to_scheduler(
            {
                "op": "variable-future-received-confirm",
                "name": name,
                "key": record["value"],
                "token": record["token"],
            }
        )
        return future

    async def variable_delete(self, name: str) -> Any:
        reply = await self._ask("variable_delete", name=name)
        return reply if reply is MISSING else None

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

    async def _ask(self, op: str, /, **arguments: Any) -> Any:
        """The reply of the scheduler's handler ``op``; :data:`MISSING` if it has none
        (the handlers are then registered again on the next :meth:`ready`), :data:`NOTHING`
        if it waited :data:`PROMPT` for nothing."""
        ask = getattr(self._scheduler, handler(op))
        prompt = op not in ("queue_size", "queue_unget", "variable_delete")
        seconds = {"seconds": PROMPT} if prompt else {}
        reply = await ask(**arguments, **seconds)
        if reply is None:  # (a scheduler that restarted: the handlers are gone)
            self._registered = None
            return MISSING
        if reply == EMPTY and op != "queue_put":
            return NOTHING
        return reply

    def _future(self, record: dict[str, Any]) -> distributed.Future[Any]:
        """A future of the record's key, in the state the record says (as Dask's own). A
        key the scheduler forgot (``"lost"``: cancelled by force while in the queue) is
        cancelled here: Dask's own future would wait for it for good."""
        future: distributed.Future[Any] = distributed.Future(
            record["value"], self._client, state=record["state"]
        )
        state = future._state
        assert state is not None
        if record["state"] == "erred":
            state.set_error(record["exception"], record["traceback"])
        elif record["state"] == "lost":
            state.cancel(reason=FORGOTTEN, msg=FORGOTTEN)
        return future

    async def _register(self) -> None:
        try:
            await self._client.register_plugin(ExchangeHandlers())
        except Exception as error:
            raise RuntimeError(
                "the scheduler refused dask-anyio's handlers for queues and variables "
                f"({error!r}); they need a scheduler that unpickles what clients send "
                "(Dask's distributed.scheduler.pickle, true by default)"
            ) from error

    @property
    def _scheduler(self) -> Any:
        scheduler = self._client.scheduler
        if scheduler is None:
            raise RuntimeError("the Dask client is not connected to a scheduler")
        return scheduler
