"""The benchmark runner's own logic: plans, statistics, ratios, targets and what fails a run.
(The runner itself runs for real in CI: `nox -s bench -- --quick`.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dask_anyio_bench import report, runner


def _data(runs: dict[str, Any]) -> dict[str, Any]:
    data = {
        "date": "2026-11-26T00:00:00+00:00",
        "machine": {
            "cores": 2,
            "usable_cores": 2,
            "python": "3.11.7",
            "implementation": "CPython",
            "platform": "Linux",
            "versions": {"dask": "2026.8.0"},
        },
        "plan": {"repetitions": 2, "workers": 1, "threads": 2},
        "skipped": {"trio-asyncio": "trio_asyncio is not installed"},
        "seconds": 12.0,
        "runs": {"1.1": runs},
    }
    data["summary"] = report.summarize(data)
    return data


RUNS = {
    "raw-asyncio": [
        {"map:1000": {"tasks_per_s": 400.0}, "round_trip:4": {"samples": [0.010, 0.011]}},
        {"map:1000": {"tasks_per_s": 500.0}, "round_trip:4": {"samples": [0.012, 0.013]}},
    ],
    "dask-anyio-asyncio": [
        {"map:1000": {"tasks_per_s": 360.0}, "round_trip:4": {"samples": [0.011, 0.012]}},
        {"map:1000": {"tasks_per_s": 450.0}, "round_trip:4": {"samples": [0.013, 0.030]}},
    ],
    "dask-anyio-trio": [
        {"map:1000": {"error": "RuntimeError: boom"}, "round_trip:4": {"samples": [0.02]}},
        {"map:1000": {"tasks_per_s": 450.0}, "round_trip:4": {"samples": [0.02]}},
    ],
}


def test_summary_medians_p95_and_ratios_to_the_baseline() -> None:
    table = _data(RUNS)["summary"]["1.1"]
    throughput = table["map throughput (1000)"]["contenders"]
    assert throughput["raw-asyncio"]["median"] == 450.0
    assert throughput["raw-asyncio"]["p95"] == pytest.approx(405)  # the slow tail
    assert throughput["raw-asyncio"]["ratio"] == 1.0
    assert throughput["dask-anyio-asyncio"]["ratio"] == pytest.approx(405 / 450)
    assert throughput["dask-anyio-trio"]["n"] == 1
    assert throughput["dask-anyio-trio"]["errors"] == ["RuntimeError: boom"]
    trip = table["round trip (4)"]["contenders"]  # samples pooled over repetitions, in ms
    assert trip["raw-asyncio"]["median"] == pytest.approx(11.5)
    assert trip["dask-anyio-asyncio"]["p95"] == pytest.approx(
        report.percentile([11, 12, 13, 30], 0.95)
    )
    # paired: each repetition against the baseline's same repetition
    assert trip["dask-anyio-trio"]["ratio"] == pytest.approx((20 / 10.5 + 20 / 12.5) / 2)
    assert trip["dask-anyio-trio"]["ratio_high"] == pytest.approx(20 / 10.5)


def test_markdown_shows_ratios_targets_failures_and_what_was_left_out() -> None:
    text = report.markdown(_data(RUNS))
    assert "| map throughput (1000) | tasks/s | 450 (p95 405) **1.00x** |" in text
    assert "| map throughput (1000) | dask-anyio-asyncio | >= 0.95x | 0.90x | **no** |" in text
    assert "| round trip (4) | dask-anyio-trio | <= 1.20x | 1.75x | **no** |" in text
    assert "- dask-anyio-trio, map throughput (1000): RuntimeError: boom" in text
    assert "Left out: trio-asyncio (trio_asyncio is not installed)" in text
    assert "| map throughput (1000) | 2222 | 2469 | 2222 |" in text  # µs per task


def test_percentile_interpolates() -> None:
    assert report.percentile([1, 2, 3, 4, 5], 0.5) == 3
    assert report.percentile([1, 2], 0.95) == pytest.approx(1.95)
    assert report.percentile([7], 0.95) == 7


def test_problems_are_our_failures_not_the_other_contenders() -> None:
    runs: dict[str, Any] = {
        "raw-asyncio": [{"map:10": {"tasks_per_s": 1.0, "left_on_scheduler": 3}}],
        "dask-anyio-asyncio": [{"map:10": {"tasks_per_s": 1.0}}],
        "dask-anyio-trio": [
            {
                "large_result:8": {"ok": False, "error": "ValueError: x"},
                "map:10": {"tasks_per_s": 1.0, "left_on_scheduler": 2},
            }
        ],
        "trio-asyncio": [{"large_result:8": {"ok": False, "error": "AssertionError"}}],
        "sync-to-thread": [{"process_error": "exit status 1"}],
    }
    found = runner.problems({"runs": {"inf": runs}})
    assert found == [
        "dask-anyio-trio, worker-saturation inf, large_result:8: ValueError: x",
        "dask-anyio-trio, worker-saturation inf, map:10: the scheduler still held 2 keys",
        "sync-to-thread, worker-saturation inf: exit status 1",
    ]


def test_the_largest_sizes_run_in_the_first_repetition_only() -> None:
    plan = runner.Plan(sizes=(10, 100), once_from=100, largest_for=("raw-asyncio",))
    first, later = plan.workloads(0, "raw-asyncio"), plan.workloads(1, "raw-asyncio")
    assert ("map", 100) in first
    assert ("submit", 100) in first
    assert ("map", 100) not in later
    assert ("map", 10) in later
    assert ("map", 100) not in plan.workloads(0, "sync-to-thread")
    assert ("memory_per_pending", plan.pending) in first
    assert ("memory_per_pending", plan.pending) not in later


def test_a_way_that_cannot_cancel_shows_as_abandoning_not_as_fast() -> None:
    runs: dict[str, Any] = {
        "raw-asyncio": [{"cancel_latency:2": {"forgotten": [0.001], "scope_exit": [0.0003]}}],
        "sync-to-thread": [{"cancel_latency:2": {"scope_exit": [0.0001], "abandons": True}}],
    }
    data = _data(runs)
    cell = data["summary"]["1.1"]["cancel: scope exit (unlike: see notes) (2)"]["contenders"][
        "sync-to-thread"
    ]
    assert "ratio" not in cell
    assert "abandons (no remote cancel)" in report.markdown(data)


def test_a_target_without_a_figure_is_reported_as_missed() -> None:
    runs: dict[str, Any] = {
        "raw-asyncio": [{"map:10": {"tasks_per_s": 100.0}}],
        "dask-anyio-asyncio": [{"map:10": {"error": "RuntimeError: boom"}}],
    }
    text = report.markdown(_data(runs))
    assert "| map throughput (10) | dask-anyio-asyncio | >= 0.95x | fails | **no** |" in text


def test_a_plan_can_run_some_workloads_only() -> None:
    plan = runner.Plan(sizes=(10, 20), only=("map", "round_trip"))
    assert plan.workloads(1, "raw-asyncio") == [("map", 10), ("map", 20), ("round_trip", 500)]
    assert set(runner.WORKLOADS) == {name for name, _ in runner.Plan().workloads(0, "raw-asyncio")}


def test_a_report_is_written_again_from_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m dask_anyio_bench.report DIR` rewrites the markdown and the chart from
    results.json, with the current report's labels. (The chart is not drawn here:
    matplotlib keeps its font files open for the life of the process.)"""
    charts: list[Path] = []
    monkeypatch.setattr(report, "chart", lambda data, path: charts.append(path))
    runs: dict[str, Any] = {
        "raw-asyncio": [{"map:10": {"tasks_per_s": 100.0}}],
        "dask-anyio-asyncio": [{"map:10": {"tasks_per_s": 90.0}}],
    }
    data = _data(runs)
    data["summary"] = {}  # as an older report left it
    (tmp_path / "results.json").write_text(json.dumps(data))
    report.rerender(tmp_path)
    assert "| map throughput (10) | tasks/s |" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["summary"]["1.1"]
    assert charts == [tmp_path / "results.png"]


def test_stop_rows_show_what_runs_on_and_the_200_ms_target() -> None:
    """A coroutine that the raw client cannot stop shows as running on (no ratio), and the
    dask-anyio contenders' stop times are held to the 200 ms p95 target."""
    runs: dict[str, Any] = {
        "raw-asyncio": [
            {"stop_coroutine:2": {"runs_on": True}, "stop_checkpoint:2": {"stopped": [0.02]}}
        ],
        "dask-anyio-trio": [
            {
                "stop_coroutine:2": {"stopped": [0.003, 0.004]},
                "stop_checkpoint:2": {"stopped": [0.01, 0.3]},
            }
        ],
    }
    data = _data(runs)
    row = data["summary"]["1.1"]["stop: coroutine (2)"]["contenders"]
    assert "ratio" not in row["raw-asyncio"]
    assert "ratio" not in row["dask-anyio-trio"]  # nothing to compare with
    text = report.markdown(data)
    assert "runs on (not stopped)" in text
    assert "time per task" not in text  # (no throughput workload: no scaling table)
    assert "| stop: coroutine (2) | dask-anyio-trio | <= 200 ms (p95) | 4.0 ms | yes |" in text
    assert "| stop: checkpoint() (2) | dask-anyio-trio | <= 200 ms (p95) | 285.5 ms | **no** |" in (
        text
    )


def test_issue_18_targets_on_medians_and_between_backends() -> None:
    """kill_on_cancel at most 1.3x a plain call (for dask-anyio's contenders), and trio's
    loop lateness p99 at most 1.5x asyncio's in the same run."""
    runs: dict[str, Any] = {
        "raw-asyncio": [
            {
                "kill_on_cancel_trip:5": {"ratio": 1.5, "ratio_heavy": 1.2},
                "loop_lateness:200": {"lateness_p99": 0.010},
            }
        ],
        "dask-anyio-asyncio": [
            {
                "kill_on_cancel_trip:5": {"ratio": 1.25, "ratio_heavy": 1.35},
                "loop_lateness:200": {"lateness_p99": 0.020},
            }
        ],
        "dask-anyio-trio": [
            {
                "kill_on_cancel_trip:5": {"ratio": 1.1, "ratio_heavy": 1.3},
                "loop_lateness:200": {"lateness_p99": 0.032},
            }
        ],
    }
    text = report.markdown(_data(runs))
    builtin = "kill_on_cancel / plain call: builtin (5)"
    heavy = "kill_on_cancel / plain call: imports distributed (5)"
    assert f"| {builtin} | dask-anyio-asyncio | <= 1.30x | 1.25x | yes |" in text
    assert f"| {heavy} | dask-anyio-asyncio | <= 1.30x | 1.35x | **no** |" in text
    assert f"| {heavy} | dask-anyio-trio | <= 1.30x | 1.30x | yes |" in text
    assert f"| {builtin} | raw-asyncio |" not in text  # (dask-anyio's targets only)
    lateness = "| loop lateness p99 (200) | dask-anyio-trio | <= 1.50x dask-anyio-asyncio's"
    assert f"{lateness} | 1.60x | **no** |" in text


def test_the_load_is_sampled_and_summed_up() -> None:
    data = _data(RUNS)
    assert "Load" not in report.markdown(data)  # (a run from before the sampling)
    data["loads"] = [
        {"s": 0, "saturation": "1.1", "contender": "raw-asyncio", "load": 0.5},
        {"s": 9, "saturation": "1.1", "contender": "dask-anyio-trio", "load": 1.75},
        {"s": 20, "saturation": "1.1", "contender": "dask-anyio-asyncio", "load": 1.25},
    ]
    text = report.markdown(data)
    assert "before each of 3 processes): median 1.25, min 0.50, max 1.75, on 2 cores" in text
