"""Bad input gets a clear error naming the problem, never a hang."""

from __future__ import annotations

import operator
import re
import socket
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import dask
import distributed
import pytest

from dask_anyio import DaskExecutor

from .conftest import ExternalCluster
from .tasks import inc, set_event, wait_for_event

pytestmark = pytest.mark.anyio


async def test_use_before_enter_and_after_exit(external_cluster: ExternalCluster) -> None:
    """submit, map, run and retrieve raise RuntimeError outside the `async with` block."""
    ex = DaskExecutor(external_cluster.address)
    with pytest.raises(RuntimeError, match="not open"):
        ex.submit(inc, 1)
    async with ex:
        handle = ex.submit(inc, 1)
        await handle
    with pytest.raises(RuntimeError, match="closed"):
        ex.submit(inc, 1)
    with pytest.raises(RuntimeError, match="closed"):
        ex.map(inc, [1])
    with pytest.raises(RuntimeError, match="closed"):
        await ex.run(inc, 1)
    with pytest.raises(RuntimeError, match="closed"):
        await ex.retrieve(handle)
    await handle  # its final state is kept: still a finished task
    with pytest.raises(RuntimeError, match="only once"):
        async with ex:
            pass


async def test_handle_of_another_executor(external_cluster: ExternalCluster) -> None:
    """A handle from another executor is refused with ValueError: as an argument, in a
    stream's items, to retrieve, gather or iterate as completed."""
    async with (
        DaskExecutor(external_cluster.address) as one,
        DaskExecutor(external_cluster.address) as two,
    ):
        foreign = one.submit(inc, 1)
        with pytest.raises(ValueError, match="another DaskExecutor"):
            two.submit(inc, foreign)
        with pytest.raises(ValueError, match="another DaskExecutor"):
            two.submit(sum, [[foreign]])
        with pytest.raises(ValueError, match="another DaskExecutor"):
            await two.retrieve(foreign)
        with pytest.raises(ValueError, match="another DaskExecutor"):
            await two.gather({"x": [foreign]})
        with pytest.raises(ValueError, match="another DaskExecutor"):
            two.as_completed([foreign])
        with pytest.raises(ValueError, match="another DaskExecutor"):
            await anext(two.imap(inc, [foreign], max_in_flight=1))
        with pytest.raises(TypeError, match="TaskHandle"):
            await two.retrieve(1)  # type: ignore[arg-type]


async def test_unreachable_address_fails_within_connect_timeout() -> None:
    """Nobody listening: ConnectionError naming the address, within the connect timeout."""
    with socket.socket() as sock:  # a port that was free a moment ago, now closed
        sock.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    with anyio.fail_after(30), pytest.raises(ConnectionError, match=re.escape(address)):
        async with DaskExecutor(address, connect_timeout=1):
            pass


async def test_argument_combinations_are_checked() -> None:
    """Conflicting or malformed constructor arguments raise before anything starts."""
    with pytest.raises(ValueError, match="at most one"):
        DaskExecutor("tcp://127.0.0.1:1", cluster=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n_workers"):
        DaskExecutor("tcp://127.0.0.1:1", n_workers=2)
    with pytest.raises(TypeError, match="address must be a string"):
        DaskExecutor(8786)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"distributed\.Client"):
        DaskExecutor(client=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Cluster"):
        DaskExecutor(cluster=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most one of address, scheduler_file"):
        DaskExecutor("tcp://127.0.0.1:1", scheduler_file="scheduler.json")
    with pytest.raises(TypeError, match="scheduler_file must be a path"):
        DaskExecutor(scheduler_file=8786)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scheduler_file is empty"):
        DaskExecutor(scheduler_file="")


async def test_missing_scheduler_file_names_it(tmp_path: Path) -> None:
    """A scheduler file that never appears fails within connect_timeout, naming the file and
    how to write it; a file that is not a scheduler file says so."""
    missing = tmp_path / "scheduler.json"
    with pytest.raises(FileNotFoundError, match=r"scheduler\.json.*--scheduler-file"):
        async with DaskExecutor(scheduler_file=missing, connect_timeout=0.2):
            pass
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"no address": 1}')
    with pytest.raises(ValueError, match=r"garbage\.json.*is not a scheduler file"):
        async with DaskExecutor(scheduler_file=garbage, connect_timeout=0.2):
            pass


async def test_invalid_options(external_cluster: ExternalCluster) -> None:
    """Invalid submit options raise ValueError naming the option; nothing is submitted."""
    async with DaskExecutor(external_cluster.address) as ex:
        with pytest.raises(TypeError, match="callable"):
            ex.submit(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="priority"):
            ex.submit(inc, 1, priority="high")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="retries"):
            ex.submit(inc, 1, retries=-1)
        with pytest.raises(ValueError, match="resources"):
            ex.submit(inc, 1, resources={"GPU": -1})
        with pytest.raises(ValueError, match="allow_other_workers"):
            ex.submit(inc, 1, allow_other_workers=True)
        with pytest.raises(ValueError, match="key"):
            ex.submit(inc, 1, key="")
        first = ex.submit(inc, 1, key="my-key")
        with pytest.raises(ValueError, match="'my-key' is already used"):
            ex.submit(inc, 2, key="my-key")
        assert await ex.retrieve(first) == 2
        with pytest.raises(TypeError, match="iterable"):
            ex.map(inc)


async def test_unpicklable_argument_fails_at_submit(external_cluster: ExternalCluster) -> None:
    """An argument that cannot be pickled fails in submit() itself, naming its type."""
    async with DaskExecutor(external_cluster.address) as ex:
        with pytest.raises(TypeError, match=r"argument 0 \(<unlocked _th.*cannot pickle .*lock"):
            ex.submit(operator.truth, threading.Lock())
        with pytest.raises(TypeError, match=r"keyword argument 'lock'.*pickle"):
            ex.submit(dict, lock=threading.Lock())
        with pytest.raises(TypeError, match=r"item 1 of iterable 0.*pickle"):
            ex.map(operator.truth, [1, threading.Lock()])
        assert await ex.run(inc, 1) == 2


async def test_client_argument(external_cluster: ExternalCluster, anyio_backend_name: str) -> None:
    """client= works with an asynchronous Client on this loop, and is refused under trio."""
    if anyio_backend_name == "trio":
        with pytest.raises(RuntimeError, match="asyncio only"):
            async with DaskExecutor(client=external_cluster.observer):
                pass
        return
    async with distributed.Client(
        external_cluster.address, asynchronous=True, set_as_default=False
    ) as client:
        async with DaskExecutor(client=client) as ex:
            assert await ex.run(inc, 41) == 42
        assert client.status == "running"  # not ours to close
    with pytest.raises(ValueError, match="running asynchronous Client"):
        async with DaskExecutor(client=external_cluster.observer):
            pass


async def test_use_from_another_thread_is_refused(external_cluster: ExternalCluster) -> None:
    """submit() and cancel() from a worker thread raise RuntimeError instead of racing."""
    async with DaskExecutor(external_cluster.address) as ex:
        handle = ex.submit(inc, 1)
        with pytest.raises(RuntimeError, match=r"anyio\.from_thread"):
            await anyio.to_thread.run_sync(ex.submit, inc, 1)
        with pytest.raises(RuntimeError, match=r"anyio\.from_thread"):
            await anyio.to_thread.run_sync(handle.cancel)
        from_thread = await anyio.to_thread.run_sync(anyio.from_thread.run_sync, ex.submit, inc, 2)
        assert await ex.retrieve(from_thread) == 3
        assert await ex.retrieve(handle) == 2


async def test_coroutine_functions_run_on_the_worker(external_cluster: ExternalCluster) -> None:
    """A coroutine function is supported: it runs on the worker's event loop, through run,
    submit and imap alike."""
    from .tasks import add_async

    async with DaskExecutor(external_cluster.address) as ex:
        assert await ex.run(add_async, 1, 2) == 3
        assert await ex.retrieve(ex.submit(add_async, 2, y=3)) == 5
        async with ex.imap(add_async, range(3), max_in_flight=2, y=10) as results:
            assert [v async for v in results] == [10, 11, 12]


SCRIPT = """
import sys

import anyio

from dask_anyio import DaskExecutor


def triple(x):  # defined in __main__: the workers cannot import it
    return 3 * x


async def main():
    async with DaskExecutor(sys.argv[1]) as ex:
        print(await ex.run(triple, 14))


anyio.run(main, backend=sys.argv[2])
"""


async def test_function_defined_in_a_script(
    external_cluster: ExternalCluster, tmp_path: Path, anyio_backend_name: str
) -> None:
    """A function defined in the __main__ of a script runs on workers that cannot import it
    (cloudpickle sends it by value)."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    with anyio.fail_after(120):
        result = await anyio.run_process(
            [sys.executable, str(script), external_cluster.address, anyio_backend_name],
            check=False,
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "42"


async def test_use_from_another_event_loop_is_refused(
    external_cluster: ExternalCluster, anyio_backend: Any
) -> None:
    """Every call from an event loop that did not enter the executor (here one in another
    thread, on either backend) raises RuntimeError at once: `await handle` on an unfinished
    task too, which would otherwise wait for a wake-up that never comes."""
    backend, options = anyio_backend
    gate = f"gate-{uuid.uuid4()}"
    async with DaskExecutor(external_cluster.address) as ex:
        pending = ex.submit(wait_for_event, gate)
        done = ex.submit(inc, 1)
        await done
        calls: dict[str, Callable[[], Any]] = {
            "await handle": lambda: _await(pending),
            "retrieve": lambda: ex.retrieve(pending),
            "run": lambda: ex.run(inc, 1),
            "gather": lambda: ex.gather([done]),
            "scatter": lambda: ex.scatter([1]),
            "compute": lambda: ex.compute(dask.delayed(inc)(1)),
            "persist": lambda: ex.persist(dask.delayed(inc)(1)),
            "call_client": lambda: ex.call_client(lambda c: c.id),
            "as_completed": lambda: _first(ex.as_completed([pending])),
            "imap": lambda: _first(ex.imap(inc, [1], max_in_flight=1)),
            "submit": lambda: _plain(ex.submit, inc, 1),
            "map": lambda: _plain(ex.map, inc, [1]),
            "cancel": lambda: _plain(pending.cancel),
            "statistics": lambda: _plain(ex.statistics),
        }
        for name, call in calls.items():

            async def elsewhere(call: Callable[[], Any] = call) -> None:
                with anyio.fail_after(5):  # a hang fails here, not the whole run
                    await call()

            def in_another_loop(elsewhere: Callable[[], Any] = elsewhere) -> None:
                anyio.run(elsewhere, backend=backend, backend_options=options)

            with pytest.raises(RuntimeError, match="another thread or another event loop"):
                await anyio.to_thread.run_sync(in_another_loop)
            assert not pending.done(), name
        assert ex.statistics().submitted == 2
        await ex.run(set_event, gate)


async def _await(handle: Any) -> None:
    await handle


async def _first(stream: Any) -> None:
    async for _ in stream:
        return


async def _plain(fn: Callable[..., Any], *args: Any) -> None:
    fn(*args)
