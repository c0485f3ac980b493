"""TLS: an external cluster that speaks only tls://, with certificates made by the test."""

from __future__ import annotations

import operator
import re
from pathlib import Path

import anyio
import pytest
from distributed.security import Security

from dask_anyio import DaskExecutor

from .conftest import Certificates, ExternalCluster, make_certificates
from .tasks import slow_identity

pytestmark = pytest.mark.anyio


async def test_scenario_over_tls(
    tls_cluster: ExternalCluster, tls_certificates: Certificates
) -> None:
    """With the right Security, a tls:// scheduler runs the scenario and keeps no key after."""
    assert tls_cluster.address.startswith("tls://127.0.0.1:")
    async with DaskExecutor(tls_cluster.address, security=tls_certificates.security()) as ex:
        a = ex.submit(slow_identity, 2)
        c = ex.submit(operator.add, a, 5)
        assert await ex.retrieve(c) == 7
        assert await ex.run(operator.add, 1, 2) == 3
    assert tls_cluster.scheduler_keys() == set()


async def test_tls_without_certificate_is_refused(tls_cluster: ExternalCluster) -> None:
    """No TLS configuration for a tls:// address: a clear error naming it, before connecting."""
    with anyio.fail_after(30), pytest.raises(ValueError, match=r"tls://127\.0\.0\.1.* speaks TLS"):
        async with DaskExecutor(tls_cluster.address, connect_timeout=2):
            pass


async def test_certificate_of_another_ca_is_refused(
    tls_cluster: ExternalCluster, tmp_path: Path
) -> None:
    """A client certificate signed by another CA: a clear ConnectionError naming the address,
    within the connect timeout, and no file descriptor left open."""
    stranger = make_certificates(tmp_path).security()
    with anyio.fail_after(30), pytest.raises(ConnectionError, match=re.escape(tls_cluster.address)):
        async with DaskExecutor(tls_cluster.address, security=stranger, connect_timeout=3):
            pass


async def test_missing_client_certificate_is_refused(
    tls_cluster: ExternalCluster, tls_certificates: Certificates
) -> None:
    """Trusting the CA without a client certificate of one's own (the scheduler requires
    one): refused at once, saying what to pass."""
    no_cert = Security(tls_ca_file=str(tls_certificates.ca), require_encryption=True)
    with anyio.fail_after(30), pytest.raises(ValueError, match="tls_client_cert"):
        async with DaskExecutor(tls_cluster.address, security=no_cert, connect_timeout=3):
            pass


async def test_plain_tcp_refused_when_encryption_is_required(
    external_cluster: ExternalCluster, tls_certificates: Certificates
) -> None:
    """require_encryption=True and a tcp:// address: refused at once, saying why."""
    with pytest.raises(ValueError, match=r"require encryption.* not a tls:// address"):
        async with DaskExecutor(external_cluster.address, security=tls_certificates.security()):
            pass
