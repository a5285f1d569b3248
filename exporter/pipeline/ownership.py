"""Chunk ownership across replicas: a lease taken before a chunk is worked, renewed while the work runs,
given back on every way out.

Only the holder of a chunk's lease exports or verifies it. The lease is renewed every third of its
time-to-live; when a renewal is refused (another replica holds the chunk) or cannot be confirmed before
the lease would lapse (the store is unreachable), the work is cancelled at once and `LeaseLost` raised,
so two replicas never work one chunk at the same time. The compare-and-set save behind it catches what
a lapse could still let through.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog

from exporter import metrics
from exporter.clock import sleep_unless, stop_loop
from exporter.errors import StoreUnavailable
from exporter.models import ChunkRecord, ChunkState
from exporter.ports import Clock, Ledger

__all__ = ["ChunkOwnership", "LeaseLost"]

log = structlog.get_logger("exporter.pipeline")


class LeaseLost(Exception):
    """Our lease on a chunk ended while we worked it; the work was stopped."""


class ChunkOwnership:
    """Claims, renews and releases chunk leases for one owner; a no-op when ownership is off (SQLite)."""

    __slots__ = ("_clock", "_enabled", "_held", "_ledger", "_owner", "_ttl")

    def __init__(self, ledger: Ledger, clock: Clock, *, owner: str, ttl: float, enabled: bool) -> None:
        self._held: set[tuple[str, int]] = set()
        self._ledger = ledger
        self._clock = clock
        self._owner = owner
        self._ttl = ttl
        self._enabled = enabled

    @property
    def enabled(self) -> bool:
        return self._enabled

    @asynccontextmanager
    async def hold(
        self, chunk: ChunkRecord, *, keep_verified: bool = False
    ) -> AsyncIterator[ChunkRecord | None]:
        """Yield the chunk as stored now while we hold its lease, or None when it is not ours to work.

        The chunk is read again once the lease is ours: the copy we were fed may be stale, because another
        replica can have finished it (and let its lease go) since the feed read it. With `keep_verified`
        (a migration batch) a verified chunk is still worked: its copy and import come after.
        """
        if not self._enabled:
            yield chunk
            return
        key = (chunk.batch_id, chunk.index)
        # The store's lease is per owner, and one process is one owner: a pass and an assist of the same
        # batch in this process would both be granted it. So a chunk held here is never held twice.
        if key in self._held:
            yield None
            return
        self._held.add(key)
        try:
            async with self._leased(chunk, keep_verified) as held:
                yield held
        finally:
            self._held.discard(key)

    @asynccontextmanager
    async def _leased(self, chunk: ChunkRecord, keep_verified: bool) -> AsyncIterator[ChunkRecord | None]:
        """The store's lease on the chunk for the body (None when another owner has it), renewed."""
        if not await self._ledger.claim_chunk(chunk.batch_id, chunk.index, self._owner, self._ttl):
            yield None
            return
        try:
            current = await self._ledger.get_chunk(chunk.batch_id, chunk.index)
            if current is None or (
                current.state.terminal and not (keep_verified and current.state is ChunkState.VERIFIED)
            ):
                yield None
            else:
                async with self._renewed(current):
                    yield current
        finally:
            await asyncio.shield(self._ledger.release_chunk(chunk.batch_id, chunk.index, self._owner))

    @asynccontextmanager
    async def _renewed(self, chunk: ChunkRecord) -> AsyncIterator[None]:
        """Run the body with a renewer beside it; a lost lease cancels the body and raises LeaseLost."""
        stop = asyncio.Event()
        try:
            async with asyncio.timeout(None) as scope:
                renewer = asyncio.create_task(self._renew(chunk, scope, stop), name=f"lease-{chunk.index}")
                try:
                    yield
                finally:
                    await stop_loop(renewer, stop)
        except TimeoutError:
            if scope.expired():
                metrics.labelled(metrics.LEASES_LOST, "chunk").inc()
                raise LeaseLost(f"lease on chunk {chunk.index} of {chunk.batch_id} lost") from None
            raise

    async def _renew(self, chunk: ChunkRecord, scope: asyncio.Timeout, stop: asyncio.Event) -> None:
        interval = self._ttl / 3
        confirmed = self._clock.monotonic()
        while not await sleep_unless(self._clock, interval, stop):
            try:
                held = await self._ledger.claim_chunk(chunk.batch_id, chunk.index, self._owner, self._ttl)
            except StoreUnavailable as error:
                if self._clock.monotonic() + interval < confirmed + self._ttl:
                    log.warning("chunk.lease.renew_failed", chunk=chunk.index, error=str(error))
                    continue
                held = False
            if stop.is_set():
                return
            if not held:
                log.error("chunk.lease.lost", chunk=chunk.index)
                scope.reschedule(asyncio.get_running_loop().time())
                return
            confirmed = self._clock.monotonic()
