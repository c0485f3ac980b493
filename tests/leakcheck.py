"""A pytest plugin that fails any test of this project which leaves threads, child processes
or file descriptors behind, in the spirit of distributed's ``utils_test.clean()``; the checks
themselves are dask_anyio._leaks, which the users' plugin (dask_anyio.pytest_plugin) runs for
the tests that use its fixtures: those are left to it here.

``tests/conftest.py`` uses its hooks; ``tests/test_leakcheck.py`` shows that it catches each
kind of leak, in sync and async tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dask_anyio._leaks import Snapshot, left_behind, snapshot

#: The state of the process once a test's fixtures are set up.
_BEFORE_TEST = pytest.StashKey[Snapshot]()


def _checked_by_the_plugin(item: pytest.Item) -> bool:
    return "dask_cluster" in getattr(item, "fixturenames", ())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """Take the snapshot that every test is checked against once it is torn down."""
    yield
    if not _checked_by_the_plugin(item):
        item.stash[_BEFORE_TEST] = snapshot()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Fail any test that leaves a thread, a child process or a file descriptor behind.

    The baseline is taken after the test's fixtures are set up, and the check runs after
    they are torn down: what a session fixture keeps (an external cluster, its observer
    client) is in the baseline; what a test's own fixtures and event loop open is closed by
    then (anyio's plugin closes a test's event loop with its last async fixture). Threads
    and descriptors are compared by identity, not counted, so that one closed at teardown
    (an event loop's) cannot hide one leaked. What a function-scoped fixture leaks itself
    is in the baseline, hence not caught."""
    yield
    before = item.stash.get(_BEFORE_TEST, None)
    if before is not None:  # (setup failed: that is reported already)
        assert_no_leaks(before, item.nodeid)


def assert_no_leaks(before: Snapshot, what: str) -> None:
    """Fail if threads, child processes or file descriptors grew since ``before``."""
    leaks = left_behind(before)
    if leaks:
        pytest.fail(f"{what} left behind: " + "; ".join(leaks), pytrace=False)
