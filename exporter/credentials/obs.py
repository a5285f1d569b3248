"""How rotated keys reach the OBS (S3) client: botocore's refreshable credentials over a credential source.

botocore signs every request with `await credentials.get_frozen_credentials()`; refreshable credentials
call a function of ours for new values once theirs "expire". Here they expire every `recheck` seconds
(and are never refreshed early: botocore's 15- and 10-minute refresh windows are set to zero), so the
client asks the source about once a second, which is as cheap as the source's `current()` (a cached
value; files looked at, keys renewed on the source's own schedule). A rotated key file or renewed agency
keys therefore sign OBS requests within a second or two, with the client and its connections kept.

After OBS refused the keys a request was signed with, `ObsAuth.renew` makes the source look again now
(`refresh()`) and the next signing ask it at once rather than at the end of the second; the S3 adapter
then sends the refused call once more (`exporter/adapters/s3_auth.py`). A wave of refusals makes one
refresh: each call remembers the generation it was signed under, and only the first to report a refusal
for a generation refreshes (the DLI client's 401 path does the same).

The provider goes first in the session's credential chain, so the environment, `~/.aws` and the EC2
metadata of botocore's own chain are never consulted for a client built this way.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aioboto3
from aiobotocore.credentials import AioRefreshableCredentials
from aiobotocore.session import AioSession
from botocore.credentials import CredentialProvider

from exporter.credentials.source import CredentialSource, StaticSource
from exporter.errors import ConfigError

__all__ = ["RECHECK_SECONDS", "ObsAuth", "obs_session", "refreshable_credentials"]

RECHECK_SECONDS = 1.0
_METHOD = "custom-dli-exporter"


class _Rechecked(AioRefreshableCredentials):
    """Refreshed when expired, not before: our "expiry" is only the time to ask the source again."""

    _advisory_refresh_timeout = 0
    _mandatory_refresh_timeout = 0

    def expire_now(self) -> None:
        """Ask the source at the next signing, not at the end of the recheck interval."""
        self._expiry_time = datetime.now(UTC) - timedelta(seconds=1)


async def refreshable_credentials(source: CredentialSource, recheck: float = RECHECK_SECONDS) -> _Rechecked:
    """Credentials for a botocore client that follow `source`; ConfigError if it hands out a token."""

    async def fetch() -> dict[str, Any]:
        auth = await source.current()
        if isinstance(auth, str):
            raise ConfigError(
                "OBS takes AK/SK only: give this profile obs_ak and obs_sk (an IAM token cannot sign S3)"
            )
        expiry = datetime.now(UTC) + timedelta(seconds=recheck)
        return {
            "access_key": auth.ak,
            "secret_key": auth.sk,
            "token": auth.security_token,
            "expiry_time": expiry.isoformat(),
        }

    credentials: _Rechecked = _Rechecked.create_from_metadata(
        await fetch(), refresh_using=fetch, method=_METHOD
    )
    return credentials


class ObsAuth:
    """A source as an OBS client's credentials, and the one forced refresh after OBS refused them.

    At most one forced refresh every `min_interval` seconds: a HEAD's bare 403 may also be a denied access
    (or, without list permission, a missing object), and a grace period of such answers must not fetch
    agency keys for every wave of HEADs. A refusal soon after a refresh is retried with what it gave.
    """

    __slots__ = (
        "_credentials",
        "_generation",
        "_lock",
        "_min_interval",
        "_monotonic",
        "_recheck",
        "_refreshed_at",
        "_source",
    )

    def __init__(
        self,
        source: CredentialSource,
        recheck: float = RECHECK_SECONDS,
        *,
        min_interval: float = RECHECK_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._recheck = recheck
        self._min_interval = min_interval
        self._monotonic = monotonic
        self._credentials: _Rechecked | None = None
        self._generation = 0
        self._refreshed_at = -math.inf
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<ObsAuth source={type(self._source).__name__} generation={self._generation}>"

    @property
    def generation(self) -> int:
        """How many forced refreshes so far: read before a request, handed to `renew` after a refusal."""
        return self._generation

    @property
    def refreshable(self) -> bool:
        """False for keys given once: a refresh would hand out the same, so a refusal is not retried."""
        return type(self._source) is not StaticSource

    async def credentials(self) -> _Rechecked:
        """The refreshable credentials every client of the session signs with (made once)."""
        async with self._lock:
            if self._credentials is None:
                self._credentials = await refreshable_credentials(self._source, self._recheck)
            return self._credentials

    async def renew(self, generation: int) -> bool:
        """OBS refused what was signed at `generation`: refresh the source, unless another call did since
        (or less than `min_interval` ago), and sign the next request with the result at once. True when
        this call refreshed."""
        async with self._lock:
            now = self._monotonic()
            if generation != self._generation or now - self._refreshed_at < self._min_interval:
                return False
            self._refreshed_at = now
            await self._source.refresh()
            if self._credentials is not None:
                self._credentials.expire_now()
            self._generation += 1
            return True


class _SourceProvider(CredentialProvider):
    """First in the chain: botocore's own providers are never asked."""

    METHOD = _METHOD
    CANONICAL_NAME = _METHOD

    def __init__(self, auth: ObsAuth) -> None:
        super().__init__()
        self._auth = auth

    async def load(self) -> Any:  # aiobotocore awaits its providers' load()
        return await self._auth.credentials()


def obs_session(auth: ObsAuth) -> aioboto3.Session:
    """An aioboto3 session whose clients sign with the source's current keys."""
    botocore_session = AioSession()
    resolver = botocore_session.get_component("credential_provider")
    resolver.insert_before(resolver.providers[0].METHOD, _SourceProvider(auth))
    return aioboto3.Session(botocore_session=botocore_session)
