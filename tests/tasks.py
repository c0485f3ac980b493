"""Task functions for the tests, importable by workers as ``tests.tasks``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import distributed
from distributed.diagnostics.plugin import SchedulerPlugin


def slow_identity(x: Any, delay: float = 0.05) -> Any:
    """Return ``x`` after ``delay`` seconds."""
    time.sleep(delay)
    return x


def inc(x: int) -> int:
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


def total(values: Any) -> int:
    """Sum numbers in nested lists, tuples and dict values."""
    if isinstance(values, dict):
        return sum(total(v) for v in values.values())
    if isinstance(values, list | tuple | set):
        return sum(total(v) for v in values)
    return int(values)


class RemoteOnlyError(Exception):
    pass


def raise_remote_only(message: str) -> None:
    """Raise ``RemoteOnlyError(message)`` from a frame of this module on the worker."""
    raise RemoteOnlyError(message)


def _unpickle_on_worker_only(value: int) -> WorkerOnly:
    try:
        distributed.get_worker()
    except ValueError:
        raise RuntimeError("WorkerOnly data reached the client") from None
    return WorkerOnly(value)


class WorkerOnly:
    """A value that can be unpickled on a worker and nowhere else."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> Any:
        return (_unpickle_on_worker_only, (self.value,))


def make_worker_only(value: int) -> WorkerOnly:
    return WorkerOnly(value)


def read_worker_only(data: WorkerOnly) -> int:
    return data.value


def wait_for_event(name: str) -> str:
    """Block a worker thread until the ``distributed.Event`` ``name`` is set."""
    distributed.Event(name).wait()
    return name


def wait_for_number_event(number: int) -> int:
    """Block a worker thread until the ``distributed.Event`` ``number-<number>`` is set."""
    distributed.Event(f"number-{number}").wait()
    return number


def spin_until_cancelled(started: str, stopped: str) -> None:
    """Tell ``started``, then compute until cancelled (checking with dask_anyio.checkpoint);
    tell ``stopped`` on the way out."""
    from dask_anyio import checkpoint

    distributed.Event(started).set()
    try:
        while True:
            checkpoint()
    finally:
        distributed.Event(stopped).set()


async def wait_forever_reporting(port: int) -> None:
    """A coroutine task: say "started" to 127.0.0.1:``port``, wait until cancelled, then say
    "finally" from its finally block."""
    import asyncio

    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"started\n")
    await writer.drain()
    try:
        await asyncio.Event().wait()
    finally:
        writer.write(b"finally\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()


def spin_forever_reporting(port: int) -> None:
    """Tell 127.0.0.1:``port`` this process's pid, then spin without ever checking in."""
    import socket

    connection = socket.create_connection(("127.0.0.1", port))
    connection.sendall(b"%d\n" % os.getpid())
    while True:
        pass


def start_sleeper() -> int:
    """Start a process that sleeps for a minute, and return its pid without waiting."""
    import subprocess

    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]).pid


def write_at_exit(path: str) -> None:
    """Have ``path`` written by an atexit handler of this process."""
    import atexit

    def write() -> None:
        with open(path, "w") as file:
            file.write("ran at exit")

    atexit.register(write)


def checkpoint_as(key: str, *, actor: bool) -> str:
    """Call dask_anyio.checkpoint() in this task's thread as if it ran ``key`` (as an
    actor's method, with ``actor``); say whether it raised."""
    from distributed.utils import set_thread_state

    from dask_anyio import CancelledOnWorker, checkpoint

    with set_thread_state(key=key, actor=actor):
        try:
            checkpoint()
        except CancelledOnWorker:
            return "raised"
    return "returned"


def leave_a_thread_running() -> str:
    """Return at once, leaving a (non-daemon) thread asleep for an hour: the process would
    not exit by itself."""
    import threading
    import time

    threading.Thread(target=time.sleep, args=(3600,)).start()
    return "done"


def exit_process(status: int) -> None:
    """End this process at once with ``status`` (no cleanup, no outcome)."""
    os._exit(status)


def signal_process(signum: int) -> None:
    """Send this process the signal ``signum``."""
    os.kill(os.getpid(), signum)


def set_event(name: str) -> None:
    distributed.Event(name).set()


def mark_started(path: str) -> str:
    """Record that this task started, by creating the file ``path``."""
    Path(path).touch()
    return path


def worker_pid() -> int:
    return os.getpid()


def with_keywords(x: Any, **kwargs: Any) -> dict[str, Any]:
    """Return ``x`` and the keyword arguments, as a dict."""
    return {"x": x, **kwargs}


class RemoteBaseError(BaseException):
    """A BaseException that is not an Exception."""


def raise_base_exception() -> None:
    raise RemoteBaseError("not an Exception")


async def cancel_itself() -> None:
    """An async task that ends with CancelledError on the worker's event loop."""
    import asyncio

    raise asyncio.CancelledError


def make_bytes(size: int) -> bytes:
    """``size`` bytes, not all alike."""
    return bytes(range(256)) * (size // 256)


def gated(item: Any) -> Any:
    """Return ``item``; for ``("wait", name)``, first wait for the event ``name``."""
    if isinstance(item, tuple) and item[0] == "wait":
        distributed.Event(item[1]).wait()
    return item


def fail_on(item: int, bad: int) -> int:
    """Return ``item``, or raise ``RemoteOnlyError`` if it is ``bad``."""
    if item == bad:
        raise RemoteOnlyError(f"item {item} is bad")
    return item


class KeyCounter(SchedulerPlugin):
    """On the scheduler: the most keys starting with ``prefix`` held at any one moment."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.held: set[str] = set()
        self.max_held = 0
        self.created = 0

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if not str(key).startswith(self.prefix):
            return
        if finish == "forgotten":
            self.held.discard(str(key))
        else:
            if str(key) not in self.held:
                self.created += 1
            self.held.add(str(key))
        self.max_held = max(self.max_held, len(self.held))


def key_counts(dask_scheduler: Any, name: str) -> dict[str, int]:
    plugin = dask_scheduler.plugins[name]
    return {"max_held": plugin.max_held, "held": len(plugin.held), "created": plugin.created}


async def add_async(x: int, y: int) -> int:
    """A coroutine function: Dask runs it on the worker's event loop."""
    import asyncio

    await asyncio.sleep(0)
    return x + y


def count_call(path: str, value: Any) -> Any:
    """Append a line to the file ``path`` (a count of the calls) and return ``value``."""
    with open(path, "a") as file:
        file.write("called\n")
    return value


def worker_address() -> str:
    """The address of the worker running this task."""
    return str(distributed.get_worker().address)
