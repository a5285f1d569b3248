"""Profiles turned into sources: which source signs DLI and which OBS, one per profile however many clients
use it, and refusals (never some other profile's keys) for a name the daemon does not have."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from fakes import ManualClock
from pydantic import SecretStr

from exporter.credentials.files import KeySource
from exporter.credentials.profiles import ProfileDefaults, Profiles
from exporter.credentials.renewing import RenewingSource
from exporter.credentials.spec import ProfileSpec
from exporter.credentials.unknown import UNKNOWN_CODE, RefusingStore, UnknownProfile
from exporter.dli.signer import Credentials
from exporter.errors import ConfigError, InvalidInput, Permanent

DEFAULTS = ProfileDefaults(metadata_url="http://169.254.169.254", iam_endpoint="https://iam.example.com")
AK, SK = "AKPROFILE00000000001", "skProfile-0000000000000000000000001"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def profiles(session: aiohttp.ClientSession, **named: ProfileSpec) -> Profiles:
    specs = {"default": ProfileSpec(ak=SecretStr(AK), sk=SecretStr(SK)), **named}
    return Profiles(specs, DEFAULTS, session, ManualClock())


async def test_keys_sign_dli_and_obs_unless_obs_has_its_own(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """AK/SK sign both; OBS keys of their own get a source of their own; a token leaves OBS to botocore."""
    (tmp_path / "obs-ak").write_text("AKOBS000000000000001")
    (tmp_path / "obs-sk").write_text("skObs-000000000000000000000001")
    own_obs = ProfileSpec(ak="A", sk="S", obs_ak_file=tmp_path / "obs-ak", obs_sk_file=tmp_path / "obs-sk")
    found = profiles(session, split=own_obs, token=ProfileSpec(auth_token="iam-token-0001"))
    default = found.sources(None)
    assert found.sources("default") is default and default.obs is default.dli
    assert await default.dli.current() == Credentials(AK, SK)
    split = found.sources("split")
    assert split.obs is not split.dli and isinstance(split.obs, KeySource)
    assert (await split.obs.current()) == Credentials(
        "AKOBS000000000000001", "skObs-000000000000000000000001"
    )
    assert found.sources("token").obs is None
    assert found.names == ["default", "split", "token"] and SK not in repr(found)


def test_fetching_profiles_renew(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """metadata and iam-token profiles are renewing sources; their OBS is the agency's keys, or its own."""
    password = tmp_path / "pw"
    token = ProfileSpec(
        source="iam-token",
        iam_domain="d",
        iam_user="u",
        iam_password_file=password,
        project_id="p" * 32,
        obs_ak="AKOBS",
        obs_sk="SKOBS",
    )
    found = profiles(session, agency=ProfileSpec(source="metadata"), user=token)
    agency, user = found.sources("agency"), found.sources("user")
    assert isinstance(agency.dli, RenewingSource) and agency.obs is agency.dli
    assert isinstance(user.dli, RenewingSource) and isinstance(user.obs, KeySource)


def test_a_profile_whose_key_file_is_missing_stops_the_start(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Built at start: a missing file is a ConfigError naming the profile and the file."""
    spec = ProfileSpec(source="files", ak_file=tmp_path / "gone-ak", sk_file=tmp_path / "gone-sk")
    with pytest.raises(ConfigError, match=r"credential profile target: .*gone-ak"):
        profiles(session, target=spec)


async def test_an_unknown_profile_refuses_instead_of_signing(session: aiohttp.ClientSession) -> None:
    """A name the daemon lacks: DLI gets invalid input naming it (the batch fails saying so), OBS refuses
    every call with CREDENTIALS_UNKNOWN (so even the failed batch's report upload ends cleanly)."""
    found = profiles(session)
    assert not found.known("ghost") and found.known(None) and found.known("default")
    refusing = found.sources("ghost")
    with pytest.raises(UnknownProfile, match="'ghost' is not defined") as caught:
        await refusing.dli.current()
    assert isinstance(caught.value, InvalidInput) and "known: default" in str(caught.value)
    with pytest.raises(UnknownProfile):
        await refusing.dli.refresh()
    store = RefusingStore("ghost")
    for call in (store.head("b", "k"), store.put("b", "k", b"", "x"), store.copy_within("a", "b", "c", "d")):
        with pytest.raises(Permanent) as refused:
            await call
        assert (refused.value.code, refused.value.status) == (UNKNOWN_CODE, 403)
    with pytest.raises(Permanent):
        async for _ in store.read_parts("b", "k", 8):
            pass
