"""What a test costs under dask-anyio's pytest plugin, once the session's cluster is up.

``python -m dask_anyio_bench.plugin [--tests N] [--repetitions N] [--output DIR]`` writes a
test project (no conftest) to a temporary folder and runs pytest on it in a fresh process,
repetition after repetition, for each way of running it: the embedded cluster's workers as
processes (the default) or threads (``--dask-no-processes``), with and without the leak
checks (``--dask-no-leak-check``). Each test's time is pytest's own (setup, call and
teardown, from ``--junitxml``); the first test of each backend is left out of the medians
(it starts the cluster, or pays the backend's first start), and the cluster's start is given
apart. Tests, each on asyncio and trio:

* ``anyio only``: an empty ``async def`` test (anyio's own cost per test: the baseline);
* ``dask_executor``: the fixture, unused (an executor opened and closed, the checks);
* ``one run()``: the fixture and one ``run()`` of a task;
* ``own cluster``: ``async with DaskExecutor(n_workers=1)`` in the test: what a test costs
  without a session's cluster (fewer of them, seconds each; in the first way only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from dask_anyio_bench.saving import load_around, save

TESTS = """
import pytest

from dask_anyio import DaskExecutor

pytestmark = pytest.mark.anyio


def inc(x):
    return x + 1


@pytest.mark.parametrize("i", range({n}))
async def test_anyio_only(i):
    pass


@pytest.mark.parametrize("i", range({n}))
async def test_dask_executor(dask_executor, i):
    pass


@pytest.mark.parametrize("i", range({n}))
async def test_one_run(dask_executor, i):
    assert await dask_executor.run(inc, i) == i + 1


@pytest.mark.parametrize("i", range({own}))
async def test_own_cluster(i):
    async with DaskExecutor(n_workers=1, threads_per_worker=2, dashboard_address=":0") as ex:
        assert await ex.run(inc, i) == i + 1
"""

#: Name -> the plugin's options.
WAYS = {
    "processes": [],
    "threads": ["--dask-no-processes", "-k", "not own_cluster"],
    "processes, no leak check": ["--dask-no-leak-check", "-k", "not own_cluster"],
}
KINDS = {
    "test_anyio_only": "anyio only",
    "test_dask_executor": "dask_executor",
    "test_one_run": "one run()",
    "test_own_cluster": "own cluster",
}


def run_once(folder: Path, options: list[str]) -> dict[str, Any]:
    """One pytest run: each test's seconds by (kind, backend), in the order they ran."""
    report = folder / "report.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"]
    command += ["--junitxml", str(report), "-o", "junit_family=xunit2", *options]
    done = subprocess.run(command, cwd=folder, capture_output=True, check=False)
    if done.returncode != 0:
        return {"error": done.stdout.decode()[-2000:]}
    times: dict[str, list[float]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("name", "")
        kind, _, params = name.partition("[")
        backend = next(p for p in params.rstrip("]").split("-") if p in ("asyncio", "trio"))
        times.setdefault(f"{KINDS[kind]} | {backend}", []).append(float(case.get("time", 0)))
    return {"times": times}


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per (kind, backend): the median over runs of the median test, the first left out,
    in milliseconds; and the first test's time (the cluster's start, for the first kind
    that uses it)."""
    table: dict[str, dict[str, float]] = {}
    cells: dict[str, list[list[float]]] = {}
    for run in runs:
        for cell, times in run.get("times", {}).items():
            cells.setdefault(cell, []).append(times)
    for cell, samples in cells.items():
        later = [statistics.median(t[1:]) * 1000 for t in samples if len(t) > 1]
        table[cell] = {
            "median_ms": statistics.median(later) if later else float("nan"),
            "first_ms": statistics.median(t[0] for t in samples) * 1000,
        }
    return table


def markdown(data: dict[str, Any]) -> str:
    lines = [
        f"# dask-anyio's pytest plugin: cost per test ({data['tests']} tests of each kind "
        f"per backend, {data['repetitions']} runs)",
        "",
        f"Load (1-minute average) before: {data['load_before'][0]:.2f}, after: "
        f"{data['load_after'][0]:.2f}, on {os.cpu_count()} cores. Median test (setup, call "
        "and teardown, pytest's --junitxml), ms; the first test of each kind and backend "
        "apart (for the first kind with `dask_executor`: the cluster's start).",
        "",
        "| way | test | backend | median ms | first ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for way, summary in data["summary"].items():
        if isinstance(summary, str):
            lines.append(f"| {way} | failed: {summary[:200]!r} | | | |")
            continue
        for cell, figures in summary.items():
            kind, backend = cell.split(" | ")
            lines.append(
                f"| {way} | {kind} | {backend} | {figures['median_ms']:.1f} "
                f"| {figures['first_ms']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=40, help="tests of each kind and backend")
    parser.add_argument("--own", type=int, default=3, help="tests with a cluster of their own")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/plugin"))
    options = parser.parse_args()
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / "test_cost.py").write_text(TESTS.format(n=options.tests, own=options.own))
        for repetition in range(options.repetitions):
            for way, plugin_options in WAYS.items():
                print(f"repetition {repetition + 1}/{options.repetitions}: {way}", flush=True)
                runs[way].append(run_once(folder, plugin_options))
    summary: dict[str, Any] = {}
    for way, results in runs.items():
        failed = [r["error"] for r in results if "error" in r]
        summary[way] = failed[0] if failed else summarize(results)
    data = {
        "tests": options.tests,
        "repetitions": options.repetitions,
        **load_around(load_before),
        "runs": runs,
        "summary": summary,
    }
    save(options.output, data, markdown(data))


if __name__ == "__main__":
    main()
