"""Task functions that fail on the worker, importable there as ``tests.error_tasks``.

Each raises from a frame of its own, so that a test can find that frame in the traceback
the client receives.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn


class LedgerError(Exception):
    """An exception type that exists only in the tests."""


class CodeError(Exception):
    """An exception whose ``__init__`` does not take its message: ``CodeError(code, detail)``."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"error {code}: {detail}")
        self.code = code
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.detail))


def fail_with_value_error(message: str) -> NoReturn:
    raise ValueError(message)


def fail_with_lookup_error(message: str) -> NoReturn:
    raise LookupError(message)


def fail_with_ledger_error(message: str) -> NoReturn:
    raise LedgerError(message)


def fail_with_code(code: int, detail: str) -> NoReturn:
    raise CodeError(code, detail)


def _parse_amount(text: str) -> int:
    return int(text)


def fail_from_cause(text: str) -> NoReturn:
    """Raise ``CodeError`` explicitly chained (``raise ... from``) to the ``ValueError`` of
    parsing ``text``."""
    try:
        _parse_amount(text)
    except ValueError as cause:
        raise CodeError(400, f"bad amount {text!r}") from cause
    raise AssertionError(f"{text!r} parsed")


def fail_while_handling(text: str) -> NoReturn:
    """Raise ``LedgerError`` while handling the ``ValueError`` of parsing ``text`` (implicit
    chaining: ``__context__`` only)."""
    try:
        _parse_amount(text)
    except ValueError:
        raise LedgerError(f"could not book {text!r}")  # noqa: B904 - the implicit chain is the point
    raise AssertionError(f"{text!r} parsed")


def exit_worker_process() -> NoReturn:
    """End the worker's process at once, as a crash would (its nanny starts a new one)."""
    os._exit(1)
