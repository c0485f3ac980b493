"""Locks and semaphores of the scheduler (``ex.lock``, ``ex.semaphore``) on a real cluster,
on every backend; the cancel-safety test also runs against Dask's own ``Lock``, which fails
it (xfail, strict)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import dask
import distributed
import pytest

from dask_anyio import DaskExecutor, Lock, Semaphore, _bridge
from dask_anyio._leases import Leases

from .conftest import ASYNCIO_BACKENDS, ExternalCluster

pytestmark = pytest.mark.anyio

#: Long enough for any grant on a loaded machine, far below Dask's 30 s lease timeout.
WAIT = 10.0


def _name(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex}"


async def _free(ex: DaskExecutor, name: str) -> None:
    """The lock ``name`` is free: taken at once (well within WAIT), and let go."""
    with anyio.fail_after(WAIT):
        async with ex.lock(name) as lock:
            assert lock.held == 1


async def _waits_for_release(
    external_cluster: ExternalCluster, waiter: Semaphore, release: Callable[[], Awaitable[None]]
) -> None:
    """``waiter`` waits on the scheduler until ``release()``, then gets its lease."""
    got = anyio.Event()

    async def take() -> None:
        async with waiter:
            got.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(take)
        await external_cluster.wait_acquire_pending(waiter.name)
        assert not got.is_set()
        await release()
        with anyio.fail_after(WAIT):
            await got.wait()


async def test_a_lock_excludes_a_second_holder(external_cluster: ExternalCluster) -> None:
    """Two executors (two clients): the second waits until the first releases."""
    name = _name("lock")
    async with (
        DaskExecutor(external_cluster.address) as ex,
        DaskExecutor(external_cluster.address) as other,
    ):
        first, second = ex.lock(name), other.lock(name)
        assert isinstance(first, Lock)
        await first.acquire()
        assert first.held == 1
        await _waits_for_release(external_cluster, second, first.release)
        assert (first.held, second.held) == (0, 0)


def _ours(ex: DaskExecutor, name: str) -> Callable[[], Awaitable[Any]]:
    return ex.lock(name).acquire


def _dasks(ex: DaskExecutor, name: str) -> Callable[[], Awaitable[Any]]:
    def acquire(client: distributed.Client) -> Any:
        return distributed.Lock(name, scheduler_rpc=client.scheduler, loop=client.loop).acquire()

    return lambda: ex.call_client(acquire)


@pytest.mark.parametrize(
    "acquirer",
    [
        pytest.param(_ours, id="dask-anyio"),
        pytest.param(
            _dasks,
            id="dask",
            marks=pytest.mark.xfail(
                strict=True,
                raises=TimeoutError,
                reason="Dask grants the lock to the cancelled acquire: nobody releases it",
            ),
        ),
    ],
)
async def test_a_cancelled_acquire_never_holds_the_lock(
    external_cluster: ExternalCluster,
    acquirer: Callable[[DaskExecutor, str], Callable[[], Awaitable[Any]]],
) -> None:
    """An acquire cancelled while it waits on the scheduler does not take the lock once it
    is freed: the next acquirer gets it at once."""
    name = _name("lock")
    async with DaskExecutor(external_cluster.address) as ex:
        holder = ex.lock(name)
        await holder.acquire()
        async with anyio.create_task_group() as tg:
            tg.start_soon(acquirer(ex, name))
            await external_cluster.wait_acquire_pending(name)
            tg.cancel_scope.cancel()
        await holder.release()
        # No competitor until the request left behind has had its chance: Dask's takes
        # the lock now (for nobody); ours, if granted, is released at once.
        await external_cluster.wait_acquire_pending(name, pending=False)
        await _free(ex, name)


async def test_one_lock_object_serves_many_tasks(external_cluster: ExternalCluster) -> None:
    """Tasks sharing one Lock take turns (only a task that holds it may not acquire it)."""
    name = _name("lock")
    inside = most = 0
    async with DaskExecutor(external_cluster.address) as ex:
        lock = ex.lock(name)

        async def use() -> None:
            nonlocal inside, most
            async with lock:
                inside += 1
                most = max(most, inside)
                await anyio.lowlevel.checkpoint()  # the others try meanwhile
                inside -= 1

        with anyio.fail_after(WAIT):
            # (the lock held by this task while the others start to acquire)
            async with anyio.create_task_group() as tg, lock:
                for _ in range(3):
                    tg.start_soon(use)
                await external_cluster.wait_acquire_pending(name)
    assert most == 1


async def test_an_acquire_waiting_at_exit_takes_nothing(external_cluster: ExternalCluster) -> None:
    """An executor closed (aclose) while another task waits for a lock: that acquire fails,
    and the lock, once freed, goes to the next acquirer, not to the request left behind."""
    name = _name("lock")
    async with DaskExecutor(external_cluster.address) as other:
        holder = other.lock(name)
        await holder.acquire()
        ex = await DaskExecutor(external_cluster.address).open()
        failed: list[BaseException] = []

        async def wait_for_it() -> None:
            try:
                await ex.lock(name).acquire()
            except RuntimeError as error:
                failed.append(error)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_it)
            await external_cluster.wait_acquire_pending(name)
            await ex.aclose()
        assert len(failed) == 1, failed
        await holder.release()
        await _free(other, name)


async def test_a_semaphore_has_max_leases(external_cluster: ExternalCluster) -> None:
    name = _name("semaphore")
    async with DaskExecutor(external_cluster.address) as ex:
        sem = ex.semaphore(name, max_leases=2)
        assert isinstance(sem, Semaphore)
        await sem.acquire()
        await sem.acquire()
        assert sem.held == 2
        third = ex.semaphore(name, max_leases=2)
        await _waits_for_release(external_cluster, third, sem.release)
        await sem.release()
        assert (sem.held, third.held) == (0, 0)


async def test_a_failing_holder_releases(external_cluster: ExternalCluster) -> None:
    name = _name("lock")
    async with DaskExecutor(external_cluster.address) as ex:
        lock = ex.lock(name)
        with pytest.raises(KeyError):
            async with lock:
                raise KeyError("body")
        assert lock.held == 0
        await _free(ex, name)


async def test_the_exit_releases_what_is_still_held(external_cluster: ExternalCluster) -> None:
    name = _name("lock")
    async with DaskExecutor(external_cluster.address) as ex:
        await ex.lock(name).acquire()
    async with DaskExecutor(external_cluster.address) as ex:
        await _free(ex, name)


async def test_bad_use_is_named(external_cluster: ExternalCluster) -> None:
    name = _name("semaphore")
    async with DaskExecutor(external_cluster.address) as ex:
        with pytest.raises(ValueError, match="needs a name"):
            ex.lock("")
        with pytest.raises(TypeError, match="needs a name"):
            ex.semaphore(3, max_leases=1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_leases must be a positive integer"):
            ex.semaphore(name, max_leases=0)
        async with ex.semaphore(name, max_leases=2):
            with pytest.raises(ValueError, match="another number of leases"):
                await ex.semaphore(name, max_leases=3).acquire()
        lock = ex.lock(_name("lock"))
        with pytest.raises(RuntimeError, match="holds no lease"):
            await lock.release()
        async with lock:
            with pytest.raises(RuntimeError, match="held by this task already"):
                await lock.acquire()
    with pytest.raises(RuntimeError, match="cannot be used any more"):
        ex.lock(name)


async def test_a_lease_held_past_its_timeout_is_refreshed() -> None:
    """The executor refreshes the leases it holds, as Dask's Semaphore does: a lock held
    for three lease timeouts is still held (another client cannot take it), then taken at
    once when released. Without the refresh the scheduler lets it go after one timeout."""
    quick = {
        "distributed.scheduler.locks.lease-timeout": "1s",
        "distributed.scheduler.locks.lease-validation-interval": "100ms",
    }
    name = _name("lock")
    with dask.config.set(quick):
        cluster = await anyio.to_thread.run_sync(_small_cluster)
        try:
            async with (
                DaskExecutor(cluster.scheduler_address) as ex,
                DaskExecutor(cluster.scheduler_address) as other,
            ):
                async with ex.lock(name):
                    await anyio.sleep(3.0)  # (the time that passes is what is tested)
                    with anyio.move_on_after(0.5) as scope:
                        await other.lock(name).acquire()
                    assert scope.cancelled_caught, "the lease was let go while held"
                await _free(other, name)
        finally:
            await anyio.to_thread.run_sync(cluster.close)


def _small_cluster() -> distributed.LocalCluster:
    return distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
    )


def _leases(dask_scheduler: Any, name: str) -> int:
    return len(dask_scheduler.extensions["semaphores"].leases.get(name, ()))


def _held(cluster: ExternalCluster, name: str) -> int:
    held: int = cluster.observer.run_on_scheduler(_leases, name=name)
    return held


@pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)
async def test_a_release_hit_by_asyncios_own_cancellation_still_releases(
    external_cluster: ExternalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncio's own cancellation (Task.cancel(), which passes anyio's shields) reaching a
    lock's release as its block is left, before the release's request is sent (it waits
    its turn, as behind another release): the release goes through before it is raised."""
    name = _name("native-release")
    original = Leases._send_release

    async def send_later(self: Leases, name: str, lease_id: str) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        await original(self, name, lease_id)

    monkeypatch.setattr(Leases, "_send_release", send_later)

    async def hold_then_cancel(ex: DaskExecutor) -> None:
        async with ex.lock(name):
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # raised at the release's first await

    async with DaskExecutor(external_cluster.address) as ex:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.ensure_future(hold_then_cancel(ex))
        assert _held(external_cluster, name) == 0


@pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)
async def test_an_exit_hit_by_asyncios_own_cancellation_still_releases(
    external_cluster: ExternalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncio's own cancellation arriving as the executor's exit closes its core (held
    there): the core closes all the same, releasing the lease the scope held."""
    name = _name("native-exit")
    original = Leases.close

    async def close_when_cancelled(self: Leases) -> None:
        front.cancel()  # (asyncio: the core runs on the caller's loop)
        await asyncio.sleep(0)
        await original(self)

    async def body() -> None:
        async with DaskExecutor(external_cluster.address) as ex:
            await ex.lock(name).acquire()
            assert _held(external_cluster, name) == 1
            monkeypatch.setattr(Leases, "close", close_when_cancelled)

    front = asyncio.ensure_future(body())
    with pytest.raises(asyncio.CancelledError):
        await front
    assert _held(external_cluster, name) == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)
async def test_a_release_gives_up_on_a_scheduler_that_does_not_answer(
    external_cluster: ExternalCluster,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under asyncio's own cancellation a release waits for the scheduler's answer, but
    not for good: after FINISH_PATIENCE (shortened here) it gives up with a warning, and
    the cancellation is raised (the scheduler lets the lease go when it times out)."""
    monkeypatch.setattr(_bridge, "FINISH_PATIENCE", 0.5)
    original = Leases._send_release

    async def never_answered(self: Leases, name: str, lease_id: str) -> None:
        await asyncio.Event().wait()

    async with DaskExecutor(external_cluster.address) as ex:
        lock = ex.lock(_name("stalled-release"))
        await lock.acquire()
        monkeypatch.setattr(Leases, "_send_release", never_answered)

        async def release_cancelled() -> None:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # raised at the release's first await
            await lock.release()

        with pytest.raises(asyncio.CancelledError):
            await asyncio.ensure_future(release_cancelled())
        monkeypatch.setattr(Leases, "_send_release", original)
    assert "did not end within 0.5 s of its caller's cancellation" in caplog.text
