"""TLS: an external cluster that speaks only tls://, with certificates made by the test."""

from __future__ import annotations

import operator

import anyio
import pytest

from dask_anyio import DaskExecutor

from .conftest import Certificates, ExternalCluster, Snapshot
from .tasks import slow_identity

pytestmark = pytest.mark.anyio


async def test_scenario_over_tls(
    tls_cluster: ExternalCluster, tls_certificates: Certificates, no_leaks: Snapshot
) -> None:
    """With the right Security, a tls:// scheduler runs the scenario and keeps no key after."""
    assert tls_cluster.address.startswith("tls://127.0.0.1:")
    async with DaskExecutor(tls_cluster.address, security=tls_certificates.security()) as ex:
        a = ex.submit(slow_identity, 2)
        c = ex.submit(operator.add, a, 5)
        assert await ex.retrieve(c) == 7
        assert await ex.run(operator.add, 1, 2) == 3
    assert tls_cluster.scheduler_keys() == set()


async def test_tls_without_certificate_is_refused(
    tls_cluster: ExternalCluster, no_leaks: Snapshot
) -> None:
    """No TLS configuration for a tls:// address: a clear error naming it, before connecting."""
    with anyio.fail_after(30), pytest.raises(ValueError, match=r"tls://127\.0\.0\.1.* speaks TLS"):
        async with DaskExecutor(tls_cluster.address, connect_timeout=2):
            pass
