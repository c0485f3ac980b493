"""The command line: `dask anyio demo` and `python -m dask_anyio demo`."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import sysconfig

import anyio
import cloudpickle
import pytest

from dask_anyio import _demo

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


def test_dask_cli_plugin() -> None:
    """`dask anyio` is registered through Dask's `dask_cli` entry points."""
    import os

    here = os.path.dirname(sys.executable)  # the environment's scripts, activated or not
    dask = shutil.which("dask", path=here) or shutil.which("dask")
    assert dask, "the dask command is not installed"
    out = subprocess.run(
        [dask, "anyio", "demo", "--help"], capture_output=True, check=True, text=True
    ).stdout
    assert "--backend [asyncio|trio]" in out
    assert "--address ADDR" in out
