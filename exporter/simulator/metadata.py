"""The ECS/CCE instance metadata service's credential routes, as the official SDK's `MetadataAccessor` uses
them, so `EXPORTER_CREDENTIALS=metadata` runs against this machine (`EXPORTER_METADATA_URL` = the
simulator's URL).

- `PUT /meta-data/latest/api/token` with `X-Metadata-Token-Ttl-Seconds` (1 to 21600): a session token,
  as plain text;
- `GET /openstack/latest/securitykey` with a valid `X-Metadata-Token`: temporary keys of the agency,
  `{"credential": {"access", "secret", "securitytoken", "expires_at"}}`, minted into the key ring (so the
  DLI routes accept them) and valid `sim_metadata_ttl_seconds` (an hour by default; a few seconds in
  tests, to watch them being renewed). Without a valid session token: 401.

No authentication otherwise (the service answers whoever is on the instance), no throttling, no faults.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

from aiohttp import web

from exporter.simulator.answers import json_response
from exporter.simulator.state import STATE

__all__ = ["METADATA_KEY_ROUTE", "METADATA_TOKEN_ROUTE", "get_security_key", "put_session_token"]

METADATA_TOKEN_ROUTE = "metadata_token"  # noqa: S105 - a route's name
METADATA_KEY_ROUTE = "metadata_security_key"
_MAX_TTL = 21_600


def _iso(moment: float) -> str:
    """`2025-01-01T00:00:00.000000Z`, the metadata service's own spelling."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def put_session_token(request: web.Request) -> web.Response:
    """A session token for `X-Metadata-Token-Ttl-Seconds` seconds."""
    text = request.headers.get("X-Metadata-Token-Ttl-Seconds", "")
    try:
        ttl = int(text)
    except ValueError:
        ttl = 0
    if not 1 <= ttl <= _MAX_TTL:
        return web.Response(status=400, text=f"X-Metadata-Token-Ttl-Seconds must be 1 to {_MAX_TTL}")
    token = secrets.token_urlsafe(32)
    request.app[STATE].keys.sessions[token] = time.time() + ttl
    return web.Response(status=200, text=token)


async def get_security_key(request: web.Request) -> web.Response:
    """New temporary keys, for a request with a valid session token."""
    state = request.app[STATE]
    now = time.time()
    given = request.headers.get("X-Metadata-Token", "")
    until = state.keys.sessions.get(given)
    if until is None or until <= now:
        return web.Response(status=401, text="the metadata token is missing or has expired")
    key = state.keys.mint(now, state.settings.sim_metadata_ttl_seconds)
    assert key.expires_at is not None  # noqa: S101 - minted keys expire
    credential = {
        "access": key.ak,
        "secret": key.sk,
        "securitytoken": key.security_token,
        "expires_at": _iso(key.expires_at),
    }
    return json_response(200, {"credential": credential})
