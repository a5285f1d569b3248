"""The settings as `EXPORTER_*` variables, for starting `dli-exporter` in a subprocess (tests, benchmarks,
the demo): secrets revealed (the child needs them), tables such as the credential profiles as JSON."""

from __future__ import annotations

import json
from typing import Any

from pydantic import SecretStr

from exporter.settings import ENV_PREFIX, Settings

__all__ = ["settings_env"]


def _plain(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def settings_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    """Every setting that is set (and the overrides) as its variable."""
    values = {**settings.model_dump(exclude_none=True), **overrides}
    env: dict[str, str] = {}
    for name, value in values.items():
        raw = (
            json.dumps(value, default=lambda v: str(_plain(v))) if isinstance(value, dict) else _plain(value)
        )
        env[f"{ENV_PREFIX}{name.upper()}"] = str(raw).lower() if isinstance(raw, bool) else str(raw)
    return env
