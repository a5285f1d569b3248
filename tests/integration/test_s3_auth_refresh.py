"""OBS refusing a rotated key, for real: moto's S3 server in IAM-authenticated mode (each request's AK/SK
checked against the access keys of its IAM users), behind a relay that records which AK signed what.

The server is a process of its own: authentication, once on, applies to every request it serves."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioboto3
import aiohttp
import pytest
from aiobotocore.config import AioConfig
from faults.relay import Action, Forward, RelayRequest, running_relay
from secret_volume import SecretVolume
from structlog.testing import capture_logs

from exporter.adapters.s3 import S3ObjectStore, S3Options, open_object_store
from exporter.clock import SystemClock
from exporter.credentials.files import KeySource, KeySpec, SecretFile
from exporter.credentials.source import Auth
from exporter.devstack import s3_server
from exporter.errors import Permanent

BUCKET, KEY = "obs-auth-refresh", "exports/a.zip"
_REGION = "us-east-1"
_PATH_STYLE = AioConfig(s3={"addressing_style": "path"})
_ALLOW_ALL = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'


@dataclass(frozen=True, slots=True)
class Key:
    ak: str
    sk: str


@dataclass(frozen=True, slots=True)
class IamS3:
    """The authenticating server, and an administrator's key to create and delete others' keys with."""

    endpoint: str
    admin: Key

    def session(self, key: Key) -> aioboto3.Session:
        return aioboto3.Session(aws_access_key_id=key.ak, aws_secret_access_key=key.sk, region_name=_REGION)

    async def user_with_two_keys(self) -> tuple[str, Key, Key]:
        """A new IAM user allowed everything, with its two access keys (the old one and the new)."""
        user = f"exporter-{uuid.uuid4().hex[:8]}"
        async with self.session(self.admin).client("iam", endpoint_url=self.endpoint) as iam:
            await iam.create_user(UserName=user)
            await iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=_ALLOW_ALL)
            keys = [(await iam.create_access_key(UserName=user))["AccessKey"] for _ in range(2)]
        old, new = (Key(k["AccessKeyId"], k["SecretAccessKey"]) for k in keys)
        return user, old, new

    async def delete_key(self, user: str, key: Key) -> None:
        async with self.session(self.admin).client("iam", endpoint_url=self.endpoint) as iam:
            await iam.delete_access_key(UserName=user, AccessKeyId=key.ak)


async def _bootstrap(endpoint: str) -> Key:
    """While moto still takes anything: an administrator, the bucket and its ZIP; then authentication on."""
    anyone = aioboto3.Session(aws_access_key_id="AKBOOTSTRAP000000001", aws_secret_access_key="x" * 40)
    async with anyone.client("iam", endpoint_url=endpoint, region_name=_REGION) as iam:
        await iam.create_user(UserName="admin")
        await iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=_ALLOW_ALL)
        created = (await iam.create_access_key(UserName="admin"))["AccessKey"]
    async with anyone.client("s3", endpoint_url=endpoint, region_name=_REGION, config=_PATH_STYLE) as s3:
        await s3.create_bucket(Bucket=BUCKET)
        await s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"zip")
    async with aiohttp.ClientSession() as http, http.post(f"{endpoint}/moto-api/reset-auth", data=b"0"):
        pass  # from now on every request is checked (INITIAL_NO_AUTH_ACTION_COUNT = 0)
    return Key(created["AccessKeyId"], created["SecretAccessKey"])


@pytest.fixture(scope="module")
def iam_s3() -> Iterator[IamS3]:
    with s3_server() as endpoint:
        yield IamS3(endpoint, asyncio.run(_bootstrap(endpoint)))


class _Signed:
    """The relay's rule: forward everything, noting each request's method and the AK it was signed by."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def __call__(self, request: RelayRequest) -> Action:
        authorization = request.headers.get("Authorization", "")
        ak = authorization.partition("Credential=")[2].partition("/")[0]
        self.requests.append((request.method, ak))
        return Forward()

    def by(self, method: str) -> list[str]:
        return [ak for seen, ak in self.requests if seen == method]


class _Counting:
    """A credential source that counts its refreshes."""

    def __init__(self, inner: KeySource) -> None:
        self.inner = inner
        self.refreshes = 0

    async def current(self) -> Auth:
        return await self.inner.current()

    async def refresh(self) -> Auth:
        self.refreshes += 1
        return await self.inner.refresh()


@asynccontextmanager
async def _store(
    iam_s3: IamS3, tmp_path: Path, key: Key
) -> AsyncIterator[tuple[S3ObjectStore, SecretVolume, _Counting, _Signed]]:
    """A store whose keys come from a Secret volume looked at once an hour: only a refusal re-reads it."""
    volume = SecretVolume(tmp_path / "obs", {"ak": key.ak, "sk": key.sk})
    spec = KeySpec(ak=SecretFile(volume.path("ak")), sk=SecretFile(volume.path("sk")))
    source = _Counting(KeySource(spec, clock=SystemClock(), name="obs", poll_interval=3600))
    signed = _Signed()
    async with running_relay(iam_s3.endpoint, signed) as relay:
        options = S3Options(region=_REGION, endpoint=relay.url, addressing_style="path", credentials=source)
        async with open_object_store(options) as store:
            yield store, volume, source, signed


def _refresh_events(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [event for event in logs if event["event"] == "obs.auth.refresh"]


async def test_a_key_deleted_after_the_secret_changed_is_refreshed_and_the_head_retried(
    iam_s3: IamS3, tmp_path: Path
) -> None:
    """The Secret changes, the old key is deleted a moment later while the client still holds it: the
    refused HEAD makes one refresh, is sent again with the new key, and verifies the ZIP."""
    user, old, new = await iam_s3.user_with_two_keys()
    async with _store(iam_s3, tmp_path, old) as (store, volume, source, signed):
        assert await store.head(BUCKET, KEY) is not None
        volume.update({"ak": new.ak, "sk": new.sk})
        await iam_s3.delete_key(user, old)
        with capture_logs() as logs:
            info = await store.head(BUCKET, KEY)
    assert info is not None and info.size == 3
    assert signed.by("HEAD") == [old.ak, old.ak, new.ak]
    assert source.refreshes == 1
    [event] = _refresh_events(logs)
    assert event["code"] == "OBS.403" and event["operation"] == "HeadObject" and event["refreshed"] is True
    assert not any(secret in repr(logs) for secret in (old.ak, old.sk, new.ak, new.sk))


async def test_many_refusals_at_once_make_one_refresh(iam_s3: IamS3, tmp_path: Path) -> None:
    """Twenty HEADs refused together after the rotation: the source is refreshed once, and all succeed."""
    user, old, new = await iam_s3.user_with_two_keys()
    async with _store(iam_s3, tmp_path, old) as (store, volume, source, signed):
        assert await store.head(BUCKET, KEY) is not None
        volume.update({"ak": new.ak, "sk": new.sk})
        await iam_s3.delete_key(user, old)
        with capture_logs() as logs:
            infos = await asyncio.gather(*(store.head(BUCKET, KEY) for _ in range(20)))
    assert all(info is not None for info in infos)
    assert source.refreshes == 1
    assert [event["refreshed"] for event in _refresh_events(logs)].count(True) == 1
    heads = signed.by("HEAD")
    assert heads.count(new.ak) == 20 and len(heads) <= 1 + 2 * 20


@pytest.mark.parametrize(
    ("operation", "wrong_secret", "code"),
    [
        ("HEAD", False, "OBS.403"),
        ("PUT", False, "OBS.InvalidAccessKeyId"),
        ("PUT", True, "OBS.SignatureDoesNotMatch"),
    ],
)
async def test_a_key_still_refused_after_the_refresh_fails_after_one_retry(
    iam_s3: IamS3, tmp_path: Path, operation: str, wrong_secret: bool, code: str
) -> None:
    """The source still hands out the refused key (deleted, or with a wrong secret): one refresh, one
    more request, then a Permanent naming OBS's code, with no key in it."""
    user, old, _ = await iam_s3.user_with_two_keys()
    used = Key(old.ak, "w" * 40) if wrong_secret else old
    if not wrong_secret:
        await iam_s3.delete_key(user, old)
    async with _store(iam_s3, tmp_path, used) as (store, _, source, signed):
        call = (
            store.head(BUCKET, KEY)
            if operation == "HEAD"
            else store.put(BUCKET, "exports/_reports/r.json", b"{}", "application/json")
        )
        with capture_logs() as logs, pytest.raises(Permanent) as raised:
            await call
    assert signed.by(operation) == [used.ak, used.ak]
    assert source.refreshes == 1 and len(_refresh_events(logs)) == 1
    assert raised.value.code == code and raised.value.status == 403
    assert code.removeprefix("OBS.") in str(raised.value) and "sent once more" in str(raised.value)
    assert not any(secret in f"{raised.value!r} {raised.value} {logs!r}" for secret in (used.ak, used.sk))
