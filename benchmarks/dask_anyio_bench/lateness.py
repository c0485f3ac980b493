"""How responsive the caller's event loop stays under load: a heartbeat task that sleeps
:data:`TICK` at a time records how late each wake-up is, while bursts of concurrent
``run()`` calls go on (issue 18: the trio loop against asyncio's and the raw client's)."""

from __future__ import annotations

import time
from typing import Any

import anyio

from .contenders import Session
from .report import percentile
from .tasks import trip

#: The heartbeat's sleep.
TICK = 0.005
#: Bursts of calls per measurement.
BURSTS = 5


async def loop_lateness(session: Session, n: int) -> dict[str, Any]:
    """``BURSTS`` times, ``n`` concurrent ``run()`` calls of a no-op; meanwhile a heartbeat
    on the same loop: every wake-up's lateness (seconds past its due time)."""
    if n > session.max_in_flight:
        return {
            "error": f"cannot have {n} calls in flight: at most {session.max_in_flight} "
            "(anyio's default thread limiter)"
        }
    late: list[float] = []
    async with session.unit() as s:
        await s.run(trip, -1)  # (connections opened: not measured)
        stop = anyio.Event()

        async def heartbeat() -> None:
            while not stop.is_set():
                due = time.perf_counter() + TICK
                await anyio.sleep(TICK)
                late.append(max(0.0, time.perf_counter() - due))

        async with anyio.create_task_group() as tg:
            tg.start_soon(heartbeat)
            for _ in range(BURSTS):
                async with anyio.create_task_group() as calls:
                    for i in range(n):
                        calls.start_soon(s.run, trip, i)
            stop.set()
    return {
        "lateness": late,
        "lateness_p99": [percentile(late, 0.99)],
        "lateness_max": [max(late, default=0.0)],
    }
