"""Where a batch's calls go: a region's DLI and OBS endpoints and its gateway limit.

A campaign target in a region carries its `RegionRoute` on the queue, so any replica can serve it with the
right clients and limiter without reading the campaign file again. A batch without a route uses the
default endpoints (`EXPORTER_DLI_ENDPOINT`, `EXPORTER_OBS_ENDPOINT`) and the default limiter.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["REGION_NAME", "RegionRoute", "check_endpoint", "check_region_name"]

REGION_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


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
    """A region's endpoints and gateway limit (requests/s; None = EXPORTER_RATE_LIMIT)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dli_endpoint: str
    obs_endpoint: str
    rate_limit: float | None = Field(default=None, gt=0, le=100_000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_region_name(value)

    @field_validator("dli_endpoint", "obs_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return check_endpoint(value)
