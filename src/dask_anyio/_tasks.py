"""The task table: the tasks one executor owns, from adoption to release.

Words used here, each for one thing:

* **adopt**: take a Dask future into the table, as a handle (:meth:`TaskTable.adopt`);
* **release**: stop owning a handle: freeze its status, count its outcome, drop the client's
  reference to its key (:meth:`TaskTable.release`); the scheduler is told later;
* **cancel**: tell the cluster to cancel pending tasks (:meth:`TaskTable.cancel`, batched);
* **confirm**: wait until the scheduler has forgotten released keys (``DaskCore.wait_forgotten``;
  :meth:`TaskTable.confirm_later` batches it in the background);
* **abandon**: cancel the pending ones of some handles, release them all, confirm
  (:meth:`TaskTable.abandon`: a cancelled scope, a closed stream).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVarTuple

import anyio
import anyio.abc
import anyio.lowlevel
import distributed

from ._bridge import CoreRunner
from ._core import DaskCore, logger
from ._errors import CancelReason
from ._gate import Gate, Phase
from ._handle import (
    DONE,
    ExecutorStatistics,
    TaskHandle,
    TaskStatus,
    check_owner,
    map_handles,
    new_handle,
    state_of,
)
from ._watch import Watcher

__all__ = ["CONFIRM_BATCH", "Adopt", "TaskTable"]

Ts = TypeVarTuple("Ts")

#: How many released keys to confirm with the scheduler at once, in the background.
CONFIRM_BATCH = 1000


class Adopt(enum.Enum):
    """How a future joins the table when its key is held already."""

    #: A task of submit(), map(), scatter(), imap(): the handle already held (``pure=True``
    #: and an identical call) stands for it.
    TASK = "task"
    #: A result of a compute() call: a handle of the call's own, sharing the key.
    CALL = "call"
    #: A future of persist(): the table holds it, in place of a call's handle.
    PERSIST = "persist"
    #: A future from a queue or a variable: perhaps another client's task, never cancelled
    #: on the cluster by this executor (which lets go of it instead); a handle held already
    #: (our own task, back from the queue) stands for it.
    BORROWED = "borrowed"


@dataclasses.dataclass
class _Abandoned:
    """Handles to release, of which ``pending`` to cancel first (see TaskTable.abandon)."""

    handles: list[TaskHandle[Any]]
    pending: list[TaskHandle[Any]]
    done: anyio.Event = dataclasses.field(default_factory=anyio.Event)


class TaskTable:
    """The tasks of one executor, and the owner of their handles (a
    :class:`~dask_anyio._handle.TaskOwner`). Front loop only."""

    def __init__(
        self,
        runner: CoreRunner,
        core: DaskCore,
        gate: Gate,
        watcher: Watcher,
        tg: anyio.abc.TaskGroup,
        *,
        confirm_batch: int = CONFIRM_BATCH,
    ) -> None:
        self._runner = runner
        self._core = core
        self._gate = gate
        self._watcher = watcher
        self._tg = tg
        self._confirm_batch = confirm_batch
        #: The handle of each key held, counted as submitted once.
        self.handles: dict[str, TaskHandle[Any]] = {}
        #: Keys that run() and compute() calls are waiting for, with those calls' handles.
        self.calls: dict[Hashable, list[TaskHandle[Any]]] = {}
        #: Set by an error exit: a task adopted from now on is cancelled at once.
        self.cancelling_all = False
        #: Failures of work in the background, raised at exit.
        self.background_errors: list[Exception] = []
        self._submitted = 0
        self._outcomes: Counter[TaskStatus] = Counter()
        #: Released keys to confirm (see confirm_later).
        self._released_keys: set[Hashable] = set()
        #: Keys whose cancellation the scheduler confirmed.
        self._forgotten_keys: set[Hashable] = set()
        #: Futures of keys a handle holds already (in persisted collections): released at exit.
        self._other_references: list[distributed.Future[Any]] = []
        self._cancel_batch: list[distributed.Future[Any]] = []
        self._abandoned: dict[CancelReason, _Abandoned] = {}

    # -- handles ---------------------------------------------------------------------------

    def _release_on_core(self, future: distributed.Future[Any]) -> None:
        """Drop our reference to ``future``'s key on the core loop (from another thread,
        Dask's release wakes its loop once per key; our crossing, once per batch)."""
        core = self._runner.core
        if core.is_current():
            self._core.release(future)
        else:  # (in order with what follows: a wait for the release, a submit)
            core.run_sync_soon(self._core.release_now, future)

    def adopt(self, future: distributed.Future[Any], how: Adopt = Adopt.TASK) -> TaskHandle[Any]:
        """Own ``future``'s task; return its handle (see :class:`Adopt`)."""
        handle = new_handle(self, future)
        key = handle.key
        existing = self.handles.get(key)
        if existing is None:
            self._count(handle)
        elif how in (Adopt.TASK, Adopt.BORROWED):  # (pure=True, an identical call; ours)
            self._release_on_core(future)
            return existing
        elif how is Adopt.PERSIST:
            if existing in self.calls.get(key, ()):  # a compute() call's: take over
                self.handles[key] = handle
            elif state_of(existing).cancel_reason is not None:  # cancelled by us: new work
                self.release(existing)
                self._count(handle)
            else:  # held already: released at exit
                self._other_references.append(future)
        if how is Adopt.PERSIST:
            self._forgotten_keys.discard(key)
        state_of(handle).borrowed = how is Adopt.BORROWED
        return handle

    def _count(self, handle: TaskHandle[Any]) -> None:
        self.handles[handle.key] = handle
        self._submitted += 1

    def future_of(self, handle: TaskHandle[Any]) -> distributed.Future[Any]:
        """:raises ValueError: unless ``handle`` is ours."""
        return check_owner(handle, self).future

    def unwrap(self, obj: Any) -> Any:
        """Replace our handles in ``obj`` (recursively in lists, tuples, sets and dicts) by
        their futures. :raises ValueError: for a handle of another executor."""
        return map_handles(obj, self.future_of)

    async def wait(self, handle: TaskHandle[Any]) -> None:
        """``await handle``: wait without transferring data, then raise its failure if any."""
        self._gate.check_loop()
        failure = await self._watcher.outcome(handle)
        if failure is not None:  # raised here: the traceback shows one frame of ours
            raise failure

    def statistics(self) -> ExecutorStatistics:
        outcomes = self._outcomes.copy()
        pending = 0
        for handle in self.handles.values():
            status = handle.status
            if status in DONE:
                outcomes[status] += 1
            else:
                pending += 1
        return ExecutorStatistics(
            submitted=self._submitted,
            pending=pending,
            finished=outcomes[TaskStatus.FINISHED],
            failed=outcomes[TaskStatus.ERROR],
            cancelled=outcomes[TaskStatus.CANCELLED],
            in_flight=len(self.handles),
        )

    # -- calls (run, compute) --------------------------------------------------------------

    def begin_call(self, handles: list[TaskHandle[Any]]) -> None:
        """A call waits for ``handles``; their failure is its caller's to see."""
        for handle in handles:
            state = state_of(handle)
            self.calls.setdefault(state.future.key, []).append(handle)
            state.observed = True
            if self.cancelling_all and not state.done():  # adopted in an error exit
                state.cancel_reason = CancelReason.EXIT
                cancel = functools.partial(self._core.cancel, [state.future], CancelReason.EXIT)
                self._tg.start_soon(self.in_background, cancel)

    def end_call(self, handle: TaskHandle[Any]) -> bool:
        """A call stops waiting for ``handle``; return whether no one else holds its key
        (then the caller cancels or releases it); else release this call's reference.

        On the front loop, before any await: of calls cancelled together, one is last.
        """
        key = state_of(handle).future.key
        others = self.calls[key]
        others.remove(handle)
        if not others:
            del self.calls[key]
        held = self.handles.get(handle.key)
        if held is handle and others:  # the task is counted once: with another call
            self.handles[handle.key] = others[0]
        elif not others and (held in (None, handle) or state_of(held).cancel_reason is not None):
            return True
        self.release(handle)
        return False

    def in_call(self, handle: TaskHandle[Any]) -> bool:
        """Whether a call still waits for ``handle``."""
        return handle in self.calls.get(state_of(handle).future.key, ())

    def observed_by_call(self, handles: list[TaskHandle[Any]]) -> None:
        """A call's failure is told to its caller: the exit must not tell it again (also
        through the handles that count the keys for several calls)."""
        for handle in handles:
            held = self.handles.get(handle.key)
            if held is not None:
                state_of(held).observed = True

    # -- releasing -------------------------------------------------------------------------

    def release(self, handle: TaskHandle[Any]) -> bool:
        """Stop owning ``handle``: freeze its status, count its outcome, release its key.

        :return: ``False`` if that was done already.
        """
        state = state_of(handle)
        if state.final_status is not None:
            return False
        state.final_status = state.status
        if self.handles.get(handle.key) is handle:  # counted as submitted, hence here
            del self.handles[handle.key]
            self._outcomes[state.final_status] += 1
        self._release_on_core(state.future)
        return True

    def confirm_later(self, *keys: Hashable) -> None:
        """Remember released keys of finished or failed tasks, to confirm with the scheduler
        that they were forgotten: at exit, or in the background once enough have gathered
        (so memory stays bounded)."""
        self._released_keys.update(keys)
        if len(self._released_keys) >= self._confirm_batch and self._gate.phase is Phase.OPEN:
            batch, self._released_keys = self._released_keys, set()
            confirm = functools.partial(self._core.wait_forgotten, batch, arrived=batch)
            self._tg.start_soon(self.in_background, confirm)

    async def release_and_send(self, handles: list[TaskHandle[Any]]) -> None:
        """Release ``handles`` (done tasks), and wait until the client has sent the release:
        a task submitted next reaches the scheduler after it. Checkpoint."""
        for handle in handles:  # released here and now, whatever happens to this call
            self.release(handle)
        keys = [state_of(h).future.key for h in handles]
        self.confirm_later(*keys)
        await self._runner.run(self._core.wait_released, keys)

    # -- cancelling ------------------------------------------------------------------------

    def cancel(self, handle: TaskHandle[Any]) -> bool:
        """:meth:`TaskHandle.cancel`: mark it cancelled now, tell the cluster soon."""
        state = state_of(handle)
        # While CLOSING the task group is still open (the exit may be waiting for this very
        # handle); once CLOSED every handle is frozen, hence done.
        if state.done() or self._gate.phase is Phase.CLOSED:
            return False
        if self._gate.phase is Phase.OPEN:
            self._gate.check_open()  # the right thread
        state.cancel_reason = CancelReason.HANDLE
        self._watcher.notify(handle)
        if state.borrowed:  # not ours to cancel: let go of it
            self.release(handle)
            self.confirm_later(handle.key)
            return True
        self._cancel_batch.append(state.future)
        if len(self._cancel_batch) == 1:  # the first of a burst: tell the cluster soon, once
            self._tg.start_soon(self._send_cancels)
        return True

    async def _send_cancels(self) -> None:
        batch, self._cancel_batch = self._cancel_batch, []
        if await self.in_background(self._core.cancel, batch, CancelReason.HANDLE):
            self._forgotten_keys.update(f.key for f in batch)

    async def abandon(self, handles: list[TaskHandle[Any]], reason: CancelReason) -> None:
        """Cancel the pending ones on the cluster, release them all; return once the
        scheduler forgot them. Call it shielded.

        Calls made at the same moment share one round trip: when a task group with many
        ``run()`` calls is cancelled, every call arrives here in the same loop turn. The
        first one waits a checkpoint for the others, then cancels and confirms for all.
        """
        pending = [h for h in handles if not h.done()]
        for handle in pending:
            state_of(handle).cancel_reason = reason
            self._watcher.notify(handle)
        batch = self._abandoned.get(reason)
        if batch is not None:  # another call sends it: wait for it
            batch.handles.extend(handles)
            batch.pending.extend(pending)
            await batch.done.wait()
            return
        batch = self._abandoned[reason] = _Abandoned(list(handles), pending)
        try:
            try:
                await anyio.lowlevel.checkpoint()  # let the calls cancelled with this one join
            finally:  # (even if a native asyncio cancel got through the shield)
                del self._abandoned[reason]
                with anyio.CancelScope(shield=True):
                    await self._send_abandoned(batch, reason)
        finally:  # the others wait for this, come what may
            batch.done.set()

    async def _send_abandoned(self, batch: _Abandoned, reason: CancelReason) -> None:
        handles = batch.handles
        pending = [h for h in batch.pending if not state_of(h).borrowed]  # (others: released)
        try:
            futures = [state_of(h).future for h in pending]
            await self._runner.finish(self._core.cancel, futures, reason)
        except Exception:  # the exit confirms the release again
            logger.warning("could not cancel %d tasks on the cluster", len(pending), exc_info=True)
            pending = []
        cancelled = {h.key for h in pending}
        done = [h.key for h in handles if h.key not in cancelled]
        if done:  # a value may still be on its way to a caller cancelled meanwhile
            try:
                await self._runner.finish(self._core.wait_fetches, done)
            except Exception:  # (then Dask may warn that it couldn't gather it)
                logger.debug("could not wait for transfers", exc_info=True)
        released = [
            state_of(h).future.key for h in handles if self.release(h) and h.key not in cancelled
        ]
        try:
            confirm = functools.partial(self._core.wait_forgotten, released, arrived=released)
            await self._runner.finish(confirm)
        except Exception:  # the exit confirms the release again
            logger.warning("could not release %d tasks", len(released), exc_info=True)
            self.confirm_later(*released)

    async def in_background(self, fn: Callable[[*Ts], Awaitable[object]], *args: *Ts) -> bool:
        """Run a core coroutine as a child of the executor's task group: shielded, so that
        it finishes before the exit; its failure is raised at exit instead of cancelling the
        body. Return whether it succeeded."""
        succeeded = False
        with anyio.CancelScope(shield=True):
            try:
                await self._runner.finish(fn, *args)
            except Exception as error:
                self.background_errors.append(error)
            else:
                succeeded = True
        return succeeded

    # -- the exit --------------------------------------------------------------------------

    async def cancel_outstanding(self) -> None:
        """An error exit: cancel every pending task, and wait until the scheduler forgot."""
        pending = [
            state_of(h).future
            for h in self.handles.values()
            if not h.done() and not state_of(h).borrowed  # (released below, not cancelled)
        ]
        if not pending:
            return
        await self._runner.finish(self._core.cancel, pending, CancelReason.EXIT)
        self._forgotten_keys.update(f.key for f in pending)

    async def release_all(self) -> list[TaskHandle[Any]]:
        """Freeze every handle's outcome, release its key and wait until the scheduler
        forgot; return the handles released."""
        released = list(self.handles.values())
        # Keys released earlier were of finished or failed tasks: the scheduler had them.
        arrived = set(self._released_keys)
        for handle in released:
            await self._watcher.freeze(handle)
            state = state_of(handle)
            self._outcomes[state.status] += 1
            self._release_on_core(state.future)
            key = state.future.key
            if key not in self._forgotten_keys:  # (a confirmed cancellation: gone already)
                self._released_keys.add(key)
            if state.status in (TaskStatus.FINISHED, TaskStatus.ERROR) or (
                # cancelled by the scheduler (a lost dependency, another client): it had it
                state.status is TaskStatus.CANCELLED and state.cancel_reason is None
            ):
                arrived.add(key)
            self._watcher.notify(handle)
        for future in self._other_references:
            self._release_on_core(future)
        self._other_references.clear()
        self.handles.clear()
        self._forgotten_keys.clear()
        keys, self._released_keys = self._released_keys, set()
        await self._runner.finish(
            functools.partial(self._core.wait_forgotten, keys, arrived=arrived)
        )
        return released
