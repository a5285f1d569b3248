"""Huawei Cloud AK/SK request signing (`SDK-HMAC-SHA256`), byte for byte what the official SDK sends.

Why our own: the SDK's signer is synchronous, mutates a request object and lives in a package built on
`requests`; ours is a few pure functions that the aiohttp client calls once per request and that the DLI
simulator calls to check what it receives. The rules were read off `huaweicloudsdkcore` 3.1.219 and are
pinned by vectors that SDK produced (tests/unit/test_signer.py):

- canonical request = METHOD, canonical URI, canonical query, canonical headers, signed headers and
  payload hash, one per line;
- canonical URI: the path unquoted, split on `/`, each segment percent-encoded keeping only unreserved
  characters (`A-Za-z0-9-_.~`), always ending in `/` (the path on the wire does not get that slash);
- canonical query: pairs sorted by raw key then raw value, then encoded the same way; it is also the
  exact query to put on the wire;
- headers: names lower-cased and sorted, values `strip()`ped (inner whitespace kept); names containing
  `_` are sent but not signed; `X-Project-Id` and `X-Security-Token` come from the credentials and are
  added before signing, so they are signed;
- payload hash: hex SHA-256 of the body bytes (no body hashes like `b""`), or the literal
  `UNSIGNED-PAYLOAD` when the content type is neither JSON nor BSON (the signer then sends
  `X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD`);
- string to sign = algorithm, X-Sdk-Date, hex SHA-256 of the canonical request; the signature is the hex
  HMAC-SHA256 of it keyed with the SK.

Where we differ from the SDK, on purpose: the `Content-Type` lookup ignores case like every other header
lookup (the SDK only sees the exact spelling `Content-Type`); an empty security token counts as none; and
we refuse (`SignatureError`) what the SDK would turn into a broken request: header names that differ only
by case, values that cannot go on the wire, an `Authorization` already present, empty AK/SK, an
unparseable `X-Sdk-Date`.

Header values are returned as text; aiohttp sends them as UTF-8, the same bytes the SDK puts on the wire.

This module is the signing side and the one to import from: the computation both sides share is in
`canonical.py`, the server side in `verification.py` (its `verify_request` is re-exported here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from re import compile as re_compile

from exporter.dli.canonical import (
    ALGORITHM,
    SDK_DATE_FORMAT,
    UNSIGNED_PAYLOAD,
    SignatureError,
    SignedParts,
    canonical_query_string,
    mask_access_key,
    parse_sdk_date,
    sdk_date,
    signed_parts,
)
from exporter.dli.verification import verify_request

__all__ = [
    "ALGORITHM",
    "SDK_DATE_FORMAT",
    "Credentials",
    "SignatureError",
    "SignedParts",
    "canonical_query_string",
    "sdk_date",
    "sign_request",
    "token_headers",
    "verify_request",
]

HEADER_AUTHORIZATION = "Authorization"
HEADER_DATE = "X-Sdk-Date"
HEADER_HOST = "Host"
HEADER_PROJECT_ID = "X-Project-Id"
HEADER_SECURITY_TOKEN = "X-Security-Token"  # noqa: S105 - a header name, not a secret
HEADER_AUTH_TOKEN = "X-Auth-Token"  # noqa: S105 - a header name, not a secret
HEADER_CONTENT_SHA256 = "X-Sdk-Content-Sha256"

# Content types whose body the SDK hashes; any other type is sent as UNSIGNED-PAYLOAD.
_HASHED_CONTENT_TYPES = ("application/json", "application/bson")

_HTTP_TOKEN = re_compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FORBIDDEN_IN_VALUE = re_compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # what aiohttp refuses to send

# lower-cased name -> (name as it will be sent, value before stripping)
_Entries = dict[str, tuple[str, str]]


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    """Permanent AK/SK, or temporary ones with their security token; `project_id` becomes X-Project-Id."""

    ak: str
    sk: str
    project_id: str | None = None
    security_token: str | None = None

    def __repr__(self) -> str:
        token = "<hidden>" if self.security_token else None
        return (
            f"Credentials(ak={mask_access_key(self.ak)!r}, sk=<hidden>, "
            f"project_id={self.project_id!r}, security_token={token})"
        )


def sign_request(
    method: str,
    host: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes | None,
    credentials: Credentials,
    date: str | None = None,
) -> tuple[dict[str, str], SignedParts]:
    """Sign one request the way the SDK does; returns every header to send, in the SDK's order, and the
    intermediates.

    The headers are the given ones (values stripped), then those the SDK adds when missing: X-Project-Id,
    X-Security-Token, X-Sdk-Content-Sha256 (non-JSON bodies), X-Sdk-Date (`date`, default now), Host, and
    last Authorization. `path` is the unencoded resource path; send it with the query
    `canonical_query_string(query)`. Raises `SignatureError` for a request it cannot sign faithfully.
    """
    _check_credentials(credentials)
    _check_token(method, "method")
    entries, raw_date = _headers_to_sign(headers, credentials, host, date)
    values = _stripped_values(entries)
    _, string_date = parse_sdk_date(raw_date)
    signed = sorted(key for key in values if "_" not in key)
    ak, sk = credentials.ak, credentials.sk
    parts = signed_parts(
        method, path, query, body, values=values, signed=signed, string_date=string_date, ak=ak, sk=sk
    )
    to_send = {name: values[key] for key, (name, _) in entries.items()}
    to_send[HEADER_AUTHORIZATION] = parts.authorization
    return to_send, parts


def token_headers(token: str, project_id: str | None) -> dict[str, str]:
    """Headers for IAM token authentication, the alternative to AK/SK: X-Auth-Token (+ X-Project-Id)."""
    if not token:
        raise SignatureError("the IAM token is empty")
    headers = {HEADER_AUTH_TOKEN: token}
    if project_id:
        headers[HEADER_PROJECT_ID] = project_id
    return headers


def _check_credentials(credentials: Credentials) -> None:
    ak = credentials.ak
    if not ak or not ak.isascii() or not ak.isprintable() or " " in ak or "," in ak:
        raise SignatureError("the AK is empty or has characters that cannot go in an Authorization header")
    if not credentials.sk:
        raise SignatureError("the SK is empty")


def _check_token(text: str, what: str) -> None:
    if not _HTTP_TOKEN.fullmatch(text):
        raise SignatureError(f"{what} {text[:64]!r} is not an HTTP token")


def _headers_to_sign(
    headers: Mapping[str, str], credentials: Credentials, host: str, date: str | None
) -> tuple[_Entries, str]:
    """The given headers plus those the SDK adds, in its order, and the X-Sdk-Date to sign with."""
    entries = _given_headers(headers)
    _put_credential_headers(entries, credentials)
    _put_content_sha256(entries)
    raw_date = _put_date(entries, date)
    if "host" not in entries:
        entries["host"] = (HEADER_HOST, host)
    return entries, raw_date


def _given_headers(headers: Mapping[str, str]) -> _Entries:
    entries: _Entries = {}
    for name, value in headers.items():
        _check_token(name, "header name")
        key = name.lower()
        if key in entries:
            raise SignatureError(f"header {name!r} is given twice (header names ignore case)")
        entries[key] = (name, value)
    if "authorization" in entries:
        raise SignatureError("the headers already carry an Authorization; pass the unsigned headers")
    return entries


def _put(entries: _Entries, name: str, value: str) -> None:
    """Set a header the way the SDK does: a header already given keeps its place and spelling."""
    key = name.lower()
    given = entries.get(key)
    entries[key] = (given[0] if given else name, value)


def _put_credential_headers(entries: _Entries, credentials: Credentials) -> None:
    if credentials.project_id:
        _put(entries, HEADER_PROJECT_ID, credentials.project_id)
    if credentials.security_token:
        _put(entries, HEADER_SECURITY_TOKEN, credentials.security_token)


def _put_content_sha256(entries: _Entries) -> None:
    content_type = entries.get("content-type")
    if content_type and content_type[1] and not content_type[1].startswith(_HASHED_CONTENT_TYPES):
        _put(entries, HEADER_CONTENT_SHA256, UNSIGNED_PAYLOAD)


def _put_date(entries: _Entries, date: str | None) -> str:
    """The X-Sdk-Date to sign with: the given header, else `date`, else now (added to the headers)."""
    given = entries.get("x-sdk-date")
    if given is None:
        value = sdk_date() if date is None else date
        entries["x-sdk-date"] = (HEADER_DATE, value)
        return value
    if date is not None and date != given[1]:
        raise SignatureError("the headers carry an X-Sdk-Date other than the `date` argument")
    return given[1]


def _stripped_values(entries: _Entries) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, (name, raw) in entries.items():
        value = raw.strip()
        if _FORBIDDEN_IN_VALUE.search(value) or (not value.isascii() and not _is_utf8_encodable(value)):
            raise SignatureError(f"the value of header {name!r} cannot be sent (control character)")
        values[key] = value
    return values


def _is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
