"""The warm process of :func:`dask_anyio.kill_on_cancel` calls, run by its path (``python
.../_child.py SOCKET LIFELINE``: importing the package would cost half a second).

A worker starts it once and keeps it (see :mod:`dask_anyio._warm`); it runs no call itself.
For each call, it reads the call from its Unix socket ``SOCKET`` (``sys.path``, then the
pickled function and arguments, with the write end of the pipe for the outcome passed
along), loads it (so that the modules the call needs are imported here, once, and stay
imported), and forks: the forked process, in a process group of its own, runs the call,
writes the outcome to its pipe (``("ok", value)`` or ``("error", exception)``, the
exception with its traceback, pickled by tblib as Dask does; length-prefixed), winds up as a
process does (its non-daemon threads joined, ``atexit`` handlers run, buffers flushed), and
only then closes the pipe and exits, without tearing the interpreter down: the end of the
pipe tells the worker that the call is over. A coroutine function's coroutine is run with
:func:`asyncio.run`.

The warm process tells the worker the forked process's pid (``("started", pid)``), then its
exit status (``("exited", status)``), and reaps it only when the worker says so
(``("reap",)`` answered by ``("reaped",)``): until then the pid, and the id of its process
group, stay taken, and the worker may kill the group without hitting another's.

``LIFELINE`` is the read end of a pipe whose write end only the worker holds: each forked
process watches it, and kills its own process group when the worker closes it (once the
worker lets the warm process go, or by dying). The warm process ends when its socket does.

This process has one thread, so forking it is safe; only what a call needs is imported:
:mod:`pickle` loads cloudpickle by itself if the call was pickled by value, and cloudpickle
and tblib are imported only to send back what :mod:`pickle` cannot.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import pickle
import socket
import struct
import sys
import threading  # (here, not in each forked process: 1 ms a call)
import types
from typing import Any

__all__ = [
    "HEADER_SIZE",
    "complete",
    "frame_size",
    "header",
    "main",
    "read_message",
    "send_message",
]

_LENGTH = struct.Struct("!Q")

HEADER_SIZE = _LENGTH.size


def header(data: bytes) -> bytes:
    """What precedes ``data`` in its frame."""
    return _LENGTH.pack(len(data))


def frame_size(head: bytes) -> int:
    """The size of the whole frame that ``head`` begins (-1 while its header is not in)."""
    return HEADER_SIZE + _LENGTH.unpack_from(head)[0] if len(head) >= HEADER_SIZE else -1


def complete(data: bytes) -> bool:
    """Whether ``data`` is one whole frame (the outcome of a call that was not cut short)."""
    return frame_size(data) == len(data)


def _read_exactly(sock: socket.socket, size: int, start: bytes = b"") -> bytes:
    data = bytearray(start)
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the socket")
        data += chunk
    return bytes(data)


def read_message(sock: socket.socket, *, with_fd: bool = False) -> tuple[Any, list[int]]:
    """One framed, pickled message from ``sock``, with the file descriptors sent along."""
    if with_fd:
        start, fds, _, _ = socket.recv_fds(sock, HEADER_SIZE, 1)
        if not start:
            raise EOFError("the other end closed the socket")
    else:
        start, fds = b"", []
    (size,) = _LENGTH.unpack(_read_exactly(sock, HEADER_SIZE, start))
    return pickle.loads(_read_exactly(sock, size)), fds


def send_message(sock: socket.socket, message: Any, fd: int | None = None) -> None:
    """Send ``message`` (and, along with its first bytes, the descriptor ``fd``)."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    frame = header(data)
    if fd is not None:
        socket.send_fds(sock, [frame], [fd])  # (a unix socket takes 8 bytes at once)
        sock.sendall(data)
    else:
        sock.sendall(frame + data)


def _raise(error: BaseException) -> None:
    """The call that could not be loaded: the forked process reports ``error``."""
    raise error


def _serve(sock: socket.socket) -> tuple[Any, int] | None:
    """Fork a process for each call the worker sends; in a forked process, return the call
    and the descriptor its outcome goes to. Return ``None`` once the worker is gone."""
    while True:
        try:
            (path, data), fds = read_message(sock, with_fd=True)
        except (EOFError, OSError):
            return None
        sys.path[:] = path  # before the call's modules load
        try:
            call: Any = pickle.loads(data)  # its modules are imported here, and stay
        except BaseException as error:  # reported by the forked process, as the call's
            call = (_raise, (error,), {})
        del data
        pid = os.fork()
        if pid == 0:
            os.setpgid(0, 0)
            sock.close()
            return call, fds[0]
        with contextlib.suppress(OSError):  # (also here: the worker may kill it at once)
            os.setpgid(pid, pid)
        os.close(fds[0])
        del call
        try:
            send_message(sock, ("started", pid))
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            assert info is not None
            killed = info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
            send_message(sock, ("exited", -info.si_status if killed else info.si_status))
            read_message(sock)  # ("reap",): the worker is done with the group
            os.waitpid(pid, 0)
            send_message(sock, ("reaped",))
        except (EOFError, OSError):  # the worker is gone (the call's process ends with it)
            return None


def _lifeline(fd: int) -> None:
    """Wait until the worker closes its end of the pipe ``fd`` (once it lets the warm process
    go, or by dying), then kill this process's group: nothing of the call outlives it."""
    while os.read(fd, 1 << 16):
        pass
    import signal

    os.killpg(0, signal.SIGKILL)


def _dumps(outcome: tuple[str, Any]) -> bytes:
    try:
        return pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle  # (a lambda, a class defined in the function...)

        data: bytes = cloudpickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        return data


def _run(call: Any, result_fd: int, lifeline: int) -> None:
    """Run ``call`` in this forked process, write its outcome to ``result_fd``, and exit."""
    os.set_inheritable(result_fd, False)  # (a process the call starts must not hold it open)
    _thread.start_new_thread(_lifeline, (lifeline,))  # (not joined at exit; no handshake)
    if "numpy.random" in sys.modules:  # (as Python's random does at a fork: not every call
        sys.modules["numpy.random"].seed()  # the same numbers, as no two processes have)
    outcome: tuple[str, Any]
    try:
        fn, args, kwargs = call
        del call
        value = fn(*args, **kwargs)
        if isinstance(value, types.CoroutineType):
            import asyncio

            value = asyncio.run(value)
        outcome = ("ok", value)
    except BaseException as error:  # reported to the worker, as Dask does
        import tblib.pickling_support

        tblib.pickling_support.install(error)  # its traceback travels with it
        outcome = ("error", error)
    try:
        data = _dumps(outcome)
    except Exception as error:  # an unpicklable value or exception
        data = _dumps(("error", TypeError(f"cannot send the outcome back: {error}")))
    with os.fdopen(result_fd, "wb") as out:
        out.write(header(data))
        out.write(data)
        out.flush()
        del outcome, data
        _wind_up()
    # The pipe's end tells the worker that the call is over: the rest is the kernel's.
    os._exit(0)


def _wind_up() -> None:
    """What an interpreter does as it ends (non-daemon threads joined, ``atexit`` handlers
    run, standard streams flushed), without the module teardown that follows: a forked copy
    of a process that imported distributed takes about 100 ms over that."""
    import atexit

    # As the interpreter does: the hooks of threading._register_atexit (concurrent.futures'
    # pools are told to stop there), then non-daemon threads joined; then atexit's handlers.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):  # (closed, replaced)
            stream.flush()


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    lifeline = int(sys.argv[2])
    os.set_inheritable(lifeline, False)
    import warnings

    # Imports may have started threads (a BLAS pool, say): forking then is what
    # multiprocessing's "fork" does; Python 3.12 warns on every fork, to the worker's log.
    warnings.filterwarnings("ignore", ".*multi-threaded.*fork", DeprecationWarning)
    forked = _serve(sock)
    if forked is not None:
        try:
            _run(*forked, lifeline)
        except BaseException:  # (not the call's: it is reported) no teardown of the copy
            import traceback

            traceback.print_exc()
            os._exit(1)


if __name__ == "__main__":
    main()
