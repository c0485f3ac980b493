"""Local offload: what a user with one machine gets from dask-anyio on its embedded cluster,
against the process pools of the field, trio-parallel and anyio's ``to_process``.

``python -m dask_anyio_bench.offload [--repetitions N] [--output DIR]``: each contender runs
in a fresh process (``--one NAME``), repetition after repetition, in an order that rotates;
results go to ``DIR/results.json`` and ``DIR/results.md``. Every pool has as many processes
as the machine has cores (dask-anyio: ``n_workers`` of one thread each), and is warmed
before timing (one call, untimed).

Workloads, on each contender:

* ``latency``: sequential calls of :func:`~dask_anyio_bench.tasks.trip` (whose module imports
  distributed, as much task code does), plain;
* ``killable``: the same, killed if cancelled (``kill_on_cancel``, ``kill_on_cancel=True``,
  ``cancellable=True``);
* ``throughput``: 200 calls at once, plain; calls per second.

``dask-anyio-trio-cold`` is dask-anyio with no warm process kept
(``dask-anyio.kill-on-cancel.idle-timeout: 0``): a new interpreter per ``kill_on_cancel``
call, as every call had before the warm processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from dask_anyio_bench.saving import load_around, save
from dask_anyio_bench.tasks import trip

#: Contender name -> backend.
CONTENDERS = {
    "dask-anyio-trio": "trio",
    "dask-anyio-asyncio": "asyncio",
    "dask-anyio-trio-cold": "trio",
    "trio-parallel": "trio",
    "anyio-to-process": "trio",
}
#: Sequential calls per repetition (fewer for cold kill_on_cancel calls: most of a second each).
CALLS = 200
COLD_CALLS = 15
BURST = 200


async def _samples(call: Callable[[], Awaitable[object]], n: int) -> list[float]:
    await call()  # (warm: untimed)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return times


async def _burst(call: Callable[[], Awaitable[object]]) -> float:
    """Calls per second, ``BURST`` of them at once."""

    async def one() -> None:
        await call()

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(BURST):
            tg.start_soon(one)
    return BURST / (time.perf_counter() - start)


async def _measure(
    plain: Callable[[], Awaitable[object]], killable: Callable[[], Awaitable[object]], cold: bool
) -> dict[str, Any]:
    return {
        "latency": await _samples(plain, CALLS),
        "killable": await _samples(killable, COLD_CALLS if cold else CALLS),
        "throughput": await _burst(plain),
    }


async def _dask_anyio(cold: bool) -> dict[str, Any]:
    import dask

    from dask_anyio import DaskExecutor, kill_on_cancel

    idle = {"dask-anyio.kill-on-cancel.idle-timeout": 0} if cold else {}
    with dask.config.set(idle):
        n = os.cpu_count() or 1
        async with DaskExecutor(n_workers=n, threads_per_worker=1) as ex:
            killable = kill_on_cancel(trip)
            return await _measure(lambda: ex.run(trip, 1), lambda: ex.run(killable, 1), cold)


async def _trio_parallel() -> dict[str, Any]:
    import trio_parallel

    async with trio_parallel.open_worker_context() as context:
        return await _measure(
            lambda: context.run_sync(trip, 1),
            lambda: context.run_sync(trip, 1, kill_on_cancel=True),
            cold=False,
        )


async def _to_process() -> dict[str, Any]:
    import anyio.to_process

    return await _measure(
        lambda: anyio.to_process.run_sync(trip, 1),
        lambda: anyio.to_process.run_sync(trip, 1, cancellable=True),
        cold=False,
    )


def _one(name: str) -> dict[str, Any]:
    run: Callable[[], Awaitable[dict[str, Any]]] = {
        "dask-anyio-trio": lambda: _dask_anyio(cold=False),
        "dask-anyio-asyncio": lambda: _dask_anyio(cold=False),
        "dask-anyio-trio-cold": lambda: _dask_anyio(cold=True),
        "trio-parallel": _trio_parallel,
        "anyio-to-process": _to_process,
    }[name]
    result: dict[str, Any] = anyio.run(run, backend=CONTENDERS[name])
    return result


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _p95_ms(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] * 1000 if len(samples) > 1 else samples[0]


def report(data: dict[str, Any]) -> str:
    """The run's table: per contender, medians over repetitions of each repetition's figure."""
    lines = [
        "# Local offload",
        "",
        f"{data['machine']['cores']} cores ({data['machine']['cpu']}); "
        f"{data['repetitions']} repetitions; load average before/after: "
        f"{data['load_before']} / {data['load_after']}.",
        "",
        "| contender | call, median (ms) | call, p95 | killable call, median (ms) | p95 "
        "| killable / plain | 200 at once (calls/s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, reps in data["results"].items():
        if isinstance(reps, str):
            lines.append(f"| {name} | {reps} | | | | | |")
            continue
        plain = statistics.median(_median_ms(r["latency"]) for r in reps)
        plain95 = statistics.median(_p95_ms(r["latency"]) for r in reps)
        kill = statistics.median(_median_ms(r["killable"]) for r in reps)
        kill95 = statistics.median(_p95_ms(r["killable"]) for r in reps)
        rate = statistics.median(r["throughput"] for r in reps)
        lines.append(
            f"| {name} | {plain:.2f} | {plain95:.2f} | {kill:.2f} | {kill95:.2f} "
            f"| {kill / plain:.2f}x | {rate:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", help="run one contender (in this process), print JSON")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/offload"))
    options = parser.parse_args()
    if options.one:
        print(json.dumps(_one(options.one)))
        return
    results: dict[str, Any] = {name: [] for name in CONTENDERS}
    names = list(CONTENDERS)
    load_before = os.getloadavg()
    for repetition in range(options.repetitions):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            print(f"repetition {repetition + 1}/{options.repetitions}: {name}", flush=True)
            done = subprocess.run(
                [sys.executable, "-m", "dask_anyio_bench.offload", "--one", name],
                capture_output=True,
                check=False,
            )
            if done.returncode != 0 or isinstance(results[name], str):
                results[name] = f"failed: {done.stderr.decode()[-300:]!r}"
                continue
            results[name].append(json.loads(done.stdout.decode().splitlines()[-1]))
    from dask_anyio_bench.runner import machine

    data = {
        "machine": machine(),
        "repetitions": options.repetitions,
        **load_around(load_before),
        "results": results,
    }
    save(options.output, data, report(data))


if __name__ == "__main__":
    main()
