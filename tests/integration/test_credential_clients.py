"""Rotated secrets reach the OBS and Redis clients without reopening them, over real sockets: an S3
stand-in that records which AK signed each request, and a private `redis-server` whose password changes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from secret_volume import SecretVolume
from security.private_redis import needs_redis_server, private_redis

from exporter.adapters.redis import open_redis
from exporter.adapters.s3 import S3Options, open_object_store
from exporter.clock import SystemClock
from exporter.credentials.files import KeySource, KeySpec, SecretFile
from exporter.credentials.redis_password import PasswordFileProvider, redis_auth_of
from exporter.errors import ConfigError

OLD_AK, OLD_SK = "AKOBSOLD000000000001", "skObsOld-Secret-00000000000000000001"
NEW_AK, NEW_SK = "AKOBSNEW000000000002", "skObsNew-Secret-00000000000000000002"
_CREDENTIAL = re.compile(r"Credential=([A-Z0-9]+)/")


@pytest.fixture
async def s3_standin() -> AsyncIterator[tuple[str, list[str]]]:
    """HEAD of any object answers 200; the AK of each request's signature is recorded."""
    signed_by: list[str] = []

    async def head(request: web.Request) -> web.Response:
        found = _CREDENTIAL.search(request.headers.get("Authorization", ""))
        signed_by.append(found.group(1) if found else "")
        return web.Response(headers={"Content-Length": "3", "ETag": '"e"'})

    app = web.Application()
    app.router.add_route("HEAD", "/{bucket}/{key:.+}", head)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", signed_by
    finally:
        await runner.cleanup()


async def test_obs_requests_are_signed_with_the_rotated_key(
    s3_standin: tuple[str, list[str]], tmp_path: Path
) -> None:
    """One S3 client for the whole test: after the Secret volume swaps, requests are signed with the new
    AK within a few seconds (the source is asked about once a second), and the old one is not used again."""
    endpoint, signed_by = s3_standin
    volume = SecretVolume(tmp_path / "obs", {"ak": OLD_AK, "sk": OLD_SK})
    spec = KeySpec(ak=SecretFile(volume.path("ak")), sk=SecretFile(volume.path("sk")))
    source = KeySource(spec, clock=SystemClock(), name="obs", poll_interval=0.1)
    options = S3Options(region="us-east-1", endpoint=endpoint, addressing_style="path", credentials=source)
    async with open_object_store(options) as store:
        assert await store.head("bucket", "a.zip") is not None
        volume.update({"ak": NEW_AK, "sk": NEW_SK})
        async with asyncio.timeout(10):
            while signed_by[-1] != NEW_AK:
                await store.head("bucket", "a.zip")
                await asyncio.sleep(0.05)
        for _ in range(3):
            await store.head("bucket", "a.zip")
    first_new = signed_by.index(NEW_AK)
    assert set(signed_by[:first_new]) == {OLD_AK} and set(signed_by[first_new:]) == {NEW_AK}


def test_redis_password_file_settings(tmp_path: Path) -> None:
    """A password file keeps the URL's user (redis-py refuses a URL's user beside a provider) and refuses
    a password in the URL or beside it."""
    secret = tmp_path / "password"
    secret.write_text("pw-File-0001\n")
    auth = redis_auth_of("redis://svc@redis:6379/0", None, secret)
    assert auth.url == "redis://redis:6379/0" and auth.password is None and auth.provider is not None
    assert auth.provider.get_credentials() == ("svc", "pw-File-0001")
    assert "pw-File" not in repr(auth)
    with pytest.raises(ConfigError, match="carries a password"):
        redis_auth_of("redis://:pw@redis:6379/0", None, secret)


@needs_redis_server
async def test_a_rotated_redis_password_is_used_by_the_next_connection(tmp_path: Path) -> None:
    """The server's password changes and every connection is dropped: the client reconnects with the
    password now in the file, with no restart and no error reaching the caller."""
    password = tmp_path / "redis-password"
    password.write_text("old-Password-0001\n")
    async with private_redis(tmp_path, password="old-Password-0001") as port:
        provider = PasswordFileProvider(password)
        async with open_redis(
            f"redis://127.0.0.1:{port}/0", key_prefix="rot", consumer_group="g", password=provider
        ) as backend:
            await backend.queue.ping()
            client = backend._conn.client  # the test plays the operator
            await client.config_set("requirepass", "new-Password-0002")
            password.write_text("new-Password-0002\n")
            await client.client_kill_filter(_type="normal", skipme=False)
            await backend.queue.ping()
            assert await backend.queue.depth() == 0
