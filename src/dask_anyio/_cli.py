"""Command line: ``dask anyio ...`` (a ``dask_cli`` entry point) and ``python -m dask_anyio``."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from functools import partial
from pathlib import Path

import anyio
import click

from ._bench.contenders import CONTENDERS
from ._bench.runner import WORKLOADS
from ._demo import demo as run_demo


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


@main.command()
@click.option(
    "--quick", is_flag=True, help="Small sizes, one repetition, one setting: a smoke run."
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write results.json, results.md, results.png and bench.log.  [default: "
    "benchmarks/results/full, or benchmarks/results/quick with --quick]",
)
@click.option("--repetitions", type=int, default=None, help="Repetitions per contender.")
@click.option(
    "--saturation",
    "saturations",
    multiple=True,
    help="worker-saturation settings to run (repeatable).  [default: 1.1 and inf]",
)
@click.option(
    "--contender",
    "contenders",
    multiple=True,
    type=click.Choice(list(CONTENDERS)),
    help="Contenders to run (repeatable).  [default: all that are installed]",
)
@click.option(
    "--workload",
    "workloads",
    multiple=True,
    type=click.Choice(list(WORKLOADS)),
    help="Workloads to run (repeatable).  [default: all]",
)
@click.option(
    "--size",
    "sizes",
    multiple=True,
    type=click.IntRange(min=1),
    help="Task counts of the throughput workloads (repeatable).  [default: 1000, 10000, 100000]",
)
def bench(
    quick: bool,
    output: Path | None,
    repetitions: int | None,
    saturations: tuple[str, ...],
    contenders: tuple[str, ...],
    workloads: tuple[str, ...],
    sizes: tuple[int, ...],
) -> None:
    """Benchmark dask-anyio against the raw Dask client on a cluster of its own.

    With --workload or --size, results go to benchmarks/results/partial unless --output
    says otherwise: a partial run never replaces the full one.
    """
    from ._bench import runner

    plan = runner.QUICK if quick else runner.Plan()
    if repetitions is not None:
        plan = dataclasses.replace(plan, repetitions=repetitions)
    if saturations:
        plan = dataclasses.replace(plan, saturations=saturations)
    if contenders:
        plan = dataclasses.replace(plan, contenders=contenders)
    if workloads:
        plan = dataclasses.replace(plan, only=workloads)
    if sizes:
        plan = dataclasses.replace(plan, sizes=tuple(sorted(set(sizes))))
    if output is None:
        kind = "quick" if quick else "partial" if workloads or sizes else "full"
        output = Path("benchmarks/results") / kind
    data = runner.run(plan, output, say=click.echo)
    problems = runner.problems(data)
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems:
        sys.exit(1)
