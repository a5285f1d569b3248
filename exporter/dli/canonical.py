"""The SDK's signature computation proper, which signing and verification share: canonical request, string
to sign, HMAC. The rules, and where we differ from the SDK, are in `signer.py`'s docstring.

Everything here is a pure function of text already checked by the side that calls it; the only refusals are
text that is not valid Unicode and an unparseable X-Sdk-Date.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from re import compile as re_compile
from typing import Literal
from urllib.parse import quote, unquote

from exporter.errors import AuthError

__all__ = [
    "ALGORITHM",
    "EMPTY_BODY_SHA256",
    "SDK_DATE_FORMAT",
    "UNSIGNED_PAYLOAD",
    "SignatureError",
    "SignatureFailure",
    "SignedParts",
    "canonical_query_string",
    "canonical_uri",
    "mask_access_key",
    "parse_sdk_date",
    "payload_hash",
    "sdk_date",
    "sdk_date_of",
    "signed_parts",
]

SDK_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
ALGORITHM = "SDK-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()

_PLAIN_DATE = re_compile(r"[1-9][0-9]{7}T[0-9]{6}Z")

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
    if now is None:
        return sdk_date_of(time.time())
    moment = now.astimezone(UTC) if now.tzinfo is not None else now
    return moment.strftime(SDK_DATE_FORMAT)


def sdk_date_of(timestamp: float) -> str:
    """A Unix timestamp as X-Sdk-Date (whole seconds, as the format has them)."""
    return _sdk_date_of_second(int(timestamp))


@functools.lru_cache(maxsize=4)
def _sdk_date_of_second(second: int) -> str:
    """Formatted once per second, not once per request."""
    return datetime.fromtimestamp(second, UTC).strftime(SDK_DATE_FORMAT)


@functools.lru_cache(maxsize=64)  # pure; the requests of one second share their date
def parse_sdk_date(raw: str) -> tuple[datetime, str]:
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


def _percent_encode(text: str) -> str:
    return quote(text, safe="~")


def canonical_query_string(query: Sequence[tuple[str, str]]) -> str:
    """The signed query, which is also the exact query to send: pairs sorted raw, then percent-encoded."""
    return "&".join(f"{_percent_encode(key)}={_percent_encode(value)}" for key, value in sorted(query))


@functools.lru_cache(maxsize=1024)
def canonical_uri(path: str) -> str:
    """Paths repeat (one export path per project): encode each once."""
    uri = "/".join(_percent_encode(segment) for segment in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def payload_hash(body: bytes | None, content_sha256: str | None) -> str:
    """What the canonical request says about the body: its hash, or the X-Sdk-Content-Sha256 given."""
    if not body:
        return EMPTY_BODY_SHA256
    if content_sha256:
        # The SDK reads this header back after re-encoding it for the wire (UTF-8 bytes as latin-1 text).
        return content_sha256.encode("utf-8").decode("latin-1")
    return hashlib.sha256(body).hexdigest()


def signed_parts(
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    body: bytes | None,
    *,
    values: Mapping[str, str],
    signed: Sequence[str],
    string_date: str,
    ak: str,
    sk: str,
) -> SignedParts:
    """The SDK's computation proper over stripped header `values`, of which the `signed` (sorted) count."""
    try:
        body_hash = payload_hash(body, values.get("x-sdk-content-sha256"))
        uri = canonical_uri(path)
        query_string = canonical_query_string(query)
        canonical_headers = "".join(f"{key}:{values[key]}\n" for key in signed)
        signed_headers = ";".join(signed)
        canonical_request = "\n".join(
            (method.upper(), uri, query_string, canonical_headers, signed_headers, body_hash)
        )
        request_hash = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
        string_to_sign = f"{ALGORITHM}\n{string_date}\n{request_hash}"
        signature = hmac.new(sk.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    except UnicodeEncodeError:
        raise SignatureError("the path, query or a header is not valid Unicode text") from None
    authorization = f"{ALGORITHM} Access={ak}, SignedHeaders={signed_headers}, Signature={signature}"
    return SignedParts(
        canonical_uri=uri,
        canonical_query_string=query_string,
        canonical_headers=canonical_headers,
        signed_headers=signed_headers,
        payload_hash=body_hash,
        canonical_request=canonical_request,
        string_to_sign=string_to_sign,
        signature=signature,
        authorization=authorization,
    )
