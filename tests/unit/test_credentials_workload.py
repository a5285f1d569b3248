"""The pure parts of `workload-identity`: the SDK's two requests reproduced, settings and profiles that name
what is missing, and errors and reprs that never quote a value."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest
from fakes import ManualClock

from exporter.credentials.metadata import parse_security_key
from exporter.credentials.profiles import ProfileDefaults, build_sources
from exporter.credentials.renewing import RenewingSource
from exporter.credentials.spec import ProfileSpec, profile_problems
from exporter.credentials.workload import (
    DURATION_SECONDS,
    ID_TOKEN_PATH,
    IDP_HEADER,
    SECURITY_TOKENS_PATH,
    WorkloadFetcher,
    WorkloadIdentity,
    id_token_request,
    security_tokens_request,
)
from exporter.errors import ConfigError, Transient
from exporter.settings import load_settings

CANARY = "eyJCANARY-id-token-0000000000000001"
IAM = "https://iam.example.com"


@pytest.fixture
def sdk_iam(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[ModuleType, object]:
    """The SDK's IamHelper module and a default HttpConfig (HOME in a temporary folder: importing it
    writes ~/.huaweicloud)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    from huaweicloudsdkcore.auth import internal
    from huaweicloudsdkcore.http.http_config import HttpConfig

    return internal, HttpConfig.get_default_config()


def test_id_token_request_is_the_sdks(sdk_iam: tuple[ModuleType, object]) -> None:
    """Path, X-Idp-Id, content type and body as IamHelper.get_create_unscoped_token_by_id_token_request."""
    internal, config = sdk_iam
    theirs = internal.IamHelper.get_create_unscoped_token_by_id_token_request(config, IAM, "idp-1", CANARY)
    assert theirs.resource_path == ID_TOKEN_PATH and theirs.method == "POST"
    assert theirs.header_params[IDP_HEADER] == "idp-1"
    assert theirs.header_params["Content-Type"] == "application/json;charset=UTF-8"
    assert json.loads(id_token_request(CANARY)) == json.loads(theirs.body)


def test_security_tokens_request_is_the_sdks(sdk_iam: tuple[ModuleType, object]) -> None:
    """Path and body (token method, six hours) as FederalAccessor asks for its keys."""
    internal, config = sdk_iam
    duration = internal.FederalAccessor._DEFAULT_DURATION_SECONDS
    theirs = internal.IamHelper.get_create_temporary_access_key_by_token_request(
        config, IAM, "MIIt", duration
    )
    assert theirs.resource_path == SECURITY_TOKENS_PATH and duration == DURATION_SECONDS
    assert json.loads(security_tokens_request("MIIt")) == json.loads(theirs.body)


def named(field: str) -> str:
    return f"EXPORTER_{field.upper()}"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (ProfileSpec(source="workload-identity", idp_id="idp", id_token_file=Path("/t")), []),
        (ProfileSpec(source="workload-identity"), ["EXPORTER_IDP_ID", "EXPORTER_ID_TOKEN_FILE"]),
        (
            ProfileSpec(source="workload-identity", idp_id="idp", id_token_file=Path("/t"), ak="A", sk="S"),
            ["EXPORTER_AK is not used", "EXPORTER_SK is not used"],
        ),
        (ProfileSpec(source="workload-identity", idp_id="", id_token_file=Path("/t")), ["EXPORTER_IDP_ID"]),
    ],
)
def test_profile_problems_name_each_field(spec: ProfileSpec, expected: list[str]) -> None:
    """Both the identity provider and the token file are required; fetched keys take no AK/SK."""
    problems = profile_problems(spec, named)
    assert len(problems) == len(expected), problems
    for fragment, problem in zip(expected, problems, strict=True):
        assert fragment in problem


def test_settings_name_the_missing_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """EXPORTER_CREDENTIALS=workload-identity alone: require_credentials names both variables."""
    monkeypatch.setenv("EXPORTER_CREDENTIALS", "workload-identity")
    with pytest.raises(ConfigError) as caught:
        load_settings().require_credentials()
    assert "EXPORTER_IDP_ID is required" in str(caught.value)
    assert "EXPORTER_ID_TOKEN_FILE is required" in str(caught.value)
    monkeypatch.setenv("EXPORTER_IDP_ID", "cce-idp")
    monkeypatch.setenv("EXPORTER_ID_TOKEN_FILE", "/var/run/secrets/tokens/oidc-token")
    settings = load_settings()
    settings.require_credentials()
    assert settings.default_profile().id_token_file == Path("/var/run/secrets/tokens/oidc-token")


def test_a_profile_from_the_settings_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`[credentials.cce] source = "workload-identity"` with its two fields; without them, named errors."""
    config = tmp_path / "exporter.toml"
    config.write_text(
        '[credentials.cce]\nsource = "workload-identity"\nidp_id = "cce-idp"\nid_token_file = "/t/oidc"\n'
    )
    monkeypatch.setenv("EXPORTER_CONFIG_FILE", str(config))
    assert load_settings().credential_profiles["cce"].idp_id == "cce-idp"
    config.write_text('[credentials.cce]\nsource = "workload-identity"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "credentials.cce.idp_id" in str(caught.value)
    assert "credentials.cce.id_token_file" in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (
            "EXPORTER_CREDENTIAL_PROFILES",
            '{"t": {"source": "workload-identity", "idp_id": ["' + CANARY + '"]}}',
        ),
        (
            "EXPORTER_CREDENTIAL_PROFILES",
            '{"t": {"source": "workload-identity", "id_token": "' + CANARY + '"}}',
        ),
        ("EXPORTER_CREDENTIALS", CANARY),
    ],
)
def test_invalid_values_are_never_echoed(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    """A malformed field, an id token pasted inline (no such field), a misspelt source: the error names
    the variable and quotes nothing of what was given."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert variable in str(caught.value) and CANARY not in str(caught.value)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def test_a_workload_profile_is_one_renewing_source_for_dli_and_obs(session: aiohttp.ClientSession) -> None:
    """The agency's temporary keys sign OBS too; the IAM endpoint falls back on EXPORTER_IAM_ENDPOINT."""
    spec = ProfileSpec(source="workload-identity", idp_id="cce-idp", id_token_file=Path("/t/oidc"))
    defaults = ProfileDefaults(metadata_url="http://169.254.169.254", iam_endpoint=IAM)
    sources = build_sources("cce", spec, defaults, session, ManualClock())
    assert isinstance(sources.dli, RenewingSource) and sources.obs is sources.dli
    assert "cce:workload-identity" in repr(sources.dli)


async def test_an_unreadable_token_file_is_transient_and_names_the_file(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Missing or empty: Transient (tried again with backoff) naming the file, never sending anything."""
    identity = WorkloadIdentity("http://127.0.0.1:9", "cce-idp", tmp_path / "oidc-token")
    fetch = WorkloadFetcher(session, identity, ManualClock())
    with pytest.raises(Transient, match="oidc-token") as caught:
        await fetch()
    assert caught.value.reason == "credentials"
    (tmp_path / "oidc-token").write_text("\n")
    with pytest.raises(Transient, match="ValueError"):
        await fetch()
    assert "oidc-token" in repr(fetch) and "cce-idp" in repr(fetch)


def test_a_broken_keys_answer_names_iam_and_quotes_nothing() -> None:
    """IAM's key answer is read like the metadata service's, its errors naming IAM."""
    body = json.dumps({"credential": {"access": "AK", "secret": CANARY}}).encode()
    with pytest.raises(Transient, match=r"IAM \(temporary keys\)") as caught:
        parse_security_key(body, 0, service="IAM (temporary keys)")
    assert CANARY not in str(caught.value)
