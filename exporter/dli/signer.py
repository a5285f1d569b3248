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
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from re import compile as re_compile
from typing import Literal
from urllib.parse import quote, unquote

from exporter.errors import AuthError

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

SDK_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
ALGORITHM = "SDK-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()

HEADER_AUTHORIZATION = "Authorization"
HEADER_DATE = "X-Sdk-Date"
HEADER_HOST = "Host"
HEADER_PROJECT_ID = "X-Project-Id"
HEADER_SECURITY_TOKEN = "X-Security-Token"  # noqa: S105 - a header name, not a secret
HEADER_AUTH_TOKEN = "X-Auth-Token"  # noqa: S105 - a header name, not a secret
HEADER_CONTENT_SHA256 = "X-Sdk-Content-Sha256"

# Content types whose body the SDK hashes; any other type is sent as UNSIGNED-PAYLOAD.
_HASHED_CONTENT_TYPES = ("application/json", "application/bson")
# Header names the server must find signed, or a captured request could be replayed to another host or
# with a fresh date.
_REQUIRED_SIGNED = frozenset({"host", "x-sdk-date"})

_HTTP_TOKEN = re_compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FORBIDDEN_IN_VALUE = re_compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # what aiohttp refuses to send
_PLAIN_DATE = re_compile(r"[1-9][0-9]{7}T[0-9]{6}Z")
_AUTHORIZATION_FIELDS = re_compile(
    r"Access=(?P<ak>[^\s,]+), SignedHeaders=(?P<signed>[^\s,]+), Signature=(?P<signature>[0-9a-f]{64})"
)

SignatureFailure = Literal[
    "invalid_request",
    "missing_authorization",
    "malformed_authorization",
    "unsupported_algorithm",
    "missing_header",
    "bad_date",
    "stale_date",
    "unknown_ak",
    "signature_mismatch",
]


class SignatureError(AuthError):
    """A request could not be signed, or a signed request was refused; `reason` is a stable label.

    The message says what was wrong and never contains a secret or a header value.
    """

    def __init__(self, message: str, *, reason: SignatureFailure = "invalid_request") -> None:
        super().__init__(message)
        self.reason: SignatureFailure = reason


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


@dataclass(frozen=True, slots=True)
class SignedParts:
    """Every intermediate of one signature, so tests and debugging can compare them with the SDK's."""

    canonical_uri: str
    canonical_query_string: str
    canonical_headers: str
    signed_headers: str
    payload_hash: str
    canonical_request: str
    string_to_sign: str
    signature: str
    authorization: str


def mask_access_key(ak: str) -> str:
    """At most the first 4 characters of an AK (none of a short one): enough to tell keys apart in logs."""
    return (ak[:4] if len(ak) >= 8 else "") + "***"


def sdk_date(now: datetime | None = None) -> str:
    """`now` (default: the current time) as X-Sdk-Date; a naive datetime is taken to be UTC."""
    moment = datetime.now(UTC) if now is None else now
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(SDK_DATE_FORMAT)


def canonical_query_string(query: Sequence[tuple[str, str]]) -> str:
    """The signed query, which is also the exact query to send: pairs sorted raw, then percent-encoded."""
    return "&".join(f"{_percent_encode(key)}={_percent_encode(value)}" for key, value in sorted(query))


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
    entries = _given_headers(headers)
    _put_credential_headers(entries, credentials)
    _put_content_sha256(entries)
    raw_date = _put_date(entries, date)
    if "host" not in entries:
        entries["host"] = (HEADER_HOST, host)
    values = _stripped_values(entries)
    signed = sorted(key for key in values if "_" not in key)
    _, string_date = _parse_sdk_date(raw_date)
    payload_hash = _payload_hash(body, values.get("x-sdk-content-sha256"))
    parts = _signed_parts(
        method,
        path,
        query,
        values=values,
        signed=signed,
        payload_hash=payload_hash,
        string_date=string_date,
        ak=credentials.ak,
        sk=credentials.sk,
    )
    to_send = {name: values[key] for key, (name, _) in entries.items()}
    to_send[HEADER_AUTHORIZATION] = parts.authorization
    return to_send, parts


def verify_request(
    method: str,
    host: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes | None,
    secret_for_ak: Callable[[str], str | None],
    now: datetime | None = None,
    max_skew_seconds: float = 900,
) -> str:
    """Check a received request's signature (server side); returns its AK, or raises `SignatureError`.

    `path` is the path as received (still percent-encoded), `query` the decoded pairs, `headers` looked up
    case-insensitively; `host` stands in for a missing Host header. The signature is recomputed over the
    headers the Authorization names, which must include host and x-sdk-date, and X-Sdk-Date must be within
    `max_skew_seconds` of `now`.
    """
    received, repeated = _received_headers(headers)
    received.setdefault("host", host)
    authorization = received.get("authorization")
    if authorization is None:
        raise SignatureError("the request has no Authorization header", reason="missing_authorization")
    ak, signed, signature = _parse_authorization(authorization)
    values = _signed_values(received, repeated, signed)
    moment, string_date = _parse_sdk_date(values["x-sdk-date"])
    _check_skew(moment, now, max_skew_seconds)
    sk = secret_for_ak(ak)
    if not sk:
        raise SignatureError(f"unknown access key {mask_access_key(ak)}", reason="unknown_ak")
    payload_hash = _payload_hash(body, values.get("x-sdk-content-sha256"))
    expected = _signed_parts(
        method,
        path,
        query,
        values=values,
        signed=signed,
        payload_hash=payload_hash,
        string_date=string_date,
        ak=ak,
        sk=sk,
    )
    if not hmac.compare_digest(expected.signature, signature):
        raise SignatureError("the signature does not match the request", reason="signature_mismatch")
    return ak


def token_headers(token: str, project_id: str | None) -> dict[str, str]:
    """Headers for IAM token authentication, the alternative to AK/SK: X-Auth-Token (+ X-Project-Id)."""
    if not token:
        raise SignatureError("the IAM token is empty")
    headers = {HEADER_AUTH_TOKEN: token}
    if project_id:
        headers[HEADER_PROJECT_ID] = project_id
    return headers


# --- canonical form -------------------------------------------------------------------------------------


def _percent_encode(text: str) -> str:
    return quote(text, safe="~")


@functools.lru_cache(maxsize=1024)
def _canonical_uri(path: str) -> str:
    """Paths repeat (one export path per project): encode each once."""
    uri = "/".join(_percent_encode(segment) for segment in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def _payload_hash(body: bytes | None, content_sha256: str | None) -> str:
    if not body:
        return EMPTY_BODY_SHA256
    if content_sha256:
        # The SDK reads this header back after re-encoding it for the wire (UTF-8 bytes as latin-1 text).
        return content_sha256.encode("utf-8").decode("latin-1")
    return hashlib.sha256(body).hexdigest()


def _signed_parts(
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    *,
    values: Mapping[str, str],
    signed: Sequence[str],
    payload_hash: str,
    string_date: str,
    ak: str,
    sk: str,
) -> SignedParts:
    """The SDK's computation proper, shared by signing and verification."""
    try:
        canonical_uri = _canonical_uri(path)
        query_string = canonical_query_string(query)
        canonical_headers = "".join(f"{key}:{values[key]}\n" for key in signed)
        signed_headers = ";".join(signed)
        canonical_request = "\n".join(
            (method.upper(), canonical_uri, query_string, canonical_headers, signed_headers, payload_hash)
        )
        request_hash = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
        string_to_sign = f"{ALGORITHM}\n{string_date}\n{request_hash}"
        signature = hmac.new(sk.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    except UnicodeEncodeError:
        raise SignatureError("the path, query or a header is not valid Unicode text") from None
    authorization = f"{ALGORITHM} Access={ak}, SignedHeaders={signed_headers}, Signature={signature}"
    return SignedParts(
        canonical_uri=canonical_uri,
        canonical_query_string=query_string,
        canonical_headers=canonical_headers,
        signed_headers=signed_headers,
        payload_hash=payload_hash,
        canonical_request=canonical_request,
        string_to_sign=string_to_sign,
        signature=signature,
        authorization=authorization,
    )


def _parse_sdk_date(raw: str) -> tuple[datetime, str]:
    """X-Sdk-Date as an aware UTC datetime, and as the SDK re-formats it for the string to sign."""
    if _PLAIN_DATE.fullmatch(raw):  # the usual case, ten times faster than strptime
        with suppress(ValueError):
            moment = datetime(
                int(raw[0:4]), int(raw[4:6]), int(raw[6:8]), int(raw[9:11]), int(raw[11:13]), int(raw[13:15])
            )
            return moment.replace(tzinfo=UTC), raw
    try:
        moment = datetime.strptime(raw, SDK_DATE_FORMAT)  # the format ends in a literal Z: UTC
    except ValueError:
        raise SignatureError(
            f"X-Sdk-Date is not in the format {SDK_DATE_FORMAT}", reason="bad_date"
        ) from None
    return moment.replace(tzinfo=UTC), moment.strftime(SDK_DATE_FORMAT)


# --- signing side ---------------------------------------------------------------------------------------

# lower-cased name -> (name as it will be sent, value before stripping)
_Entries = dict[str, tuple[str, str]]


def _check_credentials(credentials: Credentials) -> None:
    ak = credentials.ak
    if not ak or not ak.isascii() or not ak.isprintable() or " " in ak or "," in ak:
        raise SignatureError("the AK is empty or has characters that cannot go in an Authorization header")
    if not credentials.sk:
        raise SignatureError("the SK is empty")


def _check_token(text: str, what: str) -> None:
    if not _HTTP_TOKEN.fullmatch(text):
        raise SignatureError(f"{what} {text[:64]!r} is not an HTTP token")


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


# --- verifying side -------------------------------------------------------------------------------------


def _received_headers(headers: Mapping[str, str]) -> tuple[dict[str, str], set[str]]:
    """Lower-cased name -> stripped value, and the names that arrived more than once."""
    received: dict[str, str] = {}
    repeated: set[str] = set()
    for name, value in headers.items():
        key = name.lower()
        if key in received:
            repeated.add(key)
        received[key] = value.strip()
    return received, repeated


def _parse_authorization(value: str) -> tuple[str, list[str], str]:
    algorithm, _, fields = value.partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError(
            f"unsupported signing algorithm {algorithm[:32]!r}, expected {ALGORITHM}",
            reason="unsupported_algorithm",
        )
    match = _AUTHORIZATION_FIELDS.fullmatch(fields)
    if match is None:
        raise SignatureError("the Authorization header is garbled", reason="malformed_authorization")
    signed = match["signed"].split(";")
    if len(set(signed)) != len(signed) or not _REQUIRED_SIGNED.issubset(signed):
        raise SignatureError(
            "SignedHeaders must name each header once and include host and x-sdk-date",
            reason="malformed_authorization",
        )
    return match["ak"], signed, match["signature"]


def _signed_values(received: Mapping[str, str], repeated: set[str], signed: Sequence[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key in signed:
        if key not in received:
            raise SignatureError(f"signed header {key[:64]!r} is missing", reason="missing_header")
        if key in repeated:
            raise SignatureError(f"signed header {key[:64]!r} arrived more than once")
        values[key] = received[key]
    return values


def _check_skew(moment: datetime, now: datetime | None, max_skew_seconds: float) -> None:
    current = datetime.now(UTC) if now is None else now
    if current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    skew = abs((current - moment).total_seconds())
    if skew > max_skew_seconds:
        raise SignatureError(
            f"X-Sdk-Date is {skew:.0f} s away from the server clock (at most {max_skew_seconds:g} s)",
            reason="stale_date",
        )
