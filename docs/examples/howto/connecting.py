"""The ways to reach a cluster."""

import functools
import operator

import anyio
import anyio.to_thread
from distributed import LocalCluster
from distributed.security import Security

from dask_anyio import DaskExecutor


async def by_address(address: str) -> int:
    # A running scheduler: "tcp://host:8786". The executor leaves the cluster running.
    async with DaskExecutor(address) as ex:
        return await ex.run(operator.add, 1, 2)


async def by_scheduler_file(path: str) -> int:
    # The file `dask scheduler --scheduler-file PATH` writes (it names the address, port
    # included: start the scheduler with --port 0 and the OS picks a free one).
    async with DaskExecutor(scheduler_file=path) as ex:
        return await ex.run(operator.add, 1, 2)


async def by_cluster_object() -> int:
    # Cluster objects (LocalCluster, dask-jobqueue's SLURMCluster, ...) are synchronous
    # here: start and close them in a worker thread, never on the event loop.
    start = functools.partial(
        LocalCluster, n_workers=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    )
    cluster = await anyio.to_thread.run_sync(start)
    try:
        async with DaskExecutor(cluster=cluster) as ex:  # connects; does not close it
            return await ex.run(operator.add, 1, 2)
    finally:
        with anyio.CancelScope(shield=True):  # close it even if this scope was cancelled
            await anyio.to_thread.run_sync(cluster.close)


async def by_tls(address: str, ca: str, cert: str, key: str) -> int:
    # "tls://host:8786", with the certificates the cluster's administrator gave you.
    security = Security(
        tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True
    )
    async with DaskExecutor(address, security=security) as ex:
        return await ex.run(operator.add, 1, 2)


async def main() -> None:
    print(await by_cluster_object())


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")
