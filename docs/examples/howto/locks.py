"""Take turns for a resource that only one task at a time may use, across every client of
the cluster, with a lock of the scheduler; and bound how many use another with a semaphore."""

from __future__ import annotations

import anyio

from dask_anyio import DaskExecutor


def crunch(x: int) -> int:
    return x * x


async def main(jobs: int = 6) -> None:
    async with DaskExecutor() as ex:
        database = ex.lock("database")  # one writer at a time, whichever client it is
        gpus = ex.semaphore("gpu", max_leases=2)  # at most two users at once
        results: list[int] = []

        async def job(i: int) -> None:
            async with gpus:  # waits for a lease; a cancelled wait holds none afterwards
                value = await ex.run(crunch, i)
            async with database:  # released when the block is left, however it is left
                results.append(value)

        async with anyio.create_task_group() as tg:
            for i in range(jobs):
                tg.start_soon(job, i)
        # A timeout while waiting is a cancellation: it leaves nothing held.
        async with database:
            with anyio.move_on_after(0.1) as scope:
                await ex.lock("database").acquire()  # another lock object of the same name
        print(sorted(results), "timed out:", scope.cancelled_caught)


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")
