"""``dask anyio demo``: a short walk-through of dask-anyio on a cluster, printed step by
step."""

from __future__ import annotations

import operator
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TextIO

import anyio
import cloudpickle
from tqdm import tqdm  # type: ignore[import-untyped]

from ._executor import DaskExecutor

__all__ = ["demo"]

# Workers of an external cluster may not have dask_anyio installed: send this module's
# functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: How many tasks the progress-bar step maps over.
MAP_ITEMS = 20


def slow(value: int, delay: float) -> int:
    """Return ``value`` after ``delay`` seconds."""
    time.sleep(delay)
    return value


def nap(seconds: float) -> None:
    """Sleep ``seconds`` in naps of 10 ms, checking in between: a cancelled call stops at
    once. (On a worker without dask-anyio installed, it sleeps to the end.)"""
    check: Callable[[], None] | None
    try:
        from dask_anyio import checkpoint as check
    except ImportError:
        check = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check is not None:
            check()
        time.sleep(0.01)


def _task_keys(dask_scheduler: Any) -> list[str]:
    return sorted(str(key) for key in dask_scheduler.tasks)


#: What to install for Dask's dashboard (it needs bokeh): dask-anyio's extra that brings it.
DASHBOARD_INSTALL = "pip install 'dask-anyio[dashboard]'"

DashboardState = Literal["served", "no bokeh", "off"]


def _dashboard_state(dask_scheduler: Any) -> DashboardState:
    """Whether the scheduler serves its dashboard: ``"served"``; ``"no bokeh"`` if it cannot
    (Dask's dashboard module, which needs bokeh>=3.1, does not import where it runs: the
    link then shows only "Dask needs bokeh"); ``"off"`` if it was started without one."""
    applications = getattr(dask_scheduler.http_application, "applications", [])
    # (by name: bokeh may not be importable here; Dask serves a subclass of bokeh's class)
    if any(c.__name__ == "BokehTornado" for app in applications for c in type(app).__mro__):
        return "served"
    try:
        import distributed.dashboard.scheduler  # noqa: F401
    except ImportError:
        return "no bokeh"
    return "off"


def dashboard_line(link: str | None, state: DashboardState) -> str:
    """The demo's line about the dashboard at ``link``, in the ``state`` the scheduler
    said (see :func:`_dashboard_state`)."""
    if link is None or state == "off":
        return "dashboard: none (the scheduler serves none)"
    if state == "no bokeh":
        return f"dashboard: {link} (needs bokeh where the scheduler runs: {DASHBOARD_INSTALL})"
    return f"dashboard: {link}"


async def _dashboard(ex: DaskExecutor) -> str:
    link = ex.dashboard_link
    if link is None:
        return dashboard_line(None, "off")
    state: DashboardState = await ex.call_client(
        lambda client: client.run_on_scheduler(_dashboard_state)
    )
    return dashboard_line(link, state)


async def _scheduler_keys(ex: DaskExecutor) -> list[str]:
    keys: list[str] = await ex.call_client(lambda client: client.run_on_scheduler(_task_keys))
    return keys


@contextmanager
def progress_bar(
    total: int, *, show: bool | None, file: TextIO, desc: str
) -> Iterator[Callable[[], object]]:
    """A tqdm bar on ``file``, given as a function to call once per finished task.

    ``show=None`` shows it only if ``file`` is a terminal (tqdm's own rule): in a log, a bar
    is a stream of carriage returns, and the demo's text lines tell the step anyway. Without
    a bar no tqdm object is made at all.
    """
    if show is None:
        show = file.isatty()
    if not show:
        yield lambda: None
        return
    with _Bar(total=total, desc=desc, unit="task", file=file) as bar:
        yield bar.update


class _Bar(tqdm):  # type: ignore[misc]
    """A tqdm bar without tqdm's monitor thread, which would outlive the bar (it lives as
    long as the process). It only adjusts ``miniters`` of bars that seldom update; this one
    is updated once per finished task."""

    monitor_interval = 0


async def demo(
    address: str | None,
    *,
    delay: float = 0.5,
    say: Callable[[str], Any] = print,
    progress: bool | None = None,
    progress_file: TextIO | None = None,
) -> None:
    """Submit dependent tasks, run a call, map with a progress bar and cancel a long call,
    saying what happens at each step.

    Text goes to ``say``; the bar goes to ``progress_file`` (default: ``sys.stderr``), if
    ``progress`` is true, or if it is ``None`` and that file is a terminal.
    """
    bar_file = sys.stderr if progress_file is None else progress_file
    backend = anyio.lowlevel.current_token().backend_class.__module__.rsplit("_", 1)[-1]
    options: dict[str, Any] = {} if address else {"n_workers": 2, "threads_per_worker": 2}
    say(f"dask-anyio demo on {backend}: connecting to {address or 'an embedded LocalCluster'}")
    async with DaskExecutor(address, **options) as ex:
        scheduler = ex.client.scheduler
        assert scheduler is not None
        say(f"scheduler: {scheduler.address}")
        say(await _dashboard(ex))
        a = ex.submit(slow, 2, delay)
        b = ex.submit(slow, 5, delay)
        c = ex.submit(operator.add, a, b)
        say(f"submitted a = slow(2), b = slow(5), c = a + b, each taking {delay:g} s")
        await c
        say("awaited c: done, and nothing was transferred to the client")
        say(f"retrieve(c) = {await ex.retrieve(c)}")
        say(f"run(operator.add, 1, 2) = {await ex.run(operator.add, 1, 2)}")
        item_delay = delay / 2
        handles = ex.map(slow, range(1, MAP_ITEMS + 1), delay=item_delay)
        say(f"map(slow, 1..{MAP_ITEMS}): {MAP_ITEMS} tasks of {item_delay:g} s each ...")
        started = time.monotonic()
        # The bar is closed before the next line is said: both may go to one terminal.
        with progress_bar(len(handles), show=progress, file=bar_file, desc="map(slow)") as tick:
            async for _handle in ex.as_completed(handles):
                tick()
        say(
            f"... as_completed: all {len(handles)} done after "
            f"{time.monotonic() - started:.2f} s; sum of gather(handles) = "
            f"{sum(await ex.gather(handles))}"
        )
        say("run(nap, 60) inside move_on_after(1); nap calls dask_anyio.checkpoint() ...")
        started = time.monotonic()
        with anyio.move_on_after(1) as scope:
            await ex.run(nap, 60)
        napping = [k for k in await _scheduler_keys(ex) if k.startswith("nap-")]
        say(
            f"... cancelled={scope.cancelled_caught} after {time.monotonic() - started:.2f} s; "
            f"nap tasks the scheduler still holds: {napping or 'none, it forgot the task'}; "
            "the worker stopped it at its next checkpoint"
        )
    say("executor closed: keys released" + ("" if address else ", embedded cluster shut down"))
