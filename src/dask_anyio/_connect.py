"""asyncio core: opening a Dask client as the executor's arguments ask, with the errors a
user can act on (an unreachable scheduler, TLS without certificates, an unguarded script).
Runs on the core loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, NamedTuple, cast

import dask.config
import distributed
from dask.utils import parse_timedelta
from distributed.deploy.cluster import Cluster
from distributed.security import Security

from ._client import Client
from ._diagnose import (
    missing_main_guard,
    refuse_while_importing_main_for_a_child,
    unguarded_main_script,
)
from ._logs import QuietCancelledClose

__all__ = ["Connection", "open_connection", "seconds_to_connect"]

logger = logging.getLogger("dask_anyio")


class Connection(NamedTuple):
    """A client, the cluster it connects to, and which of them the executor owns."""

    client: distributed.Client
    cluster: Cluster | None
    owns_client: bool
    owns_cluster: bool


def seconds_to_connect(timeout: float | str | None) -> float:
    """``timeout`` in seconds; ``None``: Dask's ``distributed.comm.timeouts.connect``."""
    if timeout is None:
        timeout = dask.config.get("distributed.comm.timeouts.connect")
    seconds = parse_timedelta(timeout, default="s")
    assert seconds is not None
    return float(seconds)


async def open_connection(
    *,
    address: str | None,
    cluster: Cluster | None,
    client: distributed.Client | None,
    security: Any,
    connect_timeout: float | str | None,
    local_cluster_kwargs: Mapping[str, Any],
) -> Connection:
    """Connect as the executor's arguments ask. Must run on the core loop."""
    if client is not None:
        return Connection(client, None, owns_client=False, owns_cluster=False)
    timeout = seconds_to_connect(connect_timeout)
    owns_cluster = False
    if cluster is not None:
        address = cluster.scheduler_address
        if security is None:
            security = getattr(cluster, "security", None)
    elif address is None:
        address = dask.config.get("scheduler-address", None)
    if address is None:
        cluster = await start_local_cluster(local_cluster_kwargs)
        owns_cluster = True
        address = cluster.scheduler_address
        security = getattr(cluster, "security", None)
    try:
        new_client = await connect(address, security, timeout)
    except BaseException:
        if owns_cluster:
            assert cluster is not None
            await cluster.close()
        raise
    return Connection(new_client, cluster, owns_client=True, owns_cluster=owns_cluster)


async def start_local_cluster(kwargs: Mapping[str, Any]) -> Cluster:
    options: dict[str, Any] = {
        "processes": True,
        "host": "127.0.0.1",
        "scheduler_port": 0,
        "dashboard_address": "127.0.0.1:0",
    }
    options.update(kwargs)
    # Its workers close with the executor, maybe as a cancelled task ends: no warning.
    options["plugins"] = (*options.get("plugins", ()), QuietCancelledClose())
    if options.get("processes") is False:
        del options["host"]  # in-process workers talk over inproc://, not TCP
    else:  # a worker process re-running an unguarded script would start clusters
        refuse_while_importing_main_for_a_child()
    cluster = distributed.LocalCluster(asynchronous=True, **options)
    starting = asyncio.ensure_future(cast(Awaitable[Any], cluster))
    try:
        await asyncio.shield(starting)
    except BaseException as exc:
        # A half-started cluster cannot be closed: let the start finish (or fail) first.
        with contextlib.suppress(Exception):
            await starting
        try:
            await cast(Awaitable[Any], cluster.close())
        except Exception:  # keep the reason it did not start
            logger.warning("could not close a LocalCluster that failed to start", exc_info=True)
        script = unguarded_main_script() if isinstance(exc, Exception) else None
        if script is not None:  # the reason, in the last line the user reads
            raise RuntimeError(missing_main_guard(script)) from exc
        raise
    return cluster


async def connect(address: str, security: Any, connect_timeout: float) -> distributed.Client:
    if security is None:
        security = Security()  # what Dask's configuration says, as Client() would use
    if security.require_encryption and not address.startswith(("tls://", "inproc://")):
        raise ValueError(
            f"the security settings require encryption, and {address!r} is not a tls:// "
            "address: refusing to connect without it"
        )
    if address.startswith("tls://") and (
        security.get_connection_args("client").get("ssl_context") is None
    ):
        raise ValueError(
            f"{address!r} speaks TLS: pass security=Security(tls_ca_file=..., "
            "tls_client_cert=..., tls_client_key=...) or set Dask's distributed.comm.tls "
            "configuration"
        )
    client = Client(
        address,
        asynchronous=True,
        security=security,
        timeout=connect_timeout,
        set_as_default=False,
    )
    try:
        await client
    except BaseException as exc:
        await client.close()
        if isinstance(exc, OSError | asyncio.TimeoutError):
            raise ConnectionError(
                f"could not connect to the Dask scheduler at {address!r} "
                f"within {connect_timeout:g} s: {exc}"
            ) from exc
        raise
    return client
