"""The pytest plugin for users (dask_anyio.pytest_plugin), as a user meets it: test files with
no conftest, run by pytest in a process of its own that finds the plugin through its entry
point, on an embedded cluster (processes and threads) and on one started with the ``dask``
commands."""

from __future__ import annotations

import contextlib
import json

import psutil
import pytest

from .conftest import ROOT, ExternalCluster

#: Task functions, in a module beside the tests: the workers import it by name.
TASKS = """
def inc(x):
    return x + 1


def fail(message):
    raise ValueError(message)
"""

#: A user's tests, on anyio's default backends (every installed one: asyncio and trio).
USER_TESTS = """
import anyio
import pytest

from dask_anyio import DaskExecutor
from dask_anyio.pytest_plugin import DaskTestCluster
from tasks import fail, inc

pytestmark = pytest.mark.anyio


async def test_run(dask_executor: DaskExecutor) -> None:
    assert await dask_executor.run(inc, 1) == 2
    with anyio.fail_after(10):  # on the test's own loop: its cancellation reaches the call
        await dask_executor.run(inc, 2)


async def test_a_task_error_reaches_the_test(dask_executor: DaskExecutor) -> None:
    with pytest.raises(ValueError, match="no good"):
        await dask_executor.run(fail, "no good")


async def test_an_executor_of_its_own(dask_cluster: DaskTestCluster) -> None:
    async with dask_cluster.executor() as ex:
        assert await ex.gather(ex.map(inc, range(3))) == [1, 2, 3]
"""

#: The same module with uvloop too: a module's own anyio_backend fixture.
UVLOOP_TESTS = """
import pytest

from tasks import inc


@pytest.fixture(params=["asyncio", ("asyncio", {"use_uvloop": True}), "trio"])
def anyio_backend(request):
    return request.param


@pytest.mark.anyio
async def test_run(dask_executor):
    assert await dask_executor.run(inc, 41) == 42
"""


#: Each test starts a pytest process, which starts a cluster (or two, under pytest-xdist).
pytestmark = pytest.mark.timeout(180)


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    options = ["-v", "-p", "no:cacheprovider", "-W", "error", "--timeout", "60", *args]
    return pytester.runpytest_subprocess(*options, timeout=150)


def test_a_test_file_without_conftest_runs_on_every_backend(pytester: pytest.Pytester) -> None:
    """Worker processes (the default): the values cross processes, pickled."""
    pytester.makepyfile(tasks=TASKS, test_user=USER_TESTS, test_uvloop=UVLOOP_TESTS)
    result = _run(pytester)
    result.assert_outcomes(passed=9)
    result.stdout.fnmatch_lines(["*test_run[[]asyncio[]] PASSED*", "*test_run[[]trio[]] PASSED*"])
    result.stdout.fnmatch_lines(["*test_run[[]anyio_backend1[]] PASSED*"])  # uvloop


def test_a_threaded_cluster_of_the_size_asked_for(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        tasks=TASKS,
        test_size="""
        import distributed
        import pytest

        from tasks import inc


        async def nthreads(client):
            return sorted((await client.nthreads()).values())


        @pytest.mark.anyio
        async def test_size(dask_executor, dask_cluster):
            assert dask_cluster.embedded and not dask_cluster.processes
            assert await dask_executor.call_client(nthreads) == [3, 3]
            assert await dask_executor.run(inc, 1) == 2
        """,
    )
    result = _run(pytester, "--dask-no-processes", "--dask-workers", "2", "--dask-threads", "3")
    result.assert_outcomes(passed=2)


def test_the_ini_file_sizes_the_cluster(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ndask_workers = 2\ndask_threads = 1\ndask_processes = false\n")
    pytester.makepyfile(
        test_ini="""
        import pytest


        @pytest.mark.anyio
        async def test_size(dask_executor, dask_cluster):
            nthreads = await dask_executor.call_client(lambda c: c.nthreads())
            assert sorted(nthreads.values()) == [1, 1] and not dask_cluster.processes
        """
    )
    _run(pytester).assert_outcomes(passed=2)


def test_pytest_xdist_workers_start_a_cluster_each(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(tasks=TASKS, test_user=USER_TESTS)
    result = _run(pytester, "-n", "2", "--dask-no-processes")
    result.assert_outcomes(passed=6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dask-workers", "0"], "--dask-workers (or the ini setting dask_workers) must be"),
        (["--dask-address", "tcp://127.0.0.1:1", "--dask-scheduler-file", "x.json"], "not both"),
    ],
)
def test_bad_options_stop_the_run(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile(test_nothing="def test_nothing(): pass")
    result = _run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_an_external_cluster(
    pytester: pytest.Pytester, external_cluster: ExternalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--dask-address`` and ``--dask-scheduler-file``: the test imports its task functions
    from the project's tests, as the cluster's workers do (the project is on their path)."""
    pytester.makepyfile(
        test_external=f"""
        import pytest

        from tests.tasks import inc


        @pytest.mark.anyio
        async def test_external(dask_executor, dask_cluster):
            assert dask_cluster.address == {external_cluster.address!r}
            assert not dask_cluster.embedded and dask_cluster.workers == 2
            assert await dask_executor.run(inc, 1) == 2
        """
    )
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    for option in (
        ["--dask-address", external_cluster.address],
        ["--dask-scheduler-file", str(external_cluster.scheduler_file)],
    ):
        _run(pytester, *option).assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            ["--dask-address", "tcp://127.0.0.1:1"],
            "*no Dask scheduler answered at tcp://127.0.0.1:1 within 1 s*",
        ),
        (["--dask-address", "nonsense"], "*'nonsense' is not a scheduler's address*"),
        (  # (Dask's client waits for a missing file for ever)
            ["--dask-scheduler-file", "absent.json"],
            "*the scheduler file absent.json of --dask-scheduler-file does not exist (1 s*",
        ),
    ],
)
def test_no_scheduler_at_the_address_says_so(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, option: list[str], message: str
) -> None:
    pytester.makepyfile(
        test_nowhere="""
        import pytest


        @pytest.mark.anyio
        async def test_nowhere(dask_executor):
            pass
        """
    )
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "1s")
    result = _run(pytester, *option)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([message])


LEAKY_TESTS = """
import threading

import distributed
import pytest

from tasks import fail, inc

pytestmark = pytest.mark.anyio
STOP = threading.Event()


@pytest.fixture(scope="session", autouse=True)
def _stop_the_threads():
    yield
    STOP.set()


async def test_unobserved_failure(dask_executor):
    dask_executor.submit(fail, "nobody looks")


async def test_published_key(dask_executor):
    async def publish(client):
        await client.publish_dataset(kept=client.submit(inc, 1, key="kept-by-a-dataset"))

    await dask_executor.call_client(publish)


async def test_thread(dask_executor):
    threading.Thread(target=STOP.wait, name="left-running", daemon=True).start()


@pytest.fixture
def a_thread_of_a_fixture():
    threading.Thread(target=STOP.wait, name="left-by-a-fixture", daemon=True).start()


async def test_a_fixture_leaves_a_thread(a_thread_of_a_fixture, dask_executor):
    pass


async def test_failing_test_cancels_what_it_left(dask_executor):
    dask_executor.submit(inc, 1, resources={"ABSENT": 1}, key="never-runs")
    assert False, "the test's own failure"


@pytest.mark.xfail(strict=True)
async def test_an_xfailed_test_cancels_what_it_left(dask_executor):
    dask_executor.submit(inc, 2, resources={"ABSENT": 1}, key="never-runs-either")
    assert False


async def test_after_them(dask_executor, dask_cluster):
    \"\"\"Runs last: nothing of the others is left but the published key.\"\"\"
    assert dask_cluster.scheduler_keys() == {"kept-by-a-dataset"}
    await dask_executor.call_client(lambda c: c.unpublish_dataset("kept"))


def test_sync_test(dask_executor):
    pass
"""


def test_what_a_test_leaves_fails_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(tasks=TASKS, test_leaky=LEAKY_TESTS)
    result = _run(pytester, "-p", "no:randomly", "--dask-no-processes")
    # (each of the first four on two backends: an error at teardown; the sync one's at
    # setup; the failed and the xfailed tests do not wait for the tasks they left)
    result.assert_outcomes(passed=10, failed=2, errors=10, xfailed=2)
    out = result.stdout.str()
    for backend in ("asyncio", "trio"):
        prefix = "test_leaky.py::"
        assert (
            f"{prefix}test_unobserved_failure[{backend}] left 1 task failure(s) nobody awaited: "
            "ValueError: nobody looks" in out
        ), out
        assert (
            f"{prefix}test_published_key[{backend}] left behind: 1 key(s) on the scheduler: "
            "'kept-by-a-dataset' (memory, wanted by published-kept)" in out
        ), out
        assert f"{prefix}test_thread[{backend}] left behind: thread 'left-running'" in out, out
        # (the baseline is taken before the test's fixtures: what they leave is seen too)
        assert (
            f"{prefix}test_a_fixture_leaves_a_thread[{backend}] left behind: thread "
            "'left-by-a-fixture'" in out
        ), out
        assert "dask_executor is for async tests run by anyio" in out
    assert out.count("the test's own failure") >= 2


def test_a_test_that_leaves_a_task_pending_fails_after_the_exit_timeout(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_pending="""
        import pytest


        @pytest.mark.anyio
        async def test_pending(dask_executor):
            dask_executor.submit(int, 1, resources={"ABSENT": 1})
        """
    )
    result = _run(pytester, "--dask-no-processes", "-o", "dask_exit_timeout=0.5")
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(
        ["*test_pending?asyncio? left 1 task(s) pending that had not finished 0.5 s after*"]
    )


def test_the_cluster_ends_with_a_run_that_was_killed(pytester: pytest.Pytester) -> None:
    """A run that ends without stopping its cluster (os._exit, as pytest-timeout's thread
    method ends one; SIGKILL) leaves no scheduler or worker running."""
    pids = pytester.path / "pids.json"
    pytester.makepyfile(
        test_killed=f"""
        import json, os

        import psutil
        import pytest


        @pytest.mark.anyio
        @pytest.mark.parametrize("anyio_backend", ["asyncio"])
        async def test_killed(dask_executor, dask_cluster):
            assert await dask_executor.run(int, "1") == 1
            started = dask_cluster.started_processes()
            family = [p.pid for pid in started for p in psutil.Process(pid).children(True)]
            with open({str(pids)!r}, "w") as file:
                json.dump([*started, *family], file)
            os._exit(1)
        """
    )
    result = _run(pytester)
    assert result.ret == 1
    listed = json.loads(pids.read_text())
    assert len(listed) >= 3  # the scheduler, `dask worker` (its nanny) and a worker
    processes = []
    for pid in listed:
        with contextlib.suppress(psutil.NoSuchProcess):
            processes.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(processes, timeout=30)
    for survivor in alive:
        survivor.kill()
    assert alive == []
