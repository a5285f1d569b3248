"""Authentication like DLI's gateway: an AK/SK signature with a key that is valid now (plus that key's
security token when it has one), or an IAM token that has not expired, in `X-Auth-Token`; anything else
is 401 DLI.0013 (or the code the caller names: IAM answers its own). What is valid is the key ring's
(`keys.py`): tests rotate, expire and disable keys and tokens while the simulator runs."""

from __future__ import annotations

import hmac
import time

import structlog
from aiohttp import web

from exporter.dli.signer import SignatureError, verify_request
from exporter.simulator.answers import DliFailure
from exporter.simulator.state import SimulatorState

__all__ = ["authenticate"]

log = structlog.get_logger(__name__)


def authenticate(request: web.Request, state: SimulatorState, body: bytes, *, code: str = "DLI.0013") -> None:
    """Accept a valid AK/SK signature or a valid IAM token; raise 401 `code` otherwise."""
    try:
        label = _check_credentials(request, state, body)
    except SignatureError as error:
        state.stats.auth_failures += 1
        log.debug("simulator.auth_refused", reason=error.reason, path=request.path)
        raise DliFailure(401, code, f"User authentication failed: {error.message}") from None
    state.keys.used[label] += 1


def _check_credentials(request: web.Request, state: SimulatorState, body: bytes) -> str:
    """The label of the key (or `token`) that signed the request; SignatureError when none did."""
    now = time.time()
    token = request.headers.get("X-Auth-Token")
    if token is not None:
        if state.keys.accept_token(token, now) is None:
            raise SignatureError("the X-Auth-Token is not valid (or has expired)", reason="unknown_ak")
        return "token"
    ak = verify_request(
        request.method,
        request.host,
        request.raw_path.partition("?")[0],
        list(request.query.items()),
        request.headers,
        body,
        state.secret_for_ak,
    )
    key = state.keys.find(ak, now)
    if key is None:  # disabled or expired between the two looks
        raise SignatureError("the access key is no longer valid", reason="unknown_ak")
    given = request.headers.get("X-Security-Token", "")
    if key.security_token is not None and not hmac.compare_digest(
        given.encode(), key.security_token.encode()
    ):
        raise SignatureError("the X-Security-Token is missing or not valid", reason="unknown_ak")
    return key.label
