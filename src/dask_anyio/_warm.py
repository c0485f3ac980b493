"""Warm processes for :func:`dask_anyio.kill_on_cancel` calls, on the worker side.

A call of ``kill_on_cancel(fn)`` runs in a process forked, for that call alone, from a
*warm process* (:mod:`dask_anyio._child`): a Python process the worker started earlier, which
imported the modules of the calls it served and keeps them. Forking it costs a few
milliseconds where starting an interpreter that imports distributed costs most of a second,
and each call still has a process (and a process group) of its own: killing it on
cancellation kills nothing else, and no call sees what an earlier one left in memory.

Each worker keeps a :class:`Pool` of idle warm processes, one per call it runs at the same
time at most. A warm process idle for ``dask-anyio.kill-on-cancel.idle-timeout`` (Dask's
config, default 60 s; 0 keeps none: one warm process per call) ends, as all of them do when
the worker closes (a worker plugin lets them go) or dies (each reads the end of its socket;
the call's process, the end of its lifeline).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import dask.config
from dask.utils import parse_timedelta
from distributed import Worker
from distributed.core import Status
from distributed.diagnostics.plugin import WorkerPlugin

from . import _child

__all__ = ["CLOSING", "IDLE_TIMEOUT", "Pool", "Warm", "how_it_ended", "run_call"]

#: Dask's config key of how long a warm process may stay idle.
IDLE_TIMEOUT = "dask-anyio.kill-on-cancel.idle-timeout"
_DEFAULT_IDLE = 60.0
#: How often a worker thread waiting for a call looks at its task's state.
_POLL = 0.02
#: How long a call's process that sent its outcome may take to exit before it is killed.
EXIT_GRACE = 2.0
#: How long a warm process may take to answer once its call's process was killed.
_ANSWER_PATIENCE = 5.0
#: Statuses of a worker that will not take the result of a running task.
CLOSING = frozenset({Status.closing, Status.closed, Status.failed})


class Lost(Exception):
    """The warm process ended in the middle of a conversation."""


class Warm:
    """One warm process, with this side's ends of its socket and of its calls' lifeline."""

    def __init__(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        lifeline_read, self.lifeline = os.pipe()
        try:
            self.process = subprocess.Popen(
                # by path, -P: neither the package (slow to import) nor the script's directory
                [sys.executable, "-P", _child.__file__, str(theirs.fileno()), str(lifeline_read)],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(), lifeline_read),
                start_new_session=True,  # a terminal's signals are not its calls' concern
            )
        except BaseException:
            mine.close()
            os.close(self.lifeline)
            raise
        finally:
            theirs.close()
            os.close(lifeline_read)
        self.sock = mine
        self.idle_since = 0.0
        #: Answers still to read of the last conversation ("exited", "reaped").
        self.pending = 0
        self._closed = False

    def settle(self) -> None:
        """Read what the last conversation left to read: its process is then reaped."""
        while self.pending:
            self.answer(_ANSWER_PATIENCE)
            self.pending -= 1

    def ask(self, message: Any, fd: int | None = None) -> None:
        """Send ``message`` (with the descriptor ``fd``)."""
        try:
            _child.send_message(self.sock, message, fd)
        except OSError as error:
            raise Lost from error

    def answer(self, patience: float | None = None) -> Any:
        """The warm process's next message (waiting at most ``patience`` seconds for its
        start, and for the rest of it)."""
        if patience is not None:
            ready = select.poll()  # (not select(): a worker may have 1024 descriptors open)
            ready.register(self.sock, select.POLLIN)
            if not ready.poll(patience * 1000):
                raise Lost
        self.sock.settimeout(patience)
        try:
            message, _ = _child.read_message(self.sock)
        except (EOFError, OSError) as error:  # (socket.timeout is an OSError)
            raise Lost from error
        finally:
            self.sock.settimeout(None)
        return message

    def close(self, *, kill: bool = False) -> int:
        """Let the process go, and what its call's process was running if any (the lifeline
        ends); reap it, killed first if ``kill`` or slow to end. Its exit status."""
        if not self._closed:
            self._closed = True
            if not kill:
                with contextlib.suppress(Lost):
                    self.settle()  # (its last call's process reaped by itself)
            self.sock.close()
            os.close(self.lifeline)
        if kill:
            _kill_group(self.process.pid)
        try:
            return self.process.wait(EXIT_GRACE)
        except subprocess.TimeoutExpired:
            _kill_group(self.process.pid)
            return self.process.wait()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class Pool:
    """A worker's idle warm processes, the most recently used taken first; each ends once
    idle for ``idle_timeout`` seconds (a thread of the pool's, while it holds any)."""

    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self._idle: list[Warm] = []
        self._changed = threading.Condition()
        self._closed = False
        self._reaper: threading.Thread | None = None

    def take(self) -> tuple[Warm, bool]:
        """A warm process, and whether it served a call before."""
        with self._changed:
            if self._idle:
                return self._idle.pop(), True
        return Warm(), False

    def give_back(self, warm: Warm) -> None:
        with self._changed:
            if not self._closed and self.idle_timeout > 0:
                warm.idle_since = time.monotonic()
                self._idle.append(warm)
                if self._reaper is None:
                    self._reaper = threading.Thread(
                        target=self._reap, name="dask-anyio-warm-processes", daemon=True
                    )
                    self._reaper.start()
                self._changed.notify()
                return
        warm.close()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            idle, self._idle = self._idle, []
            self._changed.notify()
        for warm in idle:  # (idle: killing them loses nothing, and takes no time)
            warm.close(kill=True)

    def _reap(self) -> None:
        with self._changed:
            try:
                self._reap_expired()
            finally:
                self._reaper = None

    def _reap_expired(self) -> None:
        """Close the idle warm processes as they expire, until none is left."""
        while self._idle:
            now = time.monotonic()
            expired = [w for w in self._idle if now - w.idle_since >= self.idle_timeout]
            if expired:
                self._idle = [w for w in self._idle if w not in expired]
                self._changed.release()
                try:
                    for warm in expired:
                        warm.close()
                finally:
                    self._changed.acquire()
                continue
            oldest = min(w.idle_since for w in self._idle)
            self._changed.wait(oldest + self.idle_timeout - now)


class _ClosePool(WorkerPlugin):
    """Lets a worker's warm processes go when the worker closes."""

    name = "dask-anyio-warm-processes"

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id

    def teardown(self, worker: Worker) -> None:
        with _pools_lock:
            pool = _pools.pop(self.worker_id, None)
        if pool is not None:
            pool.close()


_pools: dict[str, Pool] = {}
_pools_lock = threading.Lock()


def _pool_of(worker: Worker | None) -> Pool | None:
    """The pool of ``worker``: made on its first call, let go when it closes."""
    if worker is None or worker.status in CLOSING:  # (its plugin would not end them)
        return None
    with _pools_lock:
        pool = _pools.get(worker.id)
        if pool is not None:
            return pool
        idle = dask.config.get(IDLE_TIMEOUT, _DEFAULT_IDLE)
        pool = _pools[worker.id] = Pool(parse_timedelta(idle, default="s") or 0.0)
    # (the worker's loop adds it: its add_callback may be called from any thread)
    worker.loop.add_callback(worker.plugin_add, _ClosePool(worker.id), _ClosePool.name)
    return pool


def run_call(
    fn: Callable[..., Any], data: bytes, check: Callable[[], None], worker: Worker | None
) -> tuple[bytes, int | None]:
    """Run the pickled call ``data`` in a process forked from a warm process of ``worker``'s
    pool (or from one of its own, off a worker), calling ``check`` every 20 ms at most while
    it runs: if ``check`` raises, the call's process group is killed and the error goes on.
    The outcome's bytes, and the exit status of the call's process if it ended before its
    pipe did (always when the outcome is not whole)."""
    check()
    pool = _pool_of(worker)
    while True:
        warm, used = pool.take() if pool is not None else (Warm(), False)
        conversation = _Conversation(warm)
        try:
            outcome = conversation.run(data, check)
        except Lost:  # (its lifeline ends: the call's process, if any, kills its group)
            status = warm.close(kill=True)
            if not conversation.sent and used:
                continue  # it had ended while idle: another one takes the call
            raise RuntimeError(
                f"the process running {fn!r} {how_it_ended(status)}, without an outcome"
            ) from None
        except BaseException:
            if conversation.reusable and pool is not None:
                pool.give_back(warm)
            else:
                warm.close(kill=True)
            raise
        if pool is not None and conversation.reusable:
            pool.give_back(warm)
        else:
            warm.close(kill=not conversation.reusable)
        return outcome


def how_it_ended(status: int) -> str:
    """How a process with exit status ``status`` (negative: killed by that signal) ended."""
    if status >= 0:
        return f"died with exit status {status}"
    try:
        name = signal.Signals(-status).name
    except ValueError:
        name = f"signal {-status}"
    return f"was killed by {name}"


class _Conversation:
    """One call with a warm process: sent, started, its outcome read, its group killed, then
    reaped. The call is over once its process closed the outcome's pipe (after winding up:
    ``atexit`` handlers ran), or exited; its exit itself is not waited for: the warm process's
    next conversation reads what it reports (see :meth:`Warm.settle`). A conversation cut
    short (``check`` raised) kills the call's group and has it reaped before it returns,
    unless the warm process was loading the call: then the warm process itself is let go
    (``reusable`` is false)."""

    def __init__(self, warm: Warm) -> None:
        self.warm = warm
        self.pid: int | None = None
        self.status: int | None = None  # the call's process's exit status, once reported
        self.sent = False
        self.reusable = False

    def run(self, data: bytes, check: Callable[[], None]) -> tuple[bytes, int | None]:
        """The outcome's bytes, and the exit status if the process ended before its pipe
        did (always when the outcome is not whole)."""
        self.warm.settle()
        read_end, write_end = os.pipe()
        try:
            try:
                self.warm.ask((sys.path, data), write_end)
            finally:
                os.close(write_end)
            self.sent = True
            try:
                chunks = self._follow(read_end, check)
            except Lost:
                raise  # (the pid may name another's process by now: let the lifeline end it)
            except BaseException:
                self._end(cut_short=True)
                raise
            self._end(cut_short=False)
        finally:
            os.close(read_end)
        return b"".join(chunks), self.status

    def _follow(self, read_end: int, check: Callable[[], None]) -> list[bytes]:
        chunks: list[bytes] = []
        size = 0
        events = select.poll()
        events.register(read_end, select.POLLIN)
        events.register(self.warm.sock, select.POLLIN)
        grace: float | None = None  # when the outcome is whole but the pipe still open
        pipe_open = True
        while (
            pipe_open
            or self.pid is None  # (its "started" may come after a quick call's outcome)
            or (self.status is None and not _child.complete(b"".join(chunks)))
        ):
            check()
            if grace is not None and time.monotonic() > grace and self.pid is not None:
                _kill_group(self.pid)  # a thread it left running keeps it alive
                grace = None
            for fd, _ in events.poll(_POLL * 1000):
                if fd == read_end:
                    chunk = os.read(read_end, 1 << 20)
                    if not chunk:  # the call's process closed it: the call is over
                        events.unregister(read_end)
                        pipe_open = False
                        continue
                    chunks.append(chunk)
                    size += len(chunk)
                    if grace is None and size == _frame_size(chunks):
                        grace = time.monotonic() + EXIT_GRACE
                    continue
                message = self.warm.answer()
                if message[0] == "started":
                    self.pid = message[1]
                    continue
                self.status = int(message[1])  # ("exited", status): it ended
                if pipe_open:  # (a process it started may hold the pipe open)
                    os.set_blocking(read_end, False)
                    with contextlib.suppress(BlockingIOError):
                        while chunk := os.read(read_end, 1 << 20):
                            chunks.append(chunk)
                    return chunks
        return chunks

    def _end(self, *, cut_short: bool) -> None:
        """Kill what is left of the call's group, and have its process reaped: at once if it
        was cut short (its exit awaited), else by the next conversation. Raises nothing: a
        warm process lost is not reused."""
        if self.pid is None:  # (not reusable: it is let go)
            if cut_short:
                self._kill_a_fork_unheard_of()
            return
        _kill_group(self.pid)  # the call's process if it runs on, and what it started
        with contextlib.suppress(Lost):
            self.warm.ask(("reap",))  # (read by the warm process once the process exited)
            self.warm.pending += 1 if self.status is not None else 2
            if cut_short:  # reaped before the thread is free
                self.warm.settle()
            self.reusable = True

    def _kill_a_fork_unheard_of(self) -> None:
        """Cut short before the word that the call's process started: the warm process may
        be loading the call still, or have forked it already. Stopped (so that it reaps
        nothing), what it sent is read: if it forked, the call's group is killed while its
        pid is still taken. (Then the warm process is killed: see :func:`run_call`.)"""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.warm.process.pid, signal.SIGSTOP)
        with contextlib.suppress(Lost):
            message = self.warm.answer(0)
            if message[0] == "started":
                _kill_group(message[1])


def _frame_size(chunks: list[bytes]) -> int:
    """The size of the whole frame that ``chunks`` begin (-1 while its header is not in),
    without joining them once the first holds the header."""
    head = chunks[0] if len(chunks[0]) >= _child.HEADER_SIZE else b"".join(chunks)
    return _child.frame_size(head)
