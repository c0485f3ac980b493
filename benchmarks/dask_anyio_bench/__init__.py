"""Benchmarks: dask-anyio side by side with the raw Dask client (``nox -s bench``).

Not part of the installed package: this folder is put on the path (``PYTHONPATH=benchmarks``,
as the nox session does), and the runner puts it on the path of the cluster and contender
processes it starts. :mod:`.runner` starts a cluster and the contenders' processes,
:mod:`.workloads` is what each process runs, :mod:`.contenders` the ways of driving Dask that
are compared, :mod:`.tasks` the task functions and the scheduler plugin, :mod:`.report` the
tables and the chart; ``python -m dask_anyio_bench`` is the command line.
"""
