"""Errors a newcomer hits end in one clear line, not in a wall of distributed's logging."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import dask
import pytest

from dask_anyio._diagnose import unguarded_main_script

pytestmark = pytest.mark.anyio

SCRIPTS = Path(__file__).resolve().parent / "newcomer_scripts"

GUARD = 'if __name__ == "__main__":'


def script_backend(anyio_backend: Any) -> str:
    """The backend argument of the scripts: asyncio, asyncio+uvloop or trio."""
    name, options = anyio_backend
    return f"{name}+uvloop" if options.get("use_uvloop") else str(name)


async def run_script(name: str, anyio_backend: Any) -> tuple[int, str, str]:
    """Run ``newcomer_scripts/<name>`` as a user would, on the test's backend."""
    command = [sys.executable, str(SCRIPTS / name), script_backend(anyio_backend)]
    with anyio.fail_after(50):
        result = await anyio.run_process(command, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


# -- 12: a script without the main guard ---------------------------------------------------


async def test_script_without_main_guard_says_what_to_add(anyio_backend: Any) -> None:
    """A script that starts the embedded cluster without the main guard ends, in reasonable
    time, with a last line that names the script and says to add the guard."""
    status, out, err = await run_script("unguarded.py", anyio_backend)
    assert status == 1
    assert out == ""
    last = err.rstrip().splitlines()[-1]
    assert last.startswith("RuntimeError: ")
    assert str(SCRIPTS / "unguarded.py") in last
    assert GUARD in last
    # The worker processes gave up as soon as they re-ran the script: they started no
    # cluster of their own (multiprocessing's "bootstrapping phase" error comes from there).
    assert "bootstrapping phase" not in err


def test_main_guard_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard is found either way round; a package's __main__ and -c are never blamed."""
    import types

    def main_module(source: str, **attributes: Any) -> str | None:
        path = tmp_path / "script.py"
        path.write_text(source)
        module = types.ModuleType("__main__")
        module.__file__ = str(path)
        module.__spec__ = None
        for name, value in attributes.items():
            setattr(module, name, value)
        monkeypatch.setitem(sys.modules, "__main__", module)
        return unguarded_main_script()

    assert main_module("import anyio\nanyio.run(main)\n") == str(tmp_path / "script.py")
    assert main_module(f"{GUARD}\n    run()\n") is None
    assert main_module("if '__main__' == __name__:\n    run()\n") is None
    assert main_module("if __name__ != '__main__':\n    run()\n") is not None
    assert main_module("run()", __file__=None) is None  # python -c
    package_main = types.SimpleNamespace(name="package.__main__", origin="x")
    assert main_module("run()", __spec__=package_main) is None
    with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}):
        assert main_module("run()") is None  # fork does not re-run the script
