"""One `backend` fixture, parametrized over every queue/ledger backend, so each passes the same contract.

Time is a manual clock handed to the backend. SQLite takes every time from it, so its tests move time
by hand and never wait. The Redis backend keeps lease deadlines on the server's clock,
which a manual clock cannot move; for it `Contract.elapse` also waits for real, and durations are short
(`Contract.short`, half a second), so those waits stay bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import pytest
from support import free_port

from exporter.adapters.redis import open_redis
from exporter.adapters.sqlite import open_sqlite
from exporter.ports import BatchQueue, Ledger

REDIS_URL = "redis://127.0.0.1:6379/15"


class ManualClock:
    """A `Clock` that moves only when told; starts at the real wall time so server-side clocks agree."""

    __slots__ = ("_monotonic", "_wall")

    def __init__(self, start: float | None = None) -> None:
        self._wall = time.time() if start is None else start
        self._monotonic = 1_000.0

    def __repr__(self) -> str:
        return f"<ManualClock time={self._wall:.3f}>"

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._monotonic

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self._wall += max(0.0, seconds)
        self._monotonic += max(0.0, seconds)


@dataclass
class Contract:
    """What a contract test gets: the backend's queue and ledger, its clock, and a way to open a peer."""

    name: str
    queue: BatchQueue
    ledger: Ledger
    clock: ManualClock
    short: float  # a lease or delay long enough to hold during a few calls, short enough to wait out
    real_time: bool  # the backend may read the server's clock: elapse() must also really wait
    open_peer: Callable[[], AbstractAsyncContextManager[Any]]  # a second handle on the same store
    # a handle whose store cannot be reached (closed, or nothing listening): its calls raise StoreUnavailable
    open_unreachable: Callable[[], AbstractAsyncContextManager[Any]] | None = None
    campaigns: Any = None  # the backend's CampaignStore (the fakes have none)
    migrations: Any = None  # the backend's MigrationLedger (the fakes' is FakeMigrationLedger)
    rates: Any = None  # the backend's RateStates (learned rates)

    async def elapse(self, seconds: float) -> None:
        """Let `seconds` pass for the backend (manual clock, plus a real wait when it reads its own)."""
        self.clock.advance(seconds)
        if self.real_time:
            await asyncio.sleep(seconds)


@asynccontextmanager
async def _sqlite(path: Path, clock: ManualClock) -> AsyncIterator[Contract]:
    @asynccontextmanager
    async def peer() -> AsyncIterator[Any]:
        async with open_sqlite(path, clock=clock) as other:
            yield other

    @asynccontextmanager
    async def closed() -> AsyncIterator[Any]:
        async with open_sqlite(path, clock=clock) as other:
            pass
        yield other  # closed when its block ended: nothing it holds can reach the file any more

    async with open_sqlite(path, clock=clock) as backend:
        yield Contract(
            "sqlite",
            backend.queue,
            backend.ledger,
            clock,
            30.0,
            False,
            peer,
            closed,
            backend.campaigns,
            backend.migrations,
            backend.rates,
        )


async def _delete_keys(prefix: str) -> None:
    """Remove every key under the prefix, for backends without `purge()`."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@asynccontextmanager
async def _redis(clock: ManualClock) -> AsyncIterator[Contract]:
    prefix = f"test-{uuid4().hex[:8]}"

    def connect() -> AbstractAsyncContextManager[Any]:
        opened: AbstractAsyncContextManager[Any] = open_redis(
            url=REDIS_URL, key_prefix=prefix, consumer_group="test", clock=clock
        )
        return opened

    def unreachable() -> AbstractAsyncContextManager[Any]:
        opened: AbstractAsyncContextManager[Any] = open_redis(
            url=f"redis://127.0.0.1:{free_port()}/15",  # nothing listens there
            key_prefix=prefix,
            consumer_group="test",
            clock=clock,
            unavailable_after=0.3,
        )
        return opened

    try:
        async with connect() as backend:
            try:
                yield Contract(
                    "redis",
                    backend.queue,
                    backend.ledger,
                    clock,
                    0.5,
                    True,
                    connect,
                    unreachable,
                    backend.campaigns,
                    backend.migrations,
                    backend.rates,
                )
            finally:
                await backend.purge()
    finally:
        await _delete_keys(prefix)


@asynccontextmanager
async def _fakes(clock: ManualClock) -> AsyncIterator[Contract]:
    """The unit tests' in-memory fakes; only their ledgers are held to the contract (`ledger_backend`)."""
    from fakes import FakeLedger, FakeMigrationLedger, FakeQueue
    from fakes import ManualClock as FakeClock

    stores = SimpleNamespace(
        queue=FakeQueue(FakeClock()), ledger=FakeLedger(clock), migrations=FakeMigrationLedger()
    )

    @asynccontextmanager
    async def peer() -> AsyncIterator[Any]:
        yield stores

    yield Contract(
        "fake", stores.queue, stores.ledger, clock, 30.0, False, peer, migrations=stores.migrations
    )


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Contract]:
    """Each contract test runs once per backend, with the same observable behaviour expected."""
    clock = ManualClock()
    opened = _sqlite(tmp_path / "exporter.db", clock) if request.param == "sqlite" else _redis(clock)
    async with opened as contract:
        yield contract


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis), "fake"])
async def ledger_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Contract]:
    """The ledger contracts run on the fakes too (FakeLedger, FakeMigrationLedger): the unit tests of the
    pipeline rely on them keeping them."""
    clock = ManualClock()
    openers = {
        "sqlite": lambda: _sqlite(tmp_path / "exporter.db", clock),
        "redis": lambda: _redis(clock),
        "fake": lambda: _fakes(clock),
    }
    async with openers[request.param]() as contract:
        yield contract
