"""The credential services over real sockets: the simulator's metadata service and IAM token route, and
small stand-ins for the metadata service's other answers; the DLI client signing with what they give."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from exporter.adapters.limiter import LocalRateLimiter
from exporter.clock import SystemClock
from exporter.credentials.iam_token import IamTokenFetcher, TokenScope
from exporter.credentials.metadata import MetadataFetcher
from exporter.credentials.renewing import RenewingSource
from exporter.devstack import DEV_PROJECT
from exporter.dli.client import DliClient
from exporter.dli.retry import RetryPolicy
from exporter.dli.signer import Credentials
from exporter.errors import AuthError
from exporter.simulator import SimulatorHandle
from exporter.simulator.state import STATE

IAM = {"iam_domain": "acct-test", "iam_user": "exporter", "iam_password": "pw-Correct-Horse-0001"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@asynccontextmanager
async def served(routes: Callable[[web.Application], None]) -> AsyncIterator[str]:
    """A small aiohttp app on a free port: a stand-in for the metadata service's rarer answers."""
    app = web.Application()
    routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def dli_client(http: aiohttp.ClientSession, sim: SimulatorHandle, source: Any) -> DliClient:
    return DliClient(http, sim.url, source, LocalRateLimiter(1000), RetryPolicy(max_attempts=2))


async def test_metadata_keys_are_temporary_and_sign_dli_calls(
    stack: Any, http: aiohttp.ClientSession
) -> None:
    """A session token, then keys with their security token; DLI accepts them (signed X-Security-Token)."""
    async with stack(jobs=5) as local:
        fetch = MetadataFetcher(http, local.simulator.url, SystemClock())
        lease = await fetch()
        assert isinstance(lease.auth, Credentials) and lease.auth.security_token
        assert 3500 < lease.lifetime <= 3600
        client = dli_client(http, local.simulator, RenewingSource("metadata", fetch, SystemClock()))
        result = await client.export_jobs(DEV_PROJECT, f"{local.bucket}/x", [1])
        assert result.is_success and local.simulator.keys_used() == {"metadata-2": 1}


async def test_an_expired_session_token_is_fetched_again(stack: Any, http: aiohttp.ClientSession) -> None:
    """The keys route answers 401 to a stale session token: one new PUT, then the keys (as the SDK does)."""
    async with stack(jobs=5) as local:
        fetch = MetadataFetcher(http, local.simulator.url, SystemClock())
        await fetch()
        local.simulator.app[STATE].keys.sessions.clear()  # every session token forgotten
        await fetch()
        requests = local.simulator.stats()["requests"]
        assert requests["metadata_token"] == {"200": 2}
        assert requests["metadata_security_key"] == {"200": 2, "401": 1}


async def test_a_metadata_service_without_session_tokens_is_asked_without(
    http: aiohttp.ClientSession,
) -> None:
    """404 to the PUT (an older service): the keys are asked for without X-Metadata-Token."""
    seen: list[str | None] = []

    async def key(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-Metadata-Token"))
        credential = {
            "access": "AK",
            "secret": "SK",
            "securitytoken": "T",
            "expires_at": "2099-01-01T00:00:00Z",
        }
        return web.json_response({"credential": credential})

    def routes(app: web.Application) -> None:
        app.router.add_get("/openstack/latest/securitykey", key)

    async with served(routes) as url:
        lease = await MetadataFetcher(http, url, SystemClock())()
    assert seen == [None] and lease.auth == Credentials("AK", "SK", security_token="T")


async def test_an_instance_without_agency_is_an_auth_error(http: aiohttp.ClientSession) -> None:
    """401 'Please configure Cloud Service Agency first': no new session token helps; AuthError says so."""

    async def token(_: web.Request) -> web.Response:
        return web.Response(text="session")

    async def key(_: web.Request) -> web.Response:
        return web.Response(status=401, text="Please configure Cloud Service Agency first")

    def routes(app: web.Application) -> None:
        app.router.add_put("/meta-data/latest/api/token", token)
        app.router.add_get("/openstack/latest/securitykey", key)

    async with served(routes) as url:
        with pytest.raises(AuthError, match="no agency"):
            await MetadataFetcher(http, url, SystemClock())()


def token_scope(sim: SimulatorHandle, password_file: Path) -> TokenScope:
    return TokenScope(sim.url, IAM["iam_domain"], IAM["iam_user"], password_file, DEV_PROJECT)


async def test_iam_token_signs_dli_calls_and_a_wrong_password_is_refused(
    stack: Any, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The password from its file gets a 24-hour token that DLI accepts; a wrong one is IAM's 401."""
    password = tmp_path / "password"
    password.write_text(IAM["iam_password"] + "\n")
    async with stack(jobs=5, faults=IAM) as local:
        fetch = IamTokenFetcher(http, token_scope(local.simulator, password), SystemClock())
        lease = await fetch()
        assert isinstance(lease.auth, str) and 86_300 < lease.lifetime <= 86_400
        client = dli_client(http, local.simulator, RenewingSource("iam", fetch, SystemClock()))
        assert (await client.export_jobs(DEV_PROJECT, f"{local.bucket}/x", [1])).is_success
        assert local.simulator.keys_used() == {"token": 1}
        password.write_text("not-the-password")
        with pytest.raises(AuthError, match="401"):
            await fetch()


async def test_a_revoked_token_is_renewed_once_on_the_401(
    stack: Any, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Every token ended early (a password change, say): the next call's 401 renews, and it succeeds."""
    password = tmp_path / "password"
    password.write_text(IAM["iam_password"])
    async with stack(jobs=5, faults=IAM) as local:
        fetch = IamTokenFetcher(http, token_scope(local.simulator, password), SystemClock())
        source = RenewingSource("iam", fetch, SystemClock(), min_backoff=0.0)
        client = dli_client(http, local.simulator, source)
        await client.export_jobs(DEV_PROJECT, f"{local.bucket}/x", [1])
        assert local.simulator.expire_tokens() == 1
        with capture_logs() as logs:
            assert (await client.export_jobs(DEV_PROJECT, f"{local.bucket}/x", [2])).is_success
        assert local.simulator.stats()["auth_failures"] == 1
        assert local.simulator.stats()["requests"]["iam_tokens"] == {"201": 2}
        assert [entry["refreshed"] for entry in logs if entry["event"] == "dli.auth.refresh"] == [True]
