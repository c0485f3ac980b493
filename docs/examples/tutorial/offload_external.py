"""Step 5: the same work on a cluster started with `dask scheduler` and `dask worker`."""

import anyio
from offload_many import count_primes_below

from dask_anyio import DaskExecutor


async def main(scheduler_file: str = "scheduler.json", stop: int = 2_000_000) -> None:
    async with DaskExecutor(scheduler_file=scheduler_file) as ex:
        print(f"dashboard: {ex.dashboard_link}")
        print(f"{await count_primes_below(ex, stop)} primes below {stop}")
    # the cluster keeps running: it is not the executor's


if __name__ == "__main__":
    anyio.run(main, backend="trio")
