"""Summaries of a benchmark run: statistics, ratios to the baseline, markdown and a chart."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from .contenders import BASELINE, CONTENDERS
from .targets import TARGETS, table_row, targets_table


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linearly interpolated."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


#: metric -> (workload prefix, how to get samples from one repetition, unit, higher is better)
METRICS: dict[str, tuple[str, str, str, bool]] = {
    "map throughput": ("map", "tasks_per_s", "tasks/s", True),
    "submit throughput": ("submit", "tasks_per_s", "tasks/s", True),
    "map: client CPU per task": ("map", "cpu_per_task", "µs", False),
    "submit: client CPU per task": ("submit", "cpu_per_task", "µs", False),
    "round trip": ("round_trip", "samples", "ms", False),
    "chain": ("chain", "seconds", "ms", False),
    "fan-in": ("fan_in", "seconds", "ms", False),
    "cancel to forgotten": ("cancel_latency", "forgotten", "ms", False),
    "cancel: scope exit (unlike: see notes)": ("cancel_latency", "scope_exit", "ms", False),
    "storm: all forgotten": ("cancel_storm", "all_forgotten", "ms", False),
    "storm: scope exit (unlike: see notes)": ("cancel_storm", "scope_exit", "ms", False),
    "stop: checkpoint()": ("stop_checkpoint", "stopped", "ms", False),
    "stop: coroutine": ("stop_coroutine", "stopped", "ms", False),
    "stop: kill_on_cancel": ("stop_killed", "stopped", "ms", False),
    "kill_on_cancel round trip: builtin": ("kill_on_cancel_trip", "samples", "ms", False),
    "kill_on_cancel overhead: builtin": ("kill_on_cancel_trip", "overhead", "ms", False),
    "kill_on_cancel overhead: imports distributed": (
        "kill_on_cancel_trip",
        "overhead_heavy",
        "ms",
        False,
    ),
    "kill_on_cancel / plain call: builtin": ("kill_on_cancel_trip", "ratio", "x", False),
    "kill_on_cancel / plain call: imports distributed": (
        "kill_on_cancel_trip",
        "ratio_heavy",
        "x",
        False,
    ),
    "tree: cancel to all forgotten": ("tree_cancel", "all_forgotten", "ms", False),
    "subtasks(): round trip": ("subtasks_cost", "subtasks", "ms", False),
    "subtasks(): overhead": ("subtasks_cost", "overhead", "ms", False),
    "loop lateness": ("loop_lateness", "lateness", "ms", False),
    "loop lateness p99": ("loop_lateness", "lateness_p99", "ms", False),
    "loop lateness max": ("loop_lateness", "lateness_max", "ms", False),
    "memory per pending task": ("memory_per_pending", "bytes_per_task", "bytes", False),
    "large result": ("large_result", "seconds", "ms", False),
}


def _samples(rep: dict[str, Any], workload: str, field: str, unit: str) -> list[float]:
    value = rep.get(workload, {}).get(field)
    if isinstance(value, list):
        found = [float(v) for v in value]
    elif isinstance(value, int | float):
        found = [float(value)]
    else:
        found = []
    return [v * 1000 for v in found] if unit == "ms" else found


def _size(workload: str) -> tuple[str, int]:
    prefix, _, size = workload.partition(":")
    return prefix, int(size)


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    """saturation -> metric (with its size) -> contender -> statistics.

    ``median`` pools every sample of every repetition; ``p95`` is the slow tail (the 95th
    percentile of times, the 5th of throughputs). ``ratio`` is paired: each repetition's
    median against the baseline's median in the same repetition, then the median of those
    (``ratio_low``/``ratio_high`` their range)."""
    summary: dict[str, Any] = {}
    for saturation, per_contender in data["runs"].items():
        workloads = {w for reps in per_contender.values() for rep in reps for w in rep if ":" in w}
        table: dict[str, Any] = {}
        for metric, (prefix, field, unit, higher_better) in METRICS.items():
            for workload in sorted((w for w in workloads if w.startswith(prefix + ":")), key=_size):
                per_rep = {
                    contender: [_samples(rep, workload, field, unit) for rep in reps]
                    for contender, reps in per_contender.items()
                }
                base = per_rep.get(BASELINE, [])
                row = {
                    contender: _statistics(
                        per_contender[contender], workload, samples, base, higher_better
                    )
                    for contender, samples in per_rep.items()
                }
                table[f"{metric} ({workload.split(':')[1]})"] = {
                    "unit": unit,
                    "higher_is_better": higher_better,
                    "metric": metric,
                    "contenders": row,
                }
        summary[saturation] = table
    return summary


def _statistics(
    reps: list[dict[str, Any]],
    workload: str,
    per_rep: list[list[float]],
    base: list[list[float]],
    higher_better: bool,
) -> dict[str, Any]:
    outcomes = [rep.get(workload, {}) for rep in reps]
    errors = [o["error"] for o in outcomes if "error" in o]
    errors += ["wrong result" for o in outcomes if o.get("ok") is False and "error" not in o]
    pooled = [v for samples in per_rep for v in samples]
    cell: dict[str, Any] = {
        "median": statistics.median(pooled) if pooled else None,
        "p95": percentile(pooled, 0.05 if higher_better else 0.95) if pooled else None,
        "n": len(pooled),
        "errors": errors,
        "abandons": any(o.get("abandons") for o in outcomes),
        "runs_on": any(o.get("runs_on") for o in outcomes),
    }
    pairs = [
        statistics.median(mine) / statistics.median(theirs)
        for mine, theirs in zip(per_rep, base, strict=False)
        if mine and theirs and statistics.median(theirs)
    ]
    if pairs and not cell["abandons"]:
        cell["ratio"] = statistics.median(pairs)
        cell["ratio_low"], cell["ratio_high"] = min(pairs), max(pairs)
    return cell


def _cell(cell: dict[str, Any], unit: str) -> str:
    if cell["abandons"]:
        return "abandons (no remote cancel)"
    if cell.get("runs_on"):
        return "runs on (not stopped)"
    if cell["median"] is None:
        return "fails" if cell["errors"] else "n/a"
    digits = 2 if unit == "x" else 0 if unit in ("tasks/s", "bytes") or cell["median"] >= 100 else 1
    text = f"{cell['median']:.{digits}f}"
    if cell["n"] > 1:
        text += f" (p95 {cell['p95']:.{digits}f})"
    if "ratio" in cell:
        text += f" **{cell['ratio']:.2f}x**"
    return text


def _load_line(data: dict[str, Any]) -> list[str]:
    """The machine's 1-minute load average over the run (sampled before each contender's
    process; runs from before the sampling have none)."""
    loads = sorted(x["load"] for x in data.get("loads", []) if x["load"] is not None)
    if not loads:
        return []
    median = loads[len(loads) // 2]
    return [
        f"Load (1-minute average, before each of {len(loads)} processes): median "
        f"{median:.2f}, min {loads[0]:.2f}, max {loads[-1]:.2f}, on "
        f"{data['machine']['usable_cores']} cores."
    ]


def markdown(data: dict[str, Any]) -> str:
    machine = data["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    contenders = [c for c in CONTENDERS if any(c in rows for rows in data["runs"].values())]
    lines = [
        f"# Benchmark results ({data['date']})",
        "",
        f"Machine: {machine['usable_cores']} usable cores of {machine['cores']}, "
        f"{machine['implementation']} {machine['python']}, {machine['platform']}.",
        f"Versions: {versions}.",
        f"Plan: {data['plan']['repetitions']} repetitions, {data['plan']['workers']} worker(s) "
        f"with {data['plan']['threads']} threads; the run took {data['seconds']:.0f} s.",
        *_load_line(data),
        "",
        "Each cell: median (p95 where there are several samples), **ratio to raw-asyncio** "
        "from the same run. Throughput: higher is better; times and memory: lower is better.",
        "",
        "Notes: the *scope exit* rows are unlike. The raw client's cancel queues a message and "
        "returns; dask-anyio's waits until the scheduler confirms that it forgot the task. The "
        "*forgotten* rows, timed on the scheduler, compare like for like. *abandons*: the way "
        "leaves the scope at once and its remote task runs on; there is nothing to compare.",
        "*stop* rows: from the scope's cancel to the end of the task function already running "
        "on the worker (one monotonic clock for the machine); checkpoint() and kill_on_cancel are "
        "dask-anyio's, used by every contender. *runs on (not stopped)*: the remote task is "
        "cancelled, but Dask runs a coroutine function in the worker's own task, which nothing "
        "cancels. *kill_on_cancel overhead*: its round trip minus the same function's plain "
        "one, beside it, for a builtin function (its process imports nothing more) and for a "
        "function whose module imports distributed; *kill_on_cancel / plain call*: the "
        "quotient of those medians (issue 18's target: at most 1.3x).",
        "*tree* and *subtasks()* rows (dask-anyio only: no other contender has task trees): "
        "from the root's cancel to the moment the scheduler forgot the last task and marker of "
        "a running tree of 15 tasks (timed on the scheduler); a coroutine task that opens an "
        "empty subtasks scope, and its cost over a plain coroutine task, pair by pair.",
        "*loop lateness*: how late a heartbeat on the caller's loop (sleeping 5 ms at a time) "
        "wakes while bursts of concurrent run() calls go on; p99 and max per repetition.",
    ]
    if data["skipped"]:
        lines.append("Left out: " + "; ".join(f"{c} ({why})" for c, why in data["skipped"].items()))
    for saturation, table in data["summary"].items():
        lines += ["", f"## worker-saturation = {saturation}", ""]
        lines.append("| workload | unit | " + " | ".join(contenders) + " |")
        lines.append("| --- | --- |" + " --- |" * len(contenders))
        for name, row in table.items():
            cells = [
                _cell(row["contenders"][c], row["unit"]) if c in row["contenders"] else ""
                for c in contenders
            ]
            lines.append(f"| {name} | {row['unit']} | " + " | ".join(cells) + " |")
        lines += ["", *targets_table(table), "", *_scaling(table, contenders)]
        errors = sorted(
            {
                f"{c}, {name}: {e}"
                for name, row in table.items()
                for c, cell in row["contenders"].items()
                for e in cell["errors"]
            }
        )
        if errors:
            lines += ["", "Failures:", *[f"- {e}" for e in errors]]
    return "\n".join(lines) + "\n"


def _scaling(table: dict[str, Any], contenders: list[str]) -> list[str]:
    """Time per task (µs, median) of each throughput workload at each size: flat is good.
    (Nothing for a run without throughput workloads.)"""
    lines = [
        table_row("time per task (µs)", *contenders),
        table_row(*["---"] * (len(contenders) + 1)),
    ]
    if not any(row["unit"] == "tasks/s" for row in table.values()):
        return []
    for name, row in table.items():
        if row["unit"] != "tasks/s":
            continue
        cells = []
        for contender in contenders:
            median = row["contenders"].get(contender, {}).get("median")
            cells.append(f"{1e6 / median:.0f}" if median else "")
        lines.append(table_row(name, *cells))
    return lines


def chart(data: dict[str, Any], path: Path) -> Path | None:
    """Speed relative to the baseline (higher is better; times and memory inverted), one
    panel per worker-saturation setting, bars drawn from 1, each target a black tick
    across its bar. Needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
    except ImportError:
        return None
    summary = data["summary"]
    figure, axes = plt.subplots(len(summary), 1, figsize=(12, 4.6 * len(summary)), squeeze=False)
    for ax, (saturation, table) in zip(axes[:, 0], summary.items(), strict=True):
        names = [n for n in table if table[n]["unit"] != "x"]  # (a quotient of its own)
        contenders = [
            c
            for c in CONTENDERS
            if c != BASELINE and any(c in table[n]["contenders"] for n in names)
        ]
        width = 0.8 / max(len(contenders), 1)
        for i, contender in enumerate(contenders):
            speeds = []
            for name in names:
                ratio = table[name]["contenders"].get(contender, {}).get("ratio", math.nan)
                speeds.append(ratio if table[name]["higher_is_better"] else 1 / ratio)
            xs = [x + i * width for x in range(len(names))]
            ax.bar(xs, [v - 1 for v in speeds], width, bottom=1, label=contender)
            for x, name, speed in zip(xs, names, speeds, strict=True):
                goal = TARGETS.get((table[name]["metric"], contender))
                if goal is not None:  # the target, as a tick across the bar
                    at = goal if table[name]["higher_is_better"] else 1 / goal
                    ax.plot([x], [at], marker="_", markersize=14, color="black")
                if math.isnan(speed):  # say why there is no bar
                    cell = table[name]["contenders"].get(contender)
                    if cell is not None and cell["abandons"]:
                        why = "abandons"
                    elif cell is not None and cell.get("runs_on"):
                        why = "runs on"
                    elif cell is not None and cell["errors"]:
                        why = "fails"
                    else:  # not run (the largest sizes), or its process died first
                        why = "n/a"
                    ax.text(x, 0.97, why, rotation=90, ha="center", va="top", fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(names))])
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(
            "relative to raw-asyncio, log scale\n(higher is better: times and memory inverted)"
        )
        ax.set_title(f"worker-saturation = {saturation}")
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def rerender(output: Path) -> None:
    """Write ``results.md`` and ``results.png`` again from ``results.json`` in ``output``,
    with this version of the report (its statistics, labels and chart)."""
    import json

    data = json.loads((output / "results.json").read_text())
    data["summary"] = summarize(data)
    (output / "results.json").write_text(json.dumps(data, indent=1))
    (output / "results.md").write_text(markdown(data))
    chart(data, output / "results.png")


if __name__ == "__main__":  # python -m dask_anyio_bench.report DIRECTORY
    import sys

    rerender(Path(sys.argv[1]))
