"""What a credential profile is made of, and when one is complete: pure, no file is read here.

A profile names where its keys come from (`source`) and that source's fields. The default profile is
the flat settings of old (`EXPORTER_AK`, `EXPORTER_AK_FILE`, `EXPORTER_CREDENTIALS`, ...); named profiles
are `[credentials.NAME]` tables of the settings file (or `EXPORTER_CREDENTIAL_PROFILES` as JSON), with the
same field names, lowercase. Problems are worded with the caller's names for the fields (`EXPORTER_AK_FILE`
for the default, `credentials.target.ak_file` for a profile), so a person knows which line to fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr
from pydantic_settings import TomlConfigSettingsSource

__all__ = [
    "DEFAULT_PROFILE",
    "PROFILE_NAME",
    "ProfileRef",
    "ProfileSpec",
    "SettingsToml",
    "SourceName",
    "check_profile_name",
    "check_profiles",
    "profile_problems",
    "split_credentials_table",
]

SourceName = Literal["env", "files", "metadata", "iam-token", "workload-identity"]
DEFAULT_PROFILE = "default"
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

# Each secret may come from its value or from a file (re-read when it changes), never from both.
_PAIRS = ("ak", "sk", "security_token", "auth_token", "obs_ak", "obs_sk")
_KEY_FIELDS = (*_PAIRS, *(f"{name}_file" for name in _PAIRS))
_IAM_FIELDS = ("iam_domain", "iam_user", "iam_password_file")
_WORKLOAD_FIELDS = ("idp_id", "id_token_file")


def check_profile_name(value: str) -> str:
    """A profile name: 1 to 64 letters, digits, '_' or '-'; ValueError otherwise (it names no secret)."""
    if not PROFILE_NAME.fullmatch(value):
        raise ValueError(
            f"credential profile {value!r} must be 1 to 64 letters, digits, '_' or '-', starting with a "
            "letter or digit"
        )
    return value


class ProfileRef(BaseModel):
    """A campaign table that may name the profile its calls are signed with: `credentials = "NAME"`.

    Only the name: the daemon holds the profiles (`[credentials.NAME]` in its settings), so a campaign file
    or a queue message never carries a secret. Checked by `exporter.campaign.profiles`.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    credentials: str | None = None


class ProfileSpec(BaseModel):
    """One credential profile; which fields count depends on `source`."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    source: SourceName = "env"
    ak: SecretStr | None = None
    sk: SecretStr | None = None
    security_token: SecretStr | None = None
    auth_token: SecretStr | None = None
    obs_ak: SecretStr | None = None
    obs_sk: SecretStr | None = None
    ak_file: Path | None = None
    sk_file: Path | None = None
    security_token_file: Path | None = None
    auth_token_file: Path | None = None
    obs_ak_file: Path | None = None
    obs_sk_file: Path | None = None
    metadata_url: str | None = None  # None: EXPORTER_METADATA_URL
    iam_endpoint: str | None = None  # None: EXPORTER_IAM_ENDPOINT
    iam_domain: str | None = None
    iam_user: str | None = None
    iam_password_file: Path | None = None
    idp_id: str | None = None  # workload-identity: the IAM identity provider trusting the id token
    id_token_file: Path | None = None  # workload-identity: the projected OIDC id token, read at each fetch
    project_id: str | None = None  # the project an IAM token is scoped to; None: EXPORTER_PROJECT_ID

    def given(self, name: str) -> bool:
        """Whether a field is set: an empty value counts as unset, as it always has for EXPORTER_AK."""
        value = getattr(self, name)
        if isinstance(value, SecretStr):
            return bool(value.get_secret_value())
        return value is not None and value != ""

    def has(self, name: str) -> bool:
        """Whether a secret is given, as a value or as a file."""
        return self.given(name) or self.given(f"{name}_file")


def _pair_problems(spec: ProfileSpec, named: Callable[[str], str]) -> list[str]:
    """A value and a file for one secret; half of a key pair."""
    problems = [
        f"set {named(name)} or {named(name + '_file')}, not both"
        for name in _PAIRS
        if spec.given(name) and spec.given(f"{name}_file")
    ]
    for first, second in (("ak", "sk"), ("obs_ak", "obs_sk")):
        if spec.has(first) != spec.has(second):
            missing = second if spec.has(first) else first
            problems.append(
                f"{named(missing)} (or {named(missing + '_file')}) is missing: keys come in pairs"
            )
    return problems


def _key_problems(spec: ProfileSpec, named: Callable[[str], str]) -> list[str]:
    if spec.has("auth_token") or spec.has("ak") or spec.has("sk"):  # half a pair: _pair_problems says so
        return []
    return [
        f"DLI credentials missing: set {named('ak')} and {named('sk')} (or {named('ak_file')} and "
        f"{named('sk_file')}; plus {named('security_token')} for temporary credentials) or "
        f"{named('auth_token')} (or {named('auth_token_file')})"
    ]


def _fetched_problems(spec: ProfileSpec, named: Callable[[str], str], project_id: str | None) -> list[str]:
    """metadata, iam-token and workload-identity fetch the DLI keys themselves: only OBS keys of their
    own may be given."""
    problems = [
        f"{named(name)} is not used with source {spec.source} (it fetches its own keys)"
        for name in _KEY_FIELDS
        if not name.startswith("obs_") and spec.given(name)
    ]
    if spec.source == "workload-identity":
        problems += [
            f"{named(name)} is required with source workload-identity"
            for name in _WORKLOAD_FIELDS
            if not spec.given(name)
        ]
    if spec.source == "iam-token":
        problems += [
            f"{named(name)} is required with source iam-token" for name in _IAM_FIELDS if not spec.given(name)
        ]
        if not (spec.project_id or project_id):
            problems.append(f"{named('project_id')} is required with source iam-token (the token's scope)")
        if not spec.has("obs_ak"):
            problems.append(
                f"{named('obs_ak')} and {named('obs_sk')} (or their files) are required with "
                "source iam-token: an IAM token cannot sign OBS requests"
            )
    return problems


def profile_problems(
    spec: ProfileSpec, named: Callable[[str], str], *, project_id: str | None = None
) -> list[str]:
    """Everything that keeps the profile from signing, one sentence each; `named` spells a field's name
    the way the reader wrote it; `project_id` is the default scope of an IAM token."""
    problems = _pair_problems(spec, named)
    if spec.source in ("env", "files"):
        return problems + _key_problems(spec, named)
    return problems + _fetched_problems(spec, named, project_id)


def split_credentials_table(data: Mapping[str, Any]) -> dict[str, Any]:
    """A settings file's `[credentials]` table, as the settings read it.

    In TOML, `credentials = "metadata"` chooses the default profile's source (EXPORTER_CREDENTIALS),
    while `[credentials.NAME]` tables are named profiles: both cannot be one key. So a `credentials`
    table is taken apart here: its `source` (if any) is the default's source, its sub-tables are the
    profiles (`credential_profiles`).
    """
    table = data.get("credentials")
    if not isinstance(table, Mapping):
        return dict(data)
    split = {key: value for key, value in data.items() if key != "credentials"}
    profiles = {name: value for name, value in table.items() if name != "source"}
    if "source" in table:
        split["credentials"] = table["source"]
    if profiles:
        split["credential_profiles"] = {**data.get("credential_profiles", {}), **profiles}
    return split


class SettingsToml(TomlConfigSettingsSource):
    """The settings file, its `[credentials]` table taken apart (see `split_credentials_table`)."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        return split_credentials_table(super()._read_file(file_path))


def check_profiles(profiles: dict[str, ProfileSpec], project_id: str | None) -> dict[str, ProfileSpec]:
    """Every named profile complete (ValueError otherwise), each problem named `credentials.NAME.field`;
    `project_id` is the default scope of IAM tokens."""
    problems: list[str] = []
    if DEFAULT_PROFILE in profiles:
        problems.append(f"{DEFAULT_PROFILE} is the EXPORTER_* settings: name the profile otherwise")
    for name, spec in profiles.items():
        try:
            check_profile_name(name)
        except ValueError as error:
            problems.append(str(error))

        def named(field: str, name: str = name) -> str:
            return f"credentials.{name}.{field}"

        problems += profile_problems(spec, named, project_id=project_id)
    if problems:
        raise ValueError("; ".join(problems))
    return profiles
