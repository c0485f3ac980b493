"""The benchmark page's targets, and the report's table of them: each target met or not."""

from __future__ import annotations

from typing import Any

__all__ = ["P95_TARGETS_MS", "TARGETS", "table_row", "targets_table"]

#: Targets of issue 5, as ratios to the baseline (or, for cancel latency, p95 in ms).
TARGETS = {
    ("map throughput", "dask-anyio-asyncio"): 0.95,
    ("map throughput", "dask-anyio-trio"): 0.90,
    ("submit throughput", "dask-anyio-asyncio"): 0.95,
    ("submit throughput", "dask-anyio-trio"): 0.90,
    ("round trip", "dask-anyio-asyncio"): 1.10,
    ("round trip", "dask-anyio-trio"): 1.20,
    # Issue 18: the client's CPU time per task (every thread of its process).
    ("map: client CPU per task", "dask-anyio-asyncio"): 1.2,
    ("map: client CPU per task", "dask-anyio-trio"): 1.2,
    ("submit: client CPU per task", "dask-anyio-asyncio"): 1.2,
    ("submit: client CPU per task", "dask-anyio-trio"): 1.2,
    ("memory per pending task", "dask-anyio-asyncio"): 2.0,
    ("memory per pending task", "dask-anyio-trio"): 2.0,
}
#: metric -> the most its median may be, for the dask-anyio contenders. Issue 18: a
#: kill_on_cancel call costs at most 1.3x a plain one.
MEDIAN_TARGETS = {
    "kill_on_cancel / plain call: builtin": 1.3,
    "kill_on_cancel / plain call: imports distributed": 1.3,
}
#: metric -> (contender, reference, most): the contender's median at most ``most`` times
#: the reference's, in the same run. Issue 18: trio's loop as responsive as asyncio's.
PAIRED_TARGETS = {"loop lateness p99": ("dask-anyio-trio", "dask-anyio-asyncio", 1.5)}
CANCEL_P95_TARGET_MS = 50.0
#: Issue 7: a running task stops within this long of its caller's cancellation (p95).
STOP_P95_TARGET_MS = 200.0
#: metric -> its target as a p95 in ms, for the dask-anyio contenders.
P95_TARGETS_MS = {
    "cancel to forgotten": CANCEL_P95_TARGET_MS,
    "stop: checkpoint()": STOP_P95_TARGET_MS,
    "stop: coroutine": STOP_P95_TARGET_MS,
    "stop: kill_on_cancel": STOP_P95_TARGET_MS,
    # Issue 17: a cancelled root's tree of 15 tasks gone from the scheduler.
    "tree: cancel to all forgotten": STOP_P95_TARGET_MS,
}


def targets_table(table: dict[str, Any]) -> list[str]:
    lines = [table_row("target", "contender", "goal", "measured", "met"), table_row(*["---"] * 5)]
    for name, row in table.items():
        lines += _median_targets(name, row)
        for contender, cell in row["contenders"].items():
            goal = TARGETS.get((row["metric"], contender))
            sign = ">=" if row["higher_is_better"] else "<="
            if goal is not None and "ratio" in cell:
                ratio = cell["ratio"]
                met = ratio >= goal if row["higher_is_better"] else ratio <= goal
                lines.append(
                    table_row(name, contender, f"{sign} {goal:.2f}x", f"{ratio:.2f}x", _met(met))
                )
            elif goal is not None:  # no figure: the target is not met
                missing = "fails" if cell["errors"] else "n/a"
                lines.append(
                    table_row(name, contender, f"{sign} {goal:.2f}x", missing, _met(False))
                )
            goal_p95 = P95_TARGETS_MS.get(row["metric"])
            if goal_p95 is not None and contender.startswith("dask-anyio"):
                goal_ms = f"<= {goal_p95:.0f} ms (p95)"
                if cell["p95"] is None:
                    lines.append(table_row(name, contender, goal_ms, "fails", _met(False)))
                else:
                    met = cell["p95"] <= goal_p95
                    measured = f"{cell['p95']:.1f} ms"
                    lines.append(table_row(name, contender, goal_ms, measured, _met(met)))
    return lines


def _median_targets(name: str, row: dict[str, Any]) -> list[str]:
    """The rows of a metric's targets on its median (:data:`MEDIAN_TARGETS`,
    :data:`PAIRED_TARGETS`); a missing figure is a target not met."""
    lines = []
    cells = row["contenders"]
    most = MEDIAN_TARGETS.get(row["metric"])
    for contender, cell in cells.items():
        if most is not None and contender.startswith("dask-anyio"):
            median = cell["median"]
            measured = "fails" if median is None else f"{median:.2f}x"
            met = median is not None and median <= most
            lines.append(table_row(name, contender, f"<= {most:.2f}x", measured, _met(met)))
    if row["metric"] in PAIRED_TARGETS:
        contender, reference, most = PAIRED_TARGETS[row["metric"]]
        mine = cells.get(contender, {}).get("median")
        theirs = cells.get(reference, {}).get("median")
        goal = f"<= {most:.2f}x {reference}'s"
        if mine is None or not theirs:
            lines.append(table_row(name, contender, goal, "n/a", _met(False)))
        else:
            quotient = mine / theirs
            lines.append(
                table_row(name, contender, goal, f"{quotient:.2f}x", _met(quotient <= most))
            )
    return lines


def table_row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _met(met: bool) -> str:
    return "yes" if met else "**no**"
