"""dask-anyio: submit work to a Dask cluster from asyncio and trio, with structured concurrency.

Layers, lowest first; a higher layer uses only the public functions of the lower ones:

* ``_core``: the asyncio core, one asynchronous :class:`distributed.Client` (and perhaps a
  cluster) on one asyncio loop. Knows nothing of anyio or trio.
* ``_bridge``: the thread bridge. :meth:`LoopToken.run_sync_soon` is the one primitive that
  crosses threads; ``open_core_runner`` picks, once per executor, whether the core runs on the
  caller's asyncio loop or on a private asyncio loop thread (under trio).
* ``_handle``, ``_streams`` and ``_executor``: the anyio front end, :class:`DaskExecutor`,
  :class:`TaskHandle` and the iterators over tasks, running on the caller's loop.
* ``_cli`` and ``_demo``: the ``dask anyio`` command line.
"""

from ._executor import DaskExecutor as DaskExecutor
from ._handle import ExecutorStatistics as ExecutorStatistics
from ._handle import SchedulerLost as SchedulerLost
from ._handle import TaskCancelled as TaskCancelled
from ._handle import TaskHandle as TaskHandle
from ._handle import TaskStatus as TaskStatus
from ._remote import CancelledOnWorker as CancelledOnWorker
from ._remote import checkpoint as checkpoint
from ._remote import kill_on_cancel as kill_on_cancel
from ._streams import AsCompleted as AsCompleted
from ._streams import ResultStream as ResultStream

__all__ = [
    "AsCompleted",
    "CancelledOnWorker",
    "DaskExecutor",
    "ExecutorStatistics",
    "ResultStream",
    "SchedulerLost",
    "TaskCancelled",
    "TaskHandle",
    "TaskStatus",
    "checkpoint",
    "kill_on_cancel",
]
__version__ = "0.1.0.dev0"
