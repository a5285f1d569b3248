"""OBS refusing the credentials a request was signed with: one forced refresh, then the same call again.

Keys rotate under a daemon that runs for months. A Secret's new files reach the OBS client within a
poll interval, but the old key may be deleted in IAM sooner, or a security token revoked before its
time; OBS then answers 403 `InvalidAccessKeyId` / `SignatureDoesNotMatch`, or 400 `InvalidToken` /
`ExpiredToken` / `TokenRefreshRequired`. Such a refusal makes the source look again now (`ObsAuth.renew`:
one refresh per wave of refusals) and the call is sent once more, signed with what that gave; a second
refusal is the caller's `RefusedAgain`, which the store reports as Permanent with OBS's code.

A HEAD answer has no body, so botocore sees a bare 403 whatever OBS meant: on a HEAD it may be a refused
key as well as a denied access, and it is retried the same way (one more request; `ObsAuth` refreshes at
most once a second). Keys given once (a `StaticSource`) are not retried: a refresh would give the same.

Every body the store sends is bytes, so a call can be sent again as it was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from botocore.exceptions import ClientError

from exporter.credentials.obs import ObsAuth

__all__ = ["AUTH_REFUSALS", "RefreshingClient", "RefusedAgain", "refusal_code"]

log = structlog.get_logger(__name__)

AUTH_REFUSALS = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "TokenRefreshRequired"}
)
_BARE_FORBIDDEN = "403"  # botocore's code for a 403 without a body (every HEAD)


def refusal_code(error: ClientError) -> str | None:
    """OBS's code when `error` says the credentials were refused (`403` for a bodiless 403), else None."""
    response: dict[str, Any] = dict(error.response)
    code = str(response.get("Error", {}).get("Code", ""))
    if code in AUTH_REFUSALS:
        return code
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if status == 403 and code in {"", _BARE_FORBIDDEN}:
        return _BARE_FORBIDDEN
    return None


class RefusedAgain(ClientError):
    """OBS refused the credentials again after they were refreshed and the call was sent once more."""


class RefreshingClient:
    """An aioboto3 S3 client whose calls are sent once more after OBS refused their credentials."""

    __slots__ = ("_auth", "_client")

    def __init__(self, client: Any, auth: ObsAuth) -> None:
        self._client = client
        self._auth = auth

    def __repr__(self) -> str:
        return f"<RefreshingClient {self._auth!r}>"

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._call(method, args, kwargs)

        return call

    async def _call(self, method: Callable[..., Awaitable[Any]], args: Any, kwargs: Any) -> Any:
        generation = self._auth.generation
        try:
            return await method(*args, **kwargs)
        except ClientError as error:
            code = refusal_code(error)
            if code is None:
                raise
            await self._renew(generation, error, code)
        try:
            return await method(*args, **kwargs)
        except ClientError as error:
            if refusal_code(error) is None:
                raise
            raise RefusedAgain(error.response, error.operation_name) from None

    async def _renew(self, generation: int, error: ClientError, code: str) -> None:
        refreshed = await self._auth.renew(generation)
        metadata: dict[str, Any] = dict(error.response.get("ResponseMetadata", {}))
        log.info(
            "obs.auth.refresh",
            operation=error.operation_name,
            code=f"OBS.{code}",
            status=metadata.get("HTTPStatusCode"),
            request_id=metadata.get("RequestId"),
            refreshed=refreshed,
        )
