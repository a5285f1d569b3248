"""Request bodies of the export and import calls, checked like DLI checks them (400 DLI.0001)."""

from __future__ import annotations

import json
from typing import Any

from exporter.models import check_obs_dir, split_obs_path
from exporter.simulator.answers import DliFailure, bad_request

__all__ = ["json_object", "obs_location"]


def json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        raise DliFailure(400, "DLI.0001", "The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise DliFailure(400, "DLI.0001", "The request body must be a JSON object.")
    return payload


def obs_location(value: Any, name: str) -> tuple[str, str]:
    """`bucket[/prefix]` checked like OBS names; DLI.0001 when it is not one."""
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"Parameter {name} is required and must be a non-empty string.")
    try:
        return split_obs_path(check_obs_dir(value))
    except ValueError as error:
        raise bad_request(f"Parameter {name} is invalid: {error}") from None
