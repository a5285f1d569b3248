"""Temporary agency keys for a CCE workload identity (`EXPORTER_CREDENTIALS=workload-identity`).

On CCE a pod's service account token is projected into a file (an OIDC id token the kubelet rotates
before it expires) and trusted by an IAM identity provider. The exchange is the official SDK's
(`huaweicloudsdkcore.auth.internal.FederalAccessor.get_credential`, with the requests of
`IamHelper.get_create_unscoped_token_by_id_token_request` and
`IamHelper.get_create_temporary_access_key_by_token_request`, used when the SDK's credentials have an
`idp_id` and an `id_token_file`, e.g. `HUAWEICLOUD_SDK_IDP_ID` / `HUAWEICLOUD_SDK_ID_TOKEN_FILE`):

1. an unscoped token for the id token: `POST /v3.0/OS-AUTH/id-token/tokens` with header `X-Idp-Id` (the
   identity provider) and body `{"auth": {"id_token": {"id": ID_TOKEN}}}`; the token is the answer's
   `X-Subject-Token` header;
2. temporary keys for that token: `POST /v3.0/OS-CREDENTIAL/securitytokens` with body
   `{"auth": {"identity": {"methods": ["token"], "token": {"id": TOKEN, "duration_seconds": 21600}}}}`,
   answering `{"credential": {"access", "secret", "securitytoken", "expires_at"}}` (read as the metadata
   service's answer is: the SDK parses both with `StsAccessor._process_credential`).

Both requests go unsigned to the IAM endpoint (`EXPORTER_IAM_ENDPOINT`). The id token file is read at
every fetch, as the SDK does, so a rotated token is used at the next renewal. The keys are temporary:
they sign with their security token and are renewed by `RenewingSource` after two thirds of their six
hours. The id token and the intermediate IAM token are secrets too: registered with the log redactor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from exporter.credentials.files import read_secret_file
from exporter.credentials.http import Answer, exchange, failure
from exporter.credentials.iam_token import SUBJECT_TOKEN_HEADER, iam_error_code
from exporter.credentials.metadata import parse_security_key
from exporter.credentials.renewing import Lease
from exporter.credentials.source import SecretHistory
from exporter.errors import Transient
from exporter.ports import Clock

__all__ = [
    "DURATION_SECONDS",
    "IDP_HEADER",
    "ID_TOKEN_PATH",
    "SECURITY_TOKENS_PATH",
    "WorkloadFetcher",
    "WorkloadIdentity",
    "id_token_request",
    "security_tokens_request",
]

ID_TOKEN_PATH = "/v3.0/OS-AUTH/id-token/tokens"  # noqa: S105 - a path, not a secret
SECURITY_TOKENS_PATH = "/v3.0/OS-CREDENTIAL/securitytokens"
IDP_HEADER = "X-Idp-Id"
DURATION_SECONDS = 6 * 60 * 60  # the SDK's (FederalAccessor._DEFAULT_DURATION_SECONDS)
_HEADERS = {"Content-Type": "application/json;charset=UTF-8"}  # the SDK's
_TOKEN_SERVICE = "IAM (token for the id token)"  # noqa: S105 - a service's name
_KEYS_SERVICE = "IAM (temporary keys)"
_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class WorkloadIdentity:
    """Who the workload is: the IAM endpoint, the identity provider, the file of the projected id token."""

    endpoint: str
    idp_id: str
    id_token_file: Path


def id_token_request(id_token: str) -> bytes:
    """The SDK's body of `POST /v3.0/OS-AUTH/id-token/tokens`."""
    return json.dumps({"auth": {"id_token": {"id": id_token}}}).encode()


def security_tokens_request(token: str, duration_seconds: int = DURATION_SECONDS) -> bytes:
    """The SDK's body of `POST /v3.0/OS-CREDENTIAL/securitytokens` (token method)."""
    identity = {"methods": ["token"], "token": {"id": token, "duration_seconds": duration_seconds}}
    return json.dumps({"auth": {"identity": identity}}).encode()


class WorkloadFetcher:
    """One exchange of the current id token for temporary keys per call (`RenewingSource` decides when)."""

    __slots__ = ("_base", "_clock", "_id_tokens", "_identity", "_session", "_tokens")

    def __init__(self, session: aiohttp.ClientSession, identity: WorkloadIdentity, clock: Clock) -> None:
        self._session = session
        self._identity = identity
        self._base = identity.endpoint.rstrip("/")
        self._clock = clock
        self._id_tokens = SecretHistory()  # what the last two fetches read and got: secrets, redacted
        self._tokens = SecretHistory()

    def __repr__(self) -> str:
        identity = self._identity
        return f"<WorkloadFetcher {self._base} idp={identity.idp_id} file={str(identity.id_token_file)!r}>"

    async def __call__(self) -> Lease:
        id_token = self._read_id_token()
        token = await self._unscoped_token(id_token)
        self._tokens.add(token)
        status, _, body = await self._post(SECURITY_TOKENS_PATH, {}, security_tokens_request(token))
        if status >= 400:
            raise failure(_KEYS_SERVICE, status, code=iam_error_code(body))
        return parse_security_key(body, self._clock.time(), service=_KEYS_SERVICE)

    def _read_id_token(self) -> str:
        path = self._identity.id_token_file
        try:
            id_token = read_secret_file(path)
        except (OSError, ValueError) as error:
            message = f"cannot read the id token file {path}: {type(error).__name__}"
            raise Transient(message, reason="credentials") from None
        self._id_tokens.add(id_token)
        return id_token

    async def _unscoped_token(self, id_token: str) -> str:
        headers = {IDP_HEADER: self._identity.idp_id}
        status, answer_headers, body = await self._post(ID_TOKEN_PATH, headers, id_token_request(id_token))
        if status >= 400:
            raise failure(_TOKEN_SERVICE, status, code=iam_error_code(body))
        token = answer_headers.get(SUBJECT_TOKEN_HEADER)
        if not token:
            raise Transient(
                f"{_TOKEN_SERVICE} answered {status} without {SUBJECT_TOKEN_HEADER}", reason="malformed"
            )
        return token

    async def _post(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        return await exchange(
            self._session,
            "POST",
            self._base + path,
            service=_TOKEN_SERVICE if path == ID_TOKEN_PATH else _KEYS_SERVICE,
            headers={**headers, **_HEADERS},
            data=body,
            timeout=_TIMEOUT,
        )
