"""Sending work to the cluster for the façade's methods, their arguments checked: one task,
many, the graph of Dask collections, data; each gives handles the task table adopted.
Front loop only."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio.lowlevel
import anyio.to_thread

from ._handle import TaskHandle
from ._options import CollectionOptions, check_collections, check_not_actor
from ._scope import ExecutorScope
from ._tasks import Adopt

__all__ = ["compute", "persist", "scatter", "submit", "submit_many"]


def submit(
    scope: ExecutorScope,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: dict[str, Any],
    what: str = "submit",
) -> TaskHandle[Any]:
    """One task, on an open executor; ``what``: the method, for error messages."""
    if not callable(fn):
        raise TypeError(f"{what}() needs a callable, not {fn!r}")
    check_not_actor(what, fn, kwargs)
    scope.check_connected()
    tasks = scope.table
    return tasks.adopt(scope.core.submit(fn, tasks.unwrap(args), tasks.unwrap(kwargs), options))


def submit_many(
    scope: ExecutorScope,
    fn: Callable[..., Any],
    columns: Iterable[Iterable[Any]],
    kwargs: Mapping[str, Any],
    options: dict[str, Any],
    start: int = 0,
) -> list[TaskHandle[Any]]:
    """A task per row of ``columns`` (zipped), on an open executor; ``start``: the position
    of the first row, for error messages."""
    check_not_actor("map", fn, kwargs)
    tasks = scope.table
    unwrapped = [tasks.unwrap(list(column)) for column in columns]
    scope.check_connected()
    futures = scope.core.map(fn, unwrapped, tasks.unwrap(kwargs), options, start)
    return [tasks.adopt(f) for f in futures]


async def compute(
    scope: ExecutorScope, collections: list[Any], options: CollectionOptions
) -> tuple[list[Any], Exception | None]:
    """Compute ``collections`` as one graph, built in a worker thread; return their values,
    or the failure to raise. Checkpoint; the tasks are this call's."""
    await anyio.lowlevel.checkpoint_if_cancelled()
    scope.check_connected()
    build = functools.partial(check_collections, scope.core.compute, "compute")
    with scope.gate.call_under_way():  # (the exit must not pass while the graph is built)
        futures = await anyio.to_thread.run_sync(build, collections, options)
        handles = [scope.table.adopt(future, Adopt.CALL) for future in futures]
        return await scope.fetcher.results_of_call(handles)


async def persist(
    scope: ExecutorScope, collections: list[Any], options: CollectionOptions
) -> list[Any]:
    """Submit ``collections`` as one graph, built in a worker thread; return them persisted,
    their futures owned by the table. Checkpoint."""
    await anyio.lowlevel.checkpoint_if_cancelled()
    scope.check_connected()
    build = functools.partial(check_collections, scope.core.persist, "persist")
    with scope.gate.call_under_way():  # (the exit waits for the handles it adopts)
        persisted, futures = await anyio.to_thread.run_sync(build, collections, options)
    for future in futures:  # owned here; the collections hold these very futures
        scope.table.adopt(future, Adopt.PERSIST)
    return list(persisted)


async def scatter(scope: ExecutorScope, data: Any, broadcast: bool) -> Any:
    """Send ``data``; return handles in its shape (a list, a dict, or one). Checkpoint."""
    await anyio.lowlevel.checkpoint_if_cancelled()
    scope.check_connected()
    items = list(data.values()) if type(data) is dict else data if type(data) is list else [data]
    with scope.gate.call_under_way():  # (the exit waits for the handles it adopts)
        futures = await scope.runner.run(scope.core.scatter, items, broadcast)
        handles = [scope.table.adopt(f) for f in futures]
    if type(data) is list:
        return handles
    if type(data) is dict:
        return dict(zip(data, handles, strict=True))
    return handles[0]
