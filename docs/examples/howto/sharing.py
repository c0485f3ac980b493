"""Pass work between tasks through the scheduler: a queue carries handles (the data stays
on the cluster), an event says when to start, a variable holds a setting. Any client of
the cluster that uses the same names shares them: another program, a task on a worker."""

from __future__ import annotations

import anyio

from dask_anyio import DaskExecutor, TaskHandle


def square(x: int) -> int:
    return x * x


async def main(n: int = 6, consumers: int = 2) -> None:
    async with DaskExecutor() as ex:
        jobs = ex.queue("squares")
        go = ex.event("squares-go")
        settings = ex.variable("squares-settings")
        results: list[int] = []

        async def produce() -> None:
            await settings.set({"offset": 100})
            await go.set()  # every consumer waiting wakes
            for i in range(n):
                await jobs.put(ex.submit(square, i))  # the queue holds the task's key
            for _ in range(consumers):
                await jobs.put(None)  # one end marker per consumer

        async def consume() -> None:
            await go.wait()
            offset = (await settings.get())["offset"]
            while (item := await jobs.get()) is not None:
                assert isinstance(item, TaskHandle)  # this executor's handle now
                results.append(await ex.retrieve(item) + offset)

        async with anyio.create_task_group() as tg:
            for _ in range(consumers):
                tg.start_soon(consume)
            tg.start_soon(produce)
        # A timeout is a cancellation: a get that times out takes nothing from the queue.
        with anyio.move_on_after(0.1) as scope:
            await jobs.get()
        await go.clear()  # (names outlive a program: leave them as found)
        await settings.delete()
        print(sorted(results), "timed out:", scope.cancelled_caught)


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")
