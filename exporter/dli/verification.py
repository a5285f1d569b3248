"""The server side of AK/SK signing: check a received request's signature (the DLI simulator uses it).

The signature is recomputed with the same code that signs (`canonical.py`) over the headers the
Authorization names, so a request our signer or the SDK produced verifies, and one changed on the way does
not. Refusals are `SignatureError`s whose `reason` says which check failed.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from re import compile as re_compile

from exporter.dli.canonical import (
    ALGORITHM,
    SignatureError,
    mask_access_key,
    parse_sdk_date,
    signed_parts,
)

__all__ = ["verify_request"]

# Header names the server must find signed, or a captured request could be replayed to another host or
# with a fresh date.
_REQUIRED_SIGNED = frozenset({"host", "x-sdk-date"})
_AUTHORIZATION_FIELDS = re_compile(
    r"Access=(?P<ak>[^\s,]+), SignedHeaders=(?P<signed>[^\s,]+), Signature=(?P<signature>[0-9a-f]{64})"
)


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
    ak, signed, signature = _parse_authorization(received.get("authorization"))
    values = _signed_values(received, repeated, signed)
    moment, string_date = parse_sdk_date(values["x-sdk-date"])
    _check_skew(moment, now, max_skew_seconds)
    sk = secret_for_ak(ak)
    if not sk:
        raise SignatureError(f"unknown access key {mask_access_key(ak)}", reason="unknown_ak")
    expected = signed_parts(
        method, path, query, body, values=values, signed=signed, string_date=string_date, ak=ak, sk=sk
    )
    if not hmac.compare_digest(expected.signature, signature):
        raise SignatureError("the signature does not match the request", reason="signature_mismatch")
    return ak


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


def _parse_authorization(value: str | None) -> tuple[str, list[str], str]:
    """The AK, the signed header names and the signature an Authorization header names."""
    if value is None:
        raise SignatureError("the request has no Authorization header", reason="missing_authorization")
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
