"""dask-anyio: submit work to a Dask cluster from asyncio and trio, with structured concurrency.

Layers, lowest first; a module uses only the public names of the modules below it (the
order is in ``tests/test_layers.py``, which fails on an import that points up):

* shared: ``_errors`` (exceptions, cancel reasons), ``_logs``, ``_diagnose``, ``_client``.
* worker side: ``_child`` (the warm process of ``kill_on_cancel`` calls, and the processes it
  forks), ``_warm`` (a worker's pool of them), ``_running`` (the running task, as its code
  sees it), ``_remote`` (``checkpoint``, ``kill_on_cancel``), run in workers.
* ``_forget``, ``_transfer``, ``_leases``, ``_exchange``, ``_connect``, ``_core``: the
  asyncio core, one asynchronous :class:`distributed.Client` (and perhaps a cluster) on one
  asyncio loop. Knows nothing of anyio or trio.
* ``_token``, ``_bridge``: the thread bridge. :meth:`LoopToken.run_sync_soon` is the one
  primitive that crosses threads; ``open_core_runner`` picks, once per executor, whether
  the core runs on the caller's asyncio loop or on a private asyncio loop thread (under
  trio).
* the anyio front end, on the caller's loop: ``_handle`` (a thin :class:`TaskHandle` over its
  state record), ``_options``, ``_gate``, ``_watch``, ``_tasks`` (the task table), ``_fetch``,
  the iterators (``_completed``, ``_streams``), ``_scope`` (entering and the exit rules),
  ``_work``, the scheduler's primitives (``_primitives``: locks and semaphores; ``_shared``:
  queues, events, variables; ``_actor``), diagnostics (``_reports``), and the façade
  :class:`DaskExecutor` (``_lifetime``, ``_coordination``, ``_executor``), then task trees
  (``_subtasks``: executors owned by a task on a worker).
* ``_cli`` and ``_demo``: the ``dask anyio`` command line.
"""

from ._actor import Actor as Actor
from ._completed import AsCompleted as AsCompleted
from ._errors import SchedulerLost as SchedulerLost
from ._errors import TaskCancelled as TaskCancelled
from ._executor import DaskExecutor as DaskExecutor
from ._handle import ExecutorStatistics as ExecutorStatistics
from ._handle import TaskHandle as TaskHandle
from ._handle import TaskStatus as TaskStatus
from ._primitives import Lock as Lock
from ._primitives import Semaphore as Semaphore
from ._remote import CancelledOnWorker as CancelledOnWorker
from ._remote import checkpoint as checkpoint
from ._remote import kill_on_cancel as kill_on_cancel
from ._reports import PerformanceReport as PerformanceReport
from ._reports import TaskStream as TaskStream
from ._shared import Event as Event
from ._shared import Queue as Queue
from ._shared import Variable as Variable
from ._streams import ResultStream as ResultStream
from ._subtasks import run_async as run_async
from ._subtasks import subtasks as subtasks

__all__ = [
    "Actor",
    "AsCompleted",
    "CancelledOnWorker",
    "DaskExecutor",
    "Event",
    "ExecutorStatistics",
    "Lock",
    "PerformanceReport",
    "Queue",
    "ResultStream",
    "SchedulerLost",
    "Semaphore",
    "TaskCancelled",
    "TaskHandle",
    "TaskStatus",
    "TaskStream",
    "Variable",
    "checkpoint",
    "kill_on_cancel",
    "run_async",
    "subtasks",
]
__version__ = "0.1.0.dev0"
