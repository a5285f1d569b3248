"""S3ObjectStore as an ObjectCopier against a real S3 HTTP server (moto's server mode, `s3_server`).

Server-side copy, a streamed GET in parts, and uploads from parts: one PutObject for a single part, a
multipart upload for more, and an aborted upload that leaves nothing behind when anything fails.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from exporter.adapters.s3 import S3ObjectStore, S3Options, open_object_store
from exporter.adapters.s3_copy import MIN_PART_SIZE
from exporter.devstack import DEV_AK, DEV_SK, create_bucket, dev_s3_client
from exporter.errors import Permanent
from exporter.migration.ports import ObjectCopier
from exporter.ports import ObjectStore

MIB = 1024 * 1024
ZIP = "application/zip"


@pytest.fixture
async def store(s3_server: str) -> AsyncIterator[S3ObjectStore]:
    options = S3Options(
        region="us-east-1",
        endpoint=s3_server,
        addressing_style="path",
        access_key=SecretStr(DEV_AK),
        secret_key=SecretStr(DEV_SK),
    )
    async with open_object_store(options) as opened:
        yield opened


@pytest.fixture
async def buckets(s3_server: str) -> tuple[str, str]:
    """Two fresh buckets on the server: (source, target)."""
    names = (f"src-{uuid.uuid4().hex[:12]}", f"dst-{uuid.uuid4().hex[:12]}")
    for name in names:
        await create_bucket(s3_server, name)
    return names


async def pieces(*parts: bytes, fail_after: int | None = None) -> AsyncIterator[bytes]:
    """The parts in order; with `fail_after`, raise once that many were handed out."""
    for index, part in enumerate(parts):
        if index == fail_after:
            raise RuntimeError("the source broke off")
        yield part
    if fail_after == len(parts):
        raise RuntimeError("the source broke off")


async def pending_uploads(s3_server: str, bucket: str) -> list[Any]:
    async with dev_s3_client(s3_server) as client:
        listed = await client.list_multipart_uploads(Bucket=bucket)
    uploads: list[Any] = listed.get("Uploads", [])
    return uploads


async def read_all(store: S3ObjectStore, bucket: str, key: str, part_size: int) -> list[bytes]:
    return [part async for part in store.read_parts(bucket, key, part_size)]


def test_the_store_is_both_an_object_store_and_a_copier(store: S3ObjectStore) -> None:
    """mypy checks these assignments: S3ObjectStore satisfies both Protocols."""
    copier: ObjectCopier = store
    plain: ObjectStore = store
    assert copier is store
    assert plain is store


# --- copy_within -------------------------------------------------------------------------------------------


async def test_copy_within_copies_between_buckets_on_the_server(
    store: S3ObjectStore, buckets: tuple[str, str]
) -> None:
    """The copy's size and ETag come back; a single-part object's copy has the source's very ETag."""
    source, target = buckets
    data = os.urandom(70_000)
    await store.put(source, "exports/a.zip", data, ZIP)
    original = await store.head(source, "exports/a.zip")

    info = await store.copy_within(source, "exports/a.zip", target, "imports/a.zip")

    assert original is not None
    assert info.size == len(data) == original.size
    assert info.etag == original.etag == hashlib.md5(data).hexdigest()  # noqa: S324 - S3's ETag is an MD5
    assert await store.head(target, "imports/a.zip") == info
    assert await store.read_range(target, "imports/a.zip", 0, len(data) - 1) == data


async def test_copy_within_of_a_missing_object_says_so(
    store: S3ObjectStore, buckets: tuple[str, str]
) -> None:
    source, target = buckets
    with pytest.raises(Permanent) as caught:
        await store.copy_within(source, "no/such.zip", target, "x.zip")
    assert caught.value.code == "OBS.NoSuchKey"
    assert f"{source}/no/such.zip" in caught.value.message
    assert "does not exist" in caught.value.message


async def test_copy_within_onto_itself_is_refused(store: S3ObjectStore, buckets: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="onto itself"):
        await store.copy_within(buckets[0], "a.zip", buckets[0], "a.zip")


# --- read_parts --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "lengths"), [(1000, [300, 300, 300, 100]), (900, [300, 300, 300]), (0, [])])
async def test_read_parts_yields_the_exact_bytes_in_pieces(
    store: S3ObjectStore, buckets: tuple[str, str], size: int, lengths: list[int]
) -> None:
    data = os.urandom(size)
    await store.put(buckets[0], "a.zip", data, ZIP)

    parts = await read_all(store, buckets[0], "a.zip", 300)

    assert [len(part) for part in parts] == lengths
    assert b"".join(parts) == data


async def test_read_parts_can_stop_early(store: S3ObjectStore, buckets: tuple[str, str]) -> None:
    """Leaving the loop closes the body; the store keeps working."""
    await store.put(buckets[0], "a.zip", os.urandom(3 * MIB), ZIP)
    async for part in store.read_parts(buckets[0], "a.zip", MIB):
        assert len(part) == MIB
        break
    assert [len(part) for part in await read_all(store, buckets[0], "a.zip", 2 * MIB)] == [2 * MIB, MIB]


async def test_read_parts_of_a_missing_object_says_so(store: S3ObjectStore, buckets: tuple[str, str]) -> None:
    with pytest.raises(Permanent) as caught:
        await read_all(store, buckets[0], "missing.zip", 100)
    assert caught.value.code == "OBS.NoSuchKey"
    assert "does not exist" in caught.value.message


# --- write_parts -------------------------------------------------------------------------------------------


async def test_write_parts_with_one_part_is_a_plain_put(
    store: S3ObjectStore, buckets: tuple[str, str], s3_server: str
) -> None:
    data = os.urandom(1234)
    info = await store.write_parts(buckets[1], "one.zip", pieces(data), ZIP)

    assert info.size == 1234
    assert info.etag == hashlib.md5(data).hexdigest()  # noqa: S324 - no "-N": not a multipart upload
    assert await store.head(buckets[1], "one.zip") == info
    async with dev_s3_client(s3_server) as client:
        head = await client.head_object(Bucket=buckets[1], Key="one.zip")
    assert head["ContentType"] == ZIP


async def test_write_parts_with_no_part_writes_an_empty_object(
    store: S3ObjectStore, buckets: tuple[str, str]
) -> None:
    info = await store.write_parts(buckets[1], "empty.zip", pieces(), ZIP)
    assert info.size == 0
    assert (await store.head(buckets[1], "empty.zip")) == info


async def test_write_parts_with_several_parts_is_a_multipart_upload(
    store: S3ObjectStore, buckets: tuple[str, str], s3_server: str
) -> None:
    """11 MiB read in 5 MiB parts goes up as three parts: the ETag has S3's "-3" multipart form."""
    source, target = buckets
    data = os.urandom(11 * MIB)
    await store.put(source, "big.zip", data, ZIP)

    info = await store.write_parts(target, "big.zip", store.read_parts(source, "big.zip", MIN_PART_SIZE), ZIP)

    assert info.size == len(data)
    assert info.etag is not None
    assert info.etag.endswith("-3")
    assert await store.head(target, "big.zip") == info
    copied = b"".join(await read_all(store, target, "big.zip", 4 * MIB))
    assert hashlib.sha256(copied).digest() == hashlib.sha256(data).digest()
    assert await pending_uploads(s3_server, target) == []


@pytest.mark.parametrize("fail_after", [1, 2, 3])
async def test_a_failing_iterator_aborts_the_upload(
    store: S3ObjectStore, buckets: tuple[str, str], s3_server: str, fail_after: int
) -> None:
    """Whether the source fails before the upload began or between parts: no object, no pending upload."""
    part = b"x" * MIN_PART_SIZE
    with pytest.raises(RuntimeError, match="broke off"):
        await store.write_parts(buckets[1], "half.zip", pieces(part, part, part, fail_after=fail_after), ZIP)
    assert await store.head(buckets[1], "half.zip") is None
    assert await pending_uploads(s3_server, buckets[1]) == []


async def test_a_small_part_before_the_last_is_refused_and_aborted(
    store: S3ObjectStore, buckets: tuple[str, str], s3_server: str
) -> None:
    small = b"s" * (MIN_PART_SIZE - 1)
    with pytest.raises(ValueError, match="part 1 has"):
        await store.write_parts(buckets[1], "small.zip", pieces(small, b"last"), ZIP)
    assert await store.head(buckets[1], "small.zip") is None
    assert await pending_uploads(s3_server, buckets[1]) == []


async def test_write_parts_into_a_missing_bucket_is_permanent(store: S3ObjectStore) -> None:
    with pytest.raises(Permanent) as caught:
        await store.write_parts("no-such-bucket-0000", "a.zip", pieces(b"data"), ZIP)
    assert caught.value.code == "OBS.NoSuchBucket"
    assert "bucket does not exist" in caught.value.message
