"""The seed scenario, end to end, on an embedded and on an external cluster."""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import anyio
import distributed.comm
import pytest

from dask_anyio import DaskExecutor, TaskStatus

from .conftest import ExternalCluster
from .tasks import slow_identity

pytestmark = pytest.mark.anyio


async def seed_scenario(ex: DaskExecutor) -> None:
    a = ex.submit(slow_identity, 2)
    b = ex.submit(slow_identity, 5)
    c = ex.submit(operator.add, a, b)
    assert await c is None
    assert c.done()
    assert c.status is TaskStatus.FINISHED
    assert await ex.retrieve(c) == 7
    assert await ex.run(operator.add, 1, 2) == 3


async def test_seed_scenario_embedded() -> None:
    """With no address, the executor starts, uses and closes its own LocalCluster."""
    async with DaskExecutor(n_workers=1, threads_per_worker=2) as ex:
        assert ex.client.scheduler.address.startswith("tcp://127.0.0.1:")
        link = ex.dashboard_link
        assert link is None or link.startswith("http://127.0.0.1:")
        await seed_scenario(ex)
        host, port = distributed.comm.get_address_host_port(ex.client.scheduler.address)
    with pytest.raises(OSError):  # noqa: PT011  # the scheduler is gone: refused
        await anyio.connect_tcp(host, port)


async def test_seed_scenario_external(external_cluster: ExternalCluster) -> None:
    """Against a cluster started with `dask scheduler` / `dask worker`, and nothing left after."""
    async with DaskExecutor(external_cluster.address) as ex:
        await seed_scenario(ex)
        assert external_cluster.scheduler_keys()  # our handles hold their keys until exit
    assert external_cluster.scheduler_keys() == set()


async def test_scheduler_address_config(external_cluster: ExternalCluster) -> None:
    """With no address, Dask's `scheduler-address` setting is honoured, as Client() does."""
    import dask

    with dask.config.set({"scheduler-address": external_cluster.address}):
        async with DaskExecutor() as ex:
            assert ex.client.scheduler.address == external_cluster.address
            assert await ex.run(operator.mul, 6, 7) == 42


async def test_scheduler_file(external_cluster: ExternalCluster) -> None:
    """The file `dask scheduler --scheduler-file` writes, as a path or a string."""
    for path in (external_cluster.scheduler_file, str(external_cluster.scheduler_file)):
        async with DaskExecutor(scheduler_file=path) as ex:
            assert ex.client.scheduler.address == external_cluster.address
            assert await ex.run(operator.mul, 6, 7) == 42


async def test_scheduler_file_written_while_waiting(
    external_cluster: ExternalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler file that appears while the executor waits for it, first half written
    (as a shared filesystem may show it), is read once complete."""
    path = anyio.Path(tmp_path / "scheduler.json")
    content = external_cluster.scheduler_file.read_text()
    half = content[: len(content) // 2]
    half_read = anyio.Event()
    read_text = anyio.Path.read_text

    async def read_and_tell(self: anyio.Path, *args: Any, **kwargs: Any) -> str:
        text = await read_text(self, *args, **kwargs)
        if text == half:
            half_read.set()
        return text

    monkeypatch.setattr(anyio.Path, "read_text", read_and_tell)
    executor = DaskExecutor(scheduler_file=path, connect_timeout=30)
    result: list[int] = []

    async def use() -> None:
        async with executor as ex:
            result.append(await ex.run(operator.add, 1, 2))

    async with anyio.create_task_group() as tg:
        tg.start_soon(use)
        await anyio.wait_all_tasks_blocked()  # waiting: no file yet
        await path.write_text(half)
        await half_read.wait()  # read, and not taken for a bad file
        assert not result
        await path.write_text(content)
    assert result == [3]


async def test_cancelled_while_waiting_for_the_scheduler_file(tmp_path: Path) -> None:
    """Waiting for a scheduler file is a checkpoint: a cancelled scope stops it at once."""
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def enter() -> None:
                async with DaskExecutor(scheduler_file=tmp_path / "never.json"):
                    pass

            tg.start_soon(enter)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    assert scope.cancelled_caught


async def test_cluster_object(external_cluster: ExternalCluster) -> None:
    """A cluster object is connected to and left open."""
    from distributed.deploy.cluster import Cluster

    class Existing(Cluster):  # the least a Cluster object offers: its scheduler address
        def __init__(self, address: str) -> None:
            self._address = address
            self.security = None

        @property
        def scheduler_address(self) -> str:
            return self._address

    async with DaskExecutor(cluster=Existing(external_cluster.address)) as ex:
        assert await ex.run(operator.add, 2, 3) == 5


async def test_map_and_nested_handles(external_cluster: ExternalCluster) -> None:
    """map() returns handles in order; handles nested in containers become their values."""
    from .tasks import inc, total

    async with DaskExecutor(external_cluster.address) as ex:
        handles = ex.map(inc, range(10))
        assert [h.key for h in handles] == list(dict.fromkeys(h.key for h in handles))
        nested = ex.submit(
            total,
            [handles[0], (handles[1], {"x": handles[2]})],
        )
        assert await ex.retrieve(nested) == 1 + 2 + 3
        via_kwargs = ex.submit(total, values={"a": [handles[9]]})
        assert await ex.retrieve(via_kwargs) == 10
        pairs = ex.map(operator.add, handles[:3], [10, 20, 30])
        assert [await ex.retrieve(h) for h in pairs] == [11, 22, 33]


async def test_chaining_keeps_data_on_cluster(external_cluster: ExternalCluster) -> None:
    """A value the client cannot unpickle flows between tasks: it never reached the client."""
    from .tasks import make_worker_only, read_worker_only

    async with DaskExecutor(external_cluster.address) as ex:
        data = ex.submit(make_worker_only, 41)
        value = ex.submit(read_worker_only, data)
        assert await ex.retrieve(value) == 41
        with pytest.raises(Exception, match="WorkerOnly data reached the client"):
            await ex.retrieve(data)


async def test_pure_false_gives_each_call_its_own_task(ex: DaskExecutor) -> None:
    """Identical submits are distinct tasks by default; pure=True shares one handle."""
    a = ex.submit(operator.add, 1, 1)
    b = ex.submit(operator.add, 1, 1)
    assert a.key != b.key
    c = ex.submit(operator.add, 2, 2, pure=True)
    d = ex.submit(operator.add, 2, 2, pure=True)
    assert c is d
    a.cancel()
    assert await ex.retrieve(b) == 2


async def test_submit_returns_at_once(external_cluster: ExternalCluster) -> None:
    """submit() is a plain call: it returns a pending handle without waiting for the task."""
    from .tasks import set_event, wait_for_event

    async with DaskExecutor(external_cluster.address) as ex:
        name = f"gate-{anyio.current_time()}"
        blocked = ex.submit(wait_for_event, name)
        assert blocked.status is TaskStatus.PENDING
        assert not blocked.done()
        await ex.run(set_event, name)
        await blocked
        assert blocked.done()


async def test_run_passes_every_keyword_to_the_function(ex: DaskExecutor) -> None:
    """run() has no options: keywords named like submit's options go to the function."""
    assert await ex.run(dict, key="k", pure=1, priority=2) == {
        "key": "k",
        "pure": 1,
        "priority": 2,
    }


async def test_submit_keywords_named_like_options(external_cluster: ExternalCluster) -> None:
    """A function keyword named like a Dask option (`workers=`) reaches the function."""
    from .tasks import total, with_keywords

    async with DaskExecutor(external_cluster.address) as ex:
        one = ex.submit(operator.add, 0, 1)
        handle = ex.submit(dict, fifo_timeout=one, actor=[one])
        assert handle.key.startswith("dict-")
        assert await ex.retrieve(handle) == {"fifo_timeout": 1, "actor": [1]}
        assert await ex.retrieve(ex.submit(total, {"a": one})) == 1
        mapped = ex.map(with_keywords, [one, 2], batch_size=[one])
        assert all(h.key.startswith("with_keywords-") for h in mapped)
        assert [await ex.retrieve(h) for h in mapped] == [
            {"x": 1, "batch_size": [1]},
            {"x": 2, "batch_size": [1]},
        ]


async def test_embedded_cluster_with_threads_only() -> None:
    """processes=False gives an in-process LocalCluster (inproc://, no TCP listener)."""
    async with DaskExecutor(processes=False, n_workers=1, threads_per_worker=1) as ex:
        assert await ex.run(operator.add, 1, 1) == 2


async def test_large_result(external_cluster: ExternalCluster) -> None:
    """A result of 300 MiB arrives whole (Dask deserialises it off the loop, also under
    trio, where trio-asyncio fails)."""
    from .tasks import make_bytes

    size = 300 * 1024 * 1024
    async with DaskExecutor(external_cluster.address) as ex:
        data = await ex.run(make_bytes, size)
        assert len(data) == size
        assert data == make_bytes(size)
