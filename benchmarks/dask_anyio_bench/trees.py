"""Task trees (``dask_anyio.subtasks``), for the dask-anyio contenders: how soon the whole
tree of a cancelled root is gone from the scheduler, and what a subtasks scope costs over a
plain coroutine task. The other contenders have no task trees (their cells say n/a)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import dask_anyio

from .contenders import Session

#: The prefix of the keys of a tree's tasks (their function's name), and of their markers.
TREE_TARGET = "bench_tree"
TREE_MARKERS = f"dask-anyio-subtasks-{TREE_TARGET}"
#: A binary tree of depth 3: 15 tasks, 7 of which open a subtasks scope (and hold a marker).
DEPTH = 3
TASKS, SCOPES = 2 ** (DEPTH + 1) - 1, 2**DEPTH - 1


async def bench_tree(depth: int) -> None:
    """A node of a binary tree ``depth`` levels deep below it; the leaves wait until they
    are cancelled."""
    if depth == 0:
        await asyncio.Event().wait()
        return
    async with dask_anyio.subtasks() as ex:
        for _ in range(2):
            ex.submit(bench_tree, depth - 1)


async def bench_plain() -> None:
    """A coroutine task that does nothing."""


async def bench_empty_scope() -> None:
    """A coroutine task that opens a subtasks scope and submits nothing."""
    async with dask_anyio.subtasks():
        pass


def tree_keys(dask_scheduler: Any) -> int:
    """How many keys of trees (tasks and markers) the scheduler holds now."""
    prefixes = (TREE_TARGET, TREE_MARKERS)
    return sum(isinstance(k, str) and k.startswith(prefixes) for k in dask_scheduler.tasks)


async def tree_cancel(session: Session, observer: Any, n: int) -> dict[str, Any]:
    """``n`` times: a tree of 15 tasks running (its leaves waiting), its root's caller
    cancelled; from the cancel to the moment the scheduler forgot the last of its tasks and
    markers (timed on the scheduler)."""
    if not session.stops_coroutines:  # (only dask-anyio has task trees)
        return {}
    keys = TASKS + SCOPES
    forgotten: list[float] = []
    for _ in range(n):
        async with session.unit() as s:
            await _start_then_cancel(s, observer, keys, forgotten)
        await observer.settle()
    return {"all_forgotten": forgotten}


async def _start_then_cancel(s: Session, observer: Any, keys: int, forgotten: list[float]) -> None:
    import anyio

    async with anyio.create_task_group() as tg:
        tg.start_soon(s.cancellable_run, bench_tree, DEPTH)
        held = await observer.poll(30, lambda held: held >= keys, tree_keys)
        if held < keys:
            raise RuntimeError(f"the tree did not start: {held} of its {keys} keys held")
        asked = time.time()
        tg.cancel_scope.cancel()
    seen = await observer.wait_forgotten(asked, keys)
    if seen is None:
        raise RuntimeError("the tree's keys were not all forgotten")
    forgotten.append(seen["last"] - asked)


async def subtasks_cost(session: Session, n: int) -> dict[str, Any]:
    """``n`` round trips each of a plain coroutine task and of one that opens an empty
    subtasks scope, interleaved; ``overhead``: the difference, pair by pair."""
    if not session.stops_coroutines:
        return {}
    plain: list[float] = []
    scoped: list[float] = []
    async with session.unit() as s:
        await s.run(bench_empty_scope)  # (the first opens what a worker opens once)
        for _ in range(n):
            for fn, samples in ((bench_plain, plain), (bench_empty_scope, scoped)):
                start = time.perf_counter()
                await s.run(fn)
                samples.append(time.perf_counter() - start)
    overhead = [b - a for a, b in zip(plain, scoped, strict=True)]
    return {"plain": plain, "subtasks": scoped, "overhead": overhead}
