"""asyncio core: confirming that the scheduler forgot keys, the acknowledgement Dask's
one-way cancel and release messages do not give. Runs on the core loop."""

from __future__ import annotations

import asyncio
import logging
import uuid
import warnings
from collections.abc import Collection
from typing import Any

import distributed
from distributed.comm.core import CommClosedError

__all__ = ["FORGET_TIMEOUT", "NEVER", "marker_of", "wait_forgotten"]

logger = logging.getLogger("dask_anyio")

#: How long cleanup waits for the scheduler to confirm that it forgot our keys.
FORGET_TIMEOUT = 10.0
#: A resource no worker has: a task that needs it is received by the scheduler, never run.
NEVER = {"dask-anyio-barrier": 1}


def marker_of(key: Any) -> str | None:
    """The *marker* of the task ``key``: a key that a subtasks scope of that task holds
    (:mod:`._owned`) from its start until its children are forgotten and it is closed."""
    return f"dask-anyio-subtasks-{key}" if isinstance(key, str) else None


async def wait_forgotten(
    client: distributed.Client,
    keys: Collection[Any],
    *,
    arrived: Collection[Any] = (),
    give_up_after: float = FORGET_TIMEOUT,
) -> None:
    """Wait until the scheduler has forgotten ``keys``.

    Cancelling and releasing keys are one-way messages in Dask, sent on the client's
    batched stream; the only acknowledgement is to ask the scheduler, over another
    connection. A key the scheduler does not hold may therefore be one it has not
    *received yet* (a task cancelled just after its submit). Such a key counts as
    forgotten once it is absent after the scheduler was seen holding it, or after a
    *barrier* arrived: a task submitted now on the same ordered stream (one that needs a
    resource no worker has, so it never runs), which the scheduler receives after every
    key submitted before. ``arrived`` are keys known to have reached the scheduler (it
    reported them finished or failed).

    The barrier also arrives after our releases (sent before it, on that stream), and
    the scheduler forgets a key the moment it handles the last release of it: a key it
    still holds then, and that this client no longer refers to, is kept for someone
    else (a published dataset, another client, another client's task that needs it).
    That is not ours to wait for. Polls with a short, growing interval for
    ``give_up_after`` seconds (the requests included), then warns with the keys this
    client still refers to (a future the user kept, say).

    A task cancelled before it finished may still be closing a subtasks scope on its worker:
    until that scope's children are forgotten too, it holds the task's *marker*
    (:func:`marker_of`), which is waited for here. A marker that the scheduler does not hold
    once the barrier (sent after the cancel) has arrived is none to wait for: its scope, if
    it opens, sees its task gone and gives up before it starts any task (:mod:`._owned`). A
    marker may arrive after the cancel was sent but before the cancel arrives (the status
    query can overtake the batched cancel): hence the barrier first.
    """
    remaining = list(keys)
    if not remaining or client.status != "running":
        return
    markers = [m for k in remaining if k not in arrived and (m := marker_of(k)) is not None]
    scheduler = client.scheduler
    assert scheduler is not None
    seen: set[Any] = set(arrived)
    barrier: distributed.Future[Any] | None = None
    barrier_passed = False
    delay = 0.002
    try:
        async with asyncio.timeout(give_up_after):
            while True:
                query = [*remaining, *markers] + ([] if barrier is None else [barrier.key])
                try:
                    states = await scheduler.get_task_status(keys=query)
                except (OSError, CommClosedError):
                    logger.debug("scheduler unreachable while releasing keys", exc_info=True)
                    return
                held = {k for k, st in states.items() if st not in (None, "forgotten")}
                if barrier is not None and barrier.key in held:
                    # Everything sent before the barrier has arrived: what is absent
                    # now is gone, what is held is someone else's (see above). Let the
                    # barrier go, and see it gone too.
                    seen.update(remaining)
                    ours = client.refcount
                    kept = {k for k in remaining if k in held and k not in ours}
                    if kept:
                        logger.debug("keys the scheduler keeps for others: %s", kept)
                        remaining = [k for k in remaining if k not in kept]
                    barrier.release()
                    remaining.append(barrier.key)
                    barrier, barrier_passed = None, True
                seen.update(held)
                if barrier_passed:  # (a marker sent before our cancel is there by now)
                    markers = [m for m in markers if m in held]
                remaining = [k for k in remaining if k in held or k not in seen]
                if not remaining and not markers:
                    return
                if barrier is None and not barrier_passed:
                    barrier = client.submit(
                        int, key=f"dask-anyio-barrier-{uuid.uuid4()}", resources=NEVER
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
    except TimeoutError:
        if not remaining:
            warnings.warn(
                f"{len(markers)} cancelled task(s) still close their subtasks scopes after "
                f"{give_up_after:g} s, for example {markers[0]!r}",
                RuntimeWarning,
                stacklevel=1,
            )
            return
        warnings.warn(
            f"the scheduler still holds {len(remaining)} released key(s) after "
            f"{give_up_after:g} s, for example {remaining[0]!r}; another client may want "
            "them",
            RuntimeWarning,
            stacklevel=1,
        )
    finally:
        if barrier is not None:
            barrier.release()
