"""Leave an as_completed loop early, and cancel the tasks it did not wait for."""

import random
import time

import anyio

from dask_anyio import DaskExecutor, TaskHandle


def simulate(seed: int) -> int:
    """Stands for work of unpredictable length (up to 0.2 s here)."""
    time.sleep(random.Random(seed).uniform(0, 0.2))
    return seed


async def first_results(
    ex: DaskExecutor, handles: list[TaskHandle[int]], seconds: float
) -> list[int]:
    """The values of the tasks done within ``seconds``; the other tasks are cancelled."""
    values: list[int] = []
    with anyio.move_on_after(seconds):  # stops the waiting only: the executor owns the tasks
        async for handle in ex.as_completed(handles):
            values.append(await ex.retrieve(handle))
    for handle in handles:  # cancel the rest, or the executor's exit waits for every one
        handle.cancel()  # a plain call; a task already done stays done
    return values


async def main(seconds: float = 0.5) -> None:
    async with DaskExecutor() as ex:
        handles = ex.map(simulate, range(100))
        values = await first_results(ex, handles, seconds)
        print(f"{len(values)} of {len(handles)} done within {seconds} s; the rest cancelled")


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")
