"""Every example under docs/examples runs, on every backend.

The how-to examples use ``DaskExecutor()``; here Dask's ``scheduler-address`` setting points
it at the session's external cluster. The tutorial's cluster is started with the commands the
tutorial gives.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import anyio.to_thread
import dask
import distributed
import pytest

from .conftest import ROOT, Certificates, ExternalCluster, stop_processes

EXAMPLES = ROOT / "docs" / "examples"
TUTORIAL = EXAMPLES / "tutorial"
HOWTO = EXAMPLES / "howto"


def load(path: Path) -> ModuleType:
    """Import an example as ``docs.examples....``: the external cluster's processes have
    the repository on their ``PYTHONPATH``, so they import its functions by that name."""
    return importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))


@pytest.fixture
def on_external_cluster(external_cluster: ExternalCluster) -> Iterator[ExternalCluster]:
    """``DaskExecutor()`` connects to the external cluster; it holds no key afterwards."""
    with dask.config.set({"scheduler-address": external_cluster.address}):
        yield external_cluster
    assert external_cluster.scheduler_keys() == set()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` (a blocking call: in a thread) until it holds, for up to 30 s."""
    for _ in range(1500):
        if await anyio.to_thread.run_sync(condition):
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"not within 30 s: {what}")


# -- how-to guides -----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("example", "options", "printed"),
    [
        ("cancellation.py", {"seconds": 3}, "as expected: "),
        ("structured_exit.py", {"seconds": 3}, "raised at exit: (ValueError('nobody awaited"),
        ("chaining.py", {}, "{'all': 800000, 'even': 400000}\n"),
        ("stopping.py", {}, f"{10 * sum(range(10_000))} 6\n"),
        ("streaming.py", {"n": 300}, "stored 300 records\n"),
    ],
)
async def test_howto(
    on_external_cluster: ExternalCluster,
    capsys: pytest.CaptureFixture[str],
    example: str,
    options: dict[str, Any],
    printed: str,
) -> None:
    """A guide's example runs (with smaller sizes) and prints what the guide says."""
    await load(HOWTO / example).main(**options)
    assert printed in capsys.readouterr().out


@pytest.mark.anyio
async def test_progress(
    on_external_cluster: ExternalCluster,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tqdm

    # tqdm's monitor thread outlives the last bar by up to 10 s: the leak check would say so
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)
    await load(HOWTO / "progress.py").main()
    assert capsys.readouterr().out == f"{sum(x * x for x in range(100))}\n"


@pytest.mark.anyio
async def test_dask_collections(
    on_external_cluster: ExternalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    await load(HOWTO / "dask_collections.py").main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(sum(range(10_000)))
    assert re.fullmatch(r"mean 1\.0\d\d, std 0\.4\d\d", lines[1]), lines


@pytest.mark.anyio
async def test_connecting(
    on_external_cluster: ExternalCluster,
    tls_cluster: ExternalCluster,
    tls_certificates: Certificates,
) -> None:
    connecting = load(HOWTO / "connecting.py")
    assert await connecting.by_address(on_external_cluster.address) == 3
    assert await connecting.by_scheduler_file(str(on_external_cluster.scheduler_file)) == 3
    certs = (str(tls_certificates.ca), str(tls_certificates.cert), str(tls_certificates.key))
    assert await connecting.by_tls(tls_cluster.address, *certs) == 3
    assert tls_cluster.scheduler_keys() == set()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])  # a LocalCluster each
async def test_connecting_to_a_cluster_object(capsys: pytest.CaptureFixture[str]) -> None:
    await load(HOWTO / "connecting.py").main()
    assert capsys.readouterr().out == "3\n"


def test_testing_howto(pytester: pytest.Pytester) -> None:
    """The testing guide's conftest and tests pass, on both backends, in a pytest run of
    their own."""
    for path in (HOWTO / "testing").glob("*.py"):
        shutil.copy(path, pytester.path)
    result = pytester.runpytest_subprocess("-v", "-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        ["*test_best_word?asyncio? PASSED*", "*test_best_word?trio? PASSED*"]
    )


# -- serving requests ----------------------------------------------------------------------


_numbers = itertools.count(1000)


@pytest.fixture
def blocked_work(
    monkeypatch: pytest.MonkeyPatch, on_external_cluster: ExternalCluster
) -> Iterator[Callable[[ModuleType], int]]:
    """Make an example's ``count_primes(n)`` wait on the worker until the test ends. Yields
    the function that patches a module and returns a new ``n`` (a set event stays set)."""
    from .tasks import wait_for_number_event

    numbers: list[int] = []

    def block(module: ModuleType) -> int:
        monkeypatch.setattr(module, "count_primes", wait_for_number_event)
        numbers.append(next(_numbers))
        return numbers[-1]

    yield block
    for number in numbers:  # frees the worker thread
        distributed.Event(f"number-{number}", client=on_external_cluster.observer).set()


def _holds_a_key(cluster: ExternalCluster) -> Callable[[], bool]:
    return lambda: bool(cluster.scheduler_keys())


def _holds_no_key(cluster: ExternalCluster) -> Callable[[], bool]:
    return lambda: not cluster.scheduler_keys()


class _AsgiCall:
    """One ASGI HTTP request to ``app``, by hand: the client disconnects when told."""

    def __init__(self, app: Any, query: bytes) -> None:
        self.app = app
        self.query = query
        self.disconnect = anyio.Event()
        self.sent: list[dict[str, Any]] = []
        self._body_sent = False

    async def receive(self) -> dict[str, Any]:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def __call__(self) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/primes",
            "raw_path": b"/primes",
            "root_path": "",
            "query_string": self.query,
            "headers": [],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        await self.app(scope, self.receive, self.send)
        status = next(m["status"] for m in self.sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        return status, body


@contextlib.asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    """Run the ASGI app's lifespan: startup before the block, shutdown after it."""
    send_to_app, receive_in_app = anyio.create_memory_object_stream[dict[str, Any]](2)
    send_from_app, receive_from_app = anyio.create_memory_object_stream[dict[str, Any]](2)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with (
        send_to_app,
        receive_in_app,
        send_from_app,
        receive_from_app,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(app, scope, receive_in_app.receive, send_from_app.send)
        await send_to_app.send({"type": "lifespan.startup"})
        assert (await receive_from_app.receive())["type"] == "lifespan.startup.complete"
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await send_to_app.send({"type": "lifespan.shutdown"})
                message = await receive_from_app.receive()
                assert message["type"] == "lifespan.shutdown.complete", message


@pytest.mark.anyio
async def test_web_app(
    on_external_cluster: ExternalCluster,
    blocked_work: Callable[[ModuleType], int],
) -> None:
    """A request is answered; a client that disconnects gets its remote task cancelled."""
    web = load(HOWTO / "web_starlette.py")
    async with _lifespan(web.app):
        status, body = await _AsgiCall(web.app, b"below=100")()
        assert (status, json.loads(body)) == (200, {"below": 100, "primes": 25})
        for bad in (b"", b"below=many", b"below=-1", b"below=%d" % (web.LARGEST + 1)):
            status, body = await _AsgiCall(web.app, bad)()
            assert status == 400, bad
            assert "below= needs a number" in json.loads(body)["error"]

        number = blocked_work(web)
        call = _AsgiCall(web.app, b"below=%d" % number)
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await until(_holds_a_key(on_external_cluster), "the task reached the scheduler")
            call.disconnect.set()
        assert call.sent[0]["status"] == 499
        # run() returned only once the scheduler forgot the task
        assert on_external_cluster.scheduler_keys() == set()


@pytest.mark.anyio
async def test_trio_server(
    on_external_cluster: ExternalCluster,
    blocked_work: Callable[[ModuleType], int],
) -> None:
    """The server answers a request; a client that hangs up gets its remote task cancelled;
    a malformed request closes only its own connection."""
    server = load(HOWTO / "trio_server.py")
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.main, 0)
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            await client.send(b"100\n")
            assert await client.receive() == b"25\n"
        for bad in (b"not a number\n", b"-1\n", b"%d\n" % (server.LARGEST + 1)):
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                await client.send(bad)
                assert (await client.receive()).startswith(b"error: send a number from 0 to")
                with pytest.raises(anyio.EndOfStream):
                    await client.receive()
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            await client.send(b"x" * 30)  # no newline within 20 bytes: hung up on
            with pytest.raises(anyio.EndOfStream):
                await client.receive()

        number = blocked_work(server)
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            await client.send(b"%d\n" % number)
            await until(_holds_a_key(on_external_cluster), "the task reached the scheduler")
        await until(_holds_no_key(on_external_cluster), "the scheduler forgot the task")
        tg.cancel_scope.cancel()


# -- the tutorial --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tutorial_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The cluster of the tutorial's third step, started with its commands, from the
    tutorial's directory; yields the scheduler file and the address."""
    tmp = tmp_path_factory.mktemp("tutorial")
    scheduler_file = tmp / "scheduler.json"
    dask_command = str(Path(sys.executable).with_name("dask"))
    scheduler = [dask_command, *TUTORIAL_SCHEDULER, str(scheduler_file)]
    worker = [dask_command, *TUTORIAL_WORKER, str(scheduler_file), *TUTORIAL_WORKER_OPTIONS]
    env = {**os.environ, "PYTHONPATH": "."}
    procs: list[subprocess.Popen[bytes]] = []
    with (tmp / "cluster.log").open("ab") as log:
        spawn = functools.partial(
            subprocess.Popen, cwd=TUTORIAL, env=env, stdout=log, stderr=log, start_new_session=True
        )
        try:
            procs.append(spawn(scheduler))
            procs.append(spawn(worker))
            with distributed.Client(scheduler_file=str(scheduler_file), timeout=60) as client:
                client.wait_for_workers(1, timeout=60)
            yield scheduler_file, json.loads(scheduler_file.read_text())["address"]
        finally:
            stop_processes(procs)


# The commands of docs/tutorial.md (test_tutorial_commands checks they are the same).
TUTORIAL_SCHEDULER = [
    "scheduler",
    "--host",
    "127.0.0.1",
    "--port",
    "0",
    "--dashboard-address",
    "127.0.0.1:0",
    "--scheduler-file",
]
TUTORIAL_WORKER = ["worker", "--scheduler-file"]
TUTORIAL_WORKER_OPTIONS = ["--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"]


def test_tutorial_commands() -> None:
    text = (ROOT / "docs" / "tutorial.md").read_text()
    assert f"dask {' '.join(TUTORIAL_SCHEDULER)} scheduler.json" in text
    worker = f"dask {' '.join(TUTORIAL_WORKER)} scheduler.json {' '.join(TUTORIAL_WORKER_OPTIONS)}"
    assert f"PYTHONPATH=. {worker}" in text


@pytest.fixture
def tutorial_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The tutorial's modules import each other from their directory, as its scripts do."""
    monkeypatch.syspath_prepend(str(TUTORIAL))
    yield
    for name in ("primes", "offload", "offload_many", "offload_external"):
        sys.modules.pop(name, None)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio: the script, below
@pytest.mark.timeout(120)  # an embedded LocalCluster starts and stops
async def test_tutorial_step_1_embedded(
    tutorial_modules: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import offload  # type: ignore[import-not-found]
    import primes  # type: ignore[import-not-found]

    assert primes.count_primes(0, 100) == 25
    await offload.main()
    assert capsys.readouterr().out == "1229 primes below 10 000\n"


@pytest.mark.timeout(150)
def test_tutorial_step_1_as_a_script() -> None:
    """`python offload.py`, as the tutorial runs it: trio, and workers spawned from it."""
    result = subprocess.run(
        [sys.executable, str(TUTORIAL / "offload.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1229 primes below 10 000\n"


@pytest.mark.anyio
@pytest.mark.timeout(180)  # the tutorial's cluster starts (once per module)
async def test_tutorial_steps_2_and_3_external(
    tutorial_modules: None,
    tutorial_cluster: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import offload_external  # type: ignore[import-not-found]
    import offload_many  # type: ignore[import-not-found]

    scheduler_file, address = tutorial_cluster
    with dask.config.set({"scheduler-address": address}):
        await offload_many.main(stop=250_000)
    assert capsys.readouterr().out.splitlines()[-1] == "22044 primes below 250000"
    await offload_external.main(scheduler_file=str(scheduler_file), stop=250_000)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("dashboard: http://127.0.0.1:")
    assert lines[1] == "22044 primes below 250000"
