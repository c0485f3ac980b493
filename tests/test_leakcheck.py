"""The leak check (tests/leakcheck.py) fails tests that leave a thread, a file descriptor or
a child process behind, sync and async, on asyncio and trio; clean tests pass."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from typing import IO, Any

import pytest

from dask_anyio import _leaks

#: What the inner tests left behind, for the outer test to clean up.
LEFT: list[Any] = []
#: Ends the threads the inner tests leave.
STOP = threading.Event()

INNER = """
import os, socket, subprocess, sys, threading

import anyio
import pytest

from tests.test_leakcheck import LEFT, STOP


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


def start_thread():
    thread = threading.Thread(target=STOP.wait, name="left-behind", daemon=True)
    thread.start()
    LEFT.append(thread)


def test_clean_sync():
    threading.Thread(target=lambda: None).start()  # ends at once: not a leak
    with open(__file__):
        pass


@pytest.mark.anyio
async def test_clean_async():
    await anyio.to_thread.run_sync(lambda: None)
    async with await anyio.connect_tcp("127.0.0.1", LISTENER_PORT):
        pass


def test_thread_sync():
    start_thread()


@pytest.mark.anyio
async def test_thread_async():
    start_thread()


def test_fd_sync():
    LEFT.append(open(__file__))


@pytest.mark.anyio
async def test_fd_async():
    await anyio.sleep(0)
    LEFT.append(socket.create_connection(("127.0.0.1", LISTENER_PORT)))


@pytest.fixture
async def event_loop_from_setup():
    yield  # an async fixture: the event loop's descriptors open in setup, close in teardown


@pytest.mark.anyio
async def test_pipe_async_with_async_fixture(event_loop_from_setup):
    LEFT.extend(os.pipe())


def test_child_process():
    LEFT.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
"""


def test_leaks_fail_the_test(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_leaks, "GRACE", 0.5)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        pytester.makepyfile(test_inner=INNER.replace("LISTENER_PORT", str(port)))
        try:
            result = pytester.runpytest_inprocess("-p", "tests.leakcheck", "-p", "no:cacheprovider")
        finally:
            _clean_up()
    result.assert_outcomes(passed=12, errors=9)
    # (the failure sections; the short summary repeats them, cut to the terminal's width)
    errors = [line for line in result.outlines if line.startswith("test_inner.py::")]
    assert len(errors) == 9, result.outlines
    expected = {
        "test_thread_sync": "thread 'left-behind'",
        "test_thread_async[asyncio]": "thread 'left-behind'",
        "test_thread_async[trio]": "thread 'left-behind'",
        "test_fd_sync": "1 file descriptor(s)",
        "test_fd_async[asyncio]": "1 file descriptor(s)",
        "test_fd_async[trio]": "1 file descriptor(s)",
        "test_pipe_async_with_async_fixture[asyncio]": "2 file descriptor(s)",
        "test_pipe_async_with_async_fixture[trio]": "2 file descriptor(s)",
        "test_child_process": "child process",
    }
    for test, leak in expected.items():
        assert any(f"test_inner.py::{test} left behind: {leak}" in e for e in errors), (
            test,
            errors,
        )


def _clean_up() -> None:
    STOP.set()
    for thing in LEFT:
        if isinstance(thing, threading.Thread):
            thing.join()
        elif isinstance(thing, int):
            os.close(thing)
        elif isinstance(thing, subprocess.Popen):
            thing.kill()
            thing.wait()
        else:
            closing: IO[str] | socket.socket = thing
            closing.close()
    LEFT.clear()
