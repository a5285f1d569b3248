"""CCE workload identity over real sockets: the simulator's IAM exchanges a projected id token for
temporary keys (the SDK's `FederalAccessor` exchange), the DLI client signs with them, they are renewed
when they expire, and a rotated id token file is read at the next renewal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from secret_volume import SecretVolume
from structlog.testing import capture_logs

from exporter.adapters.limiter import LocalRateLimiter
from exporter.clock import SystemClock
from exporter.credentials.profiles import Profiles
from exporter.credentials.renewing import Lease, RenewingSource
from exporter.credentials.source import Auth
from exporter.credentials.workload import WorkloadFetcher, WorkloadIdentity
from exporter.devstack import DEV_PROJECT
from exporter.dli.client import DliClient
from exporter.dli.retry import RetryPolicy
from exporter.dli.signer import Credentials
from exporter.errors import AuthError, Transient
from exporter.logs import redact_text
from exporter.settings import load_settings
from exporter.simulator import SimulatorHandle
from exporter.simulator.state import STATE
from exporter.wiring import profile_defaults, profile_specs

IDP = "cce-dli-exporter"
ID_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGxpIn0.first-signature-0001"
ROTATED = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGxpIn0.second-signature-002"
WORKLOAD = {"idp_id": IDP, "id_token": ID_TOKEN}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def dli_client(http: aiohttp.ClientSession, sim: SimulatorHandle, source: Any) -> DliClient:
    return DliClient(http, sim.url, source, LocalRateLimiter(1000), RetryPolicy(max_attempts=2))


def given(auth: Auth, expires_at: float | None = None) -> Callable[[], Awaitable[Lease]]:
    """A fetch that always brings these credentials (by default valid for an hour)."""

    async def fetch() -> Lease:
        now = SystemClock().time()
        return Lease(auth, obtained_at=now, expires_at=expires_at or now + 3600)

    return fetch


def fetcher(
    http: aiohttp.ClientSession, sim: SimulatorHandle, token_file: Path, idp: str = IDP
) -> WorkloadFetcher:
    return WorkloadFetcher(http, WorkloadIdentity(sim.url, idp, token_file), SystemClock())


async def test_settings_build_a_source_whose_keys_sign_dli_calls(
    stack: Any, http: aiohttp.ClientSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EXPORTER_CREDENTIALS=workload-identity: one id token exchange, one key exchange, temporary keys
    (with their security token) that DLI accepts; the id token and IAM's token are redacted."""
    token_file = tmp_path / "oidc-token"
    token_file.write_text(ID_TOKEN + "\n")
    async with stack(jobs=5, faults=WORKLOAD) as local:
        for name, value in {
            "CREDENTIALS": "workload-identity",
            "IDP_ID": IDP,
            "ID_TOKEN_FILE": str(token_file),
            "IAM_ENDPOINT": local.simulator.url,
        }.items():
            monkeypatch.setenv(f"EXPORTER_{name}", value)
        settings = load_settings()
        settings.require_credentials()
        profiles = Profiles(profile_specs(settings), profile_defaults(settings), http, SystemClock())
        source = profiles.sources(None)
        assert isinstance(source.dli, RenewingSource) and source.obs is source.dli
        auth = await source.dli.current()
        assert isinstance(auth, Credentials) and auth.security_token
        assert (
            await dli_client(http, local.simulator, source.dli).export_jobs(
                DEV_PROJECT, f"{local.bucket}/x", [1]
            )
        ).is_success
        await profiles.aclose()
        requests = local.simulator.stats()["requests"]
        assert requests["iam_id_token"] == {"201": 1} and requests["iam_securitytokens"] == {"201": 1}
        assert local.simulator.keys_used() == {"securitytoken-1": 1}
        (unscoped,) = local.simulator.app[STATE].keys.unscoped
        assert ID_TOKEN not in redact_text(ID_TOKEN) and unscoped not in redact_text(unscoped)
        assert auth.sk not in redact_text(auth.sk)


async def test_the_unscoped_token_is_not_accepted_by_dli(stack: Any, http: aiohttp.ClientSession) -> None:
    """IAM's token for the id token only buys keys: DLI refuses it in X-Auth-Token (as the real one does)."""
    async with stack(jobs=5, faults=WORKLOAD) as local:
        answer = await http.post(
            local.simulator.url + "/v3.0/OS-AUTH/id-token/tokens",
            json={"auth": {"id_token": {"id": ID_TOKEN}}},
            headers={"X-Idp-Id": IDP},
        )
        token = answer.headers["X-Subject-Token"]
        client = dli_client(http, local.simulator, RenewingSource("t", given(token), SystemClock()))
        with pytest.raises(AuthError):
            await client.export_jobs(DEV_PROJECT, f"{local.bucket}/x", [1])


async def test_keys_are_renewed_and_a_rotated_id_token_file_is_read(
    stack: Any, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Keys that live two seconds are renewed while calls go on; after the kubelet swaps the projected
    token (and IAM stops taking the old one), the next renewal reads the new file: no call fails."""
    volume = SecretVolume(tmp_path / "tokens", {"oidc-token": ID_TOKEN})
    async with stack(jobs=50, faults={**WORKLOAD, "securitytoken_ttl_seconds": 2}) as local:
        fetch = fetcher(http, local.simulator, volume.path("oidc-token"))
        source = RenewingSource("workload", fetch, SystemClock(), min_backoff=0.05)
        client = dli_client(http, local.simulator, source)
        assert (await client.export_jobs(DEV_PROJECT, f"{local.bucket}/x", [1])).is_success
        volume.update({"oidc-token": ROTATED})
        local.simulator.app[STATE].settings.sim_id_token = SecretStr(ROTATED)
        job = 2
        async with asyncio.timeout(15):
            while len(local.simulator.keys_used()) < 3:
                assert (await client.export_jobs(DEV_PROJECT, f"{local.bucket}/x", [job])).is_success
                job += 1
                await asyncio.sleep(0.1)
        stats = local.simulator.stats()
        assert set(stats["requests"]["iam_id_token"]) == {"201"}  # never the old token after the swap
        assert stats["auth_failures"] == 0  # renewed before they expired, not after a 401
        assert set(local.simulator.keys_used()) == {"securitytoken-1", "securitytoken-2", "securitytoken-3"}


async def test_a_refused_id_token_is_an_auth_error_that_quotes_nothing(
    stack: Any, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Another id token, or another identity provider: IAM's 401, an AuthError naming IAM, not the token;
    an id token file that cannot be read is Transient naming the file."""
    token_file = tmp_path / "oidc-token"
    token_file.write_text("eyJ.CANARY-not-the-token.sig")
    async with stack(jobs=5, faults=WORKLOAD) as local:
        with pytest.raises(AuthError, match="401") as caught:
            await fetcher(http, local.simulator, token_file)()
        assert "CANARY" not in str(caught.value) and "IAM" in str(caught.value)
        token_file.write_text(ID_TOKEN)
        with pytest.raises(AuthError, match="401") as caught:
            await fetcher(http, local.simulator, token_file, idp="another-idp")()
        assert ID_TOKEN not in str(caught.value)
        with pytest.raises(Transient, match="id token file") as transient:
            await fetcher(http, local.simulator, tmp_path / "missing")()
        assert transient.value.reason == "credentials"
        assert local.simulator.stats()["requests"]["iam_id_token"] == {"401": 2}


async def test_the_sdks_federal_accessor_gets_keys_from_the_simulator(
    stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The official SDK's own exchange (FederalAccessor, with IAM at the simulator) gets keys DLI takes:
    the simulator speaks the SDK's exchange, which the exporter's fetcher reproduces."""
    monkeypatch.setenv("HOME", str(tmp_path))  # importing the SDK writes ~/.huaweicloud
    from huaweicloudsdkcore.auth.internal import FederalAccessor
    from huaweicloudsdkcore.http.http_client import HttpClient
    from huaweicloudsdkcore.http.http_config import HttpConfig

    token_file = tmp_path / "oidc-token"
    token_file.write_text(ID_TOKEN)
    async with stack(jobs=5, faults=WORKLOAD) as local:
        client = HttpClient(HttpConfig.get_default_config(), None, None, logging.getLogger("sdk"))
        try:
            credential = await asyncio.to_thread(
                FederalAccessor().get_credential,
                iam_endpoint=local.simulator.url,
                http_client=client,
                idp_id=IDP,
                id_token_file=str(token_file),
            )
        finally:
            client.close()
        keys = Credentials(credential.access, credential.secret, security_token=credential.security_token)
        source = RenewingSource("sdk", given(keys, credential.expire_at), SystemClock())
        async with aiohttp.ClientSession() as http:
            assert (
                await dli_client(http, local.simulator, source).export_jobs(
                    DEV_PROJECT, f"{local.bucket}/x", [1]
                )
            ).is_success
        assert local.simulator.keys_used() == {"securitytoken-1": 1}


async def test_renewals_log_no_secret(stack: Any, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    """At debug level, a fetch and a renewal log neither the id token, IAM's token nor the keys."""
    token_file = tmp_path / "oidc-token"
    token_file.write_text(ID_TOKEN)
    async with stack(jobs=5, faults=WORKLOAD) as local:
        source = RenewingSource("workload", fetcher(http, local.simulator, token_file), SystemClock())
        with capture_logs() as logs:
            auth = await source.refresh()
        assert isinstance(auth, Credentials)
        text = str(logs)
        (unscoped,) = local.simulator.app[STATE].keys.unscoped
        for secret in (ID_TOKEN, unscoped, auth.sk, auth.security_token or "-"):
            assert secret not in text
        assert any(entry["event"] == "credentials.renewed" for entry in logs)
