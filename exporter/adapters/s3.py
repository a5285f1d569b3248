"""OBS through its S3-compatible API (aioboto3): HEAD for verification, ranged GET, PUT for reports, and
copying objects for migrations (server-side, or streamed in parts: `s3_copy.py`).

Botocore's errors are turned into the exporter's outcome classes here, so the pipeline never sees a
ClientError: 404 means "not there (yet)", 403 and other 4xx are Permanent, 5xx and connection trouble are
Transient. With a credential source, refused credentials are refreshed once and the call sent again
before that (`s3_auth.py`); only a second refusal is Permanent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aioboto3
import aiohttp
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from exporter.adapters.s3_auth import RefreshingClient, RefusedAgain, refusal_code
from exporter.adapters.s3_copy import copy_object, stream_parts, upload_parts
from exporter.credentials.obs import ObsAuth, obs_session
from exporter.credentials.source import CredentialSource
from exporter.errors import Permanent, Transient
from exporter.models import ObjectInfo

__all__ = ["S3ObjectStore", "S3Options", "open_object_store"]

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


@dataclass(frozen=True, slots=True)
class S3Options:
    """What the S3 client is built from (`exporter.wiring.s3_options` reads them from settings).

    Without an endpoint botocore picks AWS's own. With `credentials` (a credential source) requests are
    signed with the source's current keys (rotated keys reach the client within a second or two);
    otherwise the keys are sent only when both are set (else botocore's usual credential chain applies);
    `session_token` goes with them for temporary keys. The keys are `SecretStr`, so they never show in
    `repr`. `ca_bundle`, when set, is what certificates are checked
    against, even with `tls_verify` off. `pool_size` caps the open connections; timeouts are in seconds.
    """

    region: str
    endpoint: str | None = None
    addressing_style: Literal["virtual", "path", "auto"] = "virtual"
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    session_token: SecretStr | None = None
    tls_verify: bool = True
    ca_bundle: Path | None = None
    pool_size: int = 36
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    credentials: CredentialSource | None = None

    def __post_init__(self) -> None:
        if not self.region:
            raise ValueError("region must not be empty")
        if self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("connect_timeout and read_timeout must be positive")


def _translate(error: ClientError | BotoCoreError, what: str, target: str = "") -> Exception:
    """Map a botocore error onto Transient / Permanent with a stable code; `target` names the object(s)."""
    if target:
        what = f"{what} {target}"
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
    if code in _NOT_FOUND or code == "NoSuchBucket":
        missing = "bucket" if code == "NoSuchBucket" else "object"
        return Permanent(
            f"OBS {what} failed: the {missing} does not exist ({status} {code})",
            code=f"OBS.{code}",
            status=status,
            request_id=request_id,
        )
    return Permanent(
        f"OBS {what} {_refused(error, status, code)}",
        code=f"OBS.{code}",
        status=status,
        request_id=request_id,
    )


def _refused(error: ClientError, status: int, code: str) -> str:
    """What a 4xx refusal says: whether it refused the credentials, and whether they were refreshed."""
    refused = refusal_code(error)
    if refused is None:
        return f"refused with {status} {code}"
    if refused == "403":
        text = "refused with 403 (a HEAD answer names no code: a refused key, or a denied access)"
    else:
        text = f"refused the credentials with {status} {code}"
    if isinstance(error, RefusedAgain):
        text += ", again after the credentials were refreshed and the request sent once more"
    return text


class S3ObjectStore:
    """The ObjectStore and ObjectCopier ports on one long-lived aioboto3 S3 client."""

    __slots__ = ("_client",)

    def __init__(self, client: Any, auth: ObsAuth | None = None) -> None:
        self._client = RefreshingClient(client, auth) if auth is not None and auth.refreshable else client

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

    async def copy_within(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> ObjectInfo:
        """Server-side copy (the bytes never leave OBS); the copy's size and ETag."""
        try:
            return await copy_object(self._client, src_bucket, src_key, dst_bucket, dst_key)
        except (ClientError, BotoCoreError) as error:
            where = f"{src_bucket}/{src_key} -> {dst_bucket}/{dst_key}"
            raise _translate(error, "COPY", where) from None

    async def read_parts(self, bucket: str, key: str, part_size: int) -> AsyncIterator[bytes]:
        """The object in `part_size` pieces, streamed; a failure mid-way is Transient like any other."""
        try:
            async with aclosing(stream_parts(self._client, bucket, key, part_size)) as parts:
                async for part in parts:
                    yield part
        except (ClientError, BotoCoreError) as error:
            raise _translate(error, "GET", f"{bucket}/{key}") from None
        except aiohttp.ClientPayloadError as error:  # a body cut short mid-stream (botocore wraps the rest)
            raise Transient(f"OBS GET {bucket}/{key} broke off: {error}", reason="connection") from None

    async def write_parts(
        self, bucket: str, key: str, parts: AsyncIterator[bytes], content_type: str
    ) -> ObjectInfo:
        """PUT, or a multipart upload when there is more than one part (aborted on any failure)."""
        try:
            return await upload_parts(self._client, bucket, key, parts, content_type)
        except (ClientError, BotoCoreError) as error:
            raise _translate(error, "PUT", f"{bucket}/{key}") from None


def _client_kwargs(options: S3Options) -> dict[str, Any]:
    verify: bool | str = str(options.ca_bundle) if options.ca_bundle else options.tls_verify
    kwargs: dict[str, Any] = {
        "region_name": options.region,
        "verify": verify,
        "config": Config(
            s3={"addressing_style": options.addressing_style},
            max_pool_connections=options.pool_size,
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
            retries={"max_attempts": 2, "mode": "standard"},
        ),
    }
    if options.endpoint:
        kwargs["endpoint_url"] = options.endpoint
    if options.access_key and options.secret_key and options.credentials is None:
        kwargs["aws_access_key_id"] = options.access_key.get_secret_value()
        kwargs["aws_secret_access_key"] = options.secret_key.get_secret_value()
        if options.session_token:
            kwargs["aws_session_token"] = options.session_token.get_secret_value()
    return kwargs


@asynccontextmanager
async def open_object_store(options: S3Options) -> AsyncIterator[S3ObjectStore]:
    """One S3 client for the process lifetime, closed on exit."""
    auth = None if options.credentials is None else ObsAuth(options.credentials)
    session = aioboto3.Session() if auth is None else obs_session(auth)
    async with session.client("s3", **_client_kwargs(options)) as client:
        yield S3ObjectStore(client, auth)
