"""A pytest plugin that fails any test which leaves threads, child processes or file
descriptors behind, in the spirit of distributed's ``utils_test.clean()``.

``tests/conftest.py`` uses its hooks; ``tests/test_leakcheck.py`` shows that it catches each
kind of leak, in sync and async tests.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest

from dask_anyio import _child

# Threads that distributed (and trio's thread cache, which runs the test harness in guest
# mode) create once per process and keep: not ours to clean up.
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


def _describe_fd(fd: int) -> str:
    with contextlib.suppress(OSError):
        return f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}"
    return str(fd)


def new_threads(before: Snapshot, grace: float | None = None) -> list[str]:
    """Threads started since ``before`` that are still alive after ``grace`` seconds, other
    than the process-wide ones. (Dask's watcher of a worker process ends only once that
    process has been reaped, a moment after the cluster closed: join, do not guess.)"""
    deadline = time.monotonic() + (GRACE if grace is None else grace)
    started = [
        t
        for t in threading.enumerate()
        if t not in before.threads and not t.name.startswith(PROCESS_WIDE_THREADS)
    ]
    for thread in started:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in started if t.is_alive()]


#: The state of the process once a test's fixtures are set up.
_BEFORE_TEST = pytest.StashKey[Snapshot]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """Take the snapshot that every test is checked against once it is torn down."""
    yield
    item.stash[_BEFORE_TEST] = snapshot()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Fail any test that leaves a thread, a child process or a file descriptor behind, in
    the spirit of distributed's ``utils_test.clean()``.

    The baseline is taken after the test's fixtures are set up, and the check runs after
    they are torn down: what a session fixture keeps (an external cluster, its observer
    client) is in the baseline; what a test's own fixtures and event loop open is closed by
    then (anyio's plugin closes a test's event loop with its last async fixture). Threads
    and descriptors are compared by identity, not counted, so that one closed at teardown
    (an event loop's) cannot hide one leaked. What a function-scoped fixture leaks itself
    is in the baseline, hence not caught."""
    yield
    before = item.stash.get(_BEFORE_TEST, None)
    if before is not None:  # (setup failed: that is reported already)
        assert_no_leaks(before, item.nodeid)


def assert_no_leaks(before: Snapshot, what: str) -> None:
    """Fail if threads, child processes or file descriptors grew since ``before``."""
    me = psutil.Process()
    children = [
        c
        for c in me.children(recursive=True)
        if c.pid not in before.children and not _kept_warm(c, before)
    ]
    _, alive = psutil.wait_procs(children, timeout=GRACE)
    threads = new_threads(before)
    fds = sorted(fd for fd, *_ in open_fds() - before.fds)
    leaks = [f"child process {p.pid} ({_cmdline(p)})" for p in alive]
    leaks += [f"thread {name!r}" for name in threads]
    if fds:
        described = ", ".join(_describe_fd(fd) for fd in fds)
        leaks.append(f"{len(fds)} file descriptor(s) ({described}); sockets: {_sockets(me)}")
    if leaks:
        pytest.fail(f"{what} left behind: " + "; ".join(leaks), pytrace=False)


def _kept_warm(process: psutil.Process, before: Snapshot) -> bool:
    """Whether ``process`` is a warm process of kill_on_cancel that a worker the session
    keeps (one older than the test) holds for its next calls (it ends when idle too long, or
    with its worker); the processes forked from it for calls are not."""
    with contextlib.suppress(psutil.Error):
        return process.ppid() in before.children and _child.__file__ in process.cmdline()
    return False


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
