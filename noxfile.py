"""The one entry point for checks: `nox -s tests`, `lint`, `typecheck`, `docs`, `demo`,
`bench`."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
TEST_DEPS = [
    "pytest>=8.4",
    "pytest-timeout",
    # the pytest plugin's tests under pytest-xdist
    "pytest-xdist",
    "psutil",
    "uvloop",
    "trustme",
    "starlette",
    # the notebook guide's notebooks, run in a real kernel
    "nbclient",
    "nbformat",
    "ipykernel",
]
#: The benchmarks' contender trio-asyncio, their chart, and the local offload's peer
#: trio-parallel (anyio's to_process, the other one, comes with anyio).
BENCH_DEPS = ["trio-asyncio>=0.15", "matplotlib>=3.8", "trio-parallel>=1.2"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite on asyncio, asyncio+uvloop and trio."""
    # dashboard: bokeh, for performance_report() and the dashboard the demo links to
    session.install("-e", ".[trio,array,dataframe,dashboard]", *TEST_DEPS)
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check (with the ASYNC rules) and ruff format --check."""
    session.install("ruff")
    paths = ["src", "tests", "benchmarks", "noxfile.py", "docs"]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src, benchmarks and tests/typing, pyright (strict) on tests/typing,
    --verifytypes.

    tests/typing pins the types users see with assert_type; it is checked, never run.
    ``pyright[nodejs]`` brings Node.js as a wheel from PyPI: nothing is fetched from npm.
    ``--ignoreexternal``: distributed's own API is only partly annotated, and our public
    signatures mention ``distributed.Client`` and ``distributed.Future``.
    """
    # pytest and psutil's stubs: the pytest plugin (dask_anyio.pytest_plugin, _leaks)
    session.install(
        "-e", ".[trio,array,dataframe]", "mypy", "pyright[nodejs]", "pytest>=8.4", "types-psutil"
    )
    session.run("mypy", "--strict", "src", "benchmarks", "tests/typing")
    # the session's interpreter, so that pyright sees what was installed here
    python = ["--pythonpath", os.path.join(session.bin, "python")]
    session.run("pyright", *python, "tests/typing")
    session.run("pyright", *python, "--verifytypes", "dask_anyio", "--ignoreexternal")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation, warnings as errors (pytest: the plugin's reference)."""
    session.install("-e", ".[trio]", "sphinx", "furo", "myst-parser", "pytest>=8.4")
    session.run(
        "sphinx-build", "-W", "-n", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Run the demo on an embedded LocalCluster: `nox -s demo -- --backend trio`."""
    session.install("-e", ".[trio,dashboard]")
    session.run("python", "-m", "dask_anyio", "demo", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks against the raw Dask client, on a cluster of their own. `nox -s bench --
    --quick` is a smoke run (under 2 minutes); see benchmarks/README.md.

    The benchmark code lives in benchmarks/dask_anyio_bench, not in the package: it runs from
    that folder (on PYTHONPATH), and the runner puts it on the path of the processes it starts.
    trio-asyncio is a contender; matplotlib draws the chart.
    """
    session.install("-e", ".[trio]", *BENCH_DEPS)
    env = {"PYTHONPATH": "benchmarks"}
    session.run("python", "-m", "dask_anyio_bench", *session.posargs, env=env)
