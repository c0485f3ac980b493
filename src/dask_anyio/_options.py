"""Checking what users pass: where the cluster comes from (:class:`Source`), the options of
tasks and collections (:class:`TaskOptions`, :class:`CollectionOptions`), and the arguments
of ``imap`` and ``compute``. Pure functions and frozen records, except the reading of a
scheduler file."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
from collections.abc import AsyncIterable, Callable, Container, Iterable, Mapping
from numbers import Number
from typing import Any

import anyio
import distributed
from dask.base import is_dask_collection
from distributed.deploy.cluster import Cluster

__all__ = [
    "CollectionOptions",
    "Source",
    "TaskOptions",
    "check_collections",
    "check_given_client",
    "check_not_actor",
    "check_prefix",
    "check_source",
    "check_stream",
    "collection_options",
    "read_scheduler_file",
    "task_options",
]


@dataclasses.dataclass(frozen=True)
class Source:
    """Where an executor's cluster comes from: at most one of ``address``,
    ``scheduler_file``, ``cluster`` and ``client``; nothing means an embedded LocalCluster
    (with ``local_cluster_kwargs``) unless Dask's configuration names a scheduler."""

    address: str | None = None
    scheduler_file: str | os.PathLike[str] | None = None
    cluster: Cluster | None = None
    client: distributed.Client | None = None
    security: Any = None
    connect_timeout: float | str | None = None
    local_cluster_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def core_arguments(self, address: str | None) -> dict[str, Any]:
        """The keyword arguments of ``DaskCore.open``, with the scheduler file's ``address``
        if there is one."""
        return {
            "address": self.address if address is None else address,
            "cluster": self.cluster,
            "client": self.client,
            "security": self.security,
            "connect_timeout": self.connect_timeout,
            "local_cluster_kwargs": self.local_cluster_kwargs,
        }


def check_source(
    address: object,
    scheduler_file: object,
    cluster: object,
    client: object,
    security: Any,
    connect_timeout: float | str | None,
    local_cluster_kwargs: Mapping[str, Any],
) -> Source:
    """The :class:`Source` that ``DaskExecutor(...)``'s arguments describe.

    :raises ValueError, TypeError: naming the argument that is wrong.
    """
    sources = [
        ("address", address),
        ("scheduler_file", scheduler_file),
        ("cluster", cluster),
        ("client", client),
    ]
    given = [n for n, v in sources if v is not None]
    if len(given) > 1:
        raise ValueError(
            f"give at most one of address, scheduler_file, cluster and client, not {given}"
        )
    if local_cluster_kwargs and given:
        raise TypeError(
            f"{sorted(local_cluster_kwargs)} configure the embedded LocalCluster; "
            f"they cannot be combined with {given[0]}="
        )
    if address is not None and not isinstance(address, str):
        raise TypeError(f"address must be a string such as 'tcp://host:port', not {address!r}")
    if scheduler_file is not None and not isinstance(scheduler_file, str | os.PathLike):
        raise TypeError(f"scheduler_file must be a path, not {scheduler_file!r}")
    if scheduler_file is not None and not os.fspath(scheduler_file):
        raise ValueError("scheduler_file is empty: give the path of a scheduler file")
    if client is not None and not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a distributed.Client, not {client!r}")
    if cluster is not None and not hasattr(cluster, "scheduler_address"):
        raise TypeError(f"cluster must be a distributed Cluster object, not {cluster!r}")
    return Source(
        address,
        scheduler_file,
        cluster,  # type: ignore[arg-type]  # (checked above, as far as Dask's duck types go)
        client,
        security,
        connect_timeout,
        dict(local_cluster_kwargs),
    )


def check_given_client(client: distributed.Client, other_thread: bool) -> None:
    """Refuse a ``client=`` that the executor cannot use: under trio (``other_thread``, the
    core on a loop thread of its own), or one that is not running asynchronously here."""
    if other_thread:
        raise RuntimeError(
            "client= is for asyncio only: a distributed.Client lives on an asyncio event "
            "loop, and under trio the executor runs Dask on a private loop thread. "
            "Pass the scheduler's address= (or cluster=) instead."
        )
    if not client.asynchronous or client.status != "running":
        raise ValueError(
            "client= must be a running asynchronous Client created on this event loop, "
            "as in `await Client(..., asynchronous=True)`"
        )


async def read_scheduler_file(path: str | os.PathLike[str], patience: float) -> str:
    """The address in a scheduler file, waiting up to ``patience`` seconds for the scheduler
    to write it: a script may start the scheduler and its client together, and on a shared
    filesystem the file may be seen half written (as :class:`distributed.Client` does).
    Checkpoint."""
    file = anyio.Path(path)
    name = os.fspath(path)
    deadline = anyio.current_time() + patience
    while True:
        try:
            text = await file.read_text()
        except FileNotFoundError:
            problem: Exception = FileNotFoundError(
                f"no scheduler file {name!r} appeared within {patience:g} s: start the "
                f"scheduler with `dask scheduler --scheduler-file {name}`"
            )
        else:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                address = json.loads(text)["address"]
                if isinstance(address, str):
                    return address
            problem = ValueError(
                f"{name!r} is not a scheduler file (JSON with an 'address' string, as "
                f"`dask scheduler --scheduler-file` writes), still after {patience:g} s"
            )
        if anyio.current_time() >= deadline:
            raise problem
        await anyio.sleep(0.05)


@dataclasses.dataclass(frozen=True, slots=True)
class CollectionOptions:
    """The options of ``compute()`` and ``persist()``: Dask's, checked."""

    priority: int = 0
    retries: int | None = None
    resources: Mapping[str, float] | None = None
    workers: list[str] | None = None
    allow_other_workers: bool = False
    optimize_graph: bool = True

    def for_dask(self) -> dict[str, Any]:
        """As keyword arguments of :meth:`distributed.Client.compute` (and ``persist``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True, slots=True)
class TaskOptions:
    """The options of ``submit()``, ``map()`` and ``imap()``: Dask's, checked. ``key`` is a
    task's key for ``submit()``, the prefix of every key for the others."""

    key: str | None = None
    pure: bool = False
    priority: int = 0
    retries: int | None = None
    resources: Mapping[str, float] | None = None
    workers: list[str] | None = None
    allow_other_workers: bool = False

    def for_dask(self) -> dict[str, Any]:
        """As keyword arguments of :meth:`distributed.Client.submit` (and ``map``)."""
        return {
            "key": self.key,
            "pure": self.pure,
            "priority": self.priority,
            "retries": self.retries,
            "resources": None if self.resources is None else dict(self.resources),
            "workers": self.workers,
            "allow_other_workers": self.allow_other_workers,
        }


def task_options(
    *,
    key: str | None = None,
    prefix: str | None = None,
    pure: bool = False,
    priority: int = 0,
    retries: int | None = None,
    resources: Mapping[str, float] | None = None,
    workers: str | Iterable[str] | None = None,
    allow_other_workers: bool = False,
    used: Container[str] = (),
) -> TaskOptions:
    """Check the options of a task (``key``, not in ``used``) or of several (``prefix``).

    :raises ValueError, TypeError: naming the option that is wrong.
    """
    if key is not None:
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty string, not {key!r}")
        if key in used:
            raise ValueError(f"key {key!r} is already used by a task of this executor")
    if not isinstance(pure, bool):
        raise TypeError(f"pure must be True or False, not {pure!r}")
    checked = collection_options(
        priority=priority,
        retries=retries,
        resources=resources,
        workers=workers,
        allow_other_workers=allow_other_workers,
    )
    if prefix is not None:
        key = check_prefix(prefix)
    return TaskOptions(
        key,
        pure,
        checked.priority,
        checked.retries,
        checked.resources,
        checked.workers,
        checked.allow_other_workers,
    )


def collection_options(
    *,
    optimize_graph: bool = True,
    priority: int = 0,
    retries: int | None = None,
    resources: Mapping[str, float] | None = None,
    workers: str | Iterable[str] | None = None,
    allow_other_workers: bool = False,
) -> CollectionOptions:
    """Check the options of ``compute()`` and ``persist()`` (as those of ``submit()``).

    :raises ValueError, TypeError: naming the option that is wrong.
    """
    if not isinstance(optimize_graph, bool):
        raise TypeError(f"optimize_graph must be True or False, not {optimize_graph!r}")
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"priority must be an integer, not {priority!r}")
    if retries is not None and (
        not isinstance(retries, int) or isinstance(retries, bool) or retries < 0
    ):
        raise ValueError(f"retries must be a non-negative integer or None, not {retries!r}")
    if resources is not None and not (
        isinstance(resources, Mapping)
        and all(
            isinstance(k, str)
            and isinstance(v, Number)
            and not isinstance(v, bool)
            and math.isfinite(v)
            and v >= 0
            for k, v in resources.items()
        )
    ):
        raise ValueError(
            f"resources must map resource names to non-negative numbers, not {resources!r}"
        )
    names: list[str] | None
    if isinstance(workers, str):
        names = [workers]
    elif workers is not None:
        names = list(workers) if isinstance(workers, Iterable) else [workers]
        if not all(isinstance(w, str) for w in names):
            raise ValueError(f"workers must be addresses or names (strings), not {names!r}")
    else:
        names = None
    if not isinstance(allow_other_workers, bool):
        raise TypeError(f"allow_other_workers must be True or False, not {allow_other_workers!r}")
    if allow_other_workers and not names:
        raise ValueError("allow_other_workers=True needs workers=")
    return CollectionOptions(
        priority,
        retries,
        None if resources is None else dict(resources),
        names,
        allow_other_workers,
        optimize_graph,
    )


def check_not_actor(what: str, fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse Dask's ``actor=`` (``actors=``) among the keywords of ``fn`` unless ``fn``
    names such a parameter: it would reach ``fn`` (a class would get ``actor=True``).

    :raises TypeError: naming :meth:`DaskExecutor.actor`.
    """
    given = [name for name in ("actor", "actors") if name in kwargs]
    if not given:
        return
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # (no signature: let it through)
        return
    takes_any = not isinstance(fn, type) and any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
    if not takes_any and not all(name in parameters for name in given):
        raise TypeError(
            f"{what}() passes every keyword to the function, so {given[0]}= would reach "
            f"{getattr(fn, '__qualname__', fn)!r}; to make an actor, use "
            "`actor = await ex.actor(cls, *args)`"
        )


def check_prefix(key: object) -> str:
    """``key`` as the prefix of several tasks' keys.

    :raises ValueError: if it is not a non-empty string.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(
            f"key must be a non-empty string, used as the prefix of every key, not {key!r}"
        )
    return key


def check_stream(
    what: str, fn: object, iterable: object, max_in_flight: object, ordered: object
) -> None:
    """Check the arguments of ``imap()``.

    :raises TypeError, ValueError: naming the argument that is wrong.
    """
    if not callable(fn):
        raise TypeError(f"{what}() needs a callable, not {fn!r}")
    if not isinstance(iterable, Iterable | AsyncIterable):
        raise TypeError(f"{what}() needs an iterable or async iterable, not {iterable!r}")
    if not isinstance(max_in_flight, int) or isinstance(max_in_flight, bool) or max_in_flight < 1:
        raise ValueError(f"max_in_flight must be a positive integer, not {max_in_flight!r}")
    if not isinstance(ordered, bool):
        raise TypeError(f"ordered must be True or False, not {ordered!r}")


def check_collections(
    fn: Callable[[list[Any], dict[str, Any]], Any],
    what: str,
    collections: list[Any],
    options: CollectionOptions,
) -> Any:
    """``fn(collections, options)`` if they are Dask collections. In a worker thread:
    telling may already build the graph.

    :raises TypeError: naming the argument that is not a collection.
    """
    for position, collection in enumerate(collections):
        if not is_dask_collection(collection):
            which = f" (argument {position})" if len(collections) > 1 else ""
            raise TypeError(
                f"{what}() needs a Dask collection (dask.delayed, dask.array, dask.bag, "
                f"dask.dataframe), not {collection!r}{which}; for a function call, use "
                "submit() or run()"
            )
    return fn(collections, options.for_dask())
