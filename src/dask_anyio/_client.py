"""asyncio core: the executor's :class:`distributed.Client`, which never blocks the event loop.

Dask's blocking API (``dask.compute``, ``.compute()``, ``Future.result()``, ``Lock.acquire()``,
``performance_report()``...) finds the executor's client as the current client, and runs
on it from any thread. From the thread of the caller's event loop it would block that loop
until the scheduler answered: there the client refuses, with an error that says what to use.
Knows nothing of anyio or trio; the executor tells it which thread is the loop's.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import distributed
from distributed.client import _current_client, _set_global_client

__all__ = ["BLOCKING_ON_THE_LOOP", "Client", "current_client", "make_default"]

#: What a blocking call of Dask's on the event loop's thread raises.
BLOCKING_ON_THE_LOOP = (
    "this call of Dask's blocking API would block the event loop until the scheduler "
    "answers: on the event loop use the DaskExecutor's own methods (`await ex.compute(x)`, "
    "`await ex.run(fn)`, `await ex.call_client(fn)`), or make the blocking call in a worker "
    "thread: `await anyio.to_thread.run_sync(fn)`"
)


class Client(distributed.Client):
    """A :class:`distributed.Client` whose blocking calls refuse to run on one thread."""

    #: The thread whose blocking calls are refused (that of the caller's event loop, when
    #: the client runs on another loop's thread), or ``None``.
    never_block: int | None = None

    def sync(
        self,
        func: Any,
        *args: Any,
        asynchronous: bool | None = None,
        callback_timeout: Any = None,
        **kwargs: Any,
    ) -> Any:
        """As :meth:`distributed.Client.sync`, but a call that would block the thread
        :attr:`never_block` raises :exc:`RuntimeError` instead."""
        if self.never_block == threading.get_ident() and not asynchronous and not self.asynchronous:
            raise RuntimeError(BLOCKING_ON_THE_LOOP)
        return super().sync(  # type: ignore[no-untyped-call]  # (distributed's, untyped)
            func, *args, asynchronous=asynchronous, callback_timeout=callback_timeout, **kwargs
        )


@contextlib.contextmanager
def current_client(client: distributed.Client, never_block: int | None) -> Iterator[None]:
    """Make ``client`` Dask's current client in the calling context: the task that enters,
    the tasks it starts and the worker threads they start (anyio copies the context), as
    :meth:`distributed.Client.as_current` does, but without setting Dask's global
    configuration (``as_current`` sets ``scheduler``, for every thread and task, and
    overlapping executors would restore it out of order). Its blocking calls refuse to run
    on the thread ``never_block``.
    """
    if isinstance(client, Client):
        client.never_block = never_block
    token = _current_client.set(client)
    try:
        yield
    finally:
        # (left from another context, a later notebook cell say: it was not set there)
        with contextlib.suppress(ValueError):
            _current_client.reset(token)


def make_default(client: distributed.Client) -> None:
    """Make ``client`` (if it is one of ours) Dask's default client, for every task and
    thread, as ``Client()`` makes itself unless ``set_as_default=False``: for an executor
    opened with ``open()``, whose scope no caller's task holds (a notebook's later cells are
    tasks of their own, with contexts of their own). Closing the client undoes it."""
    if isinstance(client, Client):
        _set_global_client(client)
