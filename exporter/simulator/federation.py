"""IAM's routes for a CCE workload identity, as the official SDK's `FederalAccessor` uses them, so
`EXPORTER_CREDENTIALS=workload-identity` runs against this machine (`EXPORTER_IAM_ENDPOINT` = its URL).

- `POST /v3.0/OS-AUTH/id-token/tokens` with `X-Idp-Id: sim_idp_id` and body
  `{"auth": {"id_token": {"id": sim_id_token}}}`: an unscoped token in `X-Subject-Token` (201), valid
  `sim_token_ttl_seconds`; it buys temporary keys, and DLI does not accept it. Another identity provider
  or id token: IAM's 401; a body of another shape: 400.
- `POST /v3.0/OS-CREDENTIAL/securitytokens` with `auth.identity.methods = ["token"]` and
  `auth.identity.token.id` (or `X-Auth-Token`) an unscoped token or an IAM token issued here:
  `{"credential": {"access", "secret", "securitytoken", "expires_at"}}` (201), keys minted into the key
  ring (labels `securitytoken-N`), valid `duration_seconds` (900 to 86400, IAM's range; 900 when absent)
  or `sim_securitytoken_ttl_seconds` if shorter (a few seconds in tests, to watch them being renewed).

Neither throttled nor faulted, like the other IAM routes.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from typing import Any

from aiohttp import web

from exporter.simulator.answers import json_response
from exporter.simulator.state import STATE, SimulatorState
from exporter.simulator.tokens import dig, iam_error, iso

__all__ = ["ID_TOKEN_ROUTE", "SECURITY_TOKENS_ROUTE", "create_security_token", "create_token_by_id_token"]

ID_TOKEN_ROUTE = "iam_id_token"  # noqa: S105 - a route's name
SECURITY_TOKENS_ROUTE = "iam_securitytokens"
_DURATIONS = (900, 86_400)  # IAM's range of duration_seconds
_DEFAULT_DURATION = 900


def _same(given: Any, expected: str | None) -> bool:
    return (
        isinstance(given, str)
        and expected is not None
        and hmac.compare_digest(given.encode(), expected.encode())
    )


async def _json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except ValueError:
        return None


def _id_token_ok(state: SimulatorState, idp_id: str, id_token: Any) -> bool:
    settings = state.settings
    expected = settings.sim_id_token.get_secret_value() if settings.sim_id_token else None
    return _same(idp_id, settings.sim_idp_id) and _same(id_token, expected)


async def create_token_by_id_token(request: web.Request) -> web.Response:
    """An unscoped token for the configured id token of the configured identity provider."""
    state = request.app[STATE]
    id_token = dig(await _json(request), "auth", "id_token", "id")
    if not isinstance(id_token, str) or not id_token:
        return iam_error(400, "Bad Request", "The request body is invalid.")
    if not _id_token_ok(state, request.headers.get("X-Idp-Id", ""), id_token):
        return iam_error(401, "Unauthorized", "The identity provider or the id token is not valid.")
    now = time.time()
    state.keys.prune(now)
    token, expires_at = "MII" + secrets.token_urlsafe(96), now + state.settings.sim_token_ttl_seconds
    state.keys.unscoped[token] = expires_at
    body = {"token": {"expires_at": iso(expires_at), "issued_at": iso(now), "methods": ["mapped"]}}
    return json_response(201, body, headers={"X-Subject-Token": token})


def _token_valid(state: SimulatorState, token: Any, now: float) -> bool:
    if not isinstance(token, str) or not token:
        return False
    for known, until in state.keys.unscoped.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            return now < until
    return state.keys.accept_token(token, now) is not None


def _duration(value: Any) -> int | None:
    """duration_seconds as IAM reads it (absent: 900); None when outside 900..86400 or not a number."""
    if value is None:
        return _DEFAULT_DURATION
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if _DURATIONS[0] <= value <= _DURATIONS[1] else None


async def create_security_token(request: web.Request) -> web.Response:
    """Temporary keys for a valid token, minted into the key ring so that DLI accepts them."""
    state = request.app[STATE]
    identity = dig(await _json(request), "auth", "identity")
    duration = _duration(dig(identity, "token", "duration_seconds"))
    if dig(identity, "methods") != ["token"] or duration is None:
        return iam_error(400, "Bad Request", "The request body is invalid.")
    now = time.time()
    token = dig(identity, "token", "id") or request.headers.get("X-Auth-Token")
    if not _token_valid(state, token, now):
        return iam_error(401, "Unauthorized", "The token is not valid (or has expired).")
    key = state.keys.mint(
        now, min(duration, state.settings.sim_securitytoken_ttl_seconds), by="securitytoken"
    )
    assert key.expires_at is not None  # noqa: S101 - minted keys expire
    credential = {
        "access": key.ak,
        "secret": key.sk,
        "securitytoken": key.security_token,
        "expires_at": iso(key.expires_at),
    }
    return json_response(201, {"credential": credential})
