"""How a :class:`~dask_anyio.DaskExecutor` shows itself: its ``repr``, and the HTML table that
Jupyter shows for it. Plain reads of what the executor and Dask's client know already: no
request to the scheduler, safe on any backend."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from dask.utils import format_bytes

from ._gate import Phase
from ._handle import ExecutorStatistics

if TYPE_CHECKING:
    from ._scope import ExecutorScope

__all__ = ["Shown", "executor_html", "executor_repr", "shown"]


class Shown(NamedTuple):
    """What the reprs show: plain reads, no request (the workers as the client last heard
    of them)."""

    state: str
    scheduler: str | None
    dashboard: str | None
    identity: Mapping[str, Any]
    stats: ExecutorStatistics | None


def shown(scope: ExecutorScope, stats: ExecutorStatistics | None) -> Shown:
    """What ``scope``'s executor shows, with its counts ``stats`` if known here."""
    if scope.gate.phase not in (Phase.OPEN, Phase.CLOSING):
        return Shown(scope.gate.phase.value, None, None, {}, stats)
    core = scope.core
    return Shown(
        scope.gate.phase.value,
        core.scheduler_address,
        core.dashboard_link,
        core.scheduler_identity,
        stats,
    )


def _counts(stats: ExecutorStatistics | None) -> str:
    if stats is None:
        return "tasks unknown from this thread"
    return (
        f"{stats.pending} pending, {stats.finished} finished, {stats.failed} failed, "
        f"{stats.cancelled} cancelled"
    )


def executor_repr(shown: Shown) -> str:
    where = f" on {shown.scheduler}" if shown.scheduler else ""
    return f"<DaskExecutor {shown.state}{where}: {_counts(shown.stats)}>"


def executor_html(shown: Shown) -> str:
    """A table: state, scheduler, dashboard link, workers (as the client last heard), tasks."""
    state, scheduler, dashboard, identity, stats = shown
    rows: list[tuple[str, str]] = [("State", html.escape(state))]
    if scheduler:
        rows.append(("Scheduler", f"<code>{html.escape(scheduler)}</code>"))
    if dashboard:
        link = html.escape(dashboard, quote=True)
        rows.append(("Dashboard", f'<a href="{link}" target="_blank">{link}</a>'))
    if "n_workers" in identity:
        memory = identity.get("total_memory")
        workers = f"{identity['n_workers']} ({identity.get('total_threads', '?')} threads"
        workers += f", {format_bytes(memory)})" if isinstance(memory, int) else ")"
        rows.append(("Workers", html.escape(workers)))
    rows.append(("Tasks", html.escape(_counts(stats))))
    if stats is not None:
        rows.append(("Keys held", str(stats.in_flight)))
    left = ' style="text-align: left"'
    body = "".join(f"<tr><th{left}>{name}</th><td{left}>{value}</td></tr>" for name, value in rows)
    return f"<div><strong>DaskExecutor</strong><table>{body}</table></div>"
