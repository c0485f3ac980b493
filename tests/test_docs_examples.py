"""Every example under docs/examples runs, on every backend.

The how-to examples use ``DaskExecutor()``; here Dask's ``scheduler-address`` setting points
it at the session's external cluster. The tutorial's cluster is started with the commands the
tutorial gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import itertools
import json
import os
import re
import shlex
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
        ("locks.py", {}, "[0, 1, 4, 9, 16, 25] timed out: True\n"),
        ("sharing.py", {}, "[100, 101, 104, 109, 116, 125] timed out: True\n"),
        ("actors.py", {}, "[0, 10, 20] 30 [1, 11] calls: 6\n"),
        ("diagnostics.py", {"n": 4}, "4 tasks, total 1337342006, report True; "),
        ("task_trees.py", {"depth": 3}, "path: [0, 2, 5, 11] gave up: True\n"),
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
    assert lines[2] == str(sum(range(10)) + sum(range(1_000)))
    assert re.fullmatch(r"max \d\.\d\d\d", lines[3]), lines
    assert 1.99 < float(lines[3][4:]) <= 2, lines


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
    """The testing guide's example project (code, tests and pyproject.toml; no conftest)
    passes on both backends, in a pytest run of its own that finds dask-anyio's plugin
    through its entry point."""
    for path in (HOWTO / "testing").iterdir():
        if path.is_file():  # (not the caches a run of the guide's `pytest` leaves there)
            shutil.copy(path, pytester.path)
    result = pytester.runpytest_subprocess("-v", "-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(
        ["*test_best_word?asyncio? PASSED*", "*test_best_word?trio? PASSED*"]
    )
    result.stdout.fnmatch_lines(["*test_best_word_of_one?uvloop? PASSED*"])


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
#
# The tutorial is followed as a reader would: in a new directory holding only the files the
# page says to save, with the page's own commands run by a shell (the test's interpreter
# standing for the page's virtual environment, and none of the test's PYTHONPATH).

TUTORIAL_PAGE = ROOT / "docs" / "tutorial.md"
#: Where the page's pre-release install line has the reader's clone of the repository.
CLONE_PLACEHOLDER = "/path/to/dask-anyio"


def tutorial_console() -> list[tuple[str, str]]:
    """The page's console blocks as (command, output shown) pairs, in order."""
    text = TUTORIAL_PAGE.read_text()
    pairs: list[tuple[str, str]] = []
    for block in re.findall(r"^```console\n(.*?)^```", text, re.M | re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                pairs.append((line[2:], ""))
            else:
                pairs[-1] = (pairs[-1][0], pairs[-1][1] + line + "\n")
    return pairs


def _program(command: str) -> str:
    """What a command runs: its first two words after any ``NAME=value`` (``dask worker``,
    ``python offload.py``, ``pip install``)."""
    words = [w for w in shlex.split(command) if not re.fullmatch(r"\w+=.*", w)]
    return " ".join(words[:2])


def tutorial_command(program: str) -> tuple[str, str]:
    """The page's one command that runs ``program``, and the output the page shows."""
    found = [pair for pair in tutorial_console() if _program(pair[0]) == program]
    assert len(found) == 1, f"the tutorial runs {program!r} {len(found)} times"
    return found[0]


def readers_shell() -> dict[str, str]:
    """The environment of the reader's shell once the page's virtual environment is active:
    its scripts first on ``PATH``; no ``PYTHONPATH`` but what the commands set."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@pytest.fixture(scope="module")
def tutorial_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new directory with the files the page says to save there (each file it shows,
    under its own name), and nothing else."""
    directory = tmp_path_factory.mktemp("tutorial")
    text = TUTORIAL_PAGE.read_text()
    for included in re.findall(r"```\{literalinclude\} (\S+)", text):
        source = TUTORIAL_PAGE.parent / included
        assert f"`{source.name}`" in text, f"the page never says to save {source.name}"
        shutil.copy(source, directory / source.name)
    return directory


@pytest.fixture(scope="module")
def tutorial_cluster(tutorial_dir: Path) -> Iterator[Path]:
    """The cluster of the tutorial's step 5, started by the page's own commands from the
    tutorial's directory; yields that directory (where scheduler.json is)."""
    commands = [tutorial_command(p)[0] for p in ("dask scheduler", "dask worker")]
    assert all("--scheduler-file scheduler.json" in command for command in commands)
    procs: list[subprocess.Popen[bytes]] = []
    with (tutorial_dir / "cluster.log").open("ab") as log:
        spawn = functools.partial(
            subprocess.Popen,
            shell=True,
            cwd=tutorial_dir,
            env=readers_shell(),
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            procs += [spawn(command) for command in commands]
            scheduler_file = str(tutorial_dir / "scheduler.json")
            with distributed.Client(scheduler_file=scheduler_file, timeout=60) as client:
                client.wait_for_workers(1, timeout=60)
            yield tutorial_dir
        finally:
            stop_processes(procs)


def test_tutorial_binds_no_fixed_port() -> None:
    """The cluster commands let the system pick every port (so that the tests can run them
    as written)."""
    scheduler, _ = tutorial_command("dask scheduler")
    worker, _ = tutorial_command("dask worker")
    assert "--port 0" in scheduler
    for command in (scheduler, worker):
        assert "--dashboard-address 127.0.0.1:0" in command
        assert "--host 127.0.0.1" in command


def _pip_argument_problem(argument: str, cwd: Path) -> str | None:
    """What pip would object to in ``pip install ARGUMENT``, run in ``cwd``, before it looks
    for any package: an argument that looks like a path (pip's rule: it has a ``/`` or starts
    with ``.``) must be an existing directory (extras aside), else pip says "Invalid
    requirement"; any other must be a valid requirement."""
    from packaging.requirements import InvalidRequirement, Requirement

    parts = re.fullmatch(r"(.*?)(\[[^]]*\])?", argument)
    assert parts is not None
    path, extras = parts.groups()
    if "/" in path or path.startswith("."):
        if not (cwd / path).is_dir():
            return f"Invalid requirement: {argument!r} (no directory {path!r} here)"
        argument = f"dask-anyio{extras or ''}"
    try:
        requirement = Requirement(argument)
    except InvalidRequirement as error:
        return str(error)
    extras_known = _pyproject()["project"]["optional-dependencies"]
    unknown = requirement.extras - set(extras_known)
    return f"no extra {sorted(unknown)} in pyproject.toml" if unknown else None


def _pyproject() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def tutorial_installs() -> list[str]:
    """The page's ``pip install`` commands: in console blocks, and in its prose."""
    installs = [c for c, _ in tutorial_console() if _program(c) == "pip install"]
    return installs + re.findall(r"`(pip install [^`]+)`", TUTORIAL_PAGE.read_text())


def test_tutorial_install_lines(tmp_path: Path) -> None:
    """Each install line works from the new directory the page starts in: the released
    package's, and the clone's once its placeholder is the path of a clone (this checkout);
    no network is used."""
    installs = tutorial_installs()
    assert len(installs) == 2, installs
    for command in installs:
        command = command.replace(CLONE_PLACEHOLDER, str(ROOT))
        for argument in shlex.split(command)[2:]:
            problem = _pip_argument_problem(argument, tmp_path)
            assert problem is None, f"{command}: {problem}"


def test_tutorial_installs_the_dashboard_it_opens() -> None:
    """The page has the reader open Dask's dashboard, so its install lines bring bokeh (the
    `dashboard` extra), at a version Dask's dashboard accepts."""
    from distributed.versions import BOKEH_REQUIREMENT
    from packaging.requirements import Requirement

    assert "dashboard" in TUTORIAL_PAGE.read_text()
    for command in tutorial_installs():
        assert re.search(r"\[[^]]*\bdashboard\b[^]]*\]", command), command
    (bokeh,) = map(Requirement, _pyproject()["project"]["optional-dependencies"]["dashboard"])
    assert bokeh.name == "bokeh"
    for version in ("3.0.3", "3.1.0", "3.4.1"):
        assert bokeh.specifier.contains(version) == BOKEH_REQUIREMENT.specifier.contains(version)


def test_tutorial_examples_are_numbered_as_their_steps() -> None:
    """An example file that names its step names the heading under which the page shows it."""
    step = None
    for line in TUTORIAL_PAGE.read_text().splitlines():
        if heading := re.match(r"## (\d+)\. ", line):
            step = heading.group(1)
        if include := re.match(r"```\{literalinclude\} (\S+)", line):
            docstring = (TUTORIAL_PAGE.parent / include.group(1)).read_text().splitlines()[0]
            named = re.search(r"\bStep (\d+)", docstring)
            assert named is None or named.group(1) == step, (include.group(1), step)


@pytest.fixture
def tutorial_modules(tutorial_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The tutorial's modules import each other from its directory, as its scripts do."""
    monkeypatch.syspath_prepend(str(tutorial_dir))
    monkeypatch.chdir(tutorial_dir)  # where the scripts run, and scheduler.json is
    yield
    for name in ("primes", "offload", "offload_many", "offload_external"):
        sys.modules.pop(name, None)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio: the script, below
@pytest.mark.timeout(120)  # an embedded LocalCluster starts and stops
async def test_tutorial_step_3_embedded(
    tutorial_modules: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Step 3's program, imported, runs on asyncio too."""
    import offload  # type: ignore[import-not-found]
    import primes  # type: ignore[import-not-found]

    assert primes.count_primes(0, 100) == 25
    await offload.main()
    assert capsys.readouterr().out == "1229 primes below 10 000\n"


@pytest.mark.timeout(150)
def test_tutorial_step_3_as_the_page_runs_it(tutorial_dir: Path) -> None:
    """`python offload.py`, run as the page runs it (trio, workers spawned from it), prints
    what the page shows."""
    command, shown = tutorial_command("python offload.py")
    result = subprocess.run(
        command,
        shell=True,
        cwd=tutorial_dir,
        env=readers_shell(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == shown


@pytest.mark.anyio
@pytest.mark.timeout(180)  # the tutorial's cluster starts (once per module)
async def test_tutorial_steps_4_and_5_on_the_pages_cluster(
    tutorial_modules: None, tutorial_cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Steps 4 and 5's programs (with a smaller count) run on the cluster started by the
    page's commands, and print what the page shows."""
    import offload_external  # type: ignore[import-not-found]
    import offload_many  # type: ignore[import-not-found]

    address = json.loads((tutorial_cluster / "scheduler.json").read_text())["address"]
    with dask.config.set({"scheduler-address": address}):
        await offload_many.main(stop=250_000)
    assert capsys.readouterr().out.splitlines()[-1] == "22044 primes below 250000"
    await offload_external.main(stop=250_000)  # scheduler.json of the working directory
    lines = capsys.readouterr().out.splitlines()
    _, shown = tutorial_command("python offload_external.py")
    assert shown.splitlines()[0].startswith("dashboard: http://127.0.0.1:")
    assert lines[0].startswith("dashboard: http://127.0.0.1:")
    assert lines[1] == "22044 primes below 250000"


# -- notebooks ---------------------------------------------------------------------------

NOTEBOOKS = HOWTO / "notebooks"


def notebook_of(path: Path) -> Any:
    """The example as a notebook: a cell after each ``# %%`` line (words after it are the
    cell's tags, such as ``raises-exception``); the comment before the first is dropped."""
    import nbformat

    cells = []
    for chunk in path.read_text().split("\n# %%")[1:]:
        tags, _, source = chunk.partition("\n")
        cell = nbformat.v4.new_code_cell(source.strip("\n"))
        cell.metadata["tags"] = tags.split()
        cells.append(cell)
    return nbformat.v4.new_notebook(cells=cells)


def outputs_of(cell: Any) -> str:
    """What a notebook shows for a cell: printed text, the value's plain text, an error."""
    shown = []
    for output in cell.outputs:
        if output.output_type == "stream":
            shown.append(output.text)
        elif output.output_type == "execute_result":
            shown.append(output.data["text/plain"] + "\n")
        elif output.output_type == "error":
            shown.append(f"{output.ename}: {output.evalue}\n")
    return "".join(shown)


def run_notebook(path: Path, directory: Path) -> list[Any]:
    """Run the example in a real kernel (the test interpreter's, with nbclient); return
    its cells, outputs filled in."""
    from nbclient import NotebookClient

    notebook = notebook_of(path)
    # Immediate: once the notebook has closed its executors, the kernel has nothing to
    # close (a graceful shutdown costs 3 s more); its processes go with it.
    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(directory)}},
        shutdown_kernel="immediate",
    )
    # (in a loop of its own: client.execute() would keep one open for good)
    asyncio.run(client.async_execute())
    return list(notebook.cells)


@pytest.mark.timeout(180)  # a kernel and embedded clusters start and stop
def test_asyncio_notebook(tmp_path: Path) -> None:
    """The notebook guide's asyncio notebook: one executor kept across cells with open()
    and aclose(), shown as HTML, used from every cell, closed by the last."""
    cells = run_notebook(NOTEBOOKS / "asyncio_notebook.py", tmp_path)
    shown = [outputs_of(cell) for cell in cells]
    assert re.fullmatch(
        r"<DaskExecutor open on tcp://127\.0\.0\.1:\d+: 0 pending, 0 finished, 0 failed, "
        r"0 cancelled>\n",
        shown[0],
    ), shown
    html = cells[0].outputs[0].data["text/html"]
    assert "<table>" in html
    assert "2 (2 threads" in html
    assert shown[1:3] == ["16\n", "285\n"]
    assert "cancelled=1" in shown[3]
    assert shown[4] == "<DaskExecutor closed: 0 pending, 11 finished, 0 failed, 1 cancelled>\n"


@pytest.mark.timeout(180)
def test_trio_notebook(tmp_path: Path) -> None:
    """The notebook guide's trio notebook: under %autoawait trio an executor works within
    its cell, and one opened with open() is closed with its cell's trio.run, as the later
    cell's error says."""
    cells = run_notebook(NOTEBOOKS / "trio_notebook.py", tmp_path)
    shown = [outputs_of(cell) for cell in cells]
    assert shown[1] == "16\n285\n"
    assert shown[2] == "25\n"
    assert shown[3].startswith("RuntimeError: this DaskExecutor was closed when the run")
