"""Chain tasks by passing handles: the data stays on the cluster."""

from __future__ import annotations

from array import array

import anyio

from dask_anyio import DaskExecutor


def load(part: int) -> array[int]:
    """Stands for reading one part of a large dataset, on a worker. (An array, not a list:
    Dask sends a list between processes item by item, slowly.)"""
    return array("q", range(part * 100_000, (part + 1) * 100_000))


def evens(numbers: array[int]) -> array[int]:
    return array("q", (n for n in numbers if n % 2 == 0))


def summarize(parts: dict[str, list[array[int]]]) -> dict[str, int]:
    return {name: sum(len(p) for p in lists) for name, lists in parts.items()}


async def main() -> None:
    async with DaskExecutor() as ex:
        loaded = ex.map(load, range(8))  # eight handles; nothing comes back to us
        filtered = [ex.submit(evens, part) for part in loaded]  # handles as arguments
        # Handles inside lists, tuples, sets and dicts become values on the workers too.
        summary = ex.submit(summarize, {"all": loaded, "even": filtered})
        await summary  # waits for it, without moving any data
        print(await ex.retrieve(summary))  # only the small summary travels


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")
