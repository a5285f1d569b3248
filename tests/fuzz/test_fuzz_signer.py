"""Fuzzing the AK/SK signer (exporter/dli/signer.py) with hostile text: any Unicode, control characters,
lone surrogates, odd header names, dates and credentials.

tests/unit/test_signer_properties.py covers printable requests and agreement with the official SDK;
here the inputs are whatever a caller could pass. The signer must either refuse with `SignatureError`
or sign, and what it signs it signs the same way every time and the verifier accepts. The verifier, fed
arbitrary headers, must refuse with `SignatureError` or name the AK, nothing else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

from fuzz.strategies import FUZZ
from hypothesis import event, given
from hypothesis import strategies as st

from exporter.dli.signer import (
    ALGORITHM,
    Credentials,
    SignatureError,
    SignedParts,
    sdk_date,
    sign_request,
    verify_request,
)

anything = st.text(max_size=24)  # every code point, surrogates and control characters included
token_like = st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,16}", fullmatch=True)
header_names = token_like | anything
header_values = anything | st.sampled_from(["application/json", "text/plain", " padded ", ""])
headers = st.dictionaries(header_names, header_values, max_size=6)
queries = st.lists(st.tuples(anything, anything), max_size=4)
paths = st.text(max_size=40).map(lambda text: "/" + text)
bodies = st.none() | st.binary(max_size=128)
methods = token_like | st.sampled_from(["GET", "POST", "get", "", "P OST"])
hosts = st.sampled_from(["dli.cn-north-4.myhuaweicloud.com", "127.0.0.1:8080"]) | anything
dates = st.none() | st.datetimes(min_value=datetime(1970, 1, 1)).map(sdk_date) | anything
credentials = st.builds(
    Credentials,
    st.from_regex(r"[A-Z0-9]{20}", fullmatch=True) | anything,
    st.text(min_size=1, max_size=40) | st.just(""),
    st.none() | st.from_regex(r"[0-9a-f]{32}", fullmatch=True) | anything,
    st.none() | st.from_regex(r"[A-Za-z0-9+/=]{16,64}", fullmatch=True) | anything,
)


def check_refusal(error: SignatureError) -> None:
    """The signer refuses with a message and one of its two signing-side reasons."""
    event("refused")
    assert str(error) and error.reason in {"invalid_request", "bad_date"}


def sign(
    method: str,
    host: str,
    path: str,
    query: list[tuple[str, str]],
    given_headers: dict[str, str],
    body: bytes | None,
    creds: Credentials,
    date: str | None,
) -> tuple[dict[str, str], SignedParts] | None:
    """Sign, or None when the signer refuses (the only refusal allowed is SignatureError)."""
    try:
        signed = sign_request(method, host, path, query, given_headers, body, creds, date)
    except SignatureError as error:
        check_refusal(error)
        return None
    event("signed")
    return signed


@FUZZ
@given(methods, hosts, paths, queries, headers, bodies, credentials, dates)
def test_signer_refuses_cleanly_or_signs_deterministically(
    method: str,
    host: str,
    path: str,
    query: list[tuple[str, str]],
    given_headers: dict[str, str],
    body: bytes | None,
    creds: Credentials,
    date: str | None,
) -> None:
    """Any input: SignatureError, or the same headers and signature when signed twice."""
    first = sign(method, host, path, query, given_headers, body, creds, date)
    if first is None:
        return
    headers_sent, parts = first
    assert list(headers_sent)[-1] == "Authorization"
    assert headers_sent["Authorization"].startswith(f"{ALGORITHM} Access={creds.ak}, ")
    assert len(parts.signature) == 64
    if date is not None or any(name.lower() == "x-sdk-date" for name in given_headers):
        assert sign(method, host, path, query, given_headers, body, creds, date) == first


@FUZZ
@given(methods, hosts, paths.filter(lambda path: "%" not in path), queries, headers, bodies, credentials)
def test_whatever_the_signer_signs_the_verifier_accepts(
    method: str,
    host: str,
    path: str,
    query: list[tuple[str, str]],
    given_headers: dict[str, str],
    body: bytes | None,
    creds: Credentials,
) -> None:
    """A signed request, with its path percent-encoded as on the wire, verifies to its AK."""
    date = "20250102T030405Z"
    given_headers = {k: v for k, v in given_headers.items() if k.lower() != "x-sdk-date"}
    signed = sign(method, host, path, query, given_headers, body, creds, date)
    if signed is None:
        return
    headers_sent, _ = signed
    try:
        wire_path = quote(path, safe="/")
    except UnicodeEncodeError:
        return  # a lone surrogate in the path has no wire form; signing it already failed or cannot be sent
    ak = verify_request(
        method,
        host,
        wire_path,
        query,
        headers_sent,
        body,
        {creds.ak: creds.sk}.get,
        now=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert ak == creds.ak


authorizations = st.one_of(
    anything,
    st.builds(
        lambda ak, signed, signature: (
            f"{ALGORITHM} Access={ak}, SignedHeaders={signed}, Signature={signature}"
        ),
        st.from_regex(r"[A-Z0-9]{20}", fullmatch=True) | anything,
        st.lists(st.sampled_from(["content-type", "x-extra", "host", ""]), max_size=3).map(
            lambda extra: ";".join(sorted({"host", "x-sdk-date", *extra}))
        )
        | anything,
        st.from_regex(r"[0-9a-f]{64}", fullmatch=True) | anything,
    ),
)
received_headers = st.builds(
    lambda auth, date, extra: {**extra, "Authorization": auth, "X-Sdk-Date": date},
    authorizations,
    st.just(sdk_date()) | dates.map(lambda value: value or ""),
    headers,
)


@FUZZ
@given(methods, hosts, paths, queries, received_headers, bodies)
def test_verifier_refuses_garbage_with_signature_error(
    method: str,
    host: str,
    path: str,
    query: list[tuple[str, str]],
    given_headers: dict[str, str],
    body: bytes | None,
) -> None:
    """Arbitrary headers sent to the verifier: a SignatureError (with a stable reason) or the AK."""
    try:
        ak = verify_request(method, host, path, query, given_headers, body, lambda _ak: "secret")
    except SignatureError as error:
        event(error.reason)
        return
    event("accepted")
    assert isinstance(ak, str)
