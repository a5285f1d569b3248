"""Which OBS errors are refused credentials, how they are reported, and the one refresh and retry they get
(a fake S3 client and a fake source; the real server's refusals are in tests/integration)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.exceptions import ClientError

from exporter.adapters.s3 import S3ObjectStore, _translate
from exporter.adapters.s3_auth import RefreshingClient, RefusedAgain, refusal_code
from exporter.credentials.obs import ObsAuth
from exporter.credentials.source import StaticSource
from exporter.dli.signer import Credentials
from exporter.errors import Permanent, Transient

OLD = Credentials(ak="AKOLD000000000000001", sk="sk-Old-Secret-000000000000000000000001")
NEW = Credentials(ak="AKNEW000000000000002", sk="sk-New-Secret-000000000000000000000002")


def _error(code: str, status: int, operation: str = "PutObject") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "refused"},
        "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "req-1"},
    }
    return ClientError(response, operation)


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("InvalidAccessKeyId", 403, "InvalidAccessKeyId"),
        ("SignatureDoesNotMatch", 403, "SignatureDoesNotMatch"),
        ("InvalidToken", 400, "InvalidToken"),
        ("ExpiredToken", 400, "ExpiredToken"),
        ("TokenRefreshRequired", 400, "TokenRefreshRequired"),
        ("403", 403, "403"),  # a HEAD's bodiless 403
        ("AccessDenied", 403, None),
        ("NoSuchKey", 404, None),
        ("404", 404, None),
        ("InternalError", 500, None),
        ("InvalidArgument", 400, None),
    ],
)
def test_refusal_codes(code: str, status: int, expected: str | None) -> None:
    """Refused keys, signatures and security tokens (and a HEAD's bare 403) are auth refusals; a denied
    access, a missing object or a server error is not."""
    assert refusal_code(_error(code, status)) == expected


@pytest.mark.parametrize("code", ["InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"])
def test_a_refusal_is_permanent_and_names_the_code(code: str) -> None:
    """A refusal reaching the store is Permanent with OBS's code; after the retry the message says so."""
    first = _translate(_error(code, 403), "PUT", "b/k")
    again = _translate(RefusedAgain(_error(code, 403).response, "PutObject"), "PUT", "b/k")
    for error in (first, again):
        assert isinstance(error, Permanent) and error.code == f"OBS.{code}" and error.status == 403
        assert str(error).startswith(f"OBS PUT b/k refused the credentials with 403 {code}")
    assert "sent once more" in str(again) and "sent once more" not in str(first)


def test_a_bare_head_403_says_it_has_no_code() -> None:
    """A HEAD's 403 names no code: the message says it may be a refused key or a denied access."""
    error = _translate(_error("403", 403, "HeadObject"), "HEAD")
    assert isinstance(error, Permanent) and error.code == "OBS.403" and "names no code" in str(error)


def test_other_errors_keep_their_classes() -> None:
    """AccessDenied stays a plain refusal, a 503 stays Transient."""
    assert "refused with 403 AccessDenied" in str(_translate(_error("AccessDenied", 403), "PUT"))
    assert isinstance(_translate(_error("ServiceUnavailable", 503), "PUT"), Transient)


class _Source:
    """Hands out `auth`; a refresh counts, waits a moment (so refusals pile up), then takes `next`."""

    def __init__(self, auth: Credentials, next_auth: Credentials | None = None) -> None:
        self.auth = auth
        self.next = next_auth or auth
        self.refreshes = 0

    async def current(self) -> Credentials:
        return self.auth

    async def refresh(self) -> Credentials:
        self.refreshes += 1
        await asyncio.sleep(0.01)
        self.auth = self.next
        return self.auth


class _Client:
    """An S3 client that refuses `refused` keys with `code`; it signs with the ObsAuth's credentials."""

    def __init__(self, auth: ObsAuth, refused: set[str], code: str = "InvalidAccessKeyId") -> None:
        self.auth = auth
        self.refused = refused
        self.code = code
        self.signed: list[str] = []

    async def head_object(self, **_: Any) -> dict[str, Any]:
        frozen = await (await self.auth.credentials()).get_frozen_credentials()
        self.signed.append(str(frozen.access_key))
        await asyncio.sleep(0)
        if frozen.access_key in self.refused:
            raise _error(self.code, 403, "HeadObject")
        return {"ContentLength": 3}


async def test_a_refusal_refreshes_once_and_the_retry_signs_with_the_new_key_at_once() -> None:
    """The refused call is sent again with the refreshed key, without waiting out the 1-s recheck."""
    source = _Source(OLD, NEW)
    auth = ObsAuth(source, recheck=3600)
    client = _Client(auth, {OLD.ak})
    answer = await RefreshingClient(client, auth).head_object(Bucket="b", Key="k")
    assert answer == {"ContentLength": 3} and client.signed == [OLD.ak, NEW.ak] and source.refreshes == 1


async def test_a_key_refused_again_is_refused_again_after_one_retry() -> None:
    """The source still hands out the refused key: two requests, one refresh, then RefusedAgain."""
    source = _Source(OLD)
    auth = ObsAuth(source)
    client = _Client(auth, {OLD.ak}, code="ExpiredToken")
    with pytest.raises(RefusedAgain) as raised:
        await RefreshingClient(client, auth).head_object(Bucket="b", Key="k")
    assert refusal_code(raised.value) == "ExpiredToken"
    assert client.signed == [OLD.ak, OLD.ak] and source.refreshes == 1


async def test_other_errors_are_not_retried() -> None:
    """A denied access (with its code) reaches the caller at once, with no refresh."""
    source = _Source(OLD, NEW)
    auth = ObsAuth(source)
    client = _Client(auth, {OLD.ak}, code="AccessDenied")
    with pytest.raises(ClientError) as raised:
        await RefreshingClient(client, auth).head_object(Bucket="b", Key="k")
    assert not isinstance(raised.value, RefusedAgain)
    assert client.signed == [OLD.ak] and source.refreshes == 0


async def test_refusals_at_once_make_one_refresh() -> None:
    """Fifty calls refused together: one refresh, and every call succeeds on its retry."""
    source = _Source(OLD, NEW)
    auth = ObsAuth(source, recheck=3600)
    client = RefreshingClient(_Client(auth, {OLD.ak}), auth)
    answers = await asyncio.gather(*(client.head_object(Bucket="b", Key=str(n)) for n in range(50)))
    assert len(answers) == 50 and source.refreshes == 1 and auth.generation == 1
    assert "AKOLD" not in repr(client) and "AKNEW" not in repr(client)


async def test_refusals_soon_after_a_refresh_are_retried_without_another() -> None:
    """Bare 403s one after the other (a denied access looks the same): at most one refresh a second."""
    now = [0.0]
    source = _Source(OLD)
    auth = ObsAuth(source, min_interval=1.0, monotonic=lambda: now[0])
    client = _Client(auth, {OLD.ak}, code="403")
    refreshing = RefreshingClient(client, auth)
    for at in (0.0, 0.5, 0.9, 1.5):
        now[0] = at
        with pytest.raises(RefusedAgain):
            await refreshing.head_object(Bucket="b", Key="k")
    assert source.refreshes == 2 and len(client.signed) == 8


def test_keys_given_once_are_not_retried() -> None:
    """With a static source a refresh would hand out the same keys: the store does not wrap its client."""
    static = ObsAuth(StaticSource(OLD))
    assert not static.refreshable and ObsAuth(_Source(OLD)).refreshable
    client = object()
    assert S3ObjectStore(client, static)._client is client
    assert isinstance(S3ObjectStore(client, ObsAuth(_Source(OLD)))._client, RefreshingClient)
