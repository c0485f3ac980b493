"""The exit rules of `async with DaskExecutor()`: those of a task group."""

import time

import anyio

from dask_anyio import DaskExecutor, TaskStatus


def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def fail(message: str) -> None:
    raise ValueError(message)


async def main(seconds: float = 5) -> None:
    # Three executors: each starts (and closes) its own LocalCluster unless Dask's
    # scheduler-address setting names a cluster.
    # A normal exit waits for every outstanding handle, as a task group waits for its
    # children.
    async with DaskExecutor() as ex:
        finished = ex.submit(slow, 0.2)
    assert finished.status is TaskStatus.FINISHED

    # An error in the body cancels every outstanding task on the cluster, then propagates.
    try:
        async with DaskExecutor() as ex:
            abandoned = ex.submit(slow, seconds)
            int("not a number")  # something in the body fails
    except ValueError:
        pass
    assert abandoned.status is TaskStatus.CANCELLED

    # A failure nobody observed (by awaiting its handle, or retrieving it) is raised at
    # the exit, in an ExceptionGroup: errors never pass silently.
    try:
        async with DaskExecutor() as ex:
            ex.submit(fail, "nobody awaited me")
    except* ValueError as group:
        print(f"raised at exit: {group.exceptions!r}")


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")
