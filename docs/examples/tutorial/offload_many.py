"""Step 4: many calls at once, a responsive event loop, and a deadline."""

import anyio
from primes import count_primes

from dask_anyio import DaskExecutor

CHUNK = 100_000


async def count_primes_below(ex: DaskExecutor, stop: int) -> int:
    """Count the primes below ``stop`` in chunks, all chunks at once on the cluster."""
    counts: list[int] = []

    async def count(start: int) -> None:
        counts.append(await ex.run(count_primes, start, min(start + CHUNK, stop)))

    async with anyio.create_task_group() as tg:  # in trio terms: a nursery
        for start in range(0, stop, CHUNK):
            tg.start_soon(count, start)
    return sum(counts)


async def heartbeat() -> None:
    """Shows that the event loop stays free while the cluster computes."""
    while True:
        await anyio.sleep(1)
        print("still responsive")


async def main(stop: int = 2_000_000) -> None:
    async with DaskExecutor() as ex, anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        with anyio.fail_after(600):  # on timeout, the tasks still pending are cancelled
            total = await count_primes_below(ex, stop)
        print(f"{total} primes below {stop}")
        tg.cancel_scope.cancel()  # stop the heartbeat


if __name__ == "__main__":
    anyio.run(main, backend="trio")
