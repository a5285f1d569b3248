"""The daemon's credential profiles by name, each turned into its sources once and shared.

A profile gives two sources: one for DLI (and IAM's project listing), one for OBS, which is the same
source unless the profile has OBS keys of its own (an IAM token cannot sign S3 requests, so a token
profile without OBS keys leaves OBS to botocore's own chain, as before). Every client that signs with
a profile, in any region, asks the same source: one metadata fetch, one token renewal, one set of files
watched per profile, however many endpoints use it.

Sources are built when the daemon starts, so a key file that cannot be read stops it at once with the
file's name; sources that fetch (metadata, IAM tokens, workload identity) fetch on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from exporter.credentials.files import KeySource, KeySpec, SecretFile, Value
from exporter.credentials.iam_token import IamTokenFetcher, TokenScope
from exporter.credentials.metadata import MetadataFetcher
from exporter.credentials.renewing import RenewingSource
from exporter.credentials.source import CredentialSource
from exporter.credentials.spec import DEFAULT_PROFILE, ProfileSpec
from exporter.credentials.unknown import UnknownSource
from exporter.credentials.workload import WorkloadFetcher, WorkloadIdentity
from exporter.ports import Clock

__all__ = ["ProfileDefaults", "ProfileSources", "Profiles", "build_sources"]


@dataclass(frozen=True, slots=True)
class ProfileDefaults:
    """What a profile falls back on: EXPORTER_METADATA_URL, EXPORTER_IAM_ENDPOINT (iam-token and
    workload-identity), EXPORTER_PROJECT_ID."""

    metadata_url: str
    iam_endpoint: str
    project_id: str | None = None
    poll_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class ProfileSources:
    """A profile's DLI source, and its OBS source (None: botocore's own chain)."""

    dli: CredentialSource
    obs: CredentialSource | None


def _value(spec: ProfileSpec, name: str) -> Value | None:
    path = getattr(spec, f"{name}_file")
    if spec.given(f"{name}_file"):
        return SecretFile(path)
    value = getattr(spec, name)
    return value if spec.given(name) else None


def _keys(spec: ProfileSpec, prefix: str = "") -> KeySpec:
    names = ("ak", "sk", "security_token", "auth_token") if not prefix else ("ak", "sk")
    values = {name: _value(spec, prefix + name) for name in names}
    return KeySpec(**values)


def _fetching(
    name: str, spec: ProfileSpec, defaults: ProfileDefaults, session: aiohttp.ClientSession, clock: Clock
) -> RenewingSource:
    if spec.source == "metadata":
        fetch = MetadataFetcher(session, spec.metadata_url or defaults.metadata_url, clock)
        return RenewingSource(f"{name}:metadata", fetch, clock)
    if spec.source == "workload-identity":
        assert spec.idp_id is not None  # noqa: S101 - profile_problems() checked these two
        assert spec.id_token_file is not None  # noqa: S101
        identity = WorkloadIdentity(
            spec.iam_endpoint or defaults.iam_endpoint, spec.idp_id, spec.id_token_file
        )
        return RenewingSource(f"{name}:workload-identity", WorkloadFetcher(session, identity, clock), clock)
    assert spec.iam_domain is not None  # noqa: S101 - profile_problems() checked these three
    assert spec.iam_user is not None  # noqa: S101
    assert spec.iam_password_file is not None  # noqa: S101
    scope = TokenScope(
        endpoint=spec.iam_endpoint or defaults.iam_endpoint,
        domain=spec.iam_domain,
        user=spec.iam_user,
        password_file=spec.iam_password_file,
        project_id=spec.project_id or defaults.project_id or "",
    )
    return RenewingSource(f"{name}:iam-token", IamTokenFetcher(session, scope, clock), clock)


def _key_source(
    spec: ProfileSpec, prefix: str, name: str, defaults: ProfileDefaults, clock: Clock
) -> KeySource:
    project = defaults.project_id if not prefix else None
    return KeySource(
        _keys(spec, prefix), clock=clock, name=name, project_id=project, poll_interval=defaults.poll_interval
    )


def build_sources(
    name: str, spec: ProfileSpec, defaults: ProfileDefaults, session: aiohttp.ClientSession, clock: Clock
) -> ProfileSources:
    """A checked profile's sources (`profile_problems` found nothing); ConfigError for a key file that
    cannot be read now."""
    dli: CredentialSource
    if spec.source in ("env", "files"):
        dli, token_only = _key_source(spec, "", name, defaults, clock), spec.has("auth_token")
    else:
        dli, token_only = _fetching(name, spec, defaults, session, clock), spec.source == "iam-token"
    if spec.has("obs_ak"):
        return ProfileSources(dli, _key_source(spec, "obs_", f"{name}:obs", defaults, clock))
    return ProfileSources(dli, None if token_only else dli)


class Profiles:
    """Sources by profile name; None and `default` are the default profile."""

    __slots__ = ("_sources",)

    def __init__(
        self,
        specs: Mapping[str, ProfileSpec],
        defaults: ProfileDefaults,
        session: aiohttp.ClientSession,
        clock: Clock,
    ) -> None:
        if DEFAULT_PROFILE not in specs:
            raise ValueError("the profiles must include the default one")
        self._sources = {
            name: build_sources(name, spec, defaults, session, clock) for name, spec in specs.items()
        }

    def __repr__(self) -> str:
        return f"<Profiles {sorted(self._sources)}>"

    @property
    def names(self) -> list[str]:
        return sorted(self._sources)

    def known(self, name: str | None) -> bool:
        return (name or DEFAULT_PROFILE) in self._sources

    def sources(self, name: str | None) -> ProfileSources:
        """The profile's sources; for a name this daemon does not know, sources that refuse (the batch
        that names it fails with that message, see `unknown.py`)."""
        found = self._sources.get(name or DEFAULT_PROFILE)
        if found is None:
            refusing = UnknownSource(name or DEFAULT_PROFILE, self._sources)
            return ProfileSources(refusing, refusing)
        return found

    async def aclose(self) -> None:
        for sources in self._sources.values():
            for source in (sources.dli, sources.obs):
                if isinstance(source, RenewingSource):
                    await source.aclose()
