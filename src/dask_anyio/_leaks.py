"""What a test left behind: threads, child processes and file descriptors, in the spirit of
distributed's ``utils_test.clean()``. Used by the pytest plugin (``dask_anyio.pytest_plugin``)
and by the project's own tests; no pytest here."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import psutil

from . import _child

__all__ = [
    "GRACE",
    "PROCESS_WIDE_THREADS",
    "Snapshot",
    "left_behind",
    "loop_fds",
    "new_threads",
    "snapshot",
]

#: Threads that distributed (and trio's thread cache, which runs a test harness in guest
#: mode) create once per process and keep: not a test's to clean up.
PROCESS_WIDE_THREADS = ("Dask-Callback-Thread", "Dask-Offload", "TCP-Executor", "Trio thread")

#: How long a thread or child process started by a test may take to end after it.
GRACE = 10.0


@dataclass(frozen=True)
class Snapshot:
    #: The thread objects (not idents: an ident is reused once its thread ended).
    threads: frozenset[threading.Thread]
    #: Open file descriptors as (fd, device, inode): a new file under an old number is new.
    fds: frozenset[tuple[int, int, int]]
    children: frozenset[int]


def snapshot() -> Snapshot:
    me = psutil.Process()
    return Snapshot(
        frozenset(threading.enumerate()),
        open_fds(),
        frozenset(c.pid for c in me.children(recursive=True)),
    )


def open_fds() -> frozenset[tuple[int, int, int]]:
    """This process's file descriptors, with what each refers to (Linux: /proc/self/fd;
    elsewhere only their number is known, as psutil counts them)."""
    if not os.path.isdir("/proc/self/fd"):
        return frozenset((i, 0, 0) for i in range(psutil.Process().num_fds()))
    found = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # (the directory's own descriptor, closed by now)
            st = os.stat(f"/proc/self/fd/{name}")
            found.add((int(name), st.st_dev, st.st_ino))
    return frozenset(found)


def loop_fds(before: Snapshot) -> Snapshot:
    """``before``, with the descriptors other than sockets opened since: an event loop's
    (uvloop's first loop keeps a pipe for the process), not a test's to close."""
    opened = open_fds() - before.fds
    return replace(before, fds=before.fds | {f for f in opened if not _is_socket(f[0])})


def _is_socket(fd: int) -> bool:
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return False


def new_threads(
    before: Snapshot, grace: float | None = None, kept: Callable[[str], bool] | None = None
) -> list[str]:
    """Threads started since ``before`` that are still alive after ``grace`` seconds, other
    than the process-wide ones and those whose name ``kept`` accepts. (Dask's watcher of a
    worker process ends only once that process has been reaped, a moment after the cluster
    closed: join, do not guess.)"""
    deadline = time.monotonic() + (GRACE if grace is None else grace)
    started = [
        t
        for t in threading.enumerate()
        if t not in before.threads
        and not t.name.startswith(PROCESS_WIDE_THREADS)
        and not (kept is not None and kept(t.name))
    ]
    for thread in started:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in started if t.is_alive()]


def left_behind(
    before: Snapshot,
    kept_threads: Callable[[str], bool] | None = None,
    in_process: bool = False,
    cluster: tuple[int, ...] = (),
) -> list[str]:
    """What grew since ``before``: child processes, threads and file descriptors still there
    after a grace period, each described. ``kept_threads``: names of threads a session keeps
    that start lazily (an in-process cluster's workers' thread pools); ``in_process``: the
    workers run in this process, so their warm processes of kill_on_cancel are its own
    children; ``cluster``: pids of a cluster's processes, whose descendants are the
    cluster's (a worker process its nanny restarted)."""
    me = psutil.Process()
    theirs: set[int] = set()
    for pid in cluster:
        with contextlib.suppress(psutil.Error):
            theirs.update(c.pid for c in psutil.Process(pid).children(recursive=True))
    children = [
        c
        for c in me.children(recursive=True)
        if c.pid not in before.children
        and c.pid not in theirs
        and not _kept_warm(c, before, in_process)
    ]
    deadline = time.monotonic() + GRACE
    _, alive = psutil.wait_procs(children, timeout=GRACE)
    threads = new_threads(before, grace=max(0.0, deadline - time.monotonic()), kept=kept_threads)
    fds = _new_fds(before, deadline)
    leaks = [f"child process {p.pid} ({_cmdline(p)})" for p in alive]
    leaks += [f"thread {name!r}" for name in threads]
    if fds:
        described = ", ".join(_describe_fd(fd) for fd in fds)
        leaks.append(f"{len(fds)} file descriptor(s) ({described}); sockets: {_sockets(me)}")
    return leaks


def _new_fds(before: Snapshot, deadline: float) -> list[int]:
    """Descriptors opened since ``before`` and still open at ``deadline`` (polled: a peer's
    close, on another thread's loop, may take a moment)."""
    delay = 0.005
    collected = False
    while True:
        fds = sorted(fd for fd, *_ in open_fds() - before.fds)
        if not fds or time.monotonic() >= deadline:
            return fds
        if not collected:  # (a closed loop's transports give their sockets back once collected)
            gc.collect()  # (tens of ms with distributed imported: only when it may help)
            collected = True
            continue
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _kept_warm(process: psutil.Process, before: Snapshot, in_process: bool) -> bool:
    """Whether ``process`` is a warm process of kill_on_cancel that a worker the session
    keeps holds for its next calls (it ends when idle too long, or with its worker): a child
    of a worker older than the test, or of this process when the workers run in it. The
    processes forked from it for calls are not."""
    with contextlib.suppress(psutil.Error):
        parent = process.ppid()
        kept_parent = parent in before.children or (in_process and parent == os.getpid())
        return kept_parent and _child.__file__ in process.cmdline()
    return False


def _describe_fd(fd: int) -> str:
    with contextlib.suppress(OSError):
        return f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}"
    return str(fd)


def _cmdline(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return " ".join(process.cmdline())[:200]
    return "?"


def _sockets(process: psutil.Process) -> str:
    """The process's sockets (for the failure message)."""
    with contextlib.suppress(psutil.Error):
        sockets = [f"{c.laddr}->{c.raddr or '-'} {c.status}" for c in process.net_connections()]
        return ", ".join(sockets)[:2000]
    return "?"
