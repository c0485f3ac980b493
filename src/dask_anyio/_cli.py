"""Command line: ``dask anyio ...`` (a ``dask_cli`` entry point) and ``python -m dask_anyio``.

Dask loads every ``dask_cli`` entry point for every ``dask`` command, ``dask worker``
included. Beyond the package itself, loading this module imports only click (which Dask's
command line has imported already): each command imports what it needs when it runs.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import partial

import click

__all__ = ["main"]


@click.group(name="anyio")
@click.version_option(package_name="dask-anyio", message="%(package)s %(version)s")
def main() -> None:
    """dask-anyio: submit work to a Dask cluster from asyncio and trio."""


@main.command()
@click.option(
    "--backend",
    type=click.Choice(["asyncio", "trio"]),
    default="asyncio",
    show_default=True,
    help="The event loop to run the demo on.",
)
@click.option(
    "--address",
    default=None,
    metavar="ADDR",
    help="Scheduler to connect to, such as tcp://127.0.0.1:8786. Default: an embedded "
    "LocalCluster.",
)
@click.option(
    "--delay",
    default=0.5,
    show_default=True,
    type=float,
    help="Seconds each demo task sleeps (the mapped ones: half as long).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr while the mapped tasks complete.  [default: only if "
    "stderr is a terminal]",
)
def demo(backend: str, address: str | None, delay: float, progress: bool | None) -> None:
    """Show dask-anyio at work, step by step.

    On a cluster (an embedded one by default), it submits three slow tasks, one depending
    on the other two, and waits for them without moving data; runs one call; maps a slow
    function over 20 items with a progress bar; then cancels a long call with a timeout
    and shows that the scheduler forgot its task.
    """
    import anyio

    from ._demo import demo as run_demo

    if backend == "trio" and importlib.util.find_spec("trio") is None:
        raise click.UsageError("--backend trio needs trio: pip install 'dask-anyio[trio]'")
    scenario = partial(
        run_demo,
        address,
        delay=delay,
        say=click.echo,
        progress=progress,
        progress_file=sys.stderr,
    )
    anyio.run(scenario, backend=backend)
