"""Properties of the AK/SK signer on generated requests, including agreement with the official SDK."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.dli.signer import Credentials, SignatureError, sdk_date, sign_request, verify_request

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)
SDK_SETTINGS = settings(max_examples=100, deadline=None)

# Headers the signer itself adds or interprets; generated headers avoid them (any case) so the SDK's
# case-sensitive handling of them does not make the two disagree for reasons documented in signer.py.
RESERVED = {"authorization", "host", "x-sdk-date", "x-project-id", "x-security-token", "x-sdk-content-sha256"}
CONTENT_TYPES = ["application/json", "application/json;charset=UTF-8", "text/plain", "application/xml", ""]

header_names = st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,24}", fullmatch=True).filter(
    lambda name: name.lower() not in RESERVED | {"content-type"}
)
# Printable text: no control characters (aiohttp refuses them) and no lone surrogates (no UTF-8 form).
printable = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), max_size=24)
padding = st.sampled_from(["", " ", "\t", "  \t "])
header_values = st.builds(lambda left, text, right: left + text + right, padding, printable, padding)
header_lists = st.lists(st.tuples(header_names, header_values), max_size=8, unique_by=lambda h: h[0].lower())
query_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=16)
queries = st.lists(st.tuples(query_text, query_text), max_size=6)
path_segments = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="/%"))
paths = st.lists(path_segments, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts))
bodies = st.none() | st.binary(max_size=256)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "get", "Patch"])
dates = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(sdk_date)
access_keys = st.from_regex(r"[A-Z0-9]{20}", fullmatch=True)
secret_keys = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40)
project_ids = st.none() | st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
security_tokens = st.none() | st.from_regex(r"[A-Za-z0-9+/=]{16,64}", fullmatch=True)
credentials = st.builds(Credentials, access_keys, secret_keys, project_ids, security_tokens)
hosts = st.sampled_from(["dli.cn-north-4.myhuaweicloud.com", "127.0.0.1:8080", "localhost"])


@dataclass(frozen=True)
class Request:
    """A generated request: everything sign_request takes."""

    method: str
    host: str
    path: str
    query: list[tuple[str, str]]
    headers: list[tuple[str, str]]
    body: bytes | None
    credentials: Credentials
    date: str
    content_type: str | None = field(default=None)

    def header_dict(self, content_type_name: str = "Content-Type") -> dict[str, str]:
        headers = dict(self.headers)
        if self.content_type is not None:
            headers[content_type_name] = self.content_type
        return headers

    def sign(self, headers: dict[str, str] | None = None) -> Any:
        return sign_request(
            self.method,
            self.host,
            self.path,
            self.query,
            self.header_dict() if headers is None else headers,
            self.body,
            self.credentials,
            self.date,
        )


requests = st.builds(
    Request,
    methods,
    hosts,
    paths,
    queries,
    header_lists,
    bodies,
    credentials,
    dates,
    st.none() | st.sampled_from(CONTENT_TYPES),
)


def recased(name: str, how: int) -> str:
    return [name.lower(), name.upper(), name.swapcase(), name.title()][how]


@PROPERTY_SETTINGS
@given(requests)
def test_signing_is_deterministic(case: Request) -> None:
    """The same request signed twice gives the same headers and intermediates."""
    assert case.sign() == case.sign()


@PROPERTY_SETTINGS
@given(requests, st.data())
def test_signature_ignores_header_order_and_name_case(case: Request, data: st.DataObject) -> None:
    """Shuffling the headers and changing the case of their names leaves every intermediate unchanged."""
    original = case.header_dict()
    shuffled = data.draw(st.permutations(list(original.items())))
    cases = data.draw(st.lists(st.integers(0, 3), min_size=len(shuffled), max_size=len(shuffled)))
    rewritten = {recased(name, how): value for (name, value), how in zip(shuffled, cases, strict=True)}
    _, parts = case.sign()
    _, rewritten_parts = case.sign(rewritten)
    assert rewritten_parts == parts


@PROPERTY_SETTINGS
@given(requests)
def test_any_printable_request_is_signed_with_every_header_sent(case: Request) -> None:
    """A printable request never raises; every given header is sent stripped, `_` names unsigned."""
    headers, parts = case.sign()
    given_headers = case.header_dict()
    for name, value in given_headers.items():
        assert headers[name] == value.strip()
    assert list(headers)[-1] == "Authorization"
    signed = parts.signed_headers.split(";")
    assert signed == sorted(signed)
    assert {name.lower() for name in headers if "_" not in name} - {"authorization"} == set(signed)
    assert parts.canonical_uri.endswith("/")


@PROPERTY_SETTINGS
@given(requests)
def test_sign_then_verify_round_trips(case: Request) -> None:
    """The server accepts what the signer produced, with the path percent-encoded as on the wire."""
    headers, _ = case.sign()
    ak = verify_request(
        case.method,
        case.host,
        quote(case.path, safe="/"),
        case.query,
        headers,
        case.body,
        {case.credentials.ak: case.credentials.sk}.get,
        now=datetime.strptime(case.date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC),
    )
    assert ak == case.credentials.ak


@PROPERTY_SETTINGS
@given(requests.filter(lambda r: bool(r.body) and r.content_type in {None, "application/json"}), st.data())
def test_any_change_to_a_hashed_body_is_refused(case: Request, data: st.DataObject) -> None:
    """Flipping any bit of a signed (hashed) body makes verification fail with a signature mismatch."""
    assert case.body is not None
    headers, _ = case.sign()
    index = data.draw(st.integers(0, len(case.body) - 1))
    bit = data.draw(st.integers(0, 7))
    tampered = bytearray(case.body)
    tampered[index] ^= 1 << bit
    with pytest.raises(SignatureError) as caught:
        verify_request(
            case.method,
            case.host,
            case.path,
            case.query,
            headers,
            bytes(tampered),
            {case.credentials.ak: case.credentials.sk}.get,
            now=datetime.strptime(case.date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC),
        )
    assert caught.value.reason == "signature_mismatch"


# --- agreement with the official SDK --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The SDK's signing entry points, imported with HOME in a temporary directory.

    Importing huaweicloudsdkcore.auth writes $HOME/.huaweicloud/application_id; this keeps it out of the
    real home directory.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(tmp_path_factory.mktemp("sdk-home")))
        credentials = importlib.import_module("huaweicloudsdkcore.auth.credentials")
        sdk_request = importlib.import_module("huaweicloudsdkcore.sdk_request")
        yield SimpleNamespace(
            BasicCredentials=credentials.BasicCredentials, SdkRequest=sdk_request.SdkRequest
        )


def sign_with_sdk(sdk: SimpleNamespace, case: Request) -> tuple[dict[str, str], str]:
    """The SDK's headers (as text, not its latin-1 wire form) and request URI for the same request."""
    headers = {**case.header_dict(), "X-Sdk-Date": case.date}
    sdk_request = sdk.SdkRequest(
        method=case.method,
        schema="https",
        host=case.host,
        resource_path=case.path,
        query_params=list(case.query),
        header_params=headers,
        body=case.body,
    )
    creds = case.credentials
    sdk_credentials = sdk.BasicCredentials(creds.ak, creds.sk, creds.project_id)
    if creds.security_token is not None:
        sdk_credentials.with_security_token(creds.security_token)
    signed = sdk_credentials.sign_request(sdk_request)
    sent = {name: value.encode("latin-1").decode("utf-8") for name, value in signed.header_params.items()}
    return sent, signed.uri


@SDK_SETTINGS
@given(requests)
def test_signature_agrees_with_the_official_sdk(sdk: SimpleNamespace, case: Request) -> None:
    """For generated requests, our headers (Authorization included) and wire URI equal the SDK's."""
    sdk_headers, sdk_uri = sign_with_sdk(sdk, case)
    headers, parts = case.sign({**case.header_dict(), "X-Sdk-Date": case.date})
    assert headers == sdk_headers
    assert list(headers) == list(sdk_headers)
    assert sdk_uri == case.path + (f"?{parts.canonical_query_string}" if case.query else "")
