"""kill_on_cancel's warm processes: each call runs in a process forked from a warm process
that the worker keeps, with the call's modules imported once; idle ones end, as they all do
with their worker."""

from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import dask
import psutil
import pytest

from dask_anyio import DaskExecutor, kill_on_cancel
from dask_anyio._warm import IDLE_TIMEOUT

from .conftest import ExternalCluster
from .tasks import inc
from .tasks import worker_pid as worker_pid_task
from .test_remote_cancel import _alive, reported_then_cancelled
from .warm_tasks import (
    LoadedInTheWarmProcess,
    count_calls,
    note_then_die,
    process_ids,
    random_number,
    report_then_spin,
    use_a_thread_pool,
)

pytestmark = pytest.mark.anyio


def _slot(cluster: ExternalCluster) -> dict[str, Any]:
    """One call at a time, on the first worker."""
    return {"resources": {"SLOT": 1}, "workers": [cluster.workers[0]]}


async def _gone(pid: int) -> None:
    with anyio.fail_after(10):
        while _alive(pid):  # noqa: ASYNC110 - another process's state: nothing to wait on
            await anyio.sleep(0.01)


async def test_calls_are_forked_from_a_warm_process_that_imported_their_module(
    external_cluster: ExternalCluster,
) -> None:
    """Two calls in a row: two processes, forked from one warm process (not the worker),
    which imported the function's module (numpy with it) once, before either call."""
    slot = _slot(external_cluster)
    async with DaskExecutor(external_cluster.address) as ex:
        worker = await ex.retrieve(ex.submit(worker_pid_task, **slot))
        first = await ex.retrieve(ex.submit(kill_on_cancel(process_ids), **slot))
        second = await ex.retrieve(ex.submit(kill_on_cancel(process_ids), **slot))
    (pid1, warm1, importer1), (pid2, warm2, importer2) = first, second
    assert warm1 == warm2 != worker
    assert pid1 != pid2
    assert importer1 == importer2 == warm1
    assert psutil.Process(warm1).ppid() == worker


async def test_a_call_sees_nothing_that_an_earlier_call_left(
    external_cluster: ExternalCluster,
) -> None:
    """Each call has its own copy of the warm process: module state a call changed, and
    numpy's global random generator, are not carried to the next."""
    slot = _slot(external_cluster)
    async with DaskExecutor(external_cluster.address) as ex:
        counts = [await ex.retrieve(ex.submit(kill_on_cancel(count_calls), **slot))]
        counts.append(await ex.retrieve(ex.submit(kill_on_cancel(count_calls), **slot)))
        numbers = [
            await ex.retrieve(ex.submit(kill_on_cancel(random_number), **slot)) for _ in range(2)
        ]
    assert counts == [1, 1]
    assert numbers[0] != numbers[1]


async def test_a_warm_process_that_died_while_idle_is_replaced(
    external_cluster: ExternalCluster,
) -> None:
    """A warm process killed between calls: the next call runs in a new one."""
    slot = _slot(external_cluster)
    async with DaskExecutor(external_cluster.address) as ex:
        _, warm, _ = await ex.retrieve(ex.submit(kill_on_cancel(process_ids), **slot))
        os.kill(warm, signal.SIGKILL)
        await _gone(warm)
        _, other, _ = await ex.retrieve(ex.submit(kill_on_cancel(process_ids), **slot))
        assert other != warm


async def test_a_call_cancelled_while_its_warm_process_loads_it(
    external_cluster: ExternalCluster,
) -> None:
    """Cancelled while the warm process is still unpickling its arguments (here: forever),
    the warm process is killed, and the worker's slot serves the next task."""
    slot = _slot(external_cluster)

    def submit(ex: DaskExecutor, port: int) -> object:
        return ex.submit(
            kill_on_cancel(len), LoadedInTheWarmProcess(report_then_spin, port), **slot
        )

    async with DaskExecutor(external_cluster.address) as helper:
        async with reported_then_cancelled(external_cluster, submit) as (_, report):
            loading = int(report)
        await _gone(loading)
        with anyio.fail_after(10):
            assert await helper.retrieve(helper.submit(inc, 1, **slot)) == 2
        _, warm, _ = await helper.retrieve(helper.submit(kill_on_cancel(process_ids), **slot))
        assert warm != loading


async def test_an_idle_warm_process_ends_after_the_idle_timeout() -> None:
    """``dask-anyio.kill-on-cancel.idle-timeout``: a warm process idle that long ends, while
    its worker (here in this process) serves on."""
    with dask.config.set({IDLE_TIMEOUT: "100ms"}):
        async with DaskExecutor(processes=False, n_workers=1, threads_per_worker=1) as ex:
            _, warm, _ = await ex.run(kill_on_cancel(process_ids))
            assert psutil.Process(warm).ppid() == os.getpid()
            await _gone(warm)
            assert await ex.run(kill_on_cancel(inc), 1) == 2


async def test_warm_processes_end_with_their_worker() -> None:
    """The worker closes (here: the executor's embedded cluster, in this process) long
    before the idle timeout: its warm processes end with it."""
    with dask.config.set({IDLE_TIMEOUT: "1h"}):
        async with DaskExecutor(processes=False, n_workers=1, threads_per_worker=1) as ex:
            _, warm, _ = await ex.run(kill_on_cancel(process_ids))
            assert _alive(warm)
    await _gone(warm)


async def test_no_idle_timeout_gives_each_call_a_new_warm_process() -> None:
    """An idle timeout of 0 keeps no warm process: each call starts its own."""
    with dask.config.set({IDLE_TIMEOUT: 0}):
        async with DaskExecutor(processes=False, n_workers=1, threads_per_worker=1) as ex:
            _, first, _ = await ex.run(kill_on_cancel(process_ids))
            _, second, _ = await ex.run(kill_on_cancel(process_ids))
    assert first != second
    await _gone(first)


def test_quick_calls_in_a_row_keep_the_conversation_in_step() -> None:
    """1500 quick calls, one after another, on one warm process (in this process, as a
    worker thread runs them): a call's outcome can be in before the warm process's word that
    it started, and each conversation must still read every answer of its own, or the next
    one reads a stale exit (``died with exit status 0, without an outcome``). Without the
    wait for that word, this failed one run in three (the race is the scheduler's: it is
    not forced here)."""
    import operator

    import cloudpickle

    from dask_anyio import _child, _warm

    pool = _warm.Pool(60)
    try:
        for i in range(1500):
            warm, _ = pool.take()
            conversation = _warm._Conversation(warm)
            data, _ = conversation.run(cloudpickle.dumps((operator.neg, (i,), {})), lambda: None)
            assert conversation.reusable
            pool.give_back(warm)
            assert _child.complete(data), i
            assert pickle.loads(data[_child.HEADER_SIZE :]) == ("ok", -i)
    finally:
        pool.close()


async def test_a_call_that_leaves_a_thread_pool_still_winds_up(
    external_cluster: ExternalCluster, tmp_path: Path
) -> None:
    """A call that leaves a thread pool's worker waiting (concurrent.futures, as dask's
    threaded scheduler does): its process winds up as an interpreter does, pools told to
    stop before threads are joined, and its atexit handlers run."""
    path = tmp_path / "at-exit"
    async with DaskExecutor(external_cluster.address) as ex:
        assert await ex.run(kill_on_cancel(use_a_thread_pool), str(path)) == "done"
    assert path.read_text() == "ran at exit"


async def test_a_call_that_kills_its_warm_process_is_not_tried_again(
    external_cluster: ExternalCluster, tmp_path: Path
) -> None:
    """Loading the call ends the warm process: the call fails naming the exit status, and
    is not loaded again in another warm process (only one that ended while idle is
    replaced)."""
    slot = _slot(external_cluster)
    path = tmp_path / "loads"
    async with DaskExecutor(external_cluster.address) as ex:
        await ex.retrieve(ex.submit(kill_on_cancel(process_ids), **slot))  # (one idle)
        dying = LoadedInTheWarmProcess(note_then_die, str(path))
        with pytest.raises(RuntimeError, match=r"len.* died with exit status 7"):
            await ex.retrieve(ex.submit(kill_on_cancel(len), dying, **slot))
    assert path.read_text() == "loaded\n"


def test_calls_work_with_many_descriptors_open() -> None:
    """A worker with more than 1024 descriptors open: its warm processes' sockets are
    numbered past what select() takes. (Worker-side logic, run in-process.)"""
    from dask_anyio import _remote

    opened = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert _remote._run_in_child(abs, (-3,), {}) == 3
    finally:
        for fd in opened:
            os.close(fd)
