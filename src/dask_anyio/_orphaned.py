"""A Dask preload (``--preload`` of ``dask scheduler``, ``--preload-nanny`` of ``dask worker``)
that closes its server once the process that started it has gone: the pytest plugin's
cluster does not outlive a test run that was killed (``os._exit``, SIGKILL, a crashed
pytest-xdist worker). The starting process's pid is in ``DASK_ANYIO_PARENT_PID``."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from tornado.ioloop import PeriodicCallback

__all__ = ["PARENT_PID", "dask_setup"]

#: The environment variable that names the process whose end closes the server.
PARENT_PID = "DASK_ANYIO_PARENT_PID"
#: How often the server looks, in seconds.
INTERVAL = 1.0

logger = logging.getLogger("dask_anyio")


def dask_setup(server: Any) -> None:
    """Dask calls this when the preload is loaded into a scheduler or a nanny."""
    given = os.environ.get(PARENT_PID)
    if not given:
        return
    parent = int(given)
    closing: list[asyncio.Task[Any]] = []  # (a reference: the task must not be collected)

    def look() -> None:
        # A child of a process that ended is handed to another parent (init, a subreaper).
        if os.getppid() != parent and not closing:
            logger.warning("the process that started this %s ended: closing", type(server).__name__)
            closing.append(asyncio.ensure_future(server.close()))

    server.periodic_callbacks["dask-anyio-orphaned"] = PeriodicCallback(look, INTERVAL * 1000)
