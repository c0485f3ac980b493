"""The cluster a test session shares (the pytest plugin's ``dask_cluster``): one the session
starts on 127.0.0.1, or an existing scheduler; and what the plugin asks its scheduler after
each test (which keys it holds that nobody connected wants)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import distributed
from dask.utils import parse_timedelta

from ._executor import DaskExecutor
from ._spawned import spawned_cluster

__all__ = ["DaskTestCluster", "open_cluster", "open_two_connections"]

#: How long the plugin waits for a test's keys to go.
KEYS_PATIENCE = 2.0


@dataclass
class DaskTestCluster:
    """The cluster of the test session (what ``dask_cluster`` gives): ``address`` is its
    scheduler's; ``executor()`` makes a :class:`~dask_anyio.DaskExecutor` on it, for a test
    that needs one of its own beside ``dask_executor``."""

    #: The scheduler's address.
    address: str
    #: Whether the session started the cluster (and closes it at its end), or found it.
    embedded: bool
    #: Whether the workers run in processes of their own (False: threads of this process).
    processes: bool
    #: How many workers the cluster had when the session found or started it.
    workers: int
    #: Whether the cluster was found through Dask's ``scheduler-address`` setting (it may be
    #: shared with others: the plugin does not check its keys).
    from_dask_config: bool = False
    #: Whether the session has closed it (or let go of it).
    closed: bool = False
    _observer: distributed.Client = field(default=None, repr=False)  # type: ignore[assignment]
    #: The processes the session started for the cluster (their descendants are the
    #: cluster's: worker processes a nanny restarts, kill_on_cancel's processes).
    _started: tuple[int, ...] = field(default=(), repr=False)

    def started_processes(self) -> tuple[int, ...]:
        """The pids of the processes the session started for the cluster (none for a
        cluster it found)."""
        return self._started

    def executor(self, **options: Any) -> DaskExecutor:
        """A new :class:`~dask_anyio.DaskExecutor` on this cluster (``options``: the
        executor's own, as ``connect_timeout=``); enter it with ``async with``."""
        return DaskExecutor(self.address, **options)

    def scheduler_keys(self) -> set[str]:
        """The keys the scheduler holds now. Blocks for a round trip to the scheduler (a few
        milliseconds): not for an event loop's thread while it has other work."""
        keys: list[str] = self._observer.run_on_scheduler(_keys_on_scheduler())
        return set(keys)

    def wait_gone(self, keys: set[str], patience: float = KEYS_PATIENCE) -> dict[str, str]:
        """Wait up to ``patience`` seconds until the scheduler holds none of ``keys`` that no
        connected client wants (releases are one-way messages: a raw Dask client's may still
        be on its way); return the ones it still holds, each described (its state and who
        wants it: a published dataset, ``fire_and_forget``, a variable or queue)."""
        deadline = time.monotonic() + patience
        delay = 0.01
        held: dict[str, str] = {}
        while keys:
            held = self._observer.run_on_scheduler(_unwanted_on_scheduler(), keys=sorted(keys))
            if not held or time.monotonic() >= deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
            keys = set(held)
        return held


def _keys_on_scheduler() -> Any:
    # Made here, not at module level, so that cloudpickle sends it by value: a scheduler
    # started elsewhere need not have dask-anyio installed.
    def keys(dask_scheduler: Any) -> list[str]:
        return [str(k) for k in dask_scheduler.tasks]

    return keys


def _unwanted_on_scheduler() -> Any:
    def unwanted(dask_scheduler: Any, keys: list[str]) -> dict[str, str]:
        """Those of ``keys`` the scheduler holds that no connected client (nor a task of one)
        wants, each with its state and its wanters; a key kept only for a task that needs
        it is left out (that task is told instead, if it is one of ``keys``)."""
        connected = set(dask_scheduler.client_comms)
        found = {str(k): ts for k, ts in dask_scheduler.tasks.items()}
        described = {}
        for key in keys:
            ts = found.get(key)
            if ts is None:
                continue
            wanters = list(ts.who_wants or ())  # (None until someone wanted it)
            wanting = wanters + [c for d in ts.dependents for c in d.who_wants or ()]
            if any(c.client_key in connected for c in wanting):
                continue  # someone else's, still in use
            if not wanters and ts.dependents:
                continue  # kept for the tasks that need it
            names = sorted(str(c.client_key) for c in wanters)
            by = f", wanted by {', '.join(names)}" if names else ""
            described[key] = f"{ts.state}{by}"
        return described

    return unwanted


@contextlib.contextmanager
def open_cluster(
    address: str | None = None,
    *,
    scheduler_file: str | None = None,
    workers: int = 1,
    threads: int = 2,
    processes: bool = True,
) -> Iterator[DaskTestCluster]:
    """A cluster for a test session (what ``dask_cluster`` yields).

    The existing one at ``address`` or ``scheduler_file`` (else Dask's ``scheduler-address``
    setting): ``processes=False`` says that its scheduler and workers run in this process
    (an in-process ``LocalCluster``), for the leak checks. Else a new one on 127.0.0.1 of
    ``workers`` workers with ``threads`` threads each, closed on the way out: ``dask
    scheduler`` and ``dask worker`` processes, or (``processes=False``) an in-process
    ``LocalCluster`` whose workers are threads. For a conftest whose ``dask_cluster`` is a
    cluster it starts itself::

        @pytest.fixture(scope="session")
        def dask_cluster(my_cluster):
            with open_cluster(my_cluster.scheduler_address) as cluster:
                yield cluster
    """
    from_config = False
    if address is None and scheduler_file is None:
        address = dask.config.get("scheduler-address", None)
        from_config = address is not None
    if address is not None or scheduler_file is not None:
        with _observer(address, scheduler_file) as observer:
            found: str = observer.scheduler_info()["address"]
            count = len(observer.scheduler_info(n_workers=-1)["workers"])
            cluster = DaskTestCluster(
                found, False, processes, count, from_config, _observer=observer
            )
            yield from _until_closed(cluster)
        return
    if processes:
        with contextlib.ExitStack() as stack:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="dask-anyio-"))
            spawned = stack.enter_context(spawned_cluster(Path(directory), workers, threads))
            try:
                observer = stack.enter_context(_observer(spawned.address, None, workers))
            except Exception as error:
                raise spawned.problem(error) from error
            pids = tuple(p.pid for p in spawned.processes)
            cluster = DaskTestCluster(
                spawned.address, True, True, workers, _observer=observer, _started=pids
            )
            yield from _until_closed(cluster)
        return
    local = distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        processes=False,
        dashboard_address="127.0.0.1:0",
    )
    with local, distributed.Client(local, set_as_default=False) as observer:
        open_two_connections(observer)
        cluster = DaskTestCluster(local.scheduler_address, True, False, workers, _observer=observer)
        yield from _until_closed(cluster)


def _until_closed(cluster: DaskTestCluster) -> Iterator[DaskTestCluster]:
    try:
        yield cluster
    finally:
        cluster.closed = True


@contextlib.contextmanager
def _observer(
    address: str | None, scheduler_file: str | None, workers: int = 0
) -> Iterator[distributed.Client]:
    """A client of the plugin's own, to ask the scheduler what it holds (it wants no key);
    once ``workers`` workers are there."""
    where = f"--dask-scheduler-file {scheduler_file}" if address is None else address
    # Dask's own setting, as a Client() given no timeout would wait
    patience = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")
    if scheduler_file is not None and not workers:
        _wait_for_scheduler_file(scheduler_file, patience)
    try:
        observer = distributed.Client(
            address, scheduler_file=scheduler_file, timeout=patience, set_as_default=False
        )
    except ValueError as error:  # (Dask's parsing of the address)
        raise RuntimeError(
            f"dask-anyio's pytest plugin: {where!r} is not a scheduler's address ({error}); "
            "give one such as tcp://127.0.0.1:8786 to --dask-address"
        ) from error
    except OSError as error:
        if workers:  # (the session's own cluster: the caller says what its processes said)
            raise
        raise RuntimeError(
            f"dask-anyio's pytest plugin: no Dask scheduler answered at {where} within "
            f"{patience:g} s ({error}). Start one (`dask scheduler`, `dask worker`), "
            "or leave out --dask-address, --dask-scheduler-file and Dask's "
            "`scheduler-address` setting to test on a cluster the session starts."
        ) from error
    with observer:
        if workers:
            observer.wait_for_workers(workers, timeout=60)
        open_two_connections(observer)
        yield observer


def _wait_for_scheduler_file(path: str, patience: float) -> None:
    """Wait ``patience`` seconds at most for a scheduler file (its scheduler may be starting):
    Dask's client, given one that does not exist, waits for it for ever."""
    deadline = time.monotonic() + patience
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"dask-anyio's pytest plugin: the scheduler file {path} of "
                f"--dask-scheduler-file does not exist ({patience:g} s waited). Start a "
                f"scheduler with `dask scheduler --scheduler-file {path}`, or leave the "
                "option out to test on a cluster the session starts."
            )
        time.sleep(0.1)


def open_two_connections(observer: distributed.Client) -> None:
    """Let the observer hold two connections to the scheduler from the start, so that the
    leak check's baselines count them: two of its requests overlapping (its periodic one and
    the plugin's) would otherwise open the second one during some test."""

    async def two_at_once() -> None:
        await asyncio.gather(observer.scheduler.identity(), observer.scheduler.identity())  # type: ignore[union-attr]

    observer.sync(two_at_once)
