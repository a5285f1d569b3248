"""Authentication like DLI's gateway: an AK/SK signature (plus the security token when one is
configured) or the configured IAM token in `X-Auth-Token`; anything else is 401 DLI.0013 (or the code
the caller names: IAM answers its own)."""

from __future__ import annotations

import hmac

import structlog
from aiohttp import web

from exporter.dli.signer import SignatureError, verify_request
from exporter.simulator.answers import DliFailure
from exporter.simulator.state import SimulatorState

__all__ = ["authenticate"]

log = structlog.get_logger(__name__)


def authenticate(request: web.Request, state: SimulatorState, body: bytes, *, code: str = "DLI.0013") -> None:
    """Accept a valid AK/SK signature or the configured IAM token; raise 401 `code` otherwise."""
    try:
        _check_credentials(request, state, body)
    except SignatureError as error:
        state.stats.auth_failures += 1
        log.debug("simulator.auth_refused", reason=error.reason, path=request.path)
        raise DliFailure(401, code, f"User authentication failed: {error.message}") from None


def _check_credentials(request: web.Request, state: SimulatorState, body: bytes) -> None:
    settings = state.settings
    token = request.headers.get("X-Auth-Token")
    if token is not None:
        expected = settings.auth_token.get_secret_value() if settings.auth_token else None
        if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
            raise SignatureError("the X-Auth-Token is not valid", reason="unknown_ak")
        return
    verify_request(
        request.method,
        request.host,
        request.raw_path.partition("?")[0],
        list(request.query.items()),
        request.headers,
        body,
        state.secret_for_ak,
    )
    required = settings.security_token.get_secret_value() if settings.security_token else None
    given = request.headers.get("X-Security-Token", "")
    if required is not None and not hmac.compare_digest(given.encode(), required.encode()):
        raise SignatureError("the X-Security-Token is missing or not valid", reason="unknown_ak")
