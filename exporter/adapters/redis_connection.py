"""Connection handling of the Redis backend: one client with retries, and a guard that bounds every call.

redis-py already reconnects and retries a command after a dropped connection (`Retry` with exponential
backoff on `ConnectionError` / `TimeoutError`); the guard adds what it cannot: a deadline for the whole
operation, retries included, after which the caller gets `StoreUnavailable` instead of waiting forever.
A `READONLY` answer (a managed Redis failing over to its replica) is unavailability too, not a bug.
Scripts run through `AsyncScript`, which reloads them by itself when a restarted Redis has forgotten them.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.credentials import CredentialProvider
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from exporter.errors import StoreUnavailable

__all__ = [
    "DEFAULT_UNAVAILABLE_AFTER",
    "LUA_PRELUDE",
    "RedisConnection",
    "connect",
    "milliseconds",
]

log = structlog.get_logger(__name__)

DEFAULT_UNAVAILABLE_AFTER = 10.0
"""Seconds an operation keeps retrying a lost Redis before it raises `StoreUnavailable`."""

_RETRIES = 20  # a safety net: the guard's deadline (`unavailable_after`) ends the retries first
_BACKOFF = ExponentialBackoff(cap=1.0, base=0.01)  # 20 ms after a dropped connection, then doubling
_CONNECT_TIMEOUT = 2.0
_SOCKET_TIMEOUT = 5.0
_HEALTH_CHECK_INTERVAL = 15

LUA_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(n)
  return string.format('%.0f', n)
end
local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return false
end
"""
"""Helpers every script shares: the server clock in ms, exact integer formatting, a stream field."""


def milliseconds(seconds: float) -> int:
    """Whole milliseconds, rounded up so a short lease or delay never becomes zero by truncation."""
    return max(0, math.ceil(seconds * 1000))


def connect(
    url: str,
    *,
    password: str | CredentialProvider | None = None,
    ssl_ca_file: str | None = None,
    client_name: str | None = None,
) -> Redis:
    """A client that retries dropped connections with backoff; nothing is sent until the first call.

    A `password` that is a credential provider is asked at every (re)connect: a rotated password."""
    scheme = urlsplit(url).scheme
    if scheme not in {"redis", "rediss"}:
        raise ValueError(f"a Redis URL starts with redis:// or rediss://, not {scheme or 'nothing'}://")
    options: dict[str, Any] = {
        "decode_responses": True,
        "retry": Retry(_BACKOFF, _RETRIES, (RedisConnectionError, RedisTimeoutError)),
        "socket_connect_timeout": _CONNECT_TIMEOUT,
        "socket_timeout": _SOCKET_TIMEOUT,
        "health_check_interval": _HEALTH_CHECK_INTERVAL,
        "client_name": client_name,
    }
    if isinstance(password, CredentialProvider):
        options["credential_provider"] = password
    elif password is not None:
        options["password"] = password
    if ssl_ca_file is not None and scheme == "rediss":  # the same CA bundle may serve DLI over plain redis://
        options["ssl_ca_certs"] = ssl_ca_file
    return Redis.from_url(url, **options)


@dataclass(frozen=True, slots=True)
class RedisConnection:
    """The client, the key namespace and the time budget shared by the queue, ledger and limiter."""

    client: Redis
    prefix: str
    unavailable_after: float = DEFAULT_UNAVAILABLE_AFTER

    def key(self, *parts: str | int) -> str:
        """`prefix:part:part`: every key of the backend lives under the prefix, so purge finds them all."""
        return ":".join((self.prefix, *(str(part) for part in parts)))

    def script(self, body: str) -> AsyncScript:
        """Register a Lua script (with the shared prelude) to run by SHA."""
        return self.client.register_script(LUA_PRELUDE + body)

    async def run(self, operation: str, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script under the guard."""
        async with self.guard(operation):
            return await script(keys=list(keys), args=list(args))

    @asynccontextmanager
    async def guard(self, operation: str) -> AsyncIterator[None]:
        """Bound an operation, redis-py's retries included; connection trouble becomes StoreUnavailable."""
        try:
            async with asyncio.timeout(self.unavailable_after):
                yield
        except (RedisConnectionError, RedisTimeoutError, ReadOnlyError, TimeoutError, OSError) as error:
            log.warning(
                "redis.unavailable", operation=operation, error=type(error).__name__, detail=str(error)
            )
            raise StoreUnavailable(
                f"Redis did not answer {operation}: {str(error) or type(error).__name__}"
            ) from error
