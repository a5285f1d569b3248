"""The distributed backend: queue, ledger and global rate limiter on one Redis, shared by every replica.

`open_redis` is the entry point the composition root (and the contract tests) use; it owns the client and
closes it on exit. Nothing is sent to Redis on opening, so a replica starts while Redis is down and reports
`StoreUnavailable` from `ping` until it is back.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import structlog
from redis.credentials import CredentialProvider

from exporter.adapters.redis_campaigns import RedisCampaigns
from exporter.adapters.redis_connection import DEFAULT_UNAVAILABLE_AFTER, RedisConnection, connect
from exporter.adapters.redis_ledger import RedisLedger
from exporter.adapters.redis_limiter import RedisRateLimiter
from exporter.adapters.redis_migration import RedisMigrations
from exporter.adapters.redis_queue import STALE_CONSUMER_SECONDS, RedisQueue
from exporter.adapters.redis_rates import RedisRateStates
from exporter.clock import SystemClock
from exporter.ports import Clock

__all__ = ["RedisBackend", "client_name", "open_redis"]

log = structlog.get_logger(__name__)

_PURGE_PAGE = 1000
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


class RedisBackend:
    """The queue, the ledger, campaigns, migration steps, rate limiters and
    learned rates of one deployment (one key prefix,
    one consumer group)."""

    __slots__ = ("_clock", "_conn", "campaigns", "ledger", "migrations", "queue", "rates")

    def __init__(
        self,
        conn: RedisConnection,
        *,
        consumer_group: str,
        clock: Clock,
        max_deliveries: int = 5,
        stale_consumer_seconds: float = STALE_CONSUMER_SECONDS,
    ) -> None:
        self._conn = conn
        self._clock = clock
        self.queue = RedisQueue(
            conn,
            group=consumer_group,
            clock=clock,
            max_deliveries=max_deliveries,
            stale_consumer_seconds=stale_consumer_seconds,
        )
        self.ledger = RedisLedger(conn, clock=clock)
        self.campaigns = RedisCampaigns(conn)
        self.migrations = RedisMigrations(conn)
        self.rates = RedisRateStates(conn)

    def __repr__(self) -> str:
        return f"<RedisBackend prefix={self._conn.prefix!r}>"

    def limiter(
        self, rate: float, burst: int = 1, scope: str | None = None, window_slack: float | None = None
    ) -> RedisRateLimiter:
        """A limiter sharing its slots with every limiter of the same prefix and scope (one per DLI
        endpoint: a gateway's limit belongs to its region), on any replica."""
        return RedisRateLimiter(
            self._conn, rate, burst, clock=self._clock, scope=scope, window_slack=window_slack
        )

    async def purge(self) -> None:
        """Delete every key under the prefix (tests, and wiping a deployment on purpose)."""
        pattern = _GLOB_SPECIAL.sub(r"\\\1", self._conn.prefix) + ":*"
        removed = 0
        async with self._conn.guard("purge"):
            batch: list[str] = []
            async for key in self._conn.client.scan_iter(match=pattern, count=_PURGE_PAGE):
                batch.append(key)
                if len(batch) >= _PURGE_PAGE:
                    removed += await self._conn.client.unlink(*batch)
                    batch.clear()
            if batch:
                removed += await self._conn.client.unlink(*batch)
        log.info("redis.purged", prefix=self._conn.prefix, keys=removed)


def client_name(key_prefix: str) -> str:
    """The name our connections show in `CLIENT LIST` (Redis refuses spaces in it, so they are replaced)."""
    return "dli-exporter:" + _NAME_UNSAFE.sub("_", key_prefix)


def _log_opened(url: str, key_prefix: str) -> None:
    """Where the backend lives, never the URL itself (it may carry a password)."""
    parts = urlsplit(url)
    log.info(
        "redis.opened",
        host=parts.hostname,
        port=parts.port,
        db=parts.path.lstrip("/") or "0",
        prefix=key_prefix,
    )


@asynccontextmanager
async def open_redis(
    url: str,
    *,
    key_prefix: str,
    consumer_group: str,
    clock: Clock | None = None,
    password: str | CredentialProvider | None = None,
    max_deliveries: int = 5,
    ssl_ca_file: str | None = None,
    unavailable_after: float = DEFAULT_UNAVAILABLE_AFTER,
    stale_consumer_seconds: float = STALE_CONSUMER_SECONDS,
) -> AsyncIterator[RedisBackend]:
    """Open the backend on `redis://` or `rediss://host:port/db`; every call retries a lost connection
    with backoff and raises `StoreUnavailable` after `unavailable_after` seconds. `password` is fixed, or
    a redis-py credential provider asked at every (re)connect (a password file)."""
    if not key_prefix or not consumer_group:
        raise ValueError("key_prefix and consumer_group must not be empty")
    client = connect(url, password=password, ssl_ca_file=ssl_ca_file, client_name=client_name(key_prefix))
    conn = RedisConnection(client=client, prefix=key_prefix, unavailable_after=unavailable_after)
    _log_opened(url, key_prefix)
    try:
        yield RedisBackend(
            conn,
            consumer_group=consumer_group,
            clock=clock or SystemClock(),
            max_deliveries=max_deliveries,
            stale_consumer_seconds=stale_consumer_seconds,
        )
    finally:
        await client.aclose()
        log.info("redis.closed", prefix=key_prefix)
