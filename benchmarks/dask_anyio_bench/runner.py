"""The benchmark runner: ``nox -s bench`` (``python -m dask_anyio_bench``).

In one run it starts its own cluster (``dask scheduler`` and ``dask worker`` processes on
127.0.0.1, port 0, no dashboard), once per ``worker-saturation`` setting, and runs every
contender's workloads in a fresh process, repetition by repetition, in an order that rotates
from one repetition to the next (A/B interleaved). Each process first does a discarded
warm-up. The report gives medians and p95s, and every figure as a ratio to the raw
asynchronous client on asyncio from the same run.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import report
from .contenders import BASELINE, CONTENDERS

MIB = 2**20
#: The folder that holds this package: the processes the runner starts import the benchmark's
#: modules from it (they are not installed).
BENCHMARKS = Path(__file__).resolve().parent.parent
#: Where runs write their results by default (``full``, ``quick``, ``partial``).
RESULTS = BENCHMARKS / "results"


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    contenders: tuple[str, ...] = tuple(CONTENDERS)
    saturations: tuple[str, ...] = ("1.1", "inf")
    repetitions: int = 3
    #: Task counts of the throughput workloads. Those of ``once_from`` tasks or more run in
    #: the first repetition only, and only for the contenders in ``largest_for`` (they are
    #: the slowest part).
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    once_from: int = 100_000
    largest_for: tuple[str, ...] = ("raw-asyncio", "dask-anyio-asyncio", "dask-anyio-trio")
    round_trips: int = 500
    chain: int = 100
    fan_in: int = 1_000
    cancellations: int = 50
    storm: int = 10_000
    pending: int = 100_000
    #: Samples of each stop workload (a task running on a worker, its caller cancelled).
    stops: int = 20
    kill_trips: int = 30
    #: Samples of the task-tree workloads.
    trees: int = 20
    subtasks_trips: int = 30
    #: Concurrent run() calls per burst while the heartbeat measures the loop's lateness.
    lateness_calls: int = 200
    large_result: int = 100 * MIB
    workers: int = 1
    threads: int = 2
    #: Seconds one contender's process may take for one repetition.
    process_timeout: float = 3600
    #: Run only these workloads (names as in WORKLOADS); all if empty.
    only: tuple[str, ...] = ()

    def workloads(self, repetition: int, contender: str) -> list[tuple[str, int]]:
        largest = repetition == 0 and contender in self.largest_for
        sizes = [n for n in self.sizes if largest or n < self.once_from]
        work: list[tuple[str, int]] = []
        for n in sizes:
            work += [("map", n), ("submit", n)]
        work += [
            ("round_trip", self.round_trips),
            ("chain", self.chain),
            ("fan_in", self.fan_in),
            ("cancel_latency", self.cancellations),
            ("cancel_storm", self.storm),
            ("stop_checkpoint", self.stops),
            ("stop_coroutine", self.stops),
            ("stop_killed", self.stops),
            ("kill_on_cancel_trip", self.kill_trips),
            ("tree_cancel", self.trees),
            ("subtasks_cost", self.subtasks_trips),
            ("loop_lateness", self.lateness_calls),
        ]
        if repetition == 0:
            work += [("memory_per_pending", self.pending), ("large_result", self.large_result)]
        return [(name, arg) for name, arg in work if not self.only or name in self.only]


#: The workloads a plan can run, in the order it runs them.
WORKLOADS = (
    "map",
    "submit",
    "round_trip",
    "chain",
    "fan_in",
    "cancel_latency",
    "cancel_storm",
    "stop_checkpoint",
    "stop_coroutine",
    "stop_killed",
    "kill_on_cancel_trip",
    "tree_cancel",
    "subtasks_cost",
    "loop_lateness",
    "memory_per_pending",
    "large_result",
)


QUICK = Plan(
    saturations=("1.1",),
    repetitions=1,
    sizes=(200,),
    round_trips=50,
    chain=20,
    fan_in=200,
    cancellations=5,
    storm=500,
    pending=2_000,
    stops=2,
    kill_trips=2,
    trees=2,
    subtasks_trips=3,
    lateness_calls=20,
    large_result=16 * MIB,
    process_timeout=120,
)


@dataclass
class Cluster:
    address: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)


@contextlib.contextmanager
def start_cluster(saturation: str, plan: Plan, log: Path) -> Iterator[Cluster]:
    """A scheduler (with the benchmark's plugin preloaded) and workers on 127.0.0.1."""
    env = {
        **_environment(),
        "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": saturation,
        # the observer's polls would fill the log with "Run out-of-band function"
        "DASK_LOGGING__DISTRIBUTED": "warning",
        "PYTHONWARNINGS": "ignore",
    }
    with tempfile.TemporaryDirectory(prefix="dask-anyio-bench-") as tmp, log.open("ab") as out:
        scheduler_file = Path(tmp) / "scheduler.json"
        spawn = _spawner(env, out)
        cluster = Cluster("")
        # --no-dashboard still starts the HTTP server: port 8787 on every interface unless
        # told otherwise.
        http = ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
        scheduler = ["--host", "127.0.0.1", "--port", "0", *http]
        scheduler += ["--scheduler-file", str(scheduler_file)]
        scheduler += ["--preload", "dask_anyio_bench.tasks"]
        try:
            cluster.processes.append(spawn("distributed.cli.dask_scheduler", *scheduler))
            cluster.address = _wait_for_address(scheduler_file, cluster.processes[0])
            for i in range(plan.workers):
                worker = [cluster.address, "--host", "127.0.0.1", *http, "--death-timeout", "30"]
                worker += ["--nworkers", "1", "--nthreads", str(plan.threads)]
                worker += ["--name", f"bench-{i}"]
                worker += ["--local-directory", str(Path(tmp) / f"worker-{i}")]
                cluster.processes.append(spawn("distributed.cli.dask_worker", *worker))
            _wait_for_workers(cluster.address, plan.workers)
            yield cluster
        finally:
            _stop(cluster.processes)


def _environment() -> dict[str, str]:
    """This process's environment, with :data:`BENCHMARKS` first on ``PYTHONPATH``: the
    scheduler preloads :mod:`.tasks`, workers and their ``kill_on_cancel`` children unpickle
    its functions, contender processes run :mod:`.workloads`."""
    path = [str(BENCHMARKS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def _spawner(env: dict[str, str], out: Any) -> Callable[..., subprocess.Popen[bytes]]:
    def spawn(module: str, *args: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", module, *args]
        return subprocess.Popen(command, env=env, stdout=out, stderr=out, start_new_session=True)

    return spawn


def _wait_for_address(path: Path, scheduler: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if scheduler.poll() is not None:
            raise RuntimeError(f"the scheduler exited with {scheduler.returncode}")
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            address: str = json.loads(path.read_text())["address"]
            return address
        time.sleep(0.05)
    raise TimeoutError("the scheduler did not start within 60 s")


def _wait_for_workers(address: str, n: int) -> None:
    import distributed

    with distributed.Client(address, set_as_default=False, timeout=60) as client:
        client.wait_for_workers(n, timeout=60)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop each process's whole group (a nanny's worker may outlive the nanny)."""
    for process in reversed(processes):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_contender(
    contender: str, address: str, workloads: list[tuple[str, int]], log: Path, timeout: float
) -> dict[str, Any]:
    """Run ``workloads`` with ``contender`` in a fresh process; return its measurements."""
    spec = json.dumps({"contender": contender, "address": address, "workloads": workloads})
    command = [sys.executable, "-m", "dask_anyio_bench.workloads", spec]
    with log.open("ab") as err:
        err.write(f"\n=== {contender} {workloads}\n".encode())
        err.flush()
        try:
            done = subprocess.run(
                command, env=_environment(), stdout=subprocess.PIPE, stderr=err, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return {"process_error": f"did not finish within {timeout:g} s; see {log}"}
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"process_error": f"exit status {done.returncode}; see {log}"}
    try:
        results: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"process_error": f"no results on its last line of output; see {log}"}
    return results


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def machine() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in ("dask-anyio", "dask", "distributed", "tornado", "anyio", "trio", "trio-asyncio"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "commit": _commit(),
        "cpu": _cpu_model(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions,
    }


def _commit() -> str | None:
    """The checkout's commit, ``-dirty`` if it has changes (None outside a checkout)."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def available(contenders: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Contenders whose libraries are installed, and why the others are left out."""
    import importlib.util

    needs = {"dask-anyio-trio": "trio", "trio-asyncio": "trio_asyncio", "sync-to-thread": "trio"}
    usable, skipped = [], {}
    for contender in contenders:
        module = needs.get(contender)
        if module is not None and importlib.util.find_spec(module) is None:
            skipped[contender] = f"{module} is not installed"
        else:
            usable.append(contender)
    return usable, skipped


def run(plan: Plan, output: Path, say: Callable[[str], object] = print) -> dict[str, Any]:
    """Run the whole plan; write JSON, markdown and a chart under ``output``. The JSON
    and markdown are written after each worker-saturation setting, so that what was
    measured is kept if a later setting fails."""
    # A terminated run stops its cluster on the way out (the processes have sessions of
    # their own: nothing else would stop them).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    output.mkdir(parents=True, exist_ok=True)
    log = output / "bench.log"
    log.write_bytes(b"")
    # The baseline always runs: every figure is a ratio to it.
    contenders, skipped = available((BASELINE, *(c for c in plan.contenders if c != BASELINE)))
    started = time.monotonic()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    # The machine's 1-minute load average before each contender's process: the machines
    # are shared, and a figure is read against the load it was measured under.
    loads: list[dict[str, Any]] = []
    for saturation in plan.saturations:
        say(f"worker-saturation {saturation}: starting a cluster")
        with start_cluster(saturation, plan, log) as cluster:
            warm_up = [("map", 100)]
            run_contender(contenders[0], cluster.address, warm_up, log, plan.process_timeout)
            per_contender: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
            for repetition in range(plan.repetitions):
                shift = repetition % len(contenders)
                for contender in contenders[shift:] + contenders[:shift]:
                    say(f"  repetition {repetition + 1}/{plan.repetitions}: {contender}")
                    workloads = plan.workloads(repetition, contender)
                    loads.append(_load(started, saturation, contender))
                    result = run_contender(
                        contender, cluster.address, workloads, log, plan.process_timeout
                    )
                    per_contender[contender].append(result)
            runs[saturation] = per_contender
        data = _collect(plan, skipped, started, runs, loads)
        _write(output, data)
    say(report.markdown(data))
    if report.chart(data, output / "results.png") is None:
        say("(no chart: matplotlib is not installed)")
    return data


def _load(started: float, saturation: str, contender: str) -> dict[str, Any]:
    one_minute = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    elapsed = round(time.monotonic() - started)
    return {"s": elapsed, "saturation": saturation, "contender": contender, "load": one_minute}


def _collect(
    plan: Plan,
    skipped: dict[str, str],
    started: float,
    runs: dict[str, Any],
    loads: list[dict[str, Any]],
) -> dict[str, Any]:
    data = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "plan": plan.__dict__,
        "skipped": skipped,
        "seconds": time.monotonic() - started,
        "runs": runs,
        "loads": loads,
    }
    data["summary"] = report.summarize(data)
    return data


def _write(output: Path, data: dict[str, Any]) -> None:
    (output / "results.json").write_text(json.dumps(data, indent=1))
    (output / "results.md").write_text(report.markdown(data))


def problems(data: dict[str, Any]) -> list[str]:
    """What makes a run fail (the smoke check in CI): a contender's process that failed, an
    error in a dask-anyio workload, or keys of dask-anyio left on the scheduler. Failures of
    the other ways of driving Dask are results, not problems. Times are never checked."""
    found = []
    for saturation, per_contender in data["runs"].items():
        for contender, reps in per_contender.items():
            for rep in reps:
                where = f"{contender}, worker-saturation {saturation}"
                if "process_error" in rep:
                    found.append(f"{where}: {rep['process_error']}")
                    continue
                if not contender.startswith("dask-anyio"):
                    continue
                for workload, value in rep.items():
                    if not isinstance(value, dict):
                        continue
                    if "error" in value or value.get("ok") is False:
                        found.append(f"{where}, {workload}: {value.get('error', 'wrong result')}")
                    if value.get("left_on_scheduler"):
                        left = value["left_on_scheduler"]
                        found.append(f"{where}, {workload}: the scheduler still held {left} keys")
    return found
