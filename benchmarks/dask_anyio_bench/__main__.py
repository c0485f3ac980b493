"""``python -m dask_anyio_bench`` (what ``nox -s bench`` runs): the benchmark's command line."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from . import runner
from .contenders import CONTENDERS


@click.command()
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
    type=click.Choice(list(runner.WORKLOADS)),
    help="Workloads to run (repeatable).  [default: all]",
)
@click.option(
    "--size",
    "sizes",
    multiple=True,
    type=click.IntRange(min=1),
    help="Task counts of the throughput workloads (repeatable).  [default: 1000, 10000, 100000]",
)
def main(
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
        output = runner.RESULTS / kind
    data = runner.run(plan, output, say=click.echo)
    problems = runner.problems(data)
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main(prog_name="python -m dask_anyio_bench")
