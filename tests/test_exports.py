"""The public surface: __all__ and the package's exports agree."""

from __future__ import annotations

import dask_anyio


def test_all_matches_exports() -> None:
    """Every name in __all__ exists, and every public attribute is in __all__."""
    public = {
        name
        for name in vars(dask_anyio)
        if not name.startswith("_") and not isinstance(getattr(dask_anyio, name), type(dask_anyio))
    }
    assert set(dask_anyio.__all__) == public
    for name in dask_anyio.__all__:
        assert getattr(dask_anyio, name).__module__.startswith("dask_anyio.")
