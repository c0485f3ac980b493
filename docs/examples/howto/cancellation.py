"""Timeouts and cancellation: what each one stops, here and on the cluster."""

import time

import anyio

from dask_anyio import DaskExecutor, TaskCancelled, TaskStatus


def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def main(seconds: float = 5) -> None:
    async with DaskExecutor() as ex:
        # A timeout around run() cancels the remote task. run() raises the cancellation
        # only once the scheduler has forgotten the task. (Started already, slow() still
        # runs to its end in its worker thread: Dask cannot interrupt a thread.)
        with anyio.move_on_after(1) as scope:
            await ex.run(slow, seconds)
        assert scope.cancelled_caught

        # A timeout around `await handle` only stops the waiting: the task belongs to the
        # executor and runs on.
        handle = ex.submit(slow, 0.5)
        with anyio.move_on_after(0.1):
            await handle
        assert await ex.retrieve(handle) == 0.5

        # handle.cancel() is a plain call: it cancels the task (and the tasks that depend
        # on it) on the cluster. Awaiting the handle then raises TaskCancelled.
        doomed = ex.submit(slow, seconds)
        doomed.cancel()
        assert doomed.status is TaskStatus.CANCELLED
        try:
            await doomed
        except TaskCancelled as error:
            print(f"as expected: {error}")


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")
