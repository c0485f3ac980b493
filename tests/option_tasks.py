"""Task functions for tests/test_options.py, importable by workers as ``tests.option_tasks``.

Every function that blocks takes a timeout, so that a failing test never leaves a worker
thread blocked for good.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import distributed

#: How long a blocking task waits at most, in seconds (well under pytest's timeout).
BLOCK_TIMEOUT = 30.0


class FlakyError(Exception):
    """Raised by :func:`fail_then_succeed` while it has failures left."""


def fail_then_succeed(counter: str, failures: int, **_ignored: Any) -> int:
    """Count this attempt in the file ``counter``; fail the first ``failures`` attempts.

    :return: the number of the attempt that succeeded (1 for the first).
    """
    with Path(counter).open("a") as file:
        file.write("attempt\n")
    attempt = len(Path(counter).read_text().splitlines())
    if attempt <= failures:
        raise FlakyError(f"attempt {attempt} of {counter} fails")
    return attempt


def hold_slot(started: str, release: str, timeout: float = BLOCK_TIMEOUT) -> bool:
    """Set the ``distributed.Event`` ``started``, then block until ``release`` is set.

    :return: whether ``release`` was set within ``timeout`` seconds.
    """
    distributed.Event(started).set()
    return bool(distributed.Event(release).wait(timeout))


def wait_event(name: str, timeout: float = BLOCK_TIMEOUT) -> bool:
    """Block until the ``distributed.Event`` ``name`` is set; return whether it was, in time."""
    return bool(distributed.Event(name).wait(timeout))


def set_events(*names: str) -> None:
    for name in names:
        distributed.Event(name).set()


def meet(mine: str, other: str, timeout: float = BLOCK_TIMEOUT) -> bool:
    """Set the event ``mine`` and wait for ``other``: two of these succeed only if they run at
    the same time."""
    distributed.Event(mine).set()
    return bool(distributed.Event(other).wait(timeout))


def append_tag(path: str, tag: str) -> str:
    """Append ``tag`` as a line to the file ``path`` (records the order tasks ran in)."""
    with Path(path).open("a") as file:
        file.write(f"{tag}\n")
    return tag


def worker_name(*_args: Any, **_kwargs: Any) -> str:
    """The name of the worker running this task (whatever the arguments)."""
    return str(distributed.get_worker().name)


def noop(*_args: Any) -> None:
    """Do nothing (a task used as a barrier)."""


def current_key_and_kwargs(**kwargs: Any) -> tuple[str, dict[str, Any]]:
    """The key of the task running this call, and the keyword arguments it got."""
    return str(distributed.get_worker().get_current_task()), kwargs


def task_states_on_worker(keys: list[str], dask_worker: distributed.Worker) -> dict[str, str]:
    """For ``Client.run``: the worker's state of each of ``keys`` (``"absent"`` if unknown)."""
    tasks = dask_worker.state.tasks
    return {key: tasks[key].state if key in tasks else "absent" for key in keys}
