"""Task functions of the task-tree tests (tests/test_subtasks.py), importable by the workers.

The blocking leaves write a file when they start and another when their code stops, in a
directory the test gives (every cluster of the tests runs on this machine)."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import dask_anyio


class LeafError(Exception):
    """A leaf's own error class (pickled by reference: the workers import this module)."""


async def count(depth: int, fanout: int = 2) -> int:
    """The number of tasks of a tree of coroutine tasks ``depth`` levels below this one."""
    if depth == 0:
        return 1
    async with dask_anyio.subtasks() as ex:
        children = [ex.submit(count, depth - 1, fanout) for _ in range(fanout)]
        return 1 + sum(await ex.gather(children))


def count_sync(depth: int, backend: str) -> int:
    """:func:`count` for sync task functions, through run_async on ``backend``."""
    return dask_anyio.run_async(_count_sync, depth, backend, backend=backend)  # type: ignore[arg-type]


async def _count_sync(depth: int, backend: str) -> int:
    if depth == 0:
        return 1
    async with dask_anyio.subtasks() as ex:
        children = [ex.submit(count_sync, depth - 1, backend) for _ in range(2)]
        return 1 + sum(await ex.gather(children))


# -- trees whose leaves run until cancelled ------------------------------------------------


def _mark(directory: str, what: str, name: str, text: str = "") -> None:
    (Path(directory) / f"{what}-{name}").write_text(text)


async def blocked(depth: int, directory: str, leaf: str, sync: str | None = None) -> None:
    """A tree whose leaves run until cancelled, as ``leaf`` says: "coroutine" (awaits
    forever), "checkpoint" (a sync loop calling checkpoint()) or "kill" (a kill_on_cancel
    process that sleeps). ``sync``: the parents below the root are sync tasks, through
    run_async on that backend."""
    async with dask_anyio.subtasks() as ex:
        for _ in range(2):
            if depth > 1 and sync is None:
                ex.submit(blocked, depth - 1, directory, leaf)
            elif depth > 1:
                ex.submit(blocked_sync, depth - 1, directory, leaf, sync)
            elif leaf == "coroutine":
                ex.submit(_leaf_coroutine, directory)
            elif leaf == "checkpoint":
                ex.submit(_leaf_checkpoint, directory)
            else:
                ex.submit(dask_anyio.kill_on_cancel(_leaf_process), directory)


def blocked_sync(depth: int, directory: str, leaf: str, backend: str) -> None:
    dask_anyio.run_async(blocked, depth, directory, leaf, backend, backend=backend)  # type: ignore[arg-type]


async def _leaf_coroutine(directory: str) -> None:
    name = uuid.uuid4().hex
    _mark(directory, "started", name)
    try:
        await asyncio.Event().wait()
    finally:
        _mark(directory, "stopped", name)


def _leaf_checkpoint(directory: str) -> None:
    name = uuid.uuid4().hex
    _mark(directory, "started", name)
    try:
        while True:
            dask_anyio.checkpoint()
            time.sleep(0.005)
    finally:
        _mark(directory, "stopped", name)


def _leaf_process(directory: str) -> None:
    """In a kill_on_cancel child: its pid in the started mark; killed, it writes no more."""
    _mark(directory, "started", uuid.uuid4().hex, str(os.getpid()))
    time.sleep(3600)


# -- errors -------------------------------------------------------------------------------


def fail_leaf(n: int) -> None:
    raise LeafError(f"leaf {n} failed")


async def failing(depth: int, failures: int) -> None:
    """A tree whose leaves under the first parent of the last level fail (``failures`` of
    them: 1 is awaited, so raised alone; more are left to the exit, raised as a group)."""
    async with dask_anyio.subtasks() as ex:
        if depth > 1:
            await ex.run(failing, depth - 1, failures)
        elif failures == 1:
            await ex.run(fail_leaf, 0)
        else:
            for n in range(failures):
                ex.submit(fail_leaf, n)


# -- misuse and what a worker holds -------------------------------------------------------


async def subtasks_in_a_thread() -> None:
    def open_there() -> None:
        async def enter() -> None:
            async with dask_anyio.subtasks():
                pass

        asyncio.run(enter())

    await asyncio.to_thread(open_there)


async def run_async_in_a_coroutine() -> None:
    async def nothing() -> None:
        pass

    dask_anyio.run_async(nothing)


def threads_of_the_worker() -> list[str]:
    """The names of the worker's threads, without the numbers that Dask's thread pool gives
    them (a seceded task's thread leaves the pool when it returns, and a new one joins)."""
    return sorted(re.sub(r"-\d+-\d+$", "", t.name) for t in threading.enumerate())


def clients_of_the_scheduler(dask_scheduler: Any) -> list[str]:
    return sorted(str(c) for c in dask_scheduler.clients)


async def _one() -> int:
    return 1


def run_async_twice() -> int:
    """Two run_async calls in one sync task (the second finds the task seceded already)."""
    return dask_anyio.run_async(_one) + dask_anyio.run_async(_one, backend="trio")


async def swallowing(directory: str) -> None:
    """Catches the CancelledOnWorker of its scope (its leaf waits until cancelled), then
    would wait for good: its own code must stop all the same (then it writes "ended")."""
    try:
        try:
            async with dask_anyio.subtasks() as ex:
                ex.submit(_leaf_coroutine, directory)
        except Exception:
            pass
        await asyncio.Event().wait()
    finally:
        _mark(directory, "ended", uuid.uuid4().hex)
