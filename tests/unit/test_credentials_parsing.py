"""The pure parts of the credential sources: what the metadata service and IAM answer, IAM's request body,
profile specs and their problems, the settings file's `[credentials]` table, routes naming profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from exporter.credentials.iam_token import TokenScope, parse_token, token_request
from exporter.credentials.metadata import parse_security_key
from exporter.credentials.spec import ProfileSpec, profile_problems, split_credentials_table
from exporter.dli.signer import Credentials
from exporter.errors import AuthError, ConfigError, Permanent, Transient
from exporter.routes import RegionRoute
from exporter.settings import load_settings

SECRET = "skMetadata-Secret-0000000000000000001"


def test_security_key_answer_becomes_a_lease() -> None:
    """The SDK's shape: credential.access/secret/securitytoken/expires_at (UTC), as temporary keys."""
    body = {
        "credential": {
            "access": "AKTEMP00000000000001",
            "secret": SECRET,
            "securitytoken": "token-0001",
            "expires_at": "2030-01-01T00:00:00.000000Z",
        }
    }
    lease = parse_security_key(json.dumps(body).encode(), now=1_800_000_000.0)
    assert lease.auth == Credentials("AKTEMP00000000000001", SECRET, security_token="token-0001")
    assert lease.expires_at == 1_893_456_000.0 and lease.obtained_at == 1_800_000_000.0
    assert SECRET not in repr(lease)


def test_security_key_accepts_the_sdks_other_spellings() -> None:
    """`credentials`, `accessKeyId`, `secretAccessKey`, `securityToken`, `expiration`: the SDK reads them."""
    body = {
        "credentials": {
            "accessKeyId": "AK",
            "secretAccessKey": "SK",
            "securityToken": "T",
            "expiration": "2030-01-01T00:00:00",
        }
    }
    assert parse_security_key(json.dumps(body).encode(), 0).auth == Credentials(
        "AK", "SK", security_token="T"
    )


@pytest.mark.parametrize(
    "body",
    [
        b"<html>",
        b"[]",
        b'{"credential": {"access": "CANARY-AK"}}',
        b'{"credential": {"access": "CANARY-AK", "secret": "CANARY-SK", "securitytoken": "CANARY-T", '
        b'"expires_at": "CANARY-soon"}}',
    ],
)
def test_a_broken_security_key_answer_is_transient_and_quotes_nothing(body: bytes) -> None:
    """Not JSON, no credential, missing fields, a bad expiry: Transient (asked again), no value echoed."""
    with pytest.raises(Transient) as caught:
        parse_security_key(body, 0)
    assert caught.value.reason == "malformed" and "CANARY" not in str(caught.value)


SCOPE = TokenScope("https://iam.example.com", "acct", "exporter", Path("/pw"), "p" * 32)


def test_token_request_has_iam_documented_shape() -> None:
    """Password method, user name/password/domain name, scoped to the project by ID."""
    assert json.loads(token_request(SCOPE, "hunter2-password")) == {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"domain": {"name": "acct"}, "name": "exporter", "password": "hunter2-password"}
                },
            },
            "scope": {"project": {"id": "p" * 32}},
        }
    }


def test_token_answer_and_refusals() -> None:
    """201 with X-Subject-Token and token.expires_at: a lease; 401 AuthError, 400 Permanent, 5xx Transient."""
    body = json.dumps({"token": {"expires_at": "2030-01-01T00:00:00.000000Z"}}).encode()
    lease = parse_token(201, {"X-Subject-Token": "MIItoken"}, body, 0.0)
    assert lease.auth == "MIItoken" and lease.expires_at == 1_893_456_000.0
    refusal = json.dumps({"error": {"code": 401, "message": "The username or password is wrong."}}).encode()
    with pytest.raises(AuthError, match="401"):
        parse_token(401, {}, refusal, 0.0)
    with pytest.raises(Permanent):
        parse_token(400, {}, b"{}", 0.0)
    with pytest.raises(Transient):
        parse_token(503, {}, b"", 0.0)
    with pytest.raises(Transient, match="X-Subject-Token"):
        parse_token(201, {}, body, 0.0)


def named(field: str) -> str:
    return f"EXPORTER_{field.upper()}"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (ProfileSpec(ak="A", sk="S"), []),
        (ProfileSpec(ak_file=Path("/a"), sk_file=Path("/s")), []),
        (ProfileSpec(source="files", auth_token_file=Path("/t")), []),
        (ProfileSpec(ak="A", ak_file=Path("/a"), sk="S"), ["set EXPORTER_AK or EXPORTER_AK_FILE, not both"]),
        (ProfileSpec(ak="A"), ["EXPORTER_SK (or EXPORTER_SK_FILE) is missing: keys come in pairs"]),
        (ProfileSpec(source="metadata"), []),
        (ProfileSpec(source="metadata", obs_ak="A", obs_sk="S"), []),
        (
            ProfileSpec(source="metadata", ak="A", sk="S"),
            ["EXPORTER_AK is not used", "EXPORTER_SK is not used"],
        ),
        (
            ProfileSpec(source="iam-token"),
            [
                "EXPORTER_IAM_DOMAIN",
                "EXPORTER_IAM_USER",
                "EXPORTER_IAM_PASSWORD_FILE",
                "EXPORTER_PROJECT_ID",
                "EXPORTER_OBS_AK and EXPORTER_OBS_SK",
            ],
        ),
    ],
)
def test_profile_problems_name_each_field(spec: ProfileSpec, expected: list[str]) -> None:
    """What keeps a profile from signing, each problem naming the field as the reader spells it."""
    problems = profile_problems(spec, named)
    assert len(problems) == len(expected), problems
    for fragment, problem in zip(expected, problems, strict=True):
        assert fragment in problem


def test_no_keys_at_all_says_how_to_give_them() -> None:
    """The default profile empty: the message names EXPORTER_AK and EXPORTER_SK, and the file variants."""
    (problem,) = profile_problems(ProfileSpec(), named)
    assert "EXPORTER_AK and EXPORTER_SK" in problem and "EXPORTER_AK_FILE" in problem


def test_the_credentials_table_splits_into_source_and_profiles() -> None:
    """`[credentials] source = ...` is the default's source; its sub-tables are the named profiles."""
    data = {"rate_limit": 3, "credentials": {"source": "metadata", "target": {"source": "files"}}}
    assert split_credentials_table(data) == {
        "rate_limit": 3,
        "credentials": "metadata",
        "credential_profiles": {"target": {"source": "files"}},
    }
    assert split_credentials_table({"credentials": "iam-token"}) == {"credentials": "iam-token"}


def test_settings_file_profiles_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Profiles from the file's tables, EXPORTER_CREDENTIALS from the environment over the file's source."""
    config = tmp_path / "exporter.toml"
    config.write_text(
        '[credentials]\nsource = "metadata"\n'
        '[credentials.target]\nsource = "files"\nak_file = "/s/ak"\nsk_file = "/s/sk"\n'
    )
    monkeypatch.setenv("EXPORTER_CONFIG_FILE", str(config))
    settings = load_settings()
    assert settings.credentials == "metadata"
    assert settings.credential_profiles["target"].ak_file == Path("/s/ak")
    monkeypatch.setenv("EXPORTER_CREDENTIALS", "iam-token")
    assert load_settings().credentials == "iam-token" and "target" in load_settings().credential_profiles


@pytest.mark.parametrize(
    ("profiles", "fragment"),
    [
        ('{"default": {"ak": "A", "sk": "S"}}', "default is the EXPORTER_* settings"),
        ('{"no spaces": {"ak": "A", "sk": "S"}}', "credential profile 'no spaces' must be"),
        ('{"t": {"source": "files", "ak_file": "/a"}}', "credentials.t.sk (or credentials.t.sk_file)"),
        ('{"t": {"source": "vault"}}', "EXPORTER_CREDENTIAL_PROFILES"),
    ],
)
def test_bad_profiles_stop_the_settings(
    monkeypatch: pytest.MonkeyPatch, profiles: str, fragment: str
) -> None:
    """A reserved, misspelt or incomplete profile: one ConfigError naming it and the field."""
    monkeypatch.setenv("EXPORTER_CREDENTIAL_PROFILES", profiles)
    with pytest.raises(ConfigError, match="EXPORTER_CREDENTIAL_PROFILES") as caught:
        load_settings()
    assert fragment in str(caught.value)


def test_profile_secrets_never_show(monkeypatch: pytest.MonkeyPatch) -> None:
    """An inline secret of a profile is SecretStr: not in repr, not in a validation error."""
    monkeypatch.setenv(
        "EXPORTER_CREDENTIAL_PROFILES", '{"t": {"ak": "AKPROFILE0001", "sk": "' + SECRET + '"}}'
    )
    assert SECRET not in repr(load_settings())
    monkeypatch.setenv(
        "EXPORTER_CREDENTIAL_PROFILES", '{"t": {"ak": "AKPROFILE0001", "sk": ["' + SECRET + '"]}}'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert SECRET not in str(caught.value)


def test_a_route_carries_a_profile_name_only_when_it_has_one() -> None:
    """`default` means the default profile (None); a bad name is refused; None is left out of dumps, so
    routes and batch identities of before profiles read and compare the same."""
    base = {"name": "eu-west-101", "dli_endpoint": "https://dli.x", "obs_endpoint": "https://obs.x"}
    assert RegionRoute(**base, credentials="default").credentials is None
    assert "credentials" not in RegionRoute(**base).model_dump(mode="json")
    assert RegionRoute(**base, credentials="target").model_dump()["credentials"] == "target"
    with pytest.raises(ValidationError):
        RegionRoute(**base, credentials="../etc")
