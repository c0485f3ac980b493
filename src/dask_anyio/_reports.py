"""anyio front end: Dask's diagnostics around code of either backend: a performance
report (:class:`PerformanceReport`), the task stream (:class:`TaskStream`), a progress bar
(:func:`progress`). Dask's own context managers find "the current client" and block, or run
only on the client's asyncio loop; these run Dask's requests on the core loop and write
files in a worker thread."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Iterable, Mapping
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import anyio
import anyio.lowlevel
import anyio.to_thread
import distributed

from ._handle import TaskHandle, TaskStatus, check_owner

if TYPE_CHECKING:
    from ._scope import ExecutorScope

__all__ = ["PerformanceReport", "TaskStream", "calling_code", "progress"]


def calling_code(frame: FrameType | None) -> str:
    """The source of the function (or module) that ``frame`` runs, for the report."""
    try:
        return inspect.getsource(frame.f_code) if frame is not None else "<Code not available>"
    except (OSError, TypeError):
        return "<Code not available>"


async def _report_start(client: distributed.Client) -> tuple[float, int]:
    """On the core loop: the report's start time and the scheduler's monitor count."""
    start = time.time()
    count: int = await client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.monitor.count)
    await client.get_task_stream(start=0, stop=0)  # (the scheduler's task stream plugin)
    return start, count


async def _report_html(
    client: distributed.Client, start: float, count: int, code: str, mode: str | None
) -> str:
    scheduler = client.scheduler
    assert scheduler is not None
    html: str = await scheduler.performance_report(
        start=start, last_count=count, code=code, mode=mode
    )
    return html


def _write(filename: str, text: str, storage_options: Mapping[str, Any]) -> None:
    import fsspec  # type: ignore[import-untyped]  # (dask's dependency; Dask writes with it)

    with fsspec.open(filename, mode="w", compression="infer", **storage_options) as file:
        file.write(text)


class PerformanceReport:
    """``async with ex.performance_report("report.html"):``: Dask's performance report (the
    dashboard's plots, the profile, the code) of what ran while the block ran, written to
    ``filename`` however the block is left. Made by :meth:`DaskExecutor.performance_report`.
    """

    def __init__(
        self,
        scope: ExecutorScope,
        filename: str,
        mode: str | None,
        storage_options: Mapping[str, Any],
        code: str,
    ) -> None:
        self._scope = scope
        #: Where the report is written (a path, or a URL that fsspec opens).
        self.filename: str = filename
        self._mode = mode
        self._storage_options = dict(storage_options)
        self._code = code
        self._started: tuple[float, int] | None = None

    async def __aenter__(self) -> Self:
        scope = self._scope
        scope.gate.check_open()
        await anyio.lowlevel.checkpoint_if_cancelled()
        self._started = await scope.runner.run(scope.core.call, _report_start, (), {})
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope, started = self._scope, self._started
        assert started is not None
        arguments = (*started, self._code, self._mode)
        with anyio.CancelScope(shield=True):  # (written however the block is left)
            scope.gate.check_open(fetching=True)
            try:
                html = await scope.runner.run(scope.core.call, _report_html, arguments, {})
            except ImportError as error:  # (the scheduler's, without bokeh)
                raise RuntimeError(
                    "the scheduler cannot make a performance report without bokeh: install "
                    "it where the scheduler runs (pip install 'dask-anyio[dashboard]')"
                ) from error
            await anyio.to_thread.run_sync(_write, self.filename, html, self._storage_options)


class TaskStream:
    """``async with ex.task_stream() as ts:``: the tasks that ran on the cluster while the
    block ran, in :attr:`data` once it is left (as Dask's ``get_task_stream``). Made by
    :meth:`DaskExecutor.task_stream`."""

    def __init__(self, scope: ExecutorScope, plot: bool | Literal["save"], filename: str) -> None:
        self._scope = scope
        self._stream: distributed.get_task_stream | None = None
        self._plot = plot
        self._filename = filename
        #: One dict per task run (key, worker, start and stop times...), after the block.
        self.data: list[dict[str, Any]] = []
        #: The bokeh figure of the stream, after the block, if ``plot`` was asked for.
        self.figure: Any = None

    async def __aenter__(self) -> Self:
        scope = self._scope
        scope.gate.check_open()
        await anyio.lowlevel.checkpoint_if_cancelled()
        self._stream = await scope.runner.run(scope.core.call, _stream_start, (self,), {})
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope, stream = self._scope, self._stream
        assert stream is not None
        with anyio.CancelScope(shield=True):  # (collected however the block is left)
            scope.gate.check_open(fetching=True)
            await scope.runner.run(scope.core.call, _stream_end, (stream,), {})
        self.data.extend(stream.data)
        self.figure = stream.figure


async def _stream_start(client: distributed.Client, ours: TaskStream) -> Any:
    stream = distributed.get_task_stream(client, plot=ours._plot, filename=ours._filename)
    await stream.__aenter__()
    return stream


async def _stream_end(client: distributed.Client, stream: Any) -> None:
    await stream.__aexit__(None, None, None)


@functools.cache
def _bar_type() -> Any:
    """tqdm's bar for the place (a notebook widget, or text), without tqdm's monitor
    thread, which would outlive the bar (it lives as long as the process); it only adjusts
    ``miniters`` of bars that seldom update, and this one updates once per task."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    class Bar(tqdm):  # type: ignore[misc]
        monitor_interval = 0

    return Bar


async def progress(
    scope: ExecutorScope, handles: Iterable[TaskHandle[Any]], description: str | None
) -> None:
    """A progress bar (tqdm's: a widget in notebooks, text on stderr otherwise) of
    ``handles`` until all are done, failed and cancelled ones counted. Checkpoint; it
    observes no failure (they are still to be awaited)."""
    handles = list(handles)
    for handle in handles:
        check_owner(handle, scope.table)
    await anyio.lowlevel.checkpoint_if_cancelled()
    all_done = anyio.Event()
    left = len(handles)
    failed = 0
    bar_type = _bar_type()
    with bar_type(
        total=len(handles), desc=description or "tasks", unit="task", disable=None
    ) as bar:

        def one_done(handle: TaskHandle[Any]) -> None:
            nonlocal left, failed
            left -= 1
            if handle.status in (TaskStatus.ERROR, TaskStatus.CANCELLED):
                failed += 1
                bar.set_postfix(failed=failed, refresh=False)
            bar.update()
            if not left:
                all_done.set()

        callbacks = [functools.partial(one_done, handle) for handle in handles]
        try:
            for handle, callback in zip(handles, callbacks, strict=True):
                scope.parts.watcher.watch(handle, callback)
            if left:
                await all_done.wait()
        finally:
            for handle, callback in zip(handles, callbacks, strict=True):
                scope.parts.watcher.unwatch(handle, callback)
