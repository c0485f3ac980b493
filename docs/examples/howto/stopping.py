"""Stopping work that has already started on a worker: three ways."""

import asyncio

import anyio

from dask_anyio import DaskExecutor, checkpoint, kill_on_cancel


def simulate(steps: int) -> int:
    """Cooperative: checks in between steps, and stops within a step of its cancellation."""
    total = 0
    for _ in range(steps):
        checkpoint()  # raises once the task is cancelled; a fraction of a microsecond
        total += sum(range(10_000))
    return total


async def watch_feed(cleaned_up: list[str]) -> None:
    """A coroutine: cancelled at its current await, on the worker; its finally runs there."""
    try:
        await asyncio.sleep(3600)  # stands for waiting on a socket, a queue...
    finally:
        cleaned_up.append("closed the feed")  # runs on the worker


def legacy(n: int) -> int:
    """Code that cannot check in (a C extension, a library's own loop)."""
    while True:
        n += 1


async def main() -> None:
    async with DaskExecutor() as ex:
        with anyio.move_on_after(1):  # cancels the task, which stops at its next checkpoint
            await ex.run(simulate, 10**9)
        with anyio.move_on_after(1):  # cancels the coroutine on the worker
            await ex.run(watch_feed, [])
        with anyio.move_on_after(1):  # kills the process that runs legacy()
            await ex.run(kill_on_cancel(legacy), 0)
        # Each worker thread is free again: these run at once.
        print(await ex.run(simulate, 10), await ex.run(kill_on_cancel(sum), [1, 2, 3]))


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")
