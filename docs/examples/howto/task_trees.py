"""Recursive work on the cluster, owned from the top: a parallel search of a tree, each
subtree searched by a task that submits the next level's tasks. The first branch that finds
the target wins; its sibling's whole subtree is cancelled. A search that takes too long is
cancelled by its caller, all the way down."""

from __future__ import annotations

import anyio

import dask_anyio
from dask_anyio import DaskExecutor


def children(node: int) -> list[int]:
    """The tree: node n has children 2n+1 and 2n+2 (think: the links of a page)."""
    return [2 * node + 1, 2 * node + 2]


async def search(node: int, depth: int, target: int, slow: float = 0) -> list[int] | None:
    """The path from ``node`` down to ``target``, at most ``depth`` levels below; a
    coroutine task on a worker, whose subtasks search the subtrees in parallel. A node
    takes ``slow`` seconds to look at (a slow page)."""
    await anyio.sleep(slow)
    if node == target:
        return [node]
    if depth == 0:
        return None
    async with dask_anyio.subtasks() as ex:  # an executor owned by this task
        branches = [ex.submit(search, child, depth - 1, target, slow) for child in children(node)]
        async for _, path in ex.as_completed(branches, with_results=True):
            if isinstance(path, list):
                for other in branches:
                    other.cancel()  # the other subtree goes, its own subtasks with it
                return [node, *path]
    return None


async def main(depth: int = 4) -> None:
    async with DaskExecutor() as ex:
        path = await ex.run(search, 0, depth, target=2**depth + 3)
        with anyio.move_on_after(2) as scope:  # slow pages: give up on them
            await ex.run(search, 0, 3, target=-1, slow=60)
        print("path:", path, "gave up:", scope.cancelled_caught)
    # Cancelling the root cancelled every task of its tree, confirmed level by level: the
    # scheduler held none of them once the cancelled run() returned.


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")
