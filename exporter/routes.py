"""Where a batch's calls go: a region's DLI and OBS endpoints, its gateway limit, and which credential
profile signs them (its name only: the daemon holds the keys).

A campaign target in a region carries its `RegionRoute` on the queue, so any replica can serve it with the
right clients and limiter without reading the campaign file again. A batch without a route uses the
default endpoints (`EXPORTER_DLI_ENDPOINT`, `EXPORTER_OBS_ENDPOINT`) and the default limiter.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from exporter.credentials.spec import DEFAULT_PROFILE, check_profile_name
from exporter.rules import check_obs_dir, check_project_id, check_rate_limit

__all__ = [
    "REGION_NAME",
    "Destination",
    "OnConflict",
    "RateLimit",
    "RegionRoute",
    "check_endpoint",
    "check_region_name",
]

REGION_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

RateLimit = Annotated[float | Literal["auto"], BeforeValidator(check_rate_limit)]
"""A region's gateway limit: requests/s, or `auto` (learned from the gateway's 429s)."""


def check_region_name(value: str) -> str:
    """A region name as Huawei Cloud spells them (`ap-southeast-1`, `cn-north-4`); ValueError otherwise."""
    if not REGION_NAME.fullmatch(value):
        raise ValueError(
            f"region {value!r} must be 1 to 63 lowercase letters, digits and '-', e.g. ap-southeast-1"
        )
    return value


def check_endpoint(value: str) -> str:
    """An http(s) base URL with a host and no trailing slash; ValueError otherwise."""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"endpoint {value!r} must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError(f"endpoint {value!r} must not carry a query or a fragment")
    return value.rstrip("/")


class RegionRoute(BaseModel):
    """A region's endpoints and gateway limit (requests/s, or auto; None = EXPORTER_RATE_LIMIT)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dli_endpoint: str
    obs_endpoint: str
    rate_limit: RateLimit | None = None
    # Left out when None, so routes (and batch identities) of before profiles read and compare the same.
    credentials: str | None = Field(default=None, exclude_if=lambda value: value is None)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_region_name(value)

    @field_validator("credentials")
    @classmethod
    def _credentials(cls, value: str | None) -> str | None:
        return None if value is None or value == DEFAULT_PROFILE else check_profile_name(value)

    @field_validator("dli_endpoint", "obs_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return check_endpoint(value)


class OnConflict(StrEnum):
    """What to do when the target already holds a job of the same name."""

    SKIP = "skip"  # leave the existing job; the row is `skipped`
    OVERWRITE = "overwrite"  # `is_cover`: the existing job takes the imported content and keeps its ID
    FAIL = "fail"  # leave the existing job; the row is `failed` with NAME_EXISTS

    @property
    def is_cover(self) -> bool:
        return self is OnConflict.OVERWRITE


class Destination(BaseModel):
    """Where a migration batch's jobs are imported."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project_id: str
    region: RegionRoute | None = Field(default=None, description="None: the default endpoints")
    obs_dir: str | None = Field(default=None, description="where the ZIPs must be; None: where exported")
    on_conflict: OnConflict = OnConflict.SKIP

    @field_validator("project_id")
    @classmethod
    def _project(cls, value: str) -> str:
        return check_project_id(value)

    @field_validator("obs_dir")
    @classmethod
    def _obs_dir(cls, value: str | None) -> str | None:
        return None if value is None else check_obs_dir(value)
