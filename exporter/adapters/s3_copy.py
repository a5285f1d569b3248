"""The S3 calls behind `ObjectCopier`: server-side copy, a streamed GET in parts, an upload from parts.

Migrations move export ZIPs between buckets, possibly between two endpoints (two regions), where no
server-side copy exists: the bytes then flow through us, and must never be held whole. A GET is therefore
cut into `part_size` pieces as it arrives, and an upload from pieces is a multipart upload as soon as there
is more than one piece.

These functions let botocore's errors through; `S3ObjectStore` (`s3.py`) turns them into the exporter's
outcome classes, exactly as it does for HEAD and PUT. A multipart upload that fails for any reason (a
refused part, the caller's iterator raising, cancellation) is aborted, so it leaves neither an object nor
an upload that storage keeps billing for.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from exporter.models import ObjectInfo

__all__ = ["MAX_PARTS", "MIN_PART_SIZE", "copy_object", "stream_parts", "upload_parts"]

log = structlog.get_logger(__name__)

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's (and OBS's) smallest part of a multipart upload, but the last
MAX_PARTS = 10_000  # S3's (and OBS's) most parts in one upload


async def copy_object(
    client: Any, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str
) -> ObjectInfo:
    """CopyObject on the server, then the copy's own size and ETag (CopyObject's answer has no size).

    One CopyObject handles objects up to 5 GiB, far beyond any export ZIP.
    """
    if (src_bucket, src_key) == (dst_bucket, dst_key):
        raise ValueError(f"cannot copy {src_bucket}/{src_key} onto itself")
    copied = await client.copy_object(
        Bucket=dst_bucket, Key=dst_key, CopySource={"Bucket": src_bucket, "Key": src_key}
    )
    head = await client.head_object(Bucket=dst_bucket, Key=dst_key)
    etag = head.get("ETag") or copied.get("CopyObjectResult", {}).get("ETag")
    return ObjectInfo(size=int(head.get("ContentLength", 0)), etag=_unquoted(etag))


async def stream_parts(client: Any, bucket: str, key: str, part_size: int) -> AsyncGenerator[bytes, None]:
    """The object's bytes in pieces of exactly `part_size` (the last may be shorter; none for an empty one).

    The body is read as it arrives, so at most one piece is in memory; stopping early closes the body.
    """
    if part_size < 1:
        raise ValueError(f"part_size must be at least 1, not {part_size}")
    response = await client.get_object(Bucket=bucket, Key=key)
    body = response["Body"]
    async with body:
        piece = bytearray()
        while chunk := await body.read(part_size - len(piece)):
            piece += chunk
            if len(piece) == part_size:
                yield bytes(piece)
                piece.clear()
        if piece:
            yield bytes(piece)


async def upload_parts(
    client: Any, bucket: str, key: str, parts: AsyncIterator[bytes], content_type: str
) -> ObjectInfo:
    """One PutObject when `parts` holds a single piece (or none: an empty object), else a multipart upload.

    Two pieces are read before deciding, so a small object costs one request, not three.
    """
    first = await anext(parts, None)
    second = None if first is None else await anext(parts, None)
    if first is None or second is None:
        body = first or b""
        answer = await client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        return ObjectInfo(size=len(body), etag=_unquoted(answer.get("ETag")))
    created = await client.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)
    upload = _Upload(client, bucket, key, str(created["UploadId"]))
    try:
        size = await upload.send_all(first, second, parts)
        answer = await upload.complete()
    except BaseException:  # the caller's iterator may raise anything, and cancellation is no exception
        await upload.abort()
        raise
    return ObjectInfo(size=size, etag=_unquoted(answer.get("ETag")))


class _Upload:
    """One multipart upload in progress: the parts sent so far, and how to finish or abandon it."""

    __slots__ = ("_bucket", "_client", "_key", "_sent", "_upload_id")

    def __init__(self, client: Any, bucket: str, key: str, upload_id: str) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._upload_id = upload_id
        self._sent: list[dict[str, Any]] = []

    async def send_all(self, first: bytes, second: bytes, rest: AsyncIterator[bytes]) -> int:
        """Send every piece in order; the total size. One piece is held back: only the last may be small."""
        size = 0
        pending: bytes | None = first
        following: bytes | None = second
        while pending is not None:
            if following is not None and len(pending) < MIN_PART_SIZE:
                raise ValueError(
                    f"part {len(self._sent) + 1} has {len(pending)} bytes; every part but the last needs "
                    f"at least {MIN_PART_SIZE}"
                )
            await self._send(pending)
            size += len(pending)
            pending, following = following, (None if following is None else await anext(rest, None))
        return size

    async def _send(self, part: bytes) -> None:
        number = len(self._sent) + 1
        if number > MAX_PARTS:
            raise ValueError(f"an upload holds at most {MAX_PARTS} parts: use larger parts")
        answer = await self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=part
        )
        self._sent.append({"PartNumber": number, "ETag": answer["ETag"]})

    async def complete(self) -> dict[str, Any]:
        answer: dict[str, Any] = await self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._sent},
        )
        return answer

    async def abort(self) -> None:
        """Abandon the upload; a failure to do so is logged, never raised over the error that caused it."""
        try:
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )
        except (ClientError, BotoCoreError) as error:
            log.warning(
                "s3.multipart.abort_failed",
                bucket=self._bucket,
                key=self._key,
                upload_id=self._upload_id,
                error=type(error).__name__,
            )


def _unquoted(etag: object) -> str | None:
    return str(etag).strip('"') if etag else None
