"""The command line: `dask anyio demo`, `python -m dask_anyio demo`, and `--version`."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import sysconfig
import types
from typing import Any

import anyio
import cloudpickle
import pytest
from click.testing import CliRunner

import dask_anyio
from dask_anyio import _demo
from dask_anyio._cli import main

from .conftest import ExternalCluster

pytestmark = pytest.mark.anyio


async def run_demo(address: str, backend: str, *options: str) -> tuple[str, str]:
    """Run `python -m dask_anyio demo` with stdout and stderr piped; return both."""
    command = [sys.executable, "-m", "dask_anyio", "demo", "--backend", backend]
    command += ["--address", address, "--delay", "0.05", *options]
    result = await anyio.run_process(command)
    return result.stdout.decode(), result.stderr.decode()


async def test_demo_against_external_cluster(
    external_cluster: ExternalCluster, anyio_backend_name: str
) -> None:
    """The demo runs the scenario, the mapped step, and shows the cancelled task forgotten."""
    out, err = await run_demo(external_cluster.address, anyio_backend_name)
    assert f"dask-anyio demo on {anyio_backend_name}" in out
    assert "retrieve(c) = 7" in out
    assert "run(operator.add, 1, 2) = 3" in out
    assert "map(slow, 1..20): 20 tasks of 0.025 s each" in out
    assert "as_completed: all 20 done" in out
    assert "sum of gather(handles) = 210" in out
    assert "cancelled=True" in out
    assert "none, it forgot the task" in out
    assert "/20 [" not in err  # stderr is a pipe: no bar by default
    # The cluster's scheduler runs with --no-dashboard, in this environment.
    if importlib.util.find_spec("bokeh") is None:
        assert "dashboard: http://127.0.0.1:" in out
        assert f"(needs bokeh where the scheduler runs: {_demo.DASHBOARD_INSTALL})" in out
    else:
        assert "dashboard: none (the scheduler serves none)\n" in out


async def test_demo_progress_forced_on(
    external_cluster: ExternalCluster, anyio_backend_name: str
) -> None:
    """With --progress the bar is drawn on stderr even to a pipe; stdout stays plain text."""
    out, err = await run_demo(external_cluster.address, anyio_backend_name, "--progress")
    assert "map(slow): 100%" in err
    assert "20/20" in err  # the bar's final state
    assert "sum of gather(handles) = 210" in out
    assert "/20 [" not in out
    assert "\r" not in out


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("show", "terminal", "drawn"),
    [
        (None, True, True),
        (None, False, False),
        (True, False, True),
        (False, True, False),
    ],
)
def test_progress_bar_choice(
    show: bool | None, terminal: bool, drawn: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Auto draws the bar on a terminal only; True and False force it on or off."""
    if not drawn:  # no bar, no tqdm object
        monkeypatch.setattr(_demo, "_Bar", None)
    file = Terminal() if terminal else io.StringIO()
    with _demo.progress_bar(20, show=show, file=file, desc="map(slow)") as tick:
        for _ in range(20):
            tick()
    if drawn:
        assert "map(slow): 100%" in file.getvalue()
        assert "20/20" in file.getvalue()
    else:
        assert file.getvalue() == ""


def test_demo_functions_pickled_by_value() -> None:
    """Workers without dask_anyio installed can run the demo's functions (cloudpickle by value)."""
    payload = cloudpickle.dumps((_demo.slow, (3, 0.0)))
    check = (
        "import pickle, sys\n"
        "assert 'dask_anyio' not in sys.modules\n"
        "fn, args = pickle.loads(sys.stdin.buffer.read())\n"
        "assert 'dask_anyio' not in sys.modules\n"
        "print(fn(*args))\n"
    )
    # -S: no site-packages .pth files, so dask_anyio (installed editable) is not importable;
    # cloudpickle still is, from the site-packages directory itself.
    env = {"PYTHONPATH": sysconfig.get_path("purelib")}
    result = subprocess.run(
        [sys.executable, "-S", "-c", check],
        input=payload,
        env=env,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "3"


def dask_command() -> str:
    """The ``dask`` command of the test's environment."""
    here = os.path.dirname(sys.executable)  # the environment's scripts, activated or not
    dask = shutil.which("dask", path=here) or shutil.which("dask")
    assert dask, "the dask command is not installed"
    return dask


def test_dask_cli_plugin() -> None:
    """`dask anyio` is registered through Dask's `dask_cli` entry points."""
    dask = dask_command()
    out = subprocess.run(
        [dask, "anyio", "demo", "--help"], capture_output=True, check=True, text=True
    ).stdout
    assert "--backend [asyncio|trio]" in out
    assert "--address ADDR" in out


def test_loading_the_dask_cli_plugin_does_not_import_the_demo() -> None:
    """Dask loads every `dask_cli` plugin for every `dask` command (`dask worker` too): loading
    ours imports the demo (and its progress bar) only when a command runs."""
    check = (
        "import importlib.metadata, sys\n"
        "(plugin,) = importlib.metadata.entry_points(group='dask_cli', name='anyio')\n"
        "plugin.load()\n"
        "print(sorted({'dask_anyio._cli', 'dask_anyio._demo', 'tqdm'} & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, check=True, text=True
    )
    assert result.stdout == "['dask_anyio._cli']\n"


@pytest.mark.parametrize(
    "command",
    [["dask", "anyio"], [sys.executable, "-m", "dask_anyio"]],
    ids=["dask anyio", "python -m dask_anyio"],
)
def test_version(command: list[str]) -> None:
    """`--version` prints the installed version of dask-anyio."""
    if command[0] == "dask":
        command = [dask_command(), *command[1:]]
    result = subprocess.run([*command, "--version"], capture_output=True, check=True, text=True)
    assert result.stdout == f"dask-anyio {importlib.metadata.version('dask-anyio')}\n"
    assert importlib.metadata.version("dask-anyio") == dask_anyio.__version__


def test_demo_help_says_what_it_does() -> None:
    """The demo's help tells its steps in plain words (no "seed scenario", the project's own
    jargon), and the command list shows its summary whole."""
    runner = CliRunner()
    help_text = runner.invoke(main, ["demo", "--help"], catch_exceptions=False).output
    assert "seed" not in help_text.lower()
    assert "scenario" not in help_text.lower()
    for step in ("without moving data", "progress bar", "cancels a long call"):
        assert step in " ".join(help_text.split()), step
    listing = runner.invoke(main, ["--help"], catch_exceptions=False).output
    (demo_line,) = [line for line in listing.splitlines() if line.strip().startswith("demo ")]
    assert demo_line.split(None, 1)[1] == "Show dask-anyio at work, step by step."


@pytest.mark.parametrize(
    ("link", "state", "line"),
    [
        ("http://h:1/status", "served", "dashboard: http://h:1/status"),
        (
            "http://h:1/status",
            "no bokeh",
            "dashboard: http://h:1/status (needs bokeh where the scheduler runs: "
            "pip install 'dask-anyio[dashboard]')",
        ),
        ("http://h:1/status", "off", "dashboard: none (the scheduler serves none)"),
        (None, "off", "dashboard: none (the scheduler serves none)"),
    ],
)
def test_dashboard_line(link: str | None, state: _demo.DashboardState, line: str) -> None:
    """Where the demo prints the dashboard's link, it says what the dashboard needs if the
    scheduler cannot serve it (bokeh, through the `dashboard` extra)."""
    assert _demo.dashboard_line(link, state) == line


class BokehTornado:
    """Stands for bokeh's application class."""


class DaskBokehTornado(BokehTornado):
    """Stands for Dask's subclass of it, which a scheduler serving its dashboard has."""


@pytest.mark.parametrize(
    ("applications", "dashboard_module", "state"),
    [
        ([DaskBokehTornado()], None, "served"),
        ([], None, "no bokeh"),  # Dask's dashboard module does not import
        ([], types.ModuleType("distributed.dashboard.scheduler"), "off"),
    ],
)
def test_dashboard_state(
    applications: list[Any],
    dashboard_module: types.ModuleType | None,
    state: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scheduler's side of the check: bokeh's application served, bokeh missing, or a
    dashboard turned off."""
    monkeypatch.setitem(sys.modules, "distributed.dashboard.scheduler", dashboard_module)
    scheduler = types.SimpleNamespace(
        http_application=types.SimpleNamespace(applications=applications)
    )
    assert _demo._dashboard_state(scheduler) == state
