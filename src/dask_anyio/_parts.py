"""The parts of an executor that its iterators (as_completed, imap's streams) work with,
given to them as one record: they never see the executor."""

from __future__ import annotations

from dataclasses import dataclass

import anyio.abc

from ._bridge import LoopToken
from ._fetch import Fetcher
from ._gate import Gate
from ._tasks import TaskTable
from ._watch import Watcher

__all__ = ["Parts"]


@dataclass(frozen=True)
class Parts:
    """The parts of an executor that its streams work with."""

    gate: Gate
    table: TaskTable
    watcher: Watcher
    fetcher: Fetcher
    #: The executor's task group, where a stream's feeder runs.
    tg: anyio.abc.TaskGroup
    #: The executor's event loop.
    front: LoopToken
