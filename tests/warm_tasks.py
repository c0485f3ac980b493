"""Task functions of the warm-process tests (tests/test_warm.py): importable by module
name on the workers. This module imports numpy, as task code often does, and records which
process imported it."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import numpy

#: The process that imported this module.
IMPORTED_BY = os.getpid()
_calls = 0
_kept: list[Any] = []


def process_ids() -> tuple[int, int, int]:
    """This process, its parent, and the process that imported this module."""
    return os.getpid(), os.getppid(), IMPORTED_BY


def count_calls() -> int:
    """How many calls this process's copy of the module has seen, this one included."""
    global _calls
    _calls += 1
    return _calls


def random_number() -> float:
    """A number from numpy's global generator."""
    return float(numpy.random.random())


class LoadedInTheWarmProcess:
    """An argument whose unpickling, in kill_on_cancel's warm process only (the worker
    unpickles it too, as a task's argument), calls ``action(value)`` there."""

    def __init__(self, action: Callable[[Any], None], value: Any) -> None:
        self.action, self.value = action, value

    def __reduce__(self) -> tuple[Any, ...]:
        return (_load, (self.action, self.value))


def _load(action: Callable[[Any], None], value: Any) -> LoadedInTheWarmProcess:
    if sys.argv[0].endswith("_child.py"):
        action(value)
    return LoadedInTheWarmProcess(action, value)


def report_then_spin(port: int) -> None:
    """Tell 127.0.0.1:``port`` this process's pid, then never end."""
    connection = socket.create_connection(("127.0.0.1", port))
    connection.sendall(b"%d\n" % os.getpid())
    while True:
        pass


def note_then_die(path: str) -> None:
    """Append a line to ``path``, then end this process with exit status 7."""
    with open(path, "a") as file:
        file.write("loaded\n")
    os._exit(7)


def use_a_thread_pool(path: str) -> str:
    """Leave a thread pool's worker thread waiting for work (as dask's threaded scheduler
    does), and have ``path`` written at exit: the process must still wind up."""
    import atexit
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1)
    pool.submit(int).result()
    _kept.append(pool)  # (as dask keeps its default pool: not collected at the return)

    def write() -> None:
        with open(path, "w") as file:
            file.write("ran at exit")

    atexit.register(write)
    return "done"
