"""Errors a newcomer hits end in one clear line, not in a wall of distributed's logging."""

from __future__ import annotations

import logging
import operator
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import dask
import distributed
import pytest

from dask_anyio import DaskExecutor
from dask_anyio._diagnose import unguarded_main_script
from dask_anyio._logs import HeldSerializationErrors

from .conftest import ExternalCluster
from .tasks import inc

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


# -- 13: an argument that cannot be pickled -------------------------------------------------


@contextmanager
def distributed_records() -> Iterator[list[logging.LogRecord]]:
    """Collect what distributed's loggers emit (they do not propagate to the root logger:
    caplog would not see them)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.DEBUG)
    logger = logging.getLogger("distributed")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


class LogsFromAnotherThreadThenFails:
    """Pickling it logs an ERROR of distributed's pickle logger from another thread (as the
    core loop thread may, meanwhile), then fails."""

    def __reduce__(self) -> Any:
        def log() -> None:
            logging.getLogger("distributed.protocol.pickle").error("unrelated record")

        thread = threading.Thread(target=log)
        thread.start()
        thread.join()
        raise TypeError("cannot pickle LogsFromAnotherThreadThenFails")

    def __dask_tokenize__(self) -> str:
        return "logs-from-another-thread"


async def drain(results: AsyncIterator[Any]) -> None:
    async for _ in results:
        pass


async def test_unpicklable_argument_logs_nothing(ex: DaskExecutor) -> None:
    """submit, map and imap with an unpicklable argument or function raise our TypeError
    and distributed logs nothing about it (no "Failed to serialize" wall)."""
    with socket.socket() as sock, distributed_records() as records:
        with pytest.raises(TypeError, match=r"argument 0 \(<unlocked _th.*cannot pickle"):
            ex.submit(operator.truth, threading.Lock())
        with pytest.raises(TypeError, match=r"keyword argument 'lock'.*cannot be pickled"):
            ex.submit(dict, lock=threading.Lock())
        with pytest.raises(TypeError, match=r"the function \(<function .*socket"):
            ex.submit(lambda: sock.fileno())
        with pytest.raises(TypeError, match=r"item 1 of iterable 0.*cannot be pickled"):
            ex.map(operator.truth, [1, threading.Lock()])
        items = ex.imap(operator.truth, [1, threading.Lock()], max_in_flight=2)
        with pytest.raises(TypeError, match=r"item 1 of iterable 0.*cannot be pickled"):
            await drain(items)
    assert [r.getMessage() for r in records] == []
    assert await ex.run(inc, 1) == 2


async def test_unpicklable_argument_error_is_short(external_cluster: ExternalCluster) -> None:
    """Our TypeError does not print Dask's chain of pickling tracebacks as its cause."""
    async with DaskExecutor(external_cluster.address) as ex:
        with pytest.raises(TypeError) as caught:
            ex.submit(operator.truth, threading.Lock())
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert caught.value.__context__ is not None  # still there, for a debugger


async def test_unrelated_records_still_logged(ex: DaskExecutor) -> None:
    """While a submit holds its thread's pickling records, another thread's record of the
    same logger gets through at once."""
    with (
        distributed_records() as records,
        pytest.raises(TypeError, match=r"argument 0 .*cannot be pickled"),
    ):
        ex.submit(operator.truth, LogsFromAnotherThreadThenFails())
    # (once per attempt to pickle it: Dask's, then ours)
    assert records
    assert {r.getMessage() for r in records} == {"unrelated record"}


def test_held_records_are_logged_unless_dropped() -> None:
    """Held records are logged at the block's end unless dropped; a nested block's records
    that it does not drop are held by the outer one."""

    def fail_to_pickle() -> None:
        with pytest.raises(TypeError):
            distributed.protocol.pickle.dumps(threading.Lock())

    with distributed_records() as records:
        with HeldSerializationErrors():
            fail_to_pickle()
            with HeldSerializationErrors() as inner:
                fail_to_pickle()
                inner.drop()
            with HeldSerializationErrors():
                fail_to_pickle()
            assert records == []
        assert [r.getMessage()[:20] for r in records] == ["Failed to serialize "] * 2
        with HeldSerializationErrors() as held:
            fail_to_pickle()
            held.drop()
        assert len(records) == 2


# -- 14: no warning when the embedded cluster closes after our cancellation -----------------


async def test_no_worker_warning_after_cancellation(anyio_backend: Any) -> None:
    """Cancelling a checkpoint()-ing task (still cleaning up when the cluster closes) and a
    coroutine task, then closing the embedded cluster, makes the workers warn about
    nothing."""
    status, out, err = await run_script("cancel_then_close.py", anyio_backend)
    assert (status, out) == (0, "closed\n"), err
    assert "ended with CancelledError" not in err
    assert " - WARNING - " not in err
    assert " - ERROR - " not in err


async def test_demo_on_embedded_cluster_prints_no_warning(anyio_backend: Any) -> None:
    """The demo on its embedded cluster reports the clean cancellation with no Dask warning."""
    name, options = anyio_backend
    code = (
        "import anyio\nfrom functools import partial\nfrom dask_anyio._demo import demo\n"
        f"anyio.run(partial(demo, None, delay=0.05), backend={name!r}, "
        f"backend_options={options!r})"
    )
    command = [sys.executable, "-c", code]  # (as `python -m dask_anyio demo`, on uvloop too)
    with anyio.fail_after(50):
        result = await anyio.run_process(command)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert "cancelled=True" in out  # (its step that cancels a checkpoint()-ing task)
    assert " - WARNING - " not in err, err
