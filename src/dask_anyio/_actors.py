"""asyncio core: calls to the actors of ``ex.actor``, sent to the worker that holds each, as
Dask's ``Actor`` proxies send them, but without a proxy: a proxy takes a reference of its
own to the actor's key, which would keep the actor on the cluster after its executor let it
go. Runs on the core loop."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import distributed
from distributed.actor import ProxyRPC
from distributed.protocol.serialize import to_serialize

__all__ = ["Actors"]


class Actors:
    """The actors' workers, as one client reaches them."""

    def __init__(self, client: distributed.Client) -> None:
        self._client = client

    async def address(self, future: distributed.Future[Any]) -> str:
        """The address of the worker that holds the actor made by ``future``'s task."""
        who_has = await self._client.who_has([future])
        addresses = who_has.get(future.key) or ()
        if not addresses:
            raise RuntimeError(f"no worker holds the actor {future.key!r}: it was lost")
        return str(addresses[0])

    async def call(
        self, key: str, address: str, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        """The value of the actor's method ``name`` called with ``args`` and ``kwargs``; its
        exception, raised, if it failed."""
        reply = await self._reach(address).actor_execute(
            actor=key,
            function=name,
            args=[to_serialize(arg) for arg in args],
            kwargs={k: to_serialize(v) for k, v in kwargs.items()},
        )
        return _outcome(reply)

    async def attribute(self, key: str, address: str, name: str) -> Any:
        """The value of the actor's attribute ``name``."""
        return _outcome(await self._reach(address).actor_attribute(actor=key, attribute=name))

    def _reach(self, address: str) -> Any:
        # (as Dask's Actor: straight to the worker if the client talks to workers)
        if self._client.direct_to_workers:
            return self._client.rpc(address)
        return ProxyRPC(self._client.scheduler, address)


def _outcome(reply: Mapping[str, Any]) -> Any:
    if reply["status"] == "OK":
        return reply["result"]
    error = reply["exception"]
    raise error
