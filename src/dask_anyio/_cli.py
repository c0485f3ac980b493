"""Command line: ``dask anyio ...`` (a ``dask_cli`` entry point) and ``python -m dask_anyio``."""

from __future__ import annotations

import importlib.util
from functools import partial

import anyio
import click

from ._demo import demo as run_demo


@click.group(name="anyio")
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
    "--delay", default=0.5, show_default=True, type=float, help="Seconds each demo task sleeps."
)
def demo(backend: str, address: str | None, delay: float) -> None:
    """Run the seed scenario, then cancel a long task and show the scheduler forgot it."""
    if backend == "trio" and importlib.util.find_spec("trio") is None:
        raise click.UsageError("--backend trio needs trio: pip install 'dask-anyio[trio]'")
    anyio.run(partial(run_demo, address, delay=delay, say=click.echo), backend=backend)
