"""dask-anyio's pytest plugin, registered through the ``pytest11`` entry point (as anyio's
is): the fixtures ``dask_cluster`` (the session's cluster) and ``dask_executor`` (an open
:class:`~dask_anyio.DaskExecutor` on the test's anyio backend), and a check after every test
that uses them: a test that leaves a task failure nobody awaited, a key on the scheduler, or
a thread, child process or file descriptor behind fails, saying what it left.

Options (``pytest --help``, section *dask-anyio*), each also an ini setting of the same name
without the dashes (``dask_workers = 2``): ``--dask-address`` or ``--dask-scheduler-file``
(an existing cluster; Dask's ``scheduler-address`` setting too), else a cluster the session
starts on 127.0.0.1, sized by ``--dask-workers`` and ``--dask-threads``: ``dask scheduler``
and ``dask worker`` processes, or with ``--dask-no-processes`` an in-process
``LocalCluster``; ``--dask-no-leak-check``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ._executor import DaskExecutor
from ._leaks import Snapshot, left_behind, loop_fds, snapshot
from ._scope import UNOBSERVED, ExitTimeout
from ._testcluster import DaskTestCluster, open_cluster

__all__ = ["DaskTestCluster", "cluster_options", "dask_cluster", "dask_executor", "open_cluster"]

#: How long dask_executor's exit after a test that passed waits for the tasks it left, by
#: default (the ini setting dask_exit_timeout).
EXIT_PATIENCE = 30.0


#: The whole-number options: name -> (default, help). Each is an option and an ini setting;
#: the ini setting is read when the option is not given.
_INTEGERS = {
    "workers": (1, "worker processes (or threads: --dask-no-processes) of the embedded cluster"),
    "threads": (2, "threads per worker of the embedded cluster"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dask-anyio", "dask-anyio: the cluster of dask_cluster")
    for name, about in (
        ("address", "an existing scheduler's address (else Dask's `scheduler-address` "
         "setting, else a cluster the session starts on 127.0.0.1)"),
        ("scheduler_file", "the scheduler file of an existing cluster (`dask scheduler "
         "--scheduler-file`)"),
    ):  # fmt: skip
        group.addoption(_flag(name), dest=f"dask_{name}", default=None, help=about)
        parser.addini(f"dask_{name}", about, default=None)
    for name, (default, about) in _INTEGERS.items():
        about += f" (default {default})"
        group.addoption(_flag(name), dest=f"dask_{name}", type=int, default=None, help=about)
        parser.addini(f"dask_{name}", about, default=str(default))
    about = "the embedded cluster is `dask scheduler` and `dask worker` processes (the "
    about += "default), or an in-process LocalCluster whose workers are threads "
    about += "(--dask-no-processes: faster to start, nothing pickled, an inproc:// address)"
    group.addoption(
        "--dask-processes", dest="dask_processes", action="store_true", default=None, help=about
    )
    group.addoption(
        "--dask-no-processes", dest="dask_processes", action="store_false", default=None,
        help="the embedded cluster's workers are threads of this process (see above)",
    )  # fmt: skip
    parser.addini("dask_processes", about, type="bool", default=True)
    parser.addini(
        "dask_exit_timeout",
        "seconds that dask_executor's exit, after a test that passed, waits for the tasks "
        f"the test left before it cancels them and fails the test (default {EXIT_PATIENCE:g})",
        default=str(EXIT_PATIENCE),
    )
    about = "do not check what tests that use dask_cluster leave behind (keys, threads, "
    about += "processes, file descriptors)"
    group.addoption(
        "--dask-no-leak-check", dest="dask_leak_check", action="store_false", default=None,
        help=about,
    )  # fmt: skip
    parser.addini("dask_leak_check", "check " + about.removeprefix("do not check "), "bool", True)


def _flag(name: str) -> str:
    return "--dask-" + name.replace("_", "-")


def cluster_options(config: pytest.Config) -> dict[str, Any]:
    """The arguments of :func:`open_cluster` that the command line asks for, else the ini
    file; a bad value is a usage error."""

    def given(name: str) -> Any:
        value = config.getoption(f"dask_{name}", None)
        return config.getini(f"dask_{name}") if value is None else value

    sizes = {}
    for name in _INTEGERS:
        value = given(name)
        try:
            sizes[name] = int(value)
        except ValueError:
            sizes[name] = 0
        if sizes[name] < 1:
            raise pytest.UsageError(
                f"{_flag(name)} (or the ini setting dask_{name}) must be a whole number of 1 "
                f"or more, not {value!r}"
            )
    # An existing cluster named on the command line wins over both ini settings.
    address = config.getoption("dask_address", None)
    scheduler_file = config.getoption("dask_scheduler_file", None)
    if address is None and scheduler_file is None:
        address = config.getini("dask_address") or None
        scheduler_file = config.getini("dask_scheduler_file") or None
    if address is not None and scheduler_file is not None:
        raise pytest.UsageError(
            "give --dask-address or --dask-scheduler-file (or their ini settings), not both"
        )
    return {
        "address": address,
        "scheduler_file": scheduler_file,
        "processes": bool(given("processes")),
        **sizes,
    }


def pytest_configure(config: pytest.Config) -> None:
    cluster_options(config)  # bad options stop the run before any test
    _exit_timeout(config)


def _exit_timeout(config: pytest.Config) -> float:
    value = config.getini("dask_exit_timeout")
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise pytest.UsageError(f"the ini setting dask_exit_timeout must be seconds, not {value!r}")
    return seconds


@pytest.fixture(scope="session")
def dask_cluster(request: pytest.FixtureRequest) -> Iterator[DaskTestCluster]:
    """The cluster the session's tests share, started (or connected to) by the first test
    that needs it: one on 127.0.0.1 (``--dask-workers``, ``--dask-threads``,
    ``--dask-no-processes``), or the scheduler that ``--dask-address``,
    ``--dask-scheduler-file`` or Dask's ``scheduler-address`` setting names. Under
    pytest-xdist each worker process starts its own, or all share the one named."""
    with open_cluster(**cluster_options(request.config)) as cluster:
        yield cluster


class _TestRaised(Exception):
    """Given to the executor's exit when the test failed: it cancels what is outstanding
    rather than wait for it."""


@pytest.fixture
async def dask_executor(
    dask_cluster: DaskTestCluster, anyio_backend: Any, request: pytest.FixtureRequest
) -> AsyncIterator[DaskExecutor]:
    """An open :class:`~dask_anyio.DaskExecutor` on ``dask_cluster``, on the test's anyio
    backend (``anyio_backend``: asyncio, asyncio with uvloop, trio), for tests marked
    ``anyio``. After a test that passed, it exits as ``async with`` does: it waits for the
    outstanding tasks and fails the test if one failed and nobody awaited it. After a test
    that raised (failed, skipped or xfailed midway, interrupted), it cancels them first."""
    test = request.function
    test = getattr(getattr(test, "hypothesis", None), "inner_test", test)  # (@given)
    test = getattr(test, "_anyio_original_func", test)  # (anyio's wrapper of a @given test)
    if not inspect.iscoroutinefunction(test):
        pytest.fail(
            f"dask_executor is for async tests run by anyio (`async def`, marked "
            f"`@pytest.mark.anyio`); {request.node.name} is not a coroutine function. A "
            "synchronous test can give dask_cluster.address to distributed.Client.",
            pytrace=False,
        )
    executor = dask_cluster.executor()
    await executor.__aenter__()
    try:
        yield executor
    except BaseException as error:  # (thrown in: the generator closed without its teardown)
        await executor.__aexit__(type(error), error, error.__traceback__)
        raise
    if request.node.stash.get(_CALL_RAISED, True):  # (no call at all: interrupted)
        # The exit by an error: it cancels what is outstanding, and never raises the
        # error it was given; it notes on it the task failures nobody awaited.
        raised = _TestRaised("the test raised")
        await executor.__aexit__(_TestRaised, raised, None)
        notes = getattr(raised, "__notes__", [])
        if notes:
            pytest.fail(f"{request.node.nodeid}: " + " ".join(notes), pytrace=False)
        return
    patience = _exit_timeout(request.config)
    try:
        # (the bound is the exit's own: a scope of ours around the executor's, held
        # across the yield, would be left in another task after an interrupt)
        await executor._aexit_within(patience)
    except ExitTimeout as timeout:
        notes = " ".join(getattr(timeout, "__notes__", []))
        pytest.fail(
            f"{request.node.nodeid} left {timeout.pending} task(s) pending that had not "
            f"finished {patience:g} s after the test (ini setting dask_exit_timeout); "
            f"dask_executor cancelled them. Await (or cancel) what a test submits. {notes}",
            pytrace=False,
        )
    except ExceptionGroup as group:
        if group.message != UNOBSERVED:
            raise
        failures = "; ".join(f"{type(e).__name__}: {e}" for e in group.exceptions)
        pytest.fail(
            f"{request.node.nodeid} left {len(group.exceptions)} task failure(s) nobody "
            f"awaited: {failures}. Await each handle whose task may fail (or pass them "
            "to ex.gather(..., errors='skip')), or cancel what the test does not need.",
            pytrace=False,
        )


# -- the check after each test ---------------------------------------------------------------

#: Whether the test's call raised (failed, skipped or xfailed midway).
_CALL_RAISED = pytest.StashKey[bool]()


@dataclass(frozen=True)
class _Before:
    cluster: DaskTestCluster
    keys: set[str] | None
    process: Snapshot


_BEFORE = pytest.StashKey[_Before | None]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[_CALL_RAISED] = call.excinfo is not None
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """Once the test's fixtures are set up, the baseline (taken before them) adds the
    descriptors that were opened meanwhile and are not sockets: the test's event loop's."""
    item.stash[_BEFORE] = None  # (what a rerun's earlier setup stashed is stale)
    item.stash[_CALL_RAISED] = True
    yield
    before = item.stash.get(_BEFORE, None)
    if before is not None:
        item.stash[_BEFORE] = _Before(before.cluster, before.keys, loop_fds(before.process))


@pytest.fixture(autouse=True)
def _dask_anyio_leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    """The check of a test that uses the cluster. Set up before the test's other function
    fixtures (an autouse fixture comes first, after the session's and module's), it takes
    the baseline: the keys on the scheduler (asked first: the request may open a
    connection), then this process's threads, children and file descriptors, so that what
    ``dask_executor`` or another fixture of the test leaves is seen too. Torn down last of
    the test's own, it checks: threads, children and descriptors first (no request to the
    scheduler has opened a connection since the baseline), then keys. Nothing to do for
    other tests."""
    if "dask_cluster" in request.fixturenames and _leak_check(request.config):
        cluster = request.getfixturevalue("dask_cluster")
        keys = cluster.scheduler_keys() if _keys_are_ours(cluster) else None
        request.node.stash[_BEFORE] = _Before(cluster, keys, snapshot())
    yield
    before = request.node.stash.get(_BEFORE, None)
    if before is None:  # (not a test of ours, or its setup failed: that is reported)
        return
    cluster = before.cluster
    kept = None if cluster.processes else _pool_thread
    leaks = left_behind(
        before.process, kept, in_process=not cluster.processes, cluster=cluster.started_processes()
    )
    if before.keys is not None and not cluster.closed:
        held = cluster.wait_gone(cluster.scheduler_keys() - before.keys)
        if held:
            shown = ", ".join(f"{k!r} ({about})" for k, about in list(held.items())[:5])
            leaks.insert(
                0,
                f"{len(held)} key(s) on the scheduler: {shown} (release the futures you "
                "kept, unpublish datasets, and wait for what you fire_and_forget)",
            )
    if leaks:
        pytest.fail(f"{request.node.nodeid} left behind: " + "; ".join(leaks), pytrace=False)


def _leak_check(config: pytest.Config) -> bool:
    given = config.getoption("dask_leak_check", None)
    return bool(config.getini("dask_leak_check") if given is None else given)


def _keys_are_ours(cluster: DaskTestCluster) -> bool:
    """Whether a key that appears during a test, and that no connected client wants, is the
    test's: on a cluster of this session's own, or one named on the command line or in the
    ini file; not on one that Dask's settings name (it may be anyone's), nor on one shared
    by pytest-xdist's workers (another's test may publish a dataset meanwhile)."""
    if cluster.embedded:
        return True
    return not cluster.from_dask_config and "PYTEST_XDIST_WORKER" not in os.environ


#: Threads an in-process cluster's workers start when tasks first need them.
_pool_thread: Callable[[str], bool] = lambda name: (  # noqa: E731
    "Dask-Default-Threads" in name or "Dask-Actor-Threads" in name
)
