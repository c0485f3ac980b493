"""Every submit option of DaskExecutor is honoured on a real cluster, seen from the cluster.

The session's external cluster has two workers, worker-0 and worker-1, with 8 threads and
one SLOT each. Tasks that must run one at a time take worker-0's SLOT; tasks that must wait
hold a gate task with a timeout, released in a ``finally``, so no worker thread stays blocked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
import pytest

from dask_anyio import DaskExecutor, TaskHandle, TaskStatus

from .conftest import ExternalCluster
from .option_tasks import (
    FlakyError,
    append_tag,
    current_key_and_kwargs,
    fail_then_succeed,
    hold_slot,
    meet,
    noop,
    set_events,
    task_states_on_worker,
    wait_event,
    worker_name,
)
from .tasks import inc, mark_started, with_keywords

pytestmark = pytest.mark.anyio

#: How long to wait for a task that only a mis-applied option could hold back: a regression
#: then fails the test cleanly, before pytest-timeout.
WAIT = 30.0

#: An address where no worker listens (the discard port).
NOWHERE = "tcp://127.0.0.1:9"

#: Keys of tasks submitted without key= start with their function's name; ours with "opt-".
#: (Keys of the functions borrowed from tests.tasks are checked one by one, by handle.)
OUR_PREFIXES = (
    "opt-",
    *(
        f"{fn.__name__}-"
        for fn in (
            append_tag,
            current_key_and_kwargs,
            fail_then_succeed,
            hold_slot,
            meet,
            noop,
            set_events,
            wait_event,
            worker_name,
        )
    ),
)


def unique(prefix: str) -> str:
    """A key or event name no other test (or backend) uses."""
    return f"opt-{prefix}-{uuid.uuid4().hex}"


def worker_addresses(cluster: ExternalCluster) -> dict[str, str]:
    """The address of each worker, by name."""
    info = cluster.observer.scheduler_info(n_workers=-1)["workers"]
    addresses = {str(worker["name"]): address for address, worker in info.items()}
    assert sorted(addresses) == ["worker-0", "worker-1"]
    return addresses


def assert_forgotten(cluster: ExternalCluster, keys: Iterable[str] = ()) -> None:
    """The scheduler holds none of ``keys`` and no key these tests made (run()'s included)."""
    held = cluster.scheduler_keys()
    assert not held & set(keys)
    assert [k for k in held if k.startswith(OUR_PREFIXES)] == []


def keys_of(handles: Iterable[TaskHandle[Any]]) -> list[str]:
    return [h.key for h in handles]


async def lines_of(path: str | Path) -> list[str]:
    """The lines of a file that tasks wrote."""
    return (await anyio.Path(path).read_text()).splitlines()


# -- key= ---------------------------------------------------------------------------------


async def test_key_is_the_scheduler_key(external_cluster: ExternalCluster) -> None:
    """key= is the task's key on the scheduler; a second submit with it raises ValueError."""
    key, key_via_apply = unique("key"), unique("key")
    async with DaskExecutor(external_cluster.address) as ex:
        handle = ex.submit(inc, 41, key=key)
        assert handle.key == key
        assert await ex.retrieve(handle) == 42
        assert external_cluster.task_states()[key] == "memory"
        with pytest.raises(ValueError, match=f"key '{key}' is already used"):
            ex.submit(inc, 0, key=key)
        with pytest.raises(ValueError, match=f"key '{key}' is already used"):
            ex.submit(inc, 41, key=key, pure=True)
        # A function keyword named like a Client.submit option takes another path: same key.
        other = ex.submit(with_keywords, 1, key=key_via_apply, actor="a")
        assert other.key == key_via_apply
        assert await ex.retrieve(other) == {"x": 1, "actor": "a"}
        assert external_cluster.task_states()[key_via_apply] == "memory"
        assert await ex.retrieve(handle) == 42  # the refused submits left the task alone
    assert_forgotten(external_cluster, [key, key_via_apply])


# -- priority= ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["submit", "map"])
async def test_priority_orders_tasks_waiting_for_a_worker(
    external_cluster: ExternalCluster, tmp_path: Path, how: str
) -> None:
    """Tasks queued for one SLOT run highest priority first, whatever the submit order."""
    worker = worker_addresses(external_cluster)["worker-0"]
    slot: dict[str, Any] = {"resources": {"SLOT": 1}, "workers": [worker]}
    started, release = unique("started"), unique("release")
    log = str(tmp_path / "order.log")
    levels = [("low", -1), ("default", 0), ("high", 1)]  # submitted in this order
    tagged: list[TaskHandle[str]] = []
    async with DaskExecutor(external_cluster.address) as ex:
        gate = ex.submit(hold_slot, started, release, **slot)
        try:
            assert await ex.run(wait_event, started)  # the gate holds worker-0's one SLOT
            if how == "submit":
                for i in range(2):
                    for level, priority in levels:
                        tag = f"{level}-{i}"
                        tagged.append(ex.submit(append_tag, log, tag, priority=priority, **slot))
            else:
                for level, priority in levels:
                    tags = [f"{level}-0", f"{level}-1"]
                    tagged += ex.map(append_tag, [log, log], tags, priority=priority, **slot)
            # Barrier: the client's stream, the scheduler and the worker's stream all keep
            # message order, so once this later task ran on worker-0, worker-0 has every
            # tagged task, queued behind the gate.
            await ex.submit(noop, workers=[worker])
            on_worker = external_cluster.observer.run(
                task_states_on_worker, keys_of(tagged), workers=[worker]
            )[worker]
            assert set(on_worker.values()) == {"constrained"}, on_worker
        finally:
            await ex.run(set_events, release)
        assert await ex.retrieve(gate) is True  # released, not timed out
        for handle in tagged:
            await handle
    assert_forgotten(external_cluster, [gate.key, *keys_of(tagged)])
    ran = await lines_of(log)
    assert [tag.split("-")[0] for tag in ran] == ["high"] * 2 + ["default"] * 2 + ["low"] * 2
    assert sorted(ran) == sorted(f"{level}-{i}" for level, _ in levels for i in range(2))


# -- retries= -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keywords", [{}, {"actor": "x"}], ids=["plain", "keyword-named-like-an-option"]
)
async def test_retries(
    external_cluster: ExternalCluster, tmp_path: Path, keywords: dict[str, Any]
) -> None:
    """retries=n reruns a failing task up to n times; past that its own exception is raised."""
    enough, too_few, none = (str(tmp_path / name) for name in ("enough", "too_few", "none"))
    async with DaskExecutor(external_cluster.address) as ex:
        handles = [
            ex.submit(fail_then_succeed, enough, 2, retries=2, **keywords),
            ex.submit(fail_then_succeed, too_few, 2, retries=1, **keywords),
            ex.submit(fail_then_succeed, none, 2, **keywords),
        ]
        assert await ex.retrieve(handles[0]) == 3
        with pytest.raises(FlakyError, match=r"^attempt 2 of .*too_few fails$"):
            await handles[1]
        with pytest.raises(FlakyError, match=r"^attempt 1 of .*none fails$"):
            await ex.retrieve(handles[2])
        assert [h.status for h in handles] == [
            TaskStatus.FINISHED,
            TaskStatus.ERROR,
            TaskStatus.ERROR,
        ]
    assert_forgotten(external_cluster, keys_of(handles))
    attempts = [len(await lines_of(p)) for p in (enough, too_few, none)]
    assert attempts == [3, 2, 1]


# -- resources= ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resources", [{"ABSENT": 1}, {"SLOT": 2}], ids=["unknown-resource", "more-than-any-worker"]
)
async def test_resources_no_worker_has_keep_the_task_waiting(
    external_cluster: ExternalCluster, tmp_path: Path, resources: dict[str, float]
) -> None:
    """A task needing resources no worker has stays "no-worker" on the scheduler, unstarted."""
    marker = tmp_path / "started"
    async with DaskExecutor(external_cluster.address) as ex:
        handle = ex.submit(mark_started, str(marker), resources=resources)
        fits = ex.submit(worker_name, resources={"SLOT": 1})
        with anyio.fail_after(WAIT):
            assert await ex.retrieve(fits) in {"worker-0", "worker-1"}
            # A later task of the same client is done: the scheduler has placed the first one.
            await ex.run(noop)
        assert external_cluster.task_states()[handle.key] == "no-worker"
        assert handle.status is TaskStatus.PENDING
        assert handle.cancel() is True
    assert_forgotten(external_cluster, [handle.key, fits.key])
    assert not await anyio.Path(marker).exists()


async def test_fractional_resources_share_a_worker(external_cluster: ExternalCluster) -> None:
    """Two tasks needing SLOT=0.5 each run at the same time on one worker with SLOT=1."""
    worker = worker_addresses(external_cluster)["worker-0"]
    half: dict[str, Any] = {"resources": {"SLOT": 0.5}, "workers": [worker]}
    a, b = unique("meet"), unique("meet")
    async with DaskExecutor(external_cluster.address) as ex:
        pair = [ex.submit(meet, a, b, **half), ex.submit(meet, b, a, **half)]
        # Each returns False after a timeout if its partner could not run alongside it.
        assert [await ex.retrieve(h) for h in pair] == [True, True]
    assert_forgotten(external_cluster, keys_of(pair))


# -- workers= and allow_other_workers= ----------------------------------------------------


async def test_workers_pins_the_task(external_cluster: ExternalCluster) -> None:
    """workers= (an address or a name, alone or in a list) runs the task on that worker only."""
    handles: list[TaskHandle[str]] = []
    async with DaskExecutor(external_cluster.address) as ex:
        for name, address in worker_addresses(external_cluster).items():
            targets: list[Any] = [address, [address], name, (name,), iter([address])]
            pinned = [ex.submit(worker_name, workers=target) for target in targets]
            pinned.append(ex.submit(worker_name, workers=name, actor="x"))  # keyword path
            pinned += ex.map(worker_name, range(4), workers=[name])
            with anyio.fail_after(WAIT):
                assert [await ex.retrieve(h) for h in pinned] == [name] * len(pinned)
            handles += pinned
    assert_forgotten(external_cluster, keys_of(handles))


@pytest.mark.parametrize("nowhere", [NOWHERE, "worker-9"], ids=["address", "name"])
async def test_allow_other_workers(
    external_cluster: ExternalCluster, tmp_path: Path, nowhere: str
) -> None:
    """Pinned to a worker that does not exist, a task runs elsewhere only if allowed to."""
    marker = tmp_path / "started"
    async with DaskExecutor(external_cluster.address) as ex:
        strict = ex.submit(mark_started, str(marker), workers=[nowhere])
        loose = ex.submit(worker_name, workers=[nowhere], allow_other_workers=True)
        with anyio.fail_after(WAIT):
            assert await ex.retrieve(loose) in {"worker-0", "worker-1"}
        # loose was submitted after strict and is done: the scheduler has placed strict.
        assert external_cluster.task_states()[strict.key] == "no-worker"
        assert strict.status is TaskStatus.PENDING
        assert strict.cancel() is True
    assert_forgotten(external_cluster, [strict.key, loose.key])
    assert not await anyio.Path(marker).exists()


# -- map() --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keywords", [{}, {"actor": "x"}], ids=["plain", "keyword-named-like-an-option"]
)
async def test_map_key_prefix_and_retries(
    external_cluster: ExternalCluster, tmp_path: Path, keywords: dict[str, Any]
) -> None:
    """map(key=...) prefixes every task's key; retries= applies to every task."""
    enough_prefix, too_few_prefix = unique("map"), unique("map")
    enough = [str(tmp_path / f"enough-{i}") for i in range(3)]
    too_few = [str(tmp_path / f"too_few-{i}") for i in range(2)]
    async with DaskExecutor(external_cluster.address) as ex:
        succeeding = ex.map(
            fail_then_succeed, enough, [2] * 3, key=enough_prefix, retries=2, **keywords
        )
        failing = ex.map(
            fail_then_succeed, too_few, [2] * 2, key=too_few_prefix, retries=1, **keywords
        )
        keys = keys_of(succeeding)
        assert len(set(keys)) == 3
        assert all(k.startswith(f"{enough_prefix}-") for k in keys)
        assert all(k.startswith(f"{too_few_prefix}-") for k in keys_of(failing))
        assert [await ex.retrieve(h) for h in succeeding] == [3, 3, 3]
        for handle in failing:
            with pytest.raises(FlakyError, match=r"^attempt 2 of "):
                await handle
        on_scheduler = {k for k in external_cluster.scheduler_keys() if k.startswith(enough_prefix)}
        assert on_scheduler == set(keys)
    assert_forgotten(external_cluster, keys + keys_of(failing))
    assert [len(await lines_of(p)) for p in enough + too_few] == [3, 3, 3, 2, 2]


# -- run() --------------------------------------------------------------------------------


async def test_run_gives_option_names_to_the_function(external_cluster: ExternalCluster) -> None:
    """run() takes no options: key= and the other option names are the function's keywords."""
    options: dict[str, Any] = {
        "key": "opt-run-x",
        "pure": True,
        "priority": 100,
        "retries": 3,
        "resources": {"ABSENT": 1},
        "workers": [NOWHERE],
        "allow_other_workers": False,
    }
    async with DaskExecutor(external_cluster.address) as ex:
        # Were resources= or workers= applied, the task could never start.
        with anyio.fail_after(WAIT):
            task_key, received = await ex.run(current_key_and_kwargs, **options)
        assert received == options
        assert task_key != "opt-run-x"
        assert task_key.startswith("current_key_and_kwargs-")
        only_key, received = await ex.run(current_key_and_kwargs, key="x")
        assert received == {"key": "x"}
        assert only_key.startswith("current_key_and_kwargs-")
    assert_forgotten(external_cluster, [task_key, only_key, "opt-run-x", "x"])


# -- option checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad_key", ["", 5], ids=["empty", "not-a-string"])
async def test_map_checks_its_key_prefix_like_submit(
    external_cluster: ExternalCluster, bad_key: Any
) -> None:
    """map() refuses a key= prefix that is not a non-empty string, as submit() does."""
    async with DaskExecutor(external_cluster.address) as ex:
        with pytest.raises(ValueError, match="key must be a non-empty string"):
            ex.submit(inc, 1, key=bad_key)
        with pytest.raises(ValueError, match="key must be a non-empty string"):
            ex.map(inc, [1], key=bad_key)
    assert_forgotten(external_cluster)


async def test_map_never_aliases_a_key_in_use(external_cluster: ExternalCluster) -> None:
    """map() takes a key prefix only, never a list of keys: it cannot hand back another
    task's handle for a key already in use."""
    key = unique("in-use")
    async with DaskExecutor(external_cluster.address) as ex:
        first = ex.submit(inc, 1, key=key)
        with pytest.raises(ValueError, match="key must be a non-empty string"):
            ex.map(inc, [100], key=[key])  # type: ignore[arg-type]
        assert await ex.retrieve(first) == 2
    assert_forgotten(external_cluster, [key])


async def test_workers_not_a_string_gets_a_clear_error(external_cluster: ExternalCluster) -> None:
    """A bare non-string workers= is refused with the message workers=[0] gets."""
    async with DaskExecutor(external_cluster.address) as ex:
        with pytest.raises(ValueError, match=r"workers must be addresses or names \(strings\)"):
            ex.submit(inc, 1, workers=[0])  # type: ignore[list-item]
        with pytest.raises(ValueError, match=r"workers must be addresses or names \(strings\)"):
            ex.submit(inc, 1, workers=0)  # type: ignore[arg-type]
    assert_forgotten(external_cluster)
