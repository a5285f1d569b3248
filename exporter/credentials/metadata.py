"""Temporary keys of the ECS/CCE agency from the instance metadata service (`EXPORTER_CREDENTIALS=metadata`).

The exchange is the official SDK's (`huaweicloudsdkcore.auth.internal.MetadataAccessor`):

1. a session token: `PUT /meta-data/latest/api/token` with `X-Metadata-Token-Ttl-Seconds: 21600`; a 404,
   405 or 503 there means the service has no session tokens (an older one), so the keys are asked
   for without; the token is asked for once, and again only after the keys were refused with a 401;
2. the keys: `GET /openstack/latest/securitykey` with `X-Metadata-Token`, answering
   `{"credential": {"access", "secret", "securitytoken", "expires_at"}}`. A 401 that says "Please
   configure Cloud Service Agency first" means the instance has no agency: no token will help, and it is
   an AuthError (the batch waits; the message says what to configure).

The keys are temporary: they are signed with their security token (`X-Security-Token`) and renewed by
`RenewingSource` after two thirds of their lifetime (the SDK renews 40 minutes before expiry).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from exporter.credentials.http import exchange, failure, parse_expiry
from exporter.credentials.renewing import Lease
from exporter.dli.signer import Credentials
from exporter.errors import AuthError, Transient
from exporter.ports import Clock

__all__ = [
    "DEFAULT_METADATA_URL",
    "KEY_PATH",
    "TOKEN_HEADER",
    "TOKEN_PATH",
    "TOKEN_TTL_HEADER",
    "MetadataFetcher",
    "parse_security_key",
]

DEFAULT_METADATA_URL = "http://169.254.169.254"
TOKEN_PATH = "/meta-data/latest/api/token"  # noqa: S105 - a path, not a secret
KEY_PATH = "/openstack/latest/securitykey"
TOKEN_HEADER = "X-Metadata-Token"  # noqa: S105 - a header name
TOKEN_TTL_HEADER = "X-Metadata-Token-Ttl-Seconds"  # noqa: S105 - a header name
TOKEN_TTL_SECONDS = 6 * 60 * 60  # the SDK's
_NO_AGENCY = "Please configure Cloud Service Agency first"
_NO_TOKENS = frozenset({404, 405, 503})  # the service does not hand out session tokens
_SERVICE = "the metadata service"
_TIMEOUT = 3.0  # the SDK's (3 s to connect, 3 s to read)


def _first(values: dict[str, Any], *names: str) -> Any:
    return next((values[name] for name in names if values.get(name)), None)


def parse_security_key(body: bytes, now: float, *, service: str = _SERVICE) -> Lease:
    """The answer of `GET /openstack/latest/securitykey` as a lease; Transient when it is not one.

    Accepts the spellings the SDK accepts (`credential` or `credentials`; `access` or `accessKeyId`, ...).
    IAM's temporary keys (`POST /v3.0/OS-CREDENTIAL/securitytokens`) have the same shape: the SDK reads
    both with `StsAccessor._process_credential`; `service` names the one that answered.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise Transient(f"{service} answered a body that is not JSON", reason="malformed") from None
    if isinstance(data, dict):
        data = data.get("credential") or data.get("credentials") or data
    if not isinstance(data, dict):
        raise Transient(f"{service} answered without a credential object", reason="malformed")
    ak = _first(data, "access", "accessKeyId", "access_key_id")
    sk = _first(data, "secret", "secretAccessKey", "secret_access_key")
    token = _first(data, "securitytoken", "securityToken", "security_token")
    if not all(isinstance(value, str) for value in (ak, sk, token)):
        raise Transient(f"{service} answered without access, secret and securitytoken", reason="malformed")
    expires_at = parse_expiry(_first(data, "expires_at", "expiration"), service)
    return Lease(Credentials(ak=ak, sk=sk, security_token=token), obtained_at=now, expires_at=expires_at)


class MetadataFetcher:
    """One fetch of the agency's keys per call (the `RenewingSource` decides when to call)."""

    __slots__ = ("_base", "_clock", "_session", "_token")

    def __init__(self, session: aiohttp.ClientSession, base_url: str, clock: Clock) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._clock = clock
        self._token: str | None = None

    def __repr__(self) -> str:
        return f"<MetadataFetcher {self._base} session_token={self._token is not None}>"

    async def __call__(self) -> Lease:
        if self._token is None:
            await self._update_token(required=False)
        status, body = await self._get_key()
        if status == 401 and _NO_AGENCY.encode() not in body:  # the session token expired
            await self._update_token(required=True)
            status, body = await self._get_key()
        if status == 401 and _NO_AGENCY.encode() in body:
            raise AuthError(f"{_SERVICE}: this instance has no agency ({_NO_AGENCY})", status=401)
        if status >= 400:
            raise failure(_SERVICE, status)
        return parse_security_key(body, self._clock.time())

    async def _update_token(self, *, required: bool) -> None:
        headers = {TOKEN_TTL_HEADER: str(TOKEN_TTL_SECONDS)}
        status, _, body = await exchange(
            self._session, "PUT", self._base + TOKEN_PATH, service=_SERVICE, headers=headers, timeout=_TIMEOUT
        )
        if status == 200 and body.strip():
            self._token = body.decode("utf-8", "replace").strip()
        elif status in _NO_TOKENS and not required:
            self._token = None
        else:
            raise failure(f"{_SERVICE} (session token)", status)

    async def _get_key(self) -> tuple[int, bytes]:
        headers = {TOKEN_HEADER: self._token} if self._token else {}
        status, _, body = await exchange(
            self._session, "GET", self._base + KEY_PATH, service=_SERVICE, headers=headers, timeout=_TIMEOUT
        )
        return status, body
