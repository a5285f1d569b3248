"""OBS through its S3-compatible API (aioboto3): HEAD for verification, ranged GET, PUT for reports.

Botocore's errors are turned into the exporter's outcome classes here, so the pipeline never sees a
ClientError: 404 means "not there (yet)", 403 and other 4xx are Permanent, 5xx and connection trouble are
Transient.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from exporter.errors import Permanent, Transient
from exporter.models import ObjectInfo
from exporter.settings import Settings

__all__ = ["S3ObjectStore", "open_object_store"]

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def _translate(error: ClientError | BotoCoreError, what: str) -> Exception:
    """Map a botocore error onto Transient / Permanent with a stable code."""
    if isinstance(error, BotoCoreError):
        return Transient(f"OBS unreachable during {what}: {type(error).__name__}", reason="connection")
    response: dict[str, Any] = dict(error.response)
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    code = str(response.get("Error", {}).get("Code", status))
    request_id = response.get("ResponseMetadata", {}).get("RequestId")
    if status >= 500 or status in {408, 429} or code in {"SlowDown", "RequestTimeout"}:
        return Transient(
            f"OBS {what} failed with {status} {code}",
            reason="server_error",
            status=status,
            code=f"OBS.{code}",
            request_id=request_id,
        )
    return Permanent(
        f"OBS {what} refused with {status} {code}", code=f"OBS.{code}", status=status, request_id=request_id
    )


class S3ObjectStore:
    """The ObjectStore port on one long-lived aioboto3 S3 client."""

    __slots__ = ("_client",)

    def __init__(self, client: Any) -> None:
        self._client = client

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            response = await self._client.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND:
                return None
            raise _translate(error, "HEAD") from None
        except BotoCoreError as error:
            raise _translate(error, "HEAD") from None
        etag = response.get("ETag")
        return ObjectInfo(size=int(response.get("ContentLength", 0)), etag=etag.strip('"') if etag else None)

    async def read_range(self, bucket: str, key: str, start: int, end: int) -> bytes:
        try:
            response = await self._client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end}")
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data
        except (ClientError, BotoCoreError) as error:
            raise _translate(error, "GET") from None

    async def put(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        try:
            await self._client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        except (ClientError, BotoCoreError) as error:
            raise _translate(error, "PUT") from None


def _client_kwargs(settings: Settings) -> dict[str, Any]:
    access_key = settings.obs_ak or settings.ak
    secret_key = settings.obs_sk or settings.sk
    verify: bool | str = str(settings.ca_bundle) if settings.ca_bundle else settings.tls_verify
    kwargs: dict[str, Any] = {
        "region_name": settings.obs_region,
        "verify": verify,
        "config": Config(
            s3={"addressing_style": settings.obs_addressing_style},
            max_pool_connections=settings.verify_concurrency + 4,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            retries={"max_attempts": 2, "mode": "standard"},
        ),
    }
    if settings.obs_endpoint:
        kwargs["endpoint_url"] = settings.obs_endpoint
    if access_key and secret_key:
        kwargs["aws_access_key_id"] = access_key.get_secret_value()
        kwargs["aws_secret_access_key"] = secret_key.get_secret_value()
        if settings.security_token and not settings.obs_ak:
            kwargs["aws_session_token"] = settings.security_token.get_secret_value()
    return kwargs


@asynccontextmanager
async def open_object_store(settings: Settings) -> AsyncIterator[S3ObjectStore]:
    """One S3 client for the process lifetime, closed on exit."""
    session = aioboto3.Session()
    async with session.client("s3", **_client_kwargs(settings)) as client:
        yield S3ObjectStore(client)
