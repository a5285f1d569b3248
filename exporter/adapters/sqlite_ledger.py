"""The ledger on SQLite: a row per batch with running totals, a row per chunk, a row per chunk lease.

A batch may hold a million job IDs, so nothing here scans a batch to answer a question: `save_chunk`
adjusts the batch's counters by the difference between the chunk's old and new tallies in the same
operation, which keeps `get_batch` O(1) and its totals always consistent with the chunk rows.
Job IDs are stored as compact JSON (readable with the sqlite3 shell when someone needs to look).
The SQL itself lives in `sqlite_ledger_ops`; this class serialises arguments and hands the operations to
the writer thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from functools import partial

import structlog

from exporter.adapters import sqlite_ledger_ops as ops
from exporter.adapters.sqlite_db import SqliteDatabase
from exporter.clock import SystemClock
from exporter.models import BatchInfo, BatchState, ChunkRecord, ErrorInfo, check_transition
from exporter.ports import Clock

__all__ = ["SqliteLedger"]

log = structlog.get_logger(__name__)


class SqliteLedger:
    """`Ledger` on the shared SQLite file; times come from the injected clock."""

    __slots__ = ("_clock", "_db")

    def __init__(self, db: SqliteDatabase, clock: Clock | None = None) -> None:
        self._db = db
        self._clock: Clock = clock or SystemClock()

    def __repr__(self) -> str:
        return f"<SqliteLedger {self._db.path}>"

    async def create_batch(self, info: BatchInfo, chunks: Sequence[Sequence[int]]) -> bool:
        """Record a batch and its planned chunks in one transaction; False if the batch exists already."""
        created = await self._db.write(partial(ops.create_batch, info=info, chunks=chunks))
        log.info("ledger.batch_created", batch_id=info.batch_id, chunks=len(chunks), created=created)
        return created

    async def get_batch(self, batch_id: str) -> BatchInfo | None:
        """The batch with its totals (kept up to date by every save, so this reads one row)."""
        return await self._db.read(partial(ops.get_batch, batch_id=batch_id))

    async def save_chunk(self, chunk: ChunkRecord, expected: ChunkRecord) -> bool:
        """Compare-and-set in one operation of the writer thread; returns once committed (grouped with
        other saves). The chunk's job IDs are fixed when the batch is created and are not rewritten."""
        check_transition(expected.state, chunk.state)
        update = ops.ChunkUpdate.of(chunk, expected)
        saved = await self._db.write(partial(ops.save_chunk, update=update, now=self._clock.time()))
        if not saved:
            log.info("ledger.chunk_save_refused", batch_id=chunk.batch_id, index=chunk.index)
        return saved

    async def get_chunk(self, batch_id: str, index: int) -> ChunkRecord | None:
        """One chunk as stored now, or None."""
        return await self._db.read(partial(ops.one_chunk, batch_id=batch_id, index=index))

    async def chunks(self, batch_id: str) -> AsyncIterator[ChunkRecord]:
        """Every chunk in index order, read a page at a time."""
        after = -1
        while True:
            page = await self._db.read(partial(ops.chunk_page, batch_id=batch_id, after=after))
            for chunk in page:
                yield chunk
            if len(page) < ops.PAGE_SIZE:
                return
            after = page[-1].index

    async def set_batch_state(self, batch_id: str, state: BatchState, error: ErrorInfo | None = None) -> None:
        """Mark the batch's state and error; finished states stamp `finished_at`. NotFound if unknown."""
        operation = partial(
            ops.set_state, batch_id=batch_id, state=state, error=ops.error_json(error), now=self._clock.time()
        )
        await self._db.write(operation)
        log.info("ledger.batch_state", batch_id=batch_id, state=state.value)

    async def claim_chunk(self, batch_id: str, index: int, owner: str, ttl_seconds: float) -> bool:
        """Own a chunk until `ttl_seconds` from now; True also when `owner` already holds it (renewal)."""
        now = self._clock.time()
        return await self._db.write(
            partial(ops.claim_chunk, key=(batch_id, index), owner=owner, now=now, until=now + ttl_seconds)
        )

    async def release_chunk(self, batch_id: str, index: int, owner: str) -> None:
        """Give the chunk up, only if `owner` holds it."""
        await self._db.write(partial(ops.release_chunk, key=(batch_id, index), owner=owner))

    async def list_batches(self, limit: int = 100) -> list[BatchInfo]:
        """The most recent batches, newest first."""
        return await self._db.read(partial(ops.list_batches, limit=max(0, limit)))
