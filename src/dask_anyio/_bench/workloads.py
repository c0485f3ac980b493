"""The workloads of the benchmarks, run by one contender in a process of its own.

``python -m dask_anyio._bench.workloads SPEC`` runs the workloads that the JSON ``SPEC``
names, with the contender it names, against a running scheduler, and prints one JSON
object of measurements on its last line. The runner (:mod:`dask_anyio._bench.runner`) starts
one such process per contender and repetition, interleaved, so that contenders share no
client, event loop or heap.

A synchronous ``distributed.Client`` of this process, the *observer*, polls the scheduler
(outside every timed section) and reads the times at which the scheduler plugin of
:mod:`dask_anyio._bench.tasks` saw keys forgotten.
"""

from __future__ import annotations

import gc
import json
import sys
import time
import traceback
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import distributed

from . import tasks
from .contenders import CONTENDERS, OPEN, Session
from .tasks import bench_cancel_target, noop, payload, total

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

    async def _on_scheduler(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(
            lambda: self.client.run_on_scheduler(fn, *args), limiter=self.limiter
        )

    async def wait_held(self, n: int) -> None:
        """Until the scheduler holds at least ``n`` cancel targets. (Polling: the scheduler
        is another process, and this is never timed.)"""
        held = 0
        with anyio.move_on_after(10 + n / 200):
            while (held := await self._on_scheduler(tasks.held_count)) < n:  # noqa: ASYNC110
                await anyio.sleep(0.02)
            return
        raise RuntimeError(f"only {held} of {n} tasks reached the scheduler")

    async def wait_forgotten(self, since: float, n: int) -> list[float] | None:
        """When the scheduler forgot the ``n`` cancel targets forgotten after ``since``
        (``None`` if it did not within the give-up time)."""
        with anyio.move_on_after(FORGET_GIVE_UP):
            while True:
                times: dict[str, float] = await self._on_scheduler(tasks.forgotten_since, since)
                if len(times) >= n:
                    return sorted(times.values())
                await anyio.sleep(0.02)
        return None

    async def scheduler_tasks(self) -> int:
        count: int = await self._on_scheduler(tasks.task_count)
        return count


async def _timed(unit: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await unit()
    return time.perf_counter() - start


async def throughput_map(session: Session, n: int) -> dict[str, Any]:
    async with session.unit() as s:

        async def work() -> None:
            await s.gather(await s.map(noop, range(n)))

        seconds = await _timed(work)
    return {"seconds": seconds, "tasks_per_s": n / seconds}


async def throughput_submit(session: Session, n: int) -> dict[str, Any]:
    async with session.unit() as s:

        async def work() -> None:
            await s.gather([await s.submit(noop, i) for i in range(n)])

        seconds = await _timed(work)
    return {"seconds": seconds, "tasks_per_s": n / seconds}


async def round_trip(session: Session, n: int) -> dict[str, Any]:
    samples = []
    async with session.unit() as s:
        for i in range(n):
            start = time.perf_counter()
            await s.run(noop, i)
            samples.append(time.perf_counter() - start)
    return {"samples": samples}


async def chain(session: Session, n: int) -> dict[str, Any]:
    async with session.unit() as s:

        async def work() -> None:
            future = await s.submit(noop, 0)
            for _ in range(n - 1):
                future = await s.submit(noop, future)
            await s.wait(future)

        seconds = await _timed(work)
    return {"seconds": seconds}


async def fan_in(session: Session, n: int) -> dict[str, Any]:
    async with session.unit() as s:

        async def work() -> None:
            parts = await s.map(noop, range(n))
            await s.wait(await s.submit(total, *parts))

        seconds = await _timed(work)
    return {"seconds": seconds}


async def _cancel_scope_of(
    session: Session, observer: Observer, n: int
) -> tuple[float, float, list[float] | None]:
    """``n`` cancellable runs of tasks that wait on the scheduler, in a task group whose
    scope is cancelled once the scheduler holds them all. Return when the cancellation was
    asked for, when the scope was left, and when the scheduler forgot each task."""
    async with session.unit() as s:
        blocker = await s.submit(int, resources=NEVER)
        since = time.time()
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(s.cancellable_run, bench_cancel_target, blocker)
                await observer.wait_held(n)
                asked = time.time()
                tg.cancel_scope.cancel()
            left = time.time()
            if not session.cancels_remote_work:
                return asked, left, None
            return asked, left, await observer.wait_forgotten(since, n)
        finally:
            # Also ends the targets that a naive way left running (Dask's cancel cascades),
            # before the next measurement starts.
            with anyio.CancelScope(shield=True):
                await s.cancel(blocker)
                await observer.wait_forgotten(since, n)


async def cancel_latency(session: Session, observer: Observer, n: int) -> dict[str, Any]:
    """Cancel one run at a time: from the scope's cancel() to the scheduler's forgetting it
    (its transition hook), and to leaving the scope."""
    forgotten, left = [], []
    for _ in range(n):
        asked, exited, times = await _cancel_scope_of(session, observer, 1)
        left.append(exited - asked)
        if times is not None:
            forgotten.append(times[0] - asked)
    return {"forgotten": forgotten or None, "scope_exit": left}


async def cancel_storm(session: Session, observer: Observer, n: int) -> dict[str, Any]:
    """Cancel ``n`` runs in one scope: until the scheduler forgot the last, and until the
    scope was left."""
    asked, exited, times = await _cancel_scope_of(session, observer, n)
    return {
        "all_forgotten": None if times is None else times[-1] - asked,
        "scope_exit": exited - asked,
    }


async def memory_per_pending(session: Session, observer: Observer, n: int) -> dict[str, Any]:
    """Bytes of this process's heap (tracemalloc) per pending task the client holds."""
    async with session.unit() as s:
        blocker = await s.submit(int, resources=NEVER)
        gc.collect()
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            held = await s.map(bench_cancel_target, [blocker] * n)
            await observer.wait_held(n)
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - start
        finally:
            tracemalloc.stop()
        del held
        await s.cancel(blocker)
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


async def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    address = spec["address"]
    observer = await anyio.to_thread.run_sync(Observer, address)
    results: dict[str, Any] = {}
    try:
        async with OPEN[spec["contender"]](address) as session:
            await throughput_map(session, 200)  # warm-up, discarded
            for name, arg in spec["workloads"]:
                try:
                    if name in ("cancel_latency", "cancel_storm", "memory_per_pending"):
                        value = await WITH_OBSERVER[name](session, observer, arg)
                    else:
                        value = await PLAIN[name](session, arg)
                except Exception as error:
                    value = {"error": _describe(error)}
                    traceback.print_exc()
                results[f"{name}:{arg}"] = value
            results["leftover_tasks"] = await observer.scheduler_tasks()
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
}
WITH_OBSERVER: dict[str, Callable[[Session, Observer, int], Awaitable[dict[str, Any]]]] = {
    "cancel_latency": cancel_latency,
    "cancel_storm": cancel_storm,
    "memory_per_pending": memory_per_pending,
}


def main() -> None:
    spec = json.loads(sys.argv[1])
    backend = CONTENDERS[spec["contender"]]
    results = anyio.run(run_spec, spec, backend=backend)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
