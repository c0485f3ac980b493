"""The workloads of the benchmarks, run by one contender in a process of its own.

``python -m dask_anyio_bench.workloads SPEC`` runs the workloads that the JSON ``SPEC``
names, with the contender it names, against a running scheduler, and prints one JSON
object of measurements on its last line. The runner (:mod:`dask_anyio_bench.runner`)
starts one such process per contender and repetition, interleaved, so that contenders
share no client, event loop or heap.

A synchronous ``distributed.Client`` of this process, the *observer*, polls the scheduler
(never inside a timed section) and reads the times at which the scheduler plugin of
:mod:`dask_anyio_bench.tasks` saw keys forgotten. After every workload, untimed, the
observer waits until the scheduler holds no task at all: whatever a contender leaves to do
after its timed section (the raw client releases dropped futures in the background; a
dask-anyio executor confirms at its exit) is done before the next one starts.
"""

from __future__ import annotations

import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import distributed

from . import tasks
from .contenders import CONTENDERS, OPEN, Session
from .lateness import loop_lateness
from .tasks import bench_cancel_target, leaf, link, noop, payload, pending, total, trip
from .trees import subtasks_cost, tree_cancel

#: Resources no worker has: a task that needs them stays on the scheduler.
NEVER = {"dask-anyio-bench-never": 1}
#: How long to wait for the scheduler to forget cancelled keys before giving up.
FORGET_GIVE_UP = 30.0


class Observer:
    def __init__(self, address: str) -> None:
        self.client = distributed.Client(address, set_as_default=False, timeout=30)
        # Its own thread: a contender's may all be taken (see ThreadSession).
        self.limiter = anyio.CapacityLimiter(1)

    def close(self) -> None:
        self.client.close()

    async def on_scheduler(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(
            lambda: self.client.run_on_scheduler(fn, *args), limiter=self.limiter
        )

    async def poll(
        self,
        seconds: float,
        done: Callable[[Any], bool],
        fn: Callable[..., Any],
        *args: Any,
        on_workers: bool = False,
    ) -> Any:
        """Call ``fn(*args)`` on the scheduler (or on every worker) every 20 ms until
        ``done`` holds for its value or ``seconds`` passed; return the last value.
        (Polling: the cluster is other processes, and no timed section polls.)"""
        call = self.on_workers if on_workers else self.on_scheduler
        with anyio.move_on_after(seconds):
            while not done(value := await call(fn, *args)):  # noqa: ASYNC110
                await anyio.sleep(0.02)
        return value

    async def on_workers(self, fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
        values: dict[str, Any] = await anyio.to_thread.run_sync(
            lambda: self.client.run(fn, *args), limiter=self.limiter
        )
        return values

    async def stop_times(self, name: str, *, stopped: bool) -> tuple[float, float] | None:
        """When the stop target ``name`` started and stopped on its worker (see
        :func:`~dask_anyio_bench.tasks.stop_times`), polled for up to ``STOP_CAP`` s until
        it started (or, with ``stopped``, stopped); ``None`` if it did not."""

        def times(per_worker: dict[str, Any]) -> tuple[float, float | None] | None:
            return next((t for t in per_worker.values() if t[0] is not None), None)

        def done(per_worker: dict[str, Any]) -> bool:
            found = times(per_worker)
            return found is not None and (not stopped or found[1] is not None)

        per_worker = await self.poll(
            tasks.STOP_CAP + 5, done, tasks.stop_times, name, on_workers=True
        )
        found = times(per_worker)
        if found is None or (stopped and found[1] is None):
            return None
        return found[0], math.nan if found[1] is None else found[1]

    async def wait_held(self, n: int) -> int:
        """Until the scheduler holds ``n`` cancel targets; return how many it holds (fewer
        only if they did not all arrive within a time that grows with ``n``)."""
        held: int = await self.poll(10 + n / 200, lambda held: held >= n, tasks.held_count)
        return held

    async def wait_forgotten(self, since: float, n: int) -> dict[str, Any] | None:
        """Once the scheduler forgot ``n`` cancel targets since ``since``: its summary
        (see :func:`~dask_anyio_bench.tasks.forgotten_since`); ``None`` after the give-up
        time."""
        seen: dict[str, Any] = await self.poll(
            FORGET_GIVE_UP, lambda seen: seen["count"] >= n, tasks.forgotten_since, since
        )
        return seen if seen["count"] >= n else None

    async def settle(self) -> int:
        """Collect garbage (dropped futures release their keys), then wait until the
        scheduler holds no task; return how many it still held after 10 s (a contender
        that failed may have left some for good)."""
        gc.collect()
        held: int = await self.poll(10, lambda held: held == 0, tasks.task_count)
        return held


async def _timed(unit: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await unit()
    return time.perf_counter() - start


async def _timed_with_cpu(unit: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """Wall-clock seconds of ``unit``, and the CPU seconds this process (every thread of
    the client's: the caller's loop, a core loop thread) spent meanwhile."""
    cpu = time.process_time()
    seconds = await _timed(unit)
    return seconds, time.process_time() - cpu


async def throughput_map(session: Session, n: int) -> dict[str, Any]:
    async with session.unit() as s:

        async def work() -> None:
            await s.gather(await s.map(noop, range(n)))

        seconds, cpu = await _timed_with_cpu(work)
    return {"seconds": seconds, "tasks_per_s": n / seconds, "cpu_per_task": cpu / n * 1e6}


async def throughput_submit(session: Session, n: int) -> dict[str, Any]:
    async with session.unit() as s:

        async def work() -> None:
            await s.gather([await s.submit(noop, i) for i in range(n)])

        seconds, cpu = await _timed_with_cpu(work)
    return {"seconds": seconds, "tasks_per_s": n / seconds, "cpu_per_task": cpu / n * 1e6}


async def round_trip(session: Session, n: int) -> dict[str, Any]:
    samples = []
    async with session.unit() as s:
        await s.run(trip, -1)  # the first call of a unit opens connections: not counted
        for i in range(n):
            start = time.perf_counter()
            await s.run(trip, i)
            samples.append(time.perf_counter() - start)
    return {"samples": samples}


async def chain(session: Session, n: int) -> dict[str, Any]:
    async with session.unit() as s:

        async def work() -> None:
            future = await s.submit(link, 0)
            for _ in range(n - 1):
                future = await s.submit(link, future)
            await s.wait(future)

        seconds = await _timed(work)
    return {"seconds": seconds}


async def fan_in(session: Session, n: int) -> dict[str, Any]:
    async with session.unit() as s:

        async def work() -> None:
            parts = await s.map(leaf, range(n))
            await s.wait(await s.submit(total, *parts))

        seconds = await _timed(work)
    return {"seconds": seconds}


async def _cancel_scope_of(
    session: Session, observer: Observer, n: int
) -> tuple[float, float, dict[str, Any] | None]:
    """``n`` cancellable runs of tasks that wait on the scheduler, in a task group whose
    scope is cancelled once the scheduler holds them all. Return when the cancellation was
    asked for, when the scope was left, and the scheduler's summary of when it forgot them
    (``None`` if it did not within the give-up time)."""
    async with session.unit() as s:
        blocker = await s.submit(int, resources=NEVER)
        since = time.time()
        held = 0
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(s.cancellable_run, bench_cancel_target, blocker)
                held = await observer.wait_held(n)
                if held < n:
                    raise RuntimeError(f"only {held} of {n} calls reached the scheduler")
                asked = time.time()
                tg.cancel_scope.cancel()
            left = time.time()
            if not session.cancels_remote_work:
                return asked, left, None
            return asked, left, await observer.wait_forgotten(since, n)
        finally:
            # Also ends the targets that a naive way left running (Dask's cancel cascades).
            with anyio.CancelScope(shield=True):
                await s.cancel(blocker)
                await observer.wait_forgotten(since, held)


async def cancel_latency(session: Session, observer: Observer, n: int) -> dict[str, Any]:
    """Cancel one run at a time: from the scope's cancel() to the scheduler's forgetting it
    (its transition hook), and to leaving the scope."""
    forgotten: list[float] = []
    left: list[float] = []
    gave_up = 0
    for _ in range(n):
        asked, exited, seen = await _cancel_scope_of(session, observer, 1)
        left.append(exited - asked)
        if seen is not None:
            forgotten.append(seen["first"] - asked)
        elif session.cancels_remote_work:
            gave_up += 1
        await observer.settle()
    result: dict[str, Any] = {"scope_exit": left, "gave_up": gave_up}
    if session.cancels_remote_work:
        result["forgotten"] = forgotten
        if gave_up:
            result["error"] = f"{gave_up} of {n} keys not forgotten within {FORGET_GIVE_UP:g} s"
    else:
        result["abandons"] = True  # leaves the scope at once; the remote task runs on
    return result


async def cancel_storm(session: Session, observer: Observer, n: int) -> dict[str, Any]:
    """Cancel ``n`` runs in one scope: until the scheduler forgot the last, and until the
    scope was left."""
    if n > session.max_in_flight:
        return {
            "error": f"cannot have {n} calls in flight: at most {session.max_in_flight} "
            "(anyio's default thread limiter)"
        }
    asked, exited, seen = await _cancel_scope_of(session, observer, n)
    result: dict[str, Any] = {"scope_exit": exited - asked}
    if not session.cancels_remote_work:
        result["abandons"] = True
    elif seen is None:
        result["error"] = f"the keys were not forgotten within {FORGET_GIVE_UP:g} s"
    else:
        result["all_forgotten"] = seen["last"] - asked
    return result


#: Stop workloads: the task function of each kind of running task, and whether a contender
#: whose remote cancellation reaches the worker stops it (a coroutine is only stopped when
#: submitted through dask-anyio, which runs it in a task of its own on the worker).
STOP_TARGETS: dict[str, Callable[..., Any]] = {
    "stop_checkpoint": tasks.bench_stop_checking,
    "stop_coroutine": tasks.bench_stop_awaiting,
    "stop_killed": tasks.bench_stop_killed,
}


async def stop_running(session: Session, observer: Observer, kind: str, n: int) -> dict[str, Any]:
    """``n`` times: a run of a task that is running on its worker, its caller's scope
    cancelled; from the scope's cancel() to the end of the task function on the worker
    (``time.monotonic()``, one clock for the machine's processes). The task is a ``kind``
    of :data:`STOP_TARGETS`."""
    if not session.cancels_remote_work:
        return {"abandons": True}
    if kind == "stop_coroutine" and not session.stops_coroutines:
        return {"runs_on": True}
    target = STOP_TARGETS[kind]
    stopped: list[float] = []
    with tempfile.TemporaryDirectory(prefix="dask-anyio-bench-") as tmp:
        for _ in range(n):
            name = str(uuid.uuid4())
            # the child of kill_on_cancel says it runs by creating a file (same machine)
            marker = os.path.join(tmp, name) if kind == "stop_killed" else None
            args = (name,) if marker is None else (name, marker)
            asked = math.nan
            async with session.unit() as s, anyio.create_task_group() as tg:
                tg.start_soon(s.cancellable_run, target, *args)
                if await observer.stop_times(name, stopped=False) is None:
                    raise RuntimeError(f"the {kind} target did not start")
                asked = time.monotonic()
                tg.cancel_scope.cancel()
            times = await observer.stop_times(name, stopped=True)
            if times is None or times[1] - asked > tasks.STOP_CAP / 2:
                raise RuntimeError(f"the {kind} target was not stopped: it ran to its end")
            stopped.append(times[1] - asked)
            await observer.settle()
    return {"stopped": stopped}


async def stop_checkpoint(session: Session, observer: Observer, n: int) -> dict[str, Any]:
    return await stop_running(session, observer, "stop_checkpoint", n)


async def stop_coroutine(session: Session, observer: Observer, n: int) -> dict[str, Any]:
    return await stop_running(session, observer, "stop_coroutine", n)


async def stop_killed(session: Session, observer: Observer, n: int) -> dict[str, Any]:
    return await stop_running(session, observer, "stop_killed", n)


async def kill_on_cancel_trip(session: Session, n: int) -> dict[str, Any]:
    """Sequential round trips of two functions, plain and under kill_on_cancel, interleaved:
    a builtin (its process imports nothing for it: the fixed cost) and
    :func:`~dask_anyio_bench.tasks.trip`, whose module imports distributed (as much task
    code does). The overheads are differences of medians, each against the same function's
    plain call (Dask takes about 2 ms longer over a call of ``abs`` than of ``trip``); the
    ratios, quotients of those medians."""
    from dask_anyio import kill_on_cancel

    calls: dict[str, Callable[..., Any]] = {
        "plain": trip,
        "plain_builtin": abs,
        "samples": kill_on_cancel(abs),
        "heavy": kill_on_cancel(trip),
    }
    samples: dict[str, list[float]] = {name: [] for name in calls}
    async with session.unit() as s:
        for fn in calls.values():
            await s.run(fn, -1)  # (the first of each, untimed)
        for i in range(n):
            for name, fn in calls.items():
                start = time.perf_counter()
                await s.run(fn, i)
                samples[name].append(time.perf_counter() - start)
    plain = statistics.median(samples["plain"])
    builtin = statistics.median(samples["plain_builtin"])
    killed, heavy = statistics.median(samples["samples"]), statistics.median(samples["heavy"])
    return {
        **samples,
        "overhead": killed - builtin,
        "overhead_heavy": heavy - plain,
        "ratio": killed / builtin,
        "ratio_heavy": heavy / plain,
    }


async def memory_per_pending(session: Session, observer: Observer, n: int) -> dict[str, Any]:
    """Bytes of this process's heap (tracemalloc) per pending task the client holds. The
    tasks need a resource no worker has, each on its own: ``n`` dependents of one task
    would make the scheduler's cancel cascade quadratic."""
    async with session.unit() as s:
        gc.collect()
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            held = await s.map(pending, range(n), resources=NEVER)
            count = await observer.poll(60 + n / 200, lambda c: c >= n, tasks.task_count)
            if count < n:
                raise TimeoutError(f"only {count} of {n} pending tasks reached the scheduler")
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - start
        finally:
            tracemalloc.stop()
        await s.let_go(held)
    return {"bytes_per_task": used / n}


async def large_result(session: Session, nbytes: int) -> dict[str, Any]:
    async with session.unit() as s:
        start = time.perf_counter()
        try:
            value = await s.run(payload, nbytes)
        except Exception as error:  # recorded: where today's ways fail
            return {"ok": False, "error": _describe(error)}
        seconds = time.perf_counter() - start
        return {"ok": len(value) == nbytes, "seconds": seconds}


async def warm_up(session: Session) -> None:
    """Untimed: every kind of call once, and a large transfer."""
    await throughput_map(session, 200)
    await throughput_submit(session, 50)
    await round_trip(session, 10)
    await large_result(session, 2**20)  # (larger ones break trio-asyncio: measured, below)


async def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    address = spec["address"]
    observer = await anyio.to_thread.run_sync(Observer, address)
    results: dict[str, Any] = {}
    try:
        results["worker_saturation"] = await observer.on_scheduler(tasks.worker_saturation)
        async with OPEN[spec["contender"]](address) as session:
            await warm_up(session)
            await observer.settle()
            for name, arg in spec["workloads"]:
                try:
                    if name in WITH_OBSERVER:
                        value = await WITH_OBSERVER[name](session, observer, arg)
                    else:
                        value = await PLAIN[name](session, arg)
                except Exception as error:
                    value = {"error": _describe(error)}
                    traceback.print_exc()
                results[f"{name}:{arg}"] = value
                left = await observer.settle()
                if left:
                    value["left_on_scheduler"] = left
    finally:
        await anyio.to_thread.run_sync(observer.close)
    return results


def _describe(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"[:300]


PLAIN: dict[str, Callable[[Session, int], Awaitable[dict[str, Any]]]] = {
    "map": throughput_map,
    "submit": throughput_submit,
    "round_trip": round_trip,
    "chain": chain,
    "fan_in": fan_in,
    "large_result": large_result,
    "kill_on_cancel_trip": kill_on_cancel_trip,
    "subtasks_cost": subtasks_cost,
    "loop_lateness": loop_lateness,
}
WITH_OBSERVER: dict[str, Callable[[Session, Observer, int], Awaitable[dict[str, Any]]]] = {
    "cancel_latency": cancel_latency,
    "cancel_storm": cancel_storm,
    "memory_per_pending": memory_per_pending,
    "stop_checkpoint": stop_checkpoint,
    "stop_coroutine": stop_coroutine,
    "stop_killed": stop_killed,
    "tree_cancel": tree_cancel,
}


def main() -> None:
    spec = json.loads(sys.argv[1])
    backend = CONTENDERS[spec["contender"]]
    results = anyio.run(run_spec, spec, backend=backend)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
