"""Transport security: a self-signed HTTPS (or TLS Redis) server is refused unless its CA is configured.

Each server is a real one on 127.0.0.1 behind TLS: the DLI simulator and moto's S3 server behind a TLS
relay (tests/faults/relay.py), and a private `redis-server --tls-port`. The certificate is self-signed,
as a private CA's would be to a client that was not told about it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioboto3
import pytest
from faults.relay import Relay, running_relay
from security.certs import SelfSigned, make_self_signed
from security.private_redis import needs_redis_server, private_redis

from exporter.adapters.limiter import LocalRateLimiter
from exporter.adapters.s3 import open_object_store
from exporter.app import open_stores
from exporter.devstack import DEV_AK, DEV_PROJECT, DEV_SK, create_bucket
from exporter.dli.client import DliClient
from exporter.dli.retry import RetryPolicy
from exporter.dli.session import create_session
from exporter.dli.signer import Credentials
from exporter.errors import StoreUnavailable, Transient
from exporter.models import ObjectInfo
from exporter.settings import Settings
from exporter.simulator import SimulatorSettings, running_simulator
from exporter.wiring import s3_options, session_options

BUCKET = "tls-checks"
KEY = "exports/probe.zip"


@pytest.fixture
def cert(tmp_path: Path) -> SelfSigned:
    return make_self_signed(tmp_path / "tls")


@pytest.fixture
async def tls_simulator(s3_server: str, cert: SelfSigned) -> AsyncIterator[Relay]:
    """The DLI simulator (writing into the shared S3 server), reachable only over HTTPS."""
    await create_bucket(s3_server, BUCKET)
    sim_settings = SimulatorSettings(
        project_id=DEV_PROJECT, ak=DEV_AK, sk=DEV_SK, obs_endpoint=s3_server, obs_region="us-east-1"
    )
    async with (
        running_simulator(sim_settings) as simulator,
        running_relay(simulator.url, ssl_context=cert.server_context()) as relay,
    ):
        yield relay


@pytest.fixture
async def tls_s3(s3_server: str, cert: SelfSigned) -> AsyncIterator[Relay]:
    """moto's S3 server holding one object, reachable only over HTTPS."""
    session = aioboto3.Session()
    async with session.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
    ) as client:
        await create_bucket(s3_server, BUCKET)
        await client.put_object(Bucket=BUCKET, Key=KEY, Body=b"PK\x05\x06" + bytes(18))
    async with running_relay(s3_server, ssl_context=cert.server_context()) as relay:
        yield relay


def exporter_settings(**values: Any) -> Settings:
    return Settings(ak=DEV_AK, sk=DEV_SK, project_id=DEV_PROJECT, obs_region="us-east-1", **values)


async def export_once(settings: Settings, endpoint: str) -> list[str]:
    """One export call with the daemon's own session (TLS policy included) and no retries."""
    async with create_session(session_options(settings)) as session:
        client = DliClient(
            session,
            endpoint,
            Credentials(DEV_AK, DEV_SK, DEV_PROJECT),
            LocalRateLimiter(100),
            RetryPolicy(max_attempts=1),
        )
        result = await client.export_jobs(DEV_PROJECT, f"{BUCKET}/exports", [1, 2, 3])
    return result.zip_files


async def head_once(settings: Settings) -> ObjectInfo | None:
    async with open_object_store(s3_options(settings)) as store:
        return await store.head(BUCKET, KEY)


def test_tls_verification_is_on_by_default() -> None:
    """Out of the box the exporter verifies certificates and names no CA bundle of its own."""
    settings = Settings()
    assert settings.tls_verify is True and settings.ca_bundle is None


async def test_dli_refuses_self_signed_certificate_by_default(tls_simulator: Relay) -> None:
    """DLI behind an unknown certificate: the call fails before any request is sent, and says why."""
    with pytest.raises(Transient) as caught:
        await export_once(exporter_settings(), tls_simulator.url)
    assert caught.value.reason == "connection"
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert sum(tls_simulator.counts.values()) == 0, "no HTTP request got through the failed handshake"


async def test_dli_accepts_certificate_from_ca_bundle(tls_simulator: Relay, cert: SelfSigned) -> None:
    """With EXPORTER_CA_BUNDLE naming the issuing CA, the same server is trusted and the export works."""
    zips = await export_once(exporter_settings(ca_bundle=cert.cert), tls_simulator.url)
    assert len(zips) == 1 and zips[0].startswith(f"{BUCKET}/exports/")
    assert tls_simulator.counts["forwarded"] == 1


async def test_dli_tls_verify_off_is_an_explicit_opt_out(tls_simulator: Relay) -> None:
    """EXPORTER_TLS_VERIFY=false (and only that) accepts an unknown certificate."""
    zips = await export_once(exporter_settings(tls_verify=False), tls_simulator.url)
    assert len(zips) == 1


async def test_obs_refuses_self_signed_certificate_by_default(tls_s3: Relay) -> None:
    """OBS behind an unknown certificate: HEAD fails as an unreachable OBS, naming the SSL error."""
    with pytest.raises(Transient) as caught:
        await head_once(exporter_settings(obs_endpoint=tls_s3.url, obs_addressing_style="path"))
    assert caught.value.reason == "connection"
    assert "SSL" in str(caught.value)
    assert sum(tls_s3.counts.values()) == 0


async def test_obs_accepts_certificate_from_ca_bundle(tls_s3: Relay, cert: SelfSigned) -> None:
    """With the CA bundle, the object is found over HTTPS with its real size."""
    settings = exporter_settings(obs_endpoint=tls_s3.url, obs_addressing_style="path", ca_bundle=cert.cert)
    info = await head_once(settings)
    assert info is not None and info.size == 22


@needs_redis_server
async def test_redis_refuses_self_signed_certificate_by_default(tmp_path: Path, cert: SelfSigned) -> None:
    """A rediss:// queue behind an unknown certificate is unavailable, not silently trusted.

    (The handshake fails at once, but redis-py retries it with backoff, so this takes seconds; when the
    10 s guard ends it first, StoreUnavailable's message is empty rather than naming the certificate.)
    """
    async with private_redis(tmp_path, tls=cert) as port:
        settings = exporter_settings(queue_url=f"rediss://127.0.0.1:{port}/0")
        async with open_stores(settings) as stores:
            with pytest.raises(StoreUnavailable):
                await stores.queue.ping()


@needs_redis_server
async def test_redis_accepts_certificate_from_ca_bundle(tmp_path: Path, cert: SelfSigned) -> None:
    """With the CA bundle, the rediss:// queue works: a message goes in and comes back out."""
    async with private_redis(tmp_path, tls=cert) as port:
        settings = exporter_settings(queue_url=f"rediss://127.0.0.1:{port}/0", ca_bundle=cert.cert)
        async with open_stores(settings) as stores:
            await stores.queue.ping()
            await stores.queue.put_raw('{"probe": true}')
            claim = await stores.queue.claim("tls-test", 30)
    assert claim is not None and claim.body == '{"probe": true}'
