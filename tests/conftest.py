"""Fixtures: backends, an external cluster started with the ``dask`` commands, leak checks."""

from __future__ import annotations

import json
import multiprocessing.resource_tracker
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import dask
import distributed
import pytest
from distributed.security import Security

from dask_anyio import DaskExecutor
from dask_anyio._core import CANCEL_CHUNK
from dask_anyio._spawned import scheduler_command, wait_for_file, worker_command
from dask_anyio._spawned import stop_processes as stop_spawned
from dask_anyio._testcluster import open_two_connections
from dask_anyio.pytest_plugin import DaskTestCluster, open_cluster

ROOT = Path(__file__).resolve().parent.parent

#: Every test fails if it leaves threads, child processes or file descriptors behind
#: (tests/leakcheck.py); pytester runs the tests of that check.
pytest_plugins = ["pytester", "tests.leakcheck"]

#: Resources no worker has: a task that needs them never starts.
ABSENT = {"ABSENT": 1}

_BACKENDS: list[Any] = [pytest.param(("asyncio", {}), id="asyncio")]
try:
    import uvloop  # noqa: F401
except ImportError:  # pragma: no cover - uvloop is not available everywhere
    pass
else:
    _BACKENDS.append(pytest.param(("asyncio", {"use_uvloop": True}), id="asyncio+uvloop"))
_BACKENDS.append(pytest.param(("trio", {}), id="trio"))


#: The backends where asyncio's own cancellation (``Task.cancel()``) can reach our calls.
ASYNCIO_BACKENDS = [p for p in _BACKENDS if p.id != "trio"]


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Every test runs on asyncio, asyncio with uvloop and trio."""
    return request.param


@dataclass
class ExternalCluster:
    address: str
    workers: list[str]
    processes: list[subprocess.Popen[bytes]]
    observer: distributed.Client
    #: What ``dask scheduler --scheduler-file`` wrote.
    scheduler_file: Path

    def scheduler_keys(self) -> set[str]:
        """The keys the scheduler holds right now."""
        keys: list[str] = self.observer.run_on_scheduler(_scheduler_keys)
        return set(keys)

    async def wait_forgotten(self, prefix: str = "", within: float = 10) -> None:
        """Wait until the scheduler holds no key starting with ``prefix``: for keys released
        without waiting (Dask's release is a one-way message), poll another process's state."""
        import anyio

        with anyio.fail_after(within):
            while any(k.startswith(prefix) for k in self.scheduler_keys()):  # noqa: ASYNC110
                await anyio.sleep(0.02)

    async def wait_held(self, prefix: str) -> None:
        """Wait until the scheduler holds a key starting with ``prefix`` (polling, as above)."""
        import anyio

        with anyio.fail_after(10):
            while not any(k.startswith(prefix) for k in self.scheduler_keys()):  # noqa: ASYNC110
                await anyio.sleep(0.02)

    async def wait_acquire_pending(self, name: str, pending: bool = True) -> None:
        """Wait until an acquire request of the semaphore ``name`` waits on the scheduler
        (``pending=False``: until none does)."""
        import anyio

        with anyio.fail_after(10):
            while bool(self.observer.run_on_scheduler(_pending_acquires, name=name)) != pending:  # noqa: ASYNC110
                await anyio.sleep(0.02)

    async def wait_waiting(self, kind: str, name: str, count: int, within: float = 10) -> None:
        """Wait until ``count`` requests wait on the scheduler (see :func:`_waiting`)."""
        import anyio

        with anyio.fail_after(within):
            while self.observer.run_on_scheduler(_waiting, kind=kind, name=name) != count:  # noqa: ASYNC110
                await anyio.sleep(0.02)

    def cancel_requests(self, client_id: str) -> list[int]:
        """How many keys each cancel request of the client ``client_id`` named, in order (the
        scheduler logs an event per request)."""
        events = self.observer.get_events(client_id)
        return [msg["count"] for _, msg in events if msg.get("action") == "cancel"]

    def task_states(self) -> dict[str, str]:
        states: dict[str, str] = self.observer.run_on_scheduler(_scheduler_task_states)
        return states


def _scheduler_keys(dask_scheduler: Any) -> list[str]:
    return [str(k) for k in dask_scheduler.tasks]


def _pending_acquires(dask_scheduler: Any, name: str) -> int:
    pending: int = dask_scheduler.extensions["semaphores"].metrics["pending"].get(name, 0)
    return pending


def _waiting(dask_scheduler: Any, kind: str, name: str) -> int:
    """How many requests wait on the scheduler: gets (``kind`` "get") or puts ("put") of the
    queue ``name``, waits of the event ``name`` ("wait"), gets of unset variables ("unset",
    of any name: the scheduler keeps one condition for all)."""
    extensions = dask_scheduler.extensions
    if kind == "wait":
        return int(extensions["events"]._waiter_count.get(name, 0))
    if kind == "unset":
        return len(extensions["variables"].started._waiters)
    queue = extensions["queues"].queues.get(name)
    return 0 if queue is None else len(queue._getters if kind == "get" else queue._putters)


def _scheduler_task_states(dask_scheduler: Any) -> dict[str, str]:
    return {str(k): ts.state for k, ts in dask_scheduler.tasks.items()}


def start_external_cluster(
    tmp: Path,
    *,
    n_workers: int = 2,
    nthreads: int = 8,
    scheduler_args: list[str] | None = None,
    worker_args: list[str] | None = None,
) -> tuple[str, list[subprocess.Popen[bytes]]]:
    """Start ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, ports chosen by
    the OS. Workers get SLOT=1 as a resource, and the repository and its ``src`` on their
    ``PYTHONPATH``: they import the tests' task functions and this checkout's dask_anyio."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    scheduler_file = tmp / "scheduler.json"
    procs: list[subprocess.Popen[bytes]] = []
    with (tmp / "cluster.log").open("ab") as log:  # the children keep their own copies
        spawn = partial(subprocess.Popen, env=env, stdout=log, stderr=log, start_new_session=True)
        procs.append(spawn(scheduler_command(scheduler_file, *(scheduler_args or []))))
        try:
            wait_for_file(scheduler_file, procs[0], 60)
            address = json.loads(scheduler_file.read_text())["address"]
            for i in range(n_workers):
                worker = ["--nworkers", "1", "--resources", "SLOT=1"]
                worker += ["--nthreads", str(nthreads), "--name", f"worker-{i}"]
                worker += worker_args or []
                procs.append(spawn(worker_command(address, tmp / f"worker-{i}", *worker)))
        except BaseException:
            stop_processes(procs)
            raise
    return address, procs


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop the processes and everything they started; fail if any survives."""
    alive = stop_spawned(procs)
    assert not alive, f"processes survived: {alive}"


@pytest.fixture(scope="session")
def external_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExternalCluster]:
    """A scheduler and two 8-thread workers, started with the ``dask`` commands."""
    yield from _external_cluster(tmp_path_factory.mktemp("external"))


@pytest.fixture(scope="session")
def dask_cluster(external_cluster: ExternalCluster) -> Iterator[DaskTestCluster]:
    """Our own pytest plugin's cluster is the external one: the tests that take ``ex`` (the
    plugin's ``dask_executor``) run there, and the plugin checks what each leaves behind
    (keys on the scheduler included)."""
    with open_cluster(external_cluster.address) as cluster:
        yield cluster


@pytest.fixture
def ex(dask_executor: DaskExecutor) -> DaskExecutor:
    """The plugin's ``dask_executor``, under the name the tests give an executor."""
    return dask_executor


@pytest.fixture(scope="session")
def tree_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExternalCluster]:
    """A scheduler and two workers of one thread each: fewer slots than a tree has tasks."""
    yield from _external_cluster(tmp_path_factory.mktemp("tree"), nthreads=1)


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path

    def security(self) -> Security:
        return Security(
            tls_ca_file=str(self.ca),
            tls_client_cert=str(self.cert),
            tls_client_key=str(self.key),
            require_encryption=True,
        )


def make_certificates(directory: Path) -> Certificates:
    """A new CA and one certificate it signed for 127.0.0.1, used by both ends (mutual TLS)."""
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    paths = Certificates(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(paths.ca))
    issued.cert_chain_pems[0].write_to_path(str(paths.cert))
    issued.private_key_pem.write_to_path(str(paths.key))
    return paths


@pytest.fixture(scope="session")
def tls_certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def tls_cluster(
    tmp_path_factory: pytest.TempPathFactory, tls_certificates: Certificates
) -> Iterator[ExternalCluster]:
    """A scheduler and one worker speaking TLS only, with certificates made by the test."""
    certs = tls_certificates
    tls = ["--tls-ca-file", str(certs.ca), "--tls-cert", str(certs.cert)]
    tls += ["--tls-key", str(certs.key)]
    yield from _external_cluster(
        tmp_path_factory.mktemp("tls"),
        n_workers=1,
        nthreads=2,
        scheduler_args=["--protocol", "tls", *tls],
        worker_args=tls,
        security=certs.security(),
    )


def _external_cluster(
    tmp: Path, *, security: Security | None = None, **options: Any
) -> Iterator[ExternalCluster]:
    address, procs = start_external_cluster(tmp, **options)
    try:
        # No periodic request of its own: the tests' requests, one at a time, then never
        # need a connection the leak checks' baseline does not have (see below).
        with dask.config.set({"distributed.client.scheduler-info-interval": "1d"}):
            observer = distributed.Client(
                address, timeout=60, set_as_default=False, security=security
            )
        try:
            observer.wait_for_workers(len(procs) - 1, timeout=60)  # all but the scheduler
            workers = sorted(observer.scheduler_info(n_workers=-1)["workers"])
            open_two_connections(observer)
            yield ExternalCluster(address, workers, procs, observer, tmp / "scheduler.json")
        finally:
            observer.close()
    finally:
        stop_processes(procs)


@pytest.fixture(scope="session", autouse=True)
def _process_wide_helpers() -> None:
    """Start the helpers a process keeps for good (multiprocessing's resource tracker, which
    LocalCluster's spawned workers use; libuv's signal pipe, which uvloop's first event loop
    opens) so that leak checks do not count them."""
    multiprocessing.resource_tracker.ensure_running()
    if any(p.id == "asyncio+uvloop" for p in _BACKENDS):
        import uvloop

        uvloop.new_event_loop().close()


def sent_together(keys: int) -> list[int]:
    """The cancel requests that cancel ``keys`` keys at once: one call of the core, which
    sends them in chunks (the scheduler handles one cancel of n keys in O(n**2) steps)."""
    full, rest = divmod(keys, CANCEL_CHUNK)
    return [CANCEL_CHUNK] * full + ([rest] if rest else [])
