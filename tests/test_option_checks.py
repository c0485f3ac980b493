"""Unit tests of the argument checks (``_options``): pure functions, no cluster, no loop
except for the scheduler file. The real-cluster tests (test_bad_input.py) check that the
executor's methods use them."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import anyio
import pytest

from dask_anyio._options import (
    CollectionOptions,
    Source,
    TaskOptions,
    check_prefix,
    check_source,
    check_stream,
    collection_options,
    read_scheduler_file,
    task_options,
)


def _source(**given: Any) -> Source:
    arguments: dict[str, Any] = {
        "address": None,
        "scheduler_file": None,
        "cluster": None,
        "client": None,
        "security": None,
        "connect_timeout": None,
        "local_cluster_kwargs": {},
    }
    arguments.update(given)
    return check_source(**arguments)


# -- where the cluster comes from ---------------------------------------------------------


def test_no_source_is_an_embedded_cluster_with_its_options() -> None:
    kwargs = {"n_workers": 2}
    source = _source(local_cluster_kwargs=kwargs)
    assert source == Source(local_cluster_kwargs={"n_workers": 2})
    kwargs["n_workers"] = 3  # (a copy is kept)
    assert source.local_cluster_kwargs == {"n_workers": 2}


def test_a_scheduler_file_address_replaces_the_address_for_the_core() -> None:
    source = _source(scheduler_file="s.json", connect_timeout=3)
    arguments = source.core_arguments("tcp://127.0.0.1:1")
    assert arguments["address"] == "tcp://127.0.0.1:1"
    assert arguments["connect_timeout"] == 3
    assert _source(address="tcp://h:1").core_arguments(None)["address"] == "tcp://h:1"


@pytest.mark.parametrize(
    ("given", "error", "words"),
    [
        ({"address": "tcp://h:1", "scheduler_file": "f"}, ValueError, "at most one"),
        ({"address": "tcp://h:1", "local_cluster_kwargs": {"n_workers": 1}}, TypeError, "n_work"),
        ({"address": 8786}, TypeError, "address must be a string"),
        ({"scheduler_file": 3}, TypeError, "scheduler_file must be a path"),
        ({"scheduler_file": ""}, ValueError, "scheduler_file is empty"),
        ({"client": "tcp://h:1"}, TypeError, "client must be a distributed.Client"),
        ({"cluster": object()}, TypeError, "cluster must be a distributed Cluster"),
    ],
)
def test_bad_sources_are_named(given: dict[str, Any], error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        _source(**given)


# -- the options of tasks -----------------------------------------------------------------


def test_task_options_for_dask() -> None:
    options = task_options(key="k", pure=True, priority=2, retries=1, workers="w")
    assert options.for_dask() == {
        "key": "k",
        "pure": True,
        "priority": 2,
        "retries": 1,
        "resources": None,
        "workers": ["w"],
        "allow_other_workers": False,
    }
    assert task_options(prefix="p").key == "p"
    assert TaskOptions().for_dask()["key"] is None


def test_options_are_frozen_and_copy_what_they_are_given() -> None:
    resources = {"GPU": 1.0}
    options = task_options(resources=resources, workers=("a", "b"))
    resources["GPU"] = 2.0
    assert options.resources == {"GPU": 1.0}
    assert options.workers == ["a", "b"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.priority = 1  # type: ignore[misc]


def test_a_used_key_is_refused() -> None:
    with pytest.raises(ValueError, match="'k' is already used"):
        task_options(key="k", used={"k"})


@pytest.mark.parametrize(
    ("given", "error", "words"),
    [
        ({"key": ""}, ValueError, "key must be a non-empty string"),
        ({"key": 3}, ValueError, "key must be a non-empty string"),
        ({"prefix": ""}, ValueError, "prefix of every key"),
        ({"pure": 1}, TypeError, "pure must be True or False"),
        ({"priority": 1.5}, TypeError, "priority must be an integer"),
        ({"priority": True}, TypeError, "priority must be an integer"),
        ({"retries": -1}, ValueError, "retries must be a non-negative"),
        ({"retries": False}, ValueError, "retries must be a non-negative"),
        ({"resources": {"GPU": -1}}, ValueError, "resources must map"),
        ({"resources": {"GPU": float("nan")}}, ValueError, "resources must map"),
        ({"resources": {1: 1}}, ValueError, "resources must map"),
        ({"workers": [1]}, ValueError, "workers must be addresses"),
        ({"allow_other_workers": 1}, TypeError, "allow_other_workers must be True"),
        ({"allow_other_workers": True}, ValueError, "needs workers="),
    ],
)
def test_bad_task_options_are_named(
    given: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        task_options(**given)


def test_collection_options() -> None:
    options = collection_options(optimize_graph=False, workers=["w"], allow_other_workers=True)
    assert options == CollectionOptions(
        workers=["w"], allow_other_workers=True, optimize_graph=False
    )
    assert options.for_dask()["optimize_graph"] is False
    with pytest.raises(TypeError, match="optimize_graph must be True or False"):
        collection_options(optimize_graph=None)  # type: ignore[arg-type]


def test_check_prefix() -> None:
    assert check_prefix("p") == "p"
    with pytest.raises(ValueError, match="prefix"):
        check_prefix(None)


@pytest.mark.parametrize(
    ("arguments", "error", "words"),
    [
        ((None, [], 1, True), TypeError, "needs a callable"),
        ((abs, 3, 1, True), TypeError, "needs an iterable or async iterable"),
        ((abs, [], 0, True), ValueError, "max_in_flight must be a positive integer"),
        ((abs, [], True, True), ValueError, "max_in_flight must be a positive integer"),
        ((abs, [], 1, "yes"), TypeError, "ordered must be True or False"),
    ],
)
def test_bad_stream_arguments_are_named(
    arguments: tuple[Any, ...], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=f"imap\\(\\) {words}|{words}"):
        check_stream("imap", *arguments)


# -- the scheduler file -------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_scheduler_file_gives_its_address(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "scheduler.json"
    path.write_text(json.dumps({"address": "tcp://127.0.0.1:1", "type": "Scheduler"}))
    assert await read_scheduler_file(path, patience=0) == "tcp://127.0.0.1:1"


@pytest.mark.anyio
async def test_a_scheduler_file_written_late_is_waited_for(tmp_path: pathlib.Path) -> None:
    """As Dask's client waits for it: the scheduler may start with its client."""
    path = tmp_path / "scheduler.json"
    got: list[str] = []

    async def read() -> None:
        got.append(await read_scheduler_file(path, patience=30))

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        path.write_text("{")  # half written: still waited for
        await anyio.wait_all_tasks_blocked()
        path.write_text(json.dumps({"address": "tcp://127.0.0.1:2"}))
    assert got == ["tcp://127.0.0.1:2"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "error", "words"),
    [
        (None, FileNotFoundError, "no scheduler file .* appeared within 0 s: start the scheduler"),
        ("[]", ValueError, "is not a scheduler file"),
        ('{"address": 1}', ValueError, "is not a scheduler file"),
    ],
)
async def test_a_missing_or_bad_scheduler_file_is_named(
    tmp_path: pathlib.Path, content: str | None, error: type[Exception], words: str
) -> None:
    path = tmp_path / "scheduler.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=words):
        await read_scheduler_file(path, patience=0)
