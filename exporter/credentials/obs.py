"""How rotated keys reach the OBS (S3) client: botocore's refreshable credentials over a credential source.

botocore signs every request with `await credentials.get_frozen_credentials()`; refreshable credentials
call a function of ours for new values once theirs "expire". Here they expire every `recheck` seconds
(and are never refreshed early: botocore's 15- and 10-minute refresh windows are set to zero), so the
client asks the source about once a second, which is as cheap as the source's `current()` (a cached
value; files looked at, keys renewed on the source's own schedule). A rotated key file or renewed agency
keys therefore sign OBS requests within a second or two, with the client and its connections kept.

The provider goes first in the session's credential chain, so the environment, `~/.aws` and the EC2
metadata of botocore's own chain are never consulted for a client built this way.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aioboto3
from aiobotocore.credentials import AioRefreshableCredentials
from aiobotocore.session import AioSession
from botocore.credentials import CredentialProvider

from exporter.credentials.source import CredentialSource
from exporter.errors import ConfigError

__all__ = ["RECHECK_SECONDS", "obs_session", "refreshable_credentials"]

RECHECK_SECONDS = 1.0
_METHOD = "custom-dli-exporter"


class _Rechecked(AioRefreshableCredentials):
    """Refreshed when expired, not before: our "expiry" is only the time to ask the source again."""

    _advisory_refresh_timeout = 0
    _mandatory_refresh_timeout = 0


async def refreshable_credentials(source: CredentialSource, recheck: float = RECHECK_SECONDS) -> Any:
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

    return _Rechecked.create_from_metadata(await fetch(), refresh_using=fetch, method=_METHOD)


class _SourceProvider(CredentialProvider):
    """First in the chain: botocore's own providers are never asked."""

    METHOD = _METHOD
    CANONICAL_NAME = _METHOD

    def __init__(self, source: CredentialSource) -> None:
        super().__init__()
        self._source = source

    async def load(self) -> Any:  # aiobotocore awaits its providers' load()
        return await refreshable_credentials(self._source)


def obs_session(source: CredentialSource) -> aioboto3.Session:
    """An aioboto3 session whose clients sign with the source's current keys."""
    botocore_session = AioSession()
    resolver = botocore_session.get_component("credential_provider")
    resolver.insert_before(resolver.providers[0].METHOD, _SourceProvider(source))
    return aioboto3.Session(botocore_session=botocore_session)
