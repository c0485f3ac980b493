"""``python -m dask_anyio``: the same commands as ``dask anyio``."""

from ._cli import main

if __name__ == "__main__":
    main(prog_name="python -m dask_anyio")
