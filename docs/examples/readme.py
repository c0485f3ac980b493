import operator
import time

import anyio

from dask_anyio import DaskExecutor


def slow(x):
    time.sleep(1)
    return x


async def main():
    async with DaskExecutor() as ex:               # embedded LocalCluster, closed on exit
        a = ex.submit(slow, 2)                     # handle, returned at once (plain call)
        b = ex.submit(slow, 5)
        c = ex.submit(operator.add, a, b)          # handles as args: data stays on the cluster
        await c                                    # wait, no data transfer
        assert await ex.retrieve(c) == 7
        assert await ex.run(operator.add, 1, 2) == 3   # caller's cancellation cancels the task


if __name__ == "__main__":                         # LocalCluster workers are spawned processes
    anyio.run(main)                     # asyncio
    anyio.run(main, backend="trio")     # trio
