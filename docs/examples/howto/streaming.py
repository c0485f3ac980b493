"""Stream items through the cluster, at most N in flight, as an async iterator."""

import contextlib
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel

from dask_anyio import DaskExecutor


def parse(line: str) -> dict[str, int]:
    key, _, value = line.partition("=")
    return {key: int(value)}


async def read_lines(n: int) -> AsyncIterator[str]:
    """Stands for a socket, a message queue or a file: an async source, maybe endless."""
    for i in range(n):
        await anyio.lowlevel.checkpoint()
        yield f"item{i}={i * i}"


async def main(n: int = 1_000) -> None:
    stored: list[dict[str, int]] = []
    # At most 32 tasks exist on the cluster at any moment: the source is read only as
    # results are taken. Leaving the block early cancels what is in flight.
    # (The stream does not close an async source: aclosing() does.)
    async with (
        DaskExecutor() as ex,
        contextlib.aclosing(read_lines(n)) as lines,
        ex.imap(parse, lines, max_in_flight=32) as results,
    ):
        async for record in results:  # in the order of the items (ordered=True)
            stored.append(record)  # stands for `await store(record)`
    assert stored[3] == {"item3": 9}
    print(f"stored {len(stored)} records")


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")
