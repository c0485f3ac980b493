"""asyncio core: the corrected seed ``DaskExecutor`` over an asynchronous Dask client.

Everything here is plain asyncio and runs on the *core loop*, the loop that owns the
:class:`distributed.Client`. The coroutine methods must be awaited on that loop; the plain
methods (:meth:`DaskCore.submit`, :meth:`DaskCore.map`, :meth:`DaskCore.release`) are
thread-safe because the Dask client's ``submit``, ``map`` and ``Future.release`` are.
This module knows nothing of anyio, trio or handles.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import reprlib
import uuid
import warnings
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any, TypeVar, cast

import dask.config
import distributed
from dask.base import tokenize
from dask.utils import apply, funcname, parse_timedelta
from distributed.comm.core import CommClosedError
from distributed.deploy.cluster import Cluster
from distributed.security import Security
from distributed.utils import iscoroutinefunction

from ._client import Client
from ._diagnose import (
    missing_main_guard,
    refuse_while_importing_main_for_a_child,
    unguarded_main_script,
)
from ._logs import HeldSerializationErrors, QuietCancelledClose
from ._remote import run_coroutine

__all__ = ["DaskCore", "SubmitOptions"]

logger = logging.getLogger("dask_anyio")

T = TypeVar("T")

#: Options passed through to :meth:`distributed.Client.submit` and ``map``.
SubmitOptions = Mapping[str, Any]

#: How long cleanup waits for the scheduler to confirm that it forgot our keys.
FORGET_TIMEOUT = 10.0
#: The most keys in one cancel message (see DaskCore.cancel).
_CANCEL_CHUNK = 200
#: A resource no worker has: a task that needs it is received by the scheduler, never run.
_NEVER = {"dask-anyio-barrier": 1}


def _connect_timeout(timeout: float | str | None) -> float:
    if timeout is None:
        timeout = dask.config.get("distributed.comm.timeouts.connect")
    seconds = parse_timedelta(timeout, default="s")
    assert seconds is not None
    return float(seconds)


_CLIENT_SUBMIT_PARAMETERS = frozenset(inspect.signature(distributed.Client.submit).parameters)
_CLIENT_MAP_PARAMETERS = frozenset(inspect.signature(distributed.Client.map).parameters)


def _new_key(
    fn: Callable[..., Any],
    options: SubmitOptions,
    args: list[Any],
    kwargs: Mapping[str, Any],
    prefix: str | None = None,
) -> str:
    """The key Dask would give ``fn(*args, **kwargs)``: a token of the call if ``pure``."""
    token = tokenize(fn, kwargs, *args) if options.get("pure") else uuid.uuid4()
    return f"{prefix or funcname(fn)}-{token}"


def _raise_if_unpicklable(parts: Iterable[tuple[str, Any]], held: HeldSerializationErrors) -> None:
    """After ``submit`` failed: if one of ``parts`` cannot be pickled, raise a
    :exc:`TypeError` naming it (Dask's own message names only its internal graph).

    Our message replaces what Dask said: the ``held`` records of its failed pickling are
    dropped, and its chain of exceptions (the graph's, then the part's) stays in
    ``__context__``, not printed.
    """
    for what, obj in parts:
        try:
            distributed.protocol.pickle.dumps(obj)
        except Exception as cause:
            held.drop()
            raise TypeError(
                f"cannot send the {what} ({reprlib.repr(obj)}) to the cluster: it cannot be "
                f"pickled ({cause})"
            ) from None


async def _fetch(
    client: distributed.Client,
    fetch: Callable[[], Awaitable[T]],
    orphans: dict[asyncio.Future[Any], frozenset[Any]],
    keys: frozenset[Any],
) -> T:
    """Run Dask's ``fetch()`` (a gather) in its own task, never cancelled by the caller.

    Dask's client shares one gathering task between concurrent gathers and keeps it for
    the next ones: cancelled before it ran (by a cancelled caller, here or through
    ``ex.client``), it fails that gather and every later one with CancelledError. So a
    cancelled caller leaves its gather running (it finishes, and its data is dropped), a
    shared task found cancelled is let go, and a gather failed by someone else's
    cancellation is made again. A gather left running is kept in ``orphans`` with its
    ``keys`` until it ends (see :meth:`DaskCore.wait_fetches`).
    """
    for _ in range(3):
        shared = getattr(client, "_gather_future", None)
        if shared is not None and shared.cancelled():  # see above: Dask cannot recover
            client._gather_future = None
        task = asyncio.ensure_future(fetch())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():  # our caller: let it finish
                task.add_done_callback(_retrieve_outcome)
                orphans[task] = keys
                task.add_done_callback(orphans.pop)
                raise
            # else Dask's shared gathering task was cancelled under us: again
    raise RuntimeError("Dask's client kept cancelling this transfer")


def _retrieve_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: asyncio must not log it as never retrieved


class DaskCore:
    """One Dask client (and possibly one cluster) on the running asyncio loop."""

    def __init__(
        self,
        client: distributed.Client,
        *,
        cluster: Cluster | None,
        owns_client: bool,
        owns_cluster: bool,
    ) -> None:
        self.client = client
        self.cluster = cluster
        self._owns_client = owns_client
        self._owns_cluster = owns_cluster
        #: Tasks waiting for futures to be done (see watch), and the items done in this
        #: loop turn, by the function that delivers them.
        self._watching: set[asyncio.Task[None]] = set()
        self._done: dict[Callable[[list[Any]], object], list[Any]] = {}
        #: Transfers whose caller stopped waiting, still running, with their keys.
        self._orphans: dict[asyncio.Future[Any], frozenset[Any]] = {}

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        *,
        address: str | None,
        cluster: Cluster | None,
        client: distributed.Client | None,
        security: Any,
        connect_timeout: float | str | None,
        local_cluster_kwargs: Mapping[str, Any],
    ) -> DaskCore:
        """Connect as the executor's arguments ask. Must run on the core loop."""
        if client is not None:
            return cls(client, cluster=None, owns_client=False, owns_cluster=False)
        timeout = _connect_timeout(connect_timeout)
        owns_cluster = False
        if cluster is not None:
            address = cluster.scheduler_address
            if security is None:
                security = getattr(cluster, "security", None)
        elif address is None:
            address = dask.config.get("scheduler-address", None)
        if address is None:
            cluster = await cls._start_local_cluster(local_cluster_kwargs)
            owns_cluster = True
            address = cluster.scheduler_address
            security = getattr(cluster, "security", None)
        try:
            new_client = await cls._connect(address, security, timeout)
        except BaseException:
            if owns_cluster:
                assert cluster is not None
                await cluster.close()
            raise
        return cls(new_client, cluster=cluster, owns_client=True, owns_cluster=owns_cluster)

    @staticmethod
    async def _start_local_cluster(kwargs: Mapping[str, Any]) -> Cluster:
        options: dict[str, Any] = {
            "processes": True,
            "host": "127.0.0.1",
            "scheduler_port": 0,
            "dashboard_address": "127.0.0.1:0",
        }
        options.update(kwargs)
        # Its workers close with the executor, maybe as a cancelled task ends: no warning.
        options["plugins"] = (*options.get("plugins", ()), QuietCancelledClose())
        if options.get("processes") is False:
            del options["host"]  # in-process workers talk over inproc://, not TCP
        else:  # a worker process re-running an unguarded script would start clusters
            refuse_while_importing_main_for_a_child()
        cluster = distributed.LocalCluster(asynchronous=True, **options)
        starting = asyncio.ensure_future(cast(Awaitable[Any], cluster))
        try:
            await asyncio.shield(starting)
        except BaseException as exc:
            # A half-started cluster cannot be closed: let the start finish (or fail) first.
            with contextlib.suppress(Exception):
                await starting
            try:
                await cast(Awaitable[Any], cluster.close())
            except Exception:  # keep the reason it did not start
                logger.warning("could not close a LocalCluster that failed to start", exc_info=True)
            script = unguarded_main_script() if isinstance(exc, Exception) else None
            if script is not None:  # the reason, in the last line the user reads
                raise RuntimeError(missing_main_guard(script)) from exc
            raise
        return cluster

    @staticmethod
    async def _connect(address: str, security: Any, connect_timeout: float) -> distributed.Client:
        if security is None:
            security = Security()  # what Dask's configuration says, as Client() would use
        if security.require_encryption and not address.startswith(("tls://", "inproc://")):
            raise ValueError(
                f"the security settings require encryption, and {address!r} is not a tls:// "
                "address: refusing to connect without it"
            )
        if address.startswith("tls://") and (
            security.get_connection_args("client").get("ssl_context") is None
        ):
            raise ValueError(
                f"{address!r} speaks TLS: pass security=Security(tls_ca_file=..., "
                "tls_client_cert=..., tls_client_key=...) or set Dask's distributed.comm.tls "
                "configuration"
            )
        client = Client(
            address,
            asynchronous=True,
            security=security,
            timeout=connect_timeout,
            set_as_default=False,
        )
        try:
            await client
        except BaseException as exc:
            await client.close()
            if isinstance(exc, OSError | asyncio.TimeoutError):
                raise ConnectionError(
                    f"could not connect to the Dask scheduler at {address!r} "
                    f"within {connect_timeout:g} s: {exc}"
                ) from exc
            raise
        return client

    async def close(self) -> None:
        """Close what this core owns: the client, then the cluster."""
        if self._owns_client:
            await self.client.close()
        if self._owns_cluster:
            assert self.cluster is not None
            await self.cluster.close()

    @property
    def scheduler_address(self) -> str | None:
        scheduler = self.client.scheduler
        return None if scheduler is None else str(scheduler.address)

    @property
    def dashboard_link(self) -> str | None:
        link = self.client.dashboard_link
        return link if isinstance(link, str) else None

    # -- watching (on the core loop) -------------------------------------------------------

    def watch(
        self,
        future: distributed.Future[Any],
        item: Any,
        deliver: Callable[[list[Any]], object],
    ) -> None:
        """Once ``future`` is done (finished, failed or cancelled), call ``deliver`` with
        ``item``, in a list with the other items of that ``deliver`` done in the same loop
        turn: one call per batch, on this loop. Must run on the core loop.

        A task of this loop waits for the future, as Dask's own done-callbacks do, but no
        thread is involved: :meth:`distributed.Future.add_done_callback` hands each callback
        to a thread pool, a thread switch per completed task that costs the client more CPU
        than the rest of the task's round trip. A lost task (its worker died) counts as
        done, as for Dask's done-callbacks.
        """
        task = asyncio.ensure_future(self._when_done(future, item, deliver))
        self._watching.add(task)
        task.add_done_callback(self._watching.discard)

    async def _when_done(
        self, future: distributed.Future[Any], item: Any, deliver: Callable[[list[Any]], object]
    ) -> None:
        # What Dask's own done-callbacks wait on (distributed.client.done_callback): the
        # future's state, which the client's loop sets. (distributed.wait would do, but looks
        # up the default client, which may be another one, for every future.)
        state = future._state
        assert state is not None, "a future made by this client has a state"
        try:
            while future.status == "pending":
                await state.wait()
        finally:  # also if this task is cancelled: the front then looks, and watches again
            batch = self._done.get(deliver)
            if batch is None:
                batch = self._done[deliver] = []
                asyncio.get_running_loop().call_soon(self._hand_over, deliver)
            batch.append(item)

    def _hand_over(self, deliver: Callable[[list[Any]], object]) -> None:
        deliver(self._done.pop(deliver))

    # -- submitting (thread-safe) ----------------------------------------------------------

    def submit(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any],
        kwargs: Mapping[str, Any],
        options: SubmitOptions,
    ) -> distributed.Future[Any]:
        """Submit one task. Thread-safe: the client's ``submit`` sends through its loop.

        :raises TypeError: naming the function or argument that cannot be pickled.
        """
        args = list(args)
        with HeldSerializationErrors() as held:
            try:
                coroutine = iscoroutinefunction(fn)
                if _CLIENT_SUBMIT_PARAMETERS.isdisjoint(kwargs) and not coroutine:
                    return self.client.submit(fn, *args, **options, **kwargs)
                # Keywords of the function named like Client.submit's own (key=, pure=, ...):
                # pass them inside a dict, where Dask still replaces futures by their values.
                # A coroutine function runs so that cancelling its task cancels it there.
                key = options.get("key") or _new_key(fn, options, args, kwargs)
                wrapper = (run_coroutine, key) if coroutine else (apply,)
                return self.client.submit(
                    *wrapper, fn, args, dict(kwargs), **{**options, "key": key}
                )
            except Exception:
                _raise_if_unpicklable(
                    [("function", fn)]
                    + [(f"argument {i}", a) for i, a in enumerate(args)]
                    + [(f"keyword argument {k!r}", v) for k, v in kwargs.items()],
                    held,
                )
                raise

    def map(
        self,
        fn: Callable[..., Any],
        iterables: list[list[Any]],
        kwargs: Mapping[str, Any],
        options: SubmitOptions,
        start: int = 0,
    ) -> list[distributed.Future[Any]]:
        """Submit one task per item. Thread-safe, like :meth:`submit`. ``start`` is the
        position of the first item, for error messages."""
        futures: list[distributed.Future[Any]]
        with HeldSerializationErrors() as held:
            try:
                coroutine = iscoroutinefunction(fn)
                if _CLIENT_MAP_PARAMETERS.isdisjoint(kwargs) and not coroutine:
                    futures = self.client.map(fn, *iterables, **options, **kwargs)
                else:  # as in submit: the function's keywords travel in a dict
                    rows = [list(row) for row in zip(*iterables, strict=False)]
                    prefix = options.get("key")
                    keys = [_new_key(fn, options, row, kwargs, prefix) for row in rows]
                    n = len(rows)
                    wrapper = (run_coroutine, keys) if coroutine else (apply,)
                    futures = self.client.map(
                        *wrapper, [fn] * n, rows, [dict(kwargs)] * n, **{**options, "key": keys}
                    )
            except Exception:
                _raise_if_unpicklable(
                    [("function", fn)]
                    + [
                        (f"item {start + i} of iterable {j}", a)
                        for j, column in enumerate(iterables)
                        for i, a in enumerate(column)
                    ],
                    held,
                )
                raise
        return futures

    def compute(
        self, collections: list[Any], options: SubmitOptions
    ) -> list[distributed.Future[Any]]:
        """Submit the graph of Dask collections, as one graph (shared parts computed once);
        return the futures of their results. ``options`` are :meth:`distributed.Client.compute`'s.

        Thread-safe, and meant to be called from a worker thread: Dask optimises the graph
        in the calling thread, which may take long for a big graph.
        """
        return list(self.client.compute(collections, sync=False, traverse=False, **options))

    def persist(
        self, collections: list[Any], options: SubmitOptions
    ) -> tuple[list[Any], list[distributed.Future[Any]]]:
        """Submit the graph of Dask collections, as :meth:`compute` does; return the persisted
        collections and their futures.

        Thread-safe; call it from a worker thread, as :meth:`compute`.
        """
        persisted = list(self.client.persist(collections, **options))
        return persisted, list(distributed.futures_of(persisted))

    async def wait_fetches(self, keys: Collection[Any]) -> None:
        """Wait until the transfers of ``keys`` that their callers stopped waiting for have
        ended (for :data:`FORGET_TIMEOUT` at most): released under a transfer, a key makes
        Dask's client warn that it "couldn't gather" it, though we dropped it on purpose."""
        wanted = set(keys)
        running = [task for task, of in self._orphans.items() if not wanted.isdisjoint(of)]
        if running:
            await asyncio.wait(running, timeout=FORGET_TIMEOUT)

    @staticmethod
    def release(future: distributed.Future[Any]) -> None:
        """Drop our reference to ``future``'s key. Thread-safe; the scheduler is told later."""
        future.release()

    async def wait_released(self, keys: Collection[Any]) -> None:
        """Wait until the client has sent the release of ``keys`` (released with
        :meth:`release`): a submit made after this reaches the scheduler after the release.

        Dask sends releases and submissions on one ordered stream, and queues a release on
        the client's loop as soon as the key's reference count drops to zero: that takes a
        loop turn or two.
        """
        for _ in range(100):  # bounded, in case Dask changes how it releases
            if self.client.refcount.keys().isdisjoint(keys):
                return
            await asyncio.sleep(0)
        logger.warning(
            "the Dask client did not release %d keys in time: a result stream may briefly "
            "hold more than max_in_flight tasks on the cluster",
            len(keys),
        )

    # -- coroutines (core loop only) -------------------------------------------------------

    async def result(self, future: distributed.Future[Any]) -> Any:
        """Fetch the value of a finished future. Cancelling this stops the waiting only."""
        return await _fetch(self.client, future.result, self._orphans, frozenset([future.key]))

    async def call(
        self, fn: Callable[..., object], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Any:
        """``fn(client, *args, **kwargs)``, awaited if it returns an awaitable."""
        result = fn(self.client, *args, **kwargs)
        if inspect.isawaitable(result):
            return await result
        return result

    async def gather(self, futures: list[distributed.Future[Any]]) -> list[Any]:
        """Fetch the values of finished futures, in one request per worker."""
        if not futures:
            return []
        keys = frozenset(f.key for f in futures)
        gather = functools.partial(self.client.gather, futures)
        values: list[Any] = await _fetch(self.client, gather, self._orphans, keys)
        return values

    async def scatter(self, data: list[Any] | dict[Any, Any], broadcast: bool) -> Any:
        """Send ``data`` to the workers; return futures in the same shape.

        The scheduler registers the data even if the caller stops waiting: a cancelled
        scatter finishes, then releases what it sent.
        """
        task = asyncio.ensure_future(self.client.scatter(data, broadcast=broadcast, hash=False))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                sent = await task
                futures = list(sent.values() if isinstance(sent, dict) else sent)
                for future in futures:
                    future.release()
                keys = {f.key for f in futures}
                await self.wait_forgotten(keys, arrived=keys)
            raise

    async def exception(self, future: distributed.Future[Any]) -> BaseException:
        """Return the remote exception of an erred future, carrying its remote traceback."""
        exc = await future.exception()
        tb = await future.traceback()
        assert isinstance(exc, BaseException)
        return exc.with_traceback(tb)

    async def cancel(self, futures: Collection[distributed.Future[Any]], reason: str) -> None:
        """Cancel ``futures`` on the cluster; return once the scheduler has forgotten them."""
        if not futures:
            return
        keys = {f.key for f in futures}
        arrived = {f.key for f in futures if f.status in ("finished", "error")}
        ordered = list(futures)
        # The scheduler handles one cancel of n keys in O(n**2) steps: send several small ones.
        for start in range(0, len(ordered), _CANCEL_CHUNK):
            chunk = ordered[start : start + _CANCEL_CHUNK]
            await self.client.cancel(chunk, force=True, reason=reason, msg=reason)
        await self.wait_forgotten(keys, arrived=arrived)

    async def wait_forgotten(
        self,
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
        """
        remaining = list(keys)
        if not remaining or self.client.status != "running":
            return
        scheduler = self.client.scheduler
        assert scheduler is not None
        seen: set[Any] = set(arrived)
        barrier: distributed.Future[Any] | None = None
        barrier_passed = False
        delay = 0.002
        try:
            async with asyncio.timeout(give_up_after):
                while True:
                    query = remaining if barrier is None else [*remaining, barrier.key]
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
                        ours = self.client.refcount
                        kept = {k for k in remaining if k in held and k not in ours}
                        if kept:
                            logger.debug("keys the scheduler keeps for others: %s", kept)
                            remaining = [k for k in remaining if k not in kept]
                        barrier.release()
                        remaining.append(barrier.key)
                        barrier, barrier_passed = None, True
                    seen.update(held)
                    remaining = [k for k in remaining if k in held or k not in seen]
                    if not remaining:
                        return
                    if barrier is None and not barrier_passed:
                        barrier = self.client.submit(
                            int, key=f"dask-anyio-barrier-{uuid.uuid4()}", resources=_NEVER
                        )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.05)
        except TimeoutError:
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
