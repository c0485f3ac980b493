"""Benchmarks: dask-anyio side by side with the raw Dask client (``dask anyio bench``).

:mod:`.runner` starts a cluster and the contenders' processes, :mod:`.workloads` is what
each process runs, :mod:`.contenders` the ways of driving Dask that are compared,
:mod:`.tasks` the task functions and the scheduler plugin, :mod:`.report` the tables and
the chart.
"""
