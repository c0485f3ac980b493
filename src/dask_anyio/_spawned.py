"""A cluster of ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, ports chosen by
the OS: the embedded cluster of the pytest plugin (nothing of it lives in the test process, so
that what a test leaves there is the test's), and the project's own test clusters."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from ._orphaned import PARENT_PID

#: The preload that closes a scheduler or nanny whose starting process has ended.
ORPHANED = "dask_anyio._orphaned"

__all__ = [
    "Spawned",
    "scheduler_command",
    "spawned_cluster",
    "stop_processes",
    "wait_for_file",
    "worker_command",
]


def scheduler_command(scheduler_file: Path, *extra: str) -> list[str]:
    """``dask scheduler`` on 127.0.0.1, port 0, writing ``scheduler_file``. (``--no-dashboard``
    still starts the HTTP server, for health and metrics: on port 8787 of every interface
    unless told otherwise.)"""
    command = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    command += ["--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
    command += ["--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)]
    return [*command, *extra]


def worker_command(address: str, directory: Path, *extra: str) -> list[str]:
    """``dask worker`` on 127.0.0.1 (no dashboard), its files in ``directory``."""
    command = [sys.executable, "-m", "distributed.cli.dask_worker", address]
    command += ["--host", "127.0.0.1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    command += ["--local-directory", str(directory)]
    return [*command, *extra]


def wait_for_file(path: Path, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until ``process`` has written ``path`` (a scheduler file); fail if it exits."""
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{process.args!r} did not write {path} within {timeout:g} s")
        time.sleep(0.05)


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> list[psutil.Process]:
    """Stop the processes (each the leader of a session of its own) and everything they
    started: SIGTERM, then SIGKILL for what is left after 15 s. Returns what survived."""
    family: list[psutil.Process] = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            leader = psutil.Process(process.pid)
            family += [leader, *leader.children(recursive=True)]
    for process in reversed(processes):
        # (the whole group, also when its leader has ended and others of it have not)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if hasattr(os, "killpg"):
                os.killpg(process.pid, signal.SIGTERM)
            else:  # pragma: no cover - Windows: no process groups
                process.terminate()
    _, alive = psutil.wait_procs(family, timeout=15)
    for survivor in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            survivor.kill()
    _, alive = psutil.wait_procs(alive, timeout=5)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    return alive


@dataclass
class Spawned:
    """A cluster that :func:`spawned_cluster` started."""

    address: str
    #: The ``dask scheduler`` and ``dask worker`` processes (their children are the cluster's
    #: too: worker processes, kill_on_cancel's processes).
    processes: list[subprocess.Popen[bytes]]
    log: Path

    def problem(self, error: BaseException) -> RuntimeError:
        """The error to raise when the cluster did not come up: what its processes said."""
        names = ["dask scheduler", *["dask worker"] * (len(self.processes) - 1)]
        ended = [
            f"{name} exited with {p.returncode}"
            for name, p in zip(names, self.processes, strict=True)
            if p.poll() is not None
        ]
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        return RuntimeError(
            f"dask-anyio's pytest plugin could not start its cluster ({error}; "
            f"{', '.join(ended) or 'its processes are running'}). The end of its log:\n{tail}"
        )


@contextlib.contextmanager
def spawned_cluster(directory: Path, workers: int, threads: int) -> Iterator[Spawned]:
    """A scheduler and ``workers`` workers of ``threads`` threads, their files and logs
    (``cluster.log``) in ``directory``, once the scheduler has written its address.

    The workers get this process's ``sys.path`` as their ``PYTHONPATH``, so that they import
    the modules beside the tests, as a ``LocalCluster``'s worker processes would. The
    scheduler and the workers' nannies close themselves if this process ends without
    stopping them (:mod:`._orphaned`)."""
    path = os.pathsep.join(p for p in sys.path if p)
    env = {**os.environ, "PYTHONPATH": path, PARENT_PID: str(os.getpid())}
    scheduler_file = directory / "scheduler.json"
    processes: list[subprocess.Popen[bytes]] = []
    log_path = directory / "cluster.log"
    with log_path.open("ab") as log:  # the children keep their own copies

        def spawn(command: list[str]) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                command, env=env, stdout=log, stderr=log, start_new_session=True
            )

        preload = ["--preload", ORPHANED]
        try:
            processes.append(spawn(scheduler_command(scheduler_file, *preload)))
            wait_for_file(scheduler_file, processes[0], 60)
            address: str = json.loads(scheduler_file.read_text())["address"]
            options = ["--nworkers", str(workers), "--nthreads", str(threads)]
            options += ["--preload-nanny", ORPHANED]
            processes.append(spawn(worker_command(address, directory / "workers", *options)))
        except Exception as error:
            stop_processes(processes)
            raise Spawned("", processes, log_path).problem(error) from error
        except BaseException:
            stop_processes(processes)
            raise
    try:
        yield Spawned(address, processes, log_path)
    finally:
        stop_processes(processes)
