"""Step 3: one call, on a Dask cluster started (and closed) by the executor."""

import anyio
from primes import count_primes

from dask_anyio import DaskExecutor


async def main() -> None:
    async with DaskExecutor() as ex:  # starts a LocalCluster; closes it on exit
        count = await ex.run(count_primes, 0, 10_000)  # runs in a worker process
        print(f"{count} primes below 10 000")


if __name__ == "__main__":  # the cluster's worker processes import this file
    anyio.run(main, backend="trio")
