"""IAM user tokens, got with a password and renewed before they expire (`EXPORTER_CREDENTIALS=iam-token`).

`POST /v3/auth/tokens?nocatalog=true` (KeystoneCreateUserTokenByPassword) with the IAM user's name, its
account (domain) name and its password, scoped to one project: the token comes back in the
`X-Subject-Token` header of a 201, its expiry in the body's `token.expires_at` (24 hours after issue).
The password is read from its file at every fetch, so a changed password is used at the next renewal.

A token is scoped to one project: DLI calls for another project need a profile of their own. Prefer AK/SK
where you can: IAM's own documentation advises it, and a token is invalidated (up to 30 minutes late)
when the user's password, keys or permissions change; the 401 that follows makes the client renew once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from exporter.credentials.files import read_secret_file
from exporter.credentials.http import exchange, failure, parse_expiry
from exporter.credentials.renewing import Lease
from exporter.errors import Transient
from exporter.ports import Clock

__all__ = [
    "SUBJECT_TOKEN_HEADER",
    "TOKENS_PATH",
    "IamTokenFetcher",
    "TokenScope",
    "iam_error_code",
    "parse_token",
    "token_request",
]

TOKENS_PATH = "/v3/auth/tokens"
SUBJECT_TOKEN_HEADER = "X-Subject-Token"  # noqa: S105 - a header name
_SERVICE = "IAM (token)"
_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class TokenScope:
    """Whose token, for which project: everything but the password, which is read when needed."""

    endpoint: str
    domain: str
    user: str
    password_file: Path
    project_id: str


def token_request(scope: TokenScope, password: str) -> bytes:
    """The request body of IAM's password authentication, scoped to the project (IAM's documented shape)."""
    body: dict[str, Any] = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"domain": {"name": scope.domain}, "name": scope.user, "password": password}
                },
            },
            "scope": {"project": {"id": scope.project_id}},
        }
    }
    return json.dumps(body, separators=(",", ":")).encode()


def parse_token(status: int, headers: Mapping[str, str], body: bytes, now: float) -> Lease:
    """A 201's `X-Subject-Token` and `token.expires_at` as a lease; the typed error of anything else."""
    if status not in (200, 201):
        raise failure(_SERVICE, status, code=iam_error_code(body))
    token = headers.get(SUBJECT_TOKEN_HEADER)
    if not token:
        raise Transient(f"{_SERVICE} answered {status} without {SUBJECT_TOKEN_HEADER}", reason="malformed")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    expiry = data.get("token", {}).get("expires_at") if isinstance(data, dict) else None
    return Lease(token, obtained_at=now, expires_at=parse_expiry(expiry, _SERVICE))


def iam_error_code(body: bytes) -> str | None:
    """IAM's `{"error": {"code": ..., "title": ...}}` or `{"error_code": ...}`; never the message."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    code = error.get("code") if isinstance(error, dict) else data.get("error_code")
    return str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None


class IamTokenFetcher:
    """One token per call (the `RenewingSource` decides when to call)."""

    __slots__ = ("_clock", "_scope", "_session", "_url")

    def __init__(self, session: aiohttp.ClientSession, scope: TokenScope, clock: Clock) -> None:
        self._session = session
        self._scope = scope
        self._clock = clock
        self._url = f"{scope.endpoint.rstrip('/')}{TOKENS_PATH}?nocatalog=true"

    def __repr__(self) -> str:
        scope = self._scope
        return f"<IamTokenFetcher {scope.endpoint} user={scope.user} project={scope.project_id}>"

    async def __call__(self) -> Lease:
        try:
            password = read_secret_file(self._scope.password_file)
        except (OSError, ValueError) as error:
            name = str(self._scope.password_file)
            message = f"cannot read the IAM password file {name}: {type(error).__name__}"
            raise Transient(message, reason="credentials") from None
        headers = {"Content-Type": "application/json;charset=utf8"}
        status, answer_headers, body = await exchange(
            self._session,
            "POST",
            self._url,
            service=_SERVICE,
            headers=headers,
            data=token_request(self._scope, password),
            timeout=_TIMEOUT,
        )
        return parse_token(status, answer_headers, body, self._clock.time())
