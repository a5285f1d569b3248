"""The ledger on SQLite: a row per batch with running totals, a row per chunk, a row per chunk lease.

A batch may hold a million job IDs, so nothing here scans a batch to answer a question: `save_chunk`
adjusts the batch's counters by the difference between the chunk's old and new tallies in the same
transaction, which keeps `get_batch` O(1) and its totals always consistent with the chunk rows.
Job IDs are stored as compact JSON (readable with the sqlite3 shell when someone needs to look).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Final

import structlog
from pydantic import TypeAdapter

from exporter.adapters.sqlite_db import SqliteDatabase
from exporter.clock import SystemClock
from exporter.models import BatchInfo, BatchState, ChunkRecord, ChunkState, ErrorInfo, Segment, Totals
from exporter.ports import Clock

__all__ = ["PAGE_SIZE", "ChunkTally", "SqliteLedger", "tally"]

log = structlog.get_logger(__name__)

PAGE_SIZE: Final = 100  # chunks a read: at 1,000 IDs a chunk (the most) a page is ~10 MB of objects
_SEGMENTS: Final = TypeAdapter(list[Segment])
_FINISHED: Final = {BatchState.COMPLETED, BatchState.COMPLETED_WITH_FAILURES}
_CHUNK_COLUMNS: Final = "batch_id, idx, job_ids, state, segments, attempts, error"
_BATCH_COLUMNS: Final = (
    "batch_id, project_id, obs_dir, campaign, chunk_size, state, duplicates_dropped, created_at, "
    "updated_at, finished_at, jobs, chunks, verified, failed, pending, exported, chunks_verified, "
    "chunks_failed"
)


@dataclass(frozen=True, slots=True)
class ChunkTally:
    """What one chunk adds to its batch's totals."""

    verified_jobs: int = 0
    failed_jobs: int = 0
    pending: int = 0
    exported: int = 0
    chunks_verified: int = 0
    chunks_failed: int = 0

    def minus(self, other: ChunkTally) -> ChunkTally:
        """The change in the batch's totals when a chunk goes from `other` to `self`."""
        return ChunkTally(
            self.verified_jobs - other.verified_jobs,
            self.failed_jobs - other.failed_jobs,
            self.pending - other.pending,
            self.exported - other.exported,
            self.chunks_verified - other.chunks_verified,
            self.chunks_failed - other.chunks_failed,
        )


def tally(state: ChunkState, job_count: int, segments: Sequence[Segment]) -> ChunkTally:
    """A chunk's contribution to the totals, counted like the report's rows.

    Job counts follow the segments when the chunk was split (each segment has its own outcome), else
    the chunk's own state; chunk counts always follow the chunk's state.
    """
    if len(segments) > 1:
        verified = sum(len(s.job_ids) for s in segments if s.state is ChunkState.VERIFIED)
        failed = sum(len(s.job_ids) for s in segments if s.state is ChunkState.FAILED)
    else:
        verified = job_count if state is ChunkState.VERIFIED else 0
        failed = job_count if state is ChunkState.FAILED else 0
    return ChunkTally(
        verified_jobs=verified,
        failed_jobs=failed,
        pending=int(state is ChunkState.PENDING),
        exported=int(state is ChunkState.EXPORTED),
        chunks_verified=int(state is ChunkState.VERIFIED),
        chunks_failed=int(state is ChunkState.FAILED),
    )


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
        created = await self._db.write(partial(_create_batch, info=info, chunks=chunks))
        log.info("ledger.batch_created", batch_id=info.batch_id, chunks=len(chunks), created=created)
        return created

    async def get_batch(self, batch_id: str) -> BatchInfo | None:
        """The batch with its totals (kept up to date by every save, so this reads one row)."""
        return await self._db.read(partial(_get_batch, batch_id=batch_id))

    async def open_chunks(self, batch_id: str) -> list[ChunkRecord]:
        """Chunks still pending or exported, in index order."""
        return await self._db.read(partial(_open_chunks, batch_id=batch_id))

    async def save_chunk(self, chunk: ChunkRecord) -> None:
        """Persist state, segments, attempts and error; returns once committed (grouped with other saves).

        The chunk's job IDs are fixed when the batch is created and are not rewritten; KeyError when
        the batch has no such chunk.
        """
        row = _ChunkUpdate.of(chunk)
        await self._db.write(partial(_save_chunk, update=row, now=self._clock.time()))

    async def get_chunk(self, batch_id: str, index: int) -> ChunkRecord | None:
        """One chunk as stored now, or None."""
        return await self._db.read(partial(_one_chunk, batch_id=batch_id, index=index))

    async def chunks(self, batch_id: str) -> AsyncIterator[ChunkRecord]:
        """Every chunk in index order, read PAGE_SIZE at a time."""
        after = -1
        while True:
            page = await self._db.read(partial(_chunk_page, batch_id=batch_id, after=after))
            for chunk in page:
                yield chunk
            if len(page) < PAGE_SIZE:
                return
            after = page[-1].index

    async def set_batch_state(self, batch_id: str, state: BatchState) -> None:
        """Mark the batch's state; finishing states stamp `finished_at`. KeyError for an unknown batch."""
        await self._db.write(partial(_set_state, batch_id=batch_id, state=state, now=self._clock.time()))
        log.info("ledger.batch_state", batch_id=batch_id, state=state.value)

    async def claim_chunk(self, batch_id: str, index: int, owner: str, ttl_seconds: float) -> bool:
        """Own a chunk until `ttl_seconds` from now; True also when `owner` already holds it (renewal)."""
        now = self._clock.time()
        return await self._db.write(
            partial(_claim_chunk, key=(batch_id, index), owner=owner, now=now, until=now + ttl_seconds)
        )

    async def release_chunk(self, batch_id: str, index: int, owner: str) -> None:
        """Give the chunk up, only if `owner` holds it."""
        await self._db.write(partial(_release_chunk, key=(batch_id, index), owner=owner))

    async def list_batches(self, limit: int = 100) -> list[BatchInfo]:
        """The most recent batches, newest first."""
        return await self._db.read(partial(_list_batches, limit=max(0, limit)))


@dataclass(frozen=True, slots=True)
class _ChunkUpdate:
    """A chunk's new row values, serialised on the caller's side of the thread hop."""

    batch_id: str
    index: int
    state: str
    segments: str
    attempts: int
    error: str | None
    tally: ChunkTally

    @classmethod
    def of(cls, chunk: ChunkRecord) -> _ChunkUpdate:
        return cls(
            batch_id=chunk.batch_id,
            index=chunk.index,
            state=chunk.state.value,
            segments=_SEGMENTS.dump_json(chunk.segments).decode(),
            attempts=chunk.attempts,
            error=chunk.error.model_dump_json() if chunk.error else None,
            tally=tally(chunk.state, len(chunk.job_ids), chunk.segments),
        )


# --- operations (run on the writer thread, inside its transaction) -------------------------------------


def _create_batch(conn: sqlite3.Connection, *, info: BatchInfo, chunks: Sequence[Sequence[int]]) -> bool:
    jobs = sum(len(ids) for ids in chunks)
    cursor = conn.execute(
        f"INSERT INTO batches ({_BATCH_COLUMNS}) "  # noqa: S608 - column names are constants
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, 0, 0, 0) ON CONFLICT DO NOTHING",
        (
            info.batch_id,
            info.project_id,
            info.obs_dir,
            info.campaign,
            info.chunk_size,
            info.state.value,
            info.duplicates_dropped,
            info.created_at,
            info.updated_at,
            info.finished_at,
            jobs,
            len(chunks),
            len(chunks),
        ),
    )
    if cursor.rowcount == 0:
        return False
    conn.executemany(
        "INSERT INTO chunks (batch_id, idx, job_ids, state) VALUES (?, ?, ?, 'pending')",
        _chunk_rows(info.batch_id, chunks),
    )
    return True


def _chunk_rows(batch_id: str, chunks: Sequence[Sequence[int]]) -> Iterator[tuple[str, int, str]]:
    for index, job_ids in enumerate(chunks):
        yield batch_id, index, json.dumps(list(job_ids), separators=(",", ":"))


def _get_batch(conn: sqlite3.Connection, *, batch_id: str) -> BatchInfo | None:
    row = conn.execute(
        f"SELECT {_BATCH_COLUMNS} FROM batches WHERE batch_id = ?",  # noqa: S608 - constant columns
        (batch_id,),
    ).fetchone()
    return None if row is None else _batch_from_row(row)


def _list_batches(conn: sqlite3.Connection, *, limit: int) -> list[BatchInfo]:
    rows = conn.execute(
        f"SELECT {_BATCH_COLUMNS} FROM batches "  # noqa: S608 - constant columns
        "ORDER BY created_at DESC, rowid DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [_batch_from_row(row) for row in rows]


def _batch_from_row(row: tuple[Any, ...]) -> BatchInfo:
    (batch_id, project_id, obs_dir, campaign, chunk_size, state, dropped, created, updated, finished) = row[
        :10
    ]
    jobs, chunks, verified, failed, pending, exported, chunks_verified, chunks_failed = row[10:]
    return BatchInfo(
        batch_id=batch_id,
        project_id=project_id,
        obs_dir=obs_dir,
        campaign=campaign,
        chunk_size=chunk_size,
        state=BatchState(state),
        duplicates_dropped=dropped,
        created_at=created,
        updated_at=updated,
        finished_at=finished,
        totals=Totals(
            jobs=jobs,
            chunks=chunks,
            verified=verified,
            failed=failed,
            pending=pending,
            exported=exported,
            chunks_verified=chunks_verified,
            chunks_failed=chunks_failed,
        ),
    )


def _open_chunks(conn: sqlite3.Connection, *, batch_id: str) -> list[ChunkRecord]:
    rows = conn.execute(
        f"SELECT {_CHUNK_COLUMNS} FROM chunks "  # noqa: S608 - constant columns
        "WHERE batch_id = ? AND state IN ('pending', 'exported') ORDER BY idx",
        (batch_id,),
    ).fetchall()
    return [_chunk_from_row(row) for row in rows]


def _chunk_page(conn: sqlite3.Connection, *, batch_id: str, after: int) -> list[ChunkRecord]:
    rows = conn.execute(
        f"SELECT {_CHUNK_COLUMNS} FROM chunks "  # noqa: S608 - constant columns
        "WHERE batch_id = ? AND idx > ? ORDER BY idx LIMIT ?",
        (batch_id, after, PAGE_SIZE),
    ).fetchall()
    return [_chunk_from_row(row) for row in rows]


def _one_chunk(conn: sqlite3.Connection, *, batch_id: str, index: int) -> ChunkRecord | None:
    row = conn.execute(
        f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE batch_id = ? AND idx = ?",  # noqa: S608 - constant columns
        (batch_id, index),
    ).fetchone()
    return None if row is None else _chunk_from_row(row)


def _chunk_from_row(row: tuple[Any, ...]) -> ChunkRecord:
    batch_id, index, job_ids, state, segments, attempts, error = row
    return ChunkRecord(
        batch_id=batch_id,
        index=index,
        job_ids=json.loads(job_ids),
        state=ChunkState(state),
        segments=_SEGMENTS.validate_json(segments),
        attempts=attempts,
        error=ErrorInfo.model_validate_json(error) if error else None,
    )


def _save_chunk(conn: sqlite3.Connection, *, update: _ChunkUpdate, now: float) -> None:
    key = (update.batch_id, update.index)
    old = conn.execute(
        "SELECT state, verified_jobs, failed_jobs FROM chunks WHERE batch_id = ? AND idx = ?", key
    ).fetchone()
    if old is None:
        raise KeyError(f"batch {update.batch_id!r} has no chunk {update.index}")
    old_state, old_verified, old_failed = old
    conn.execute(
        "UPDATE chunks SET state = ?, segments = ?, attempts = ?, error = ?, verified_jobs = ?, "
        "failed_jobs = ? WHERE batch_id = ? AND idx = ?",
        (
            update.state,
            update.segments,
            update.attempts,
            update.error,
            update.tally.verified_jobs,
            update.tally.failed_jobs,
            *key,
        ),
    )
    before = replace(tally(ChunkState(old_state), 0, ()), verified_jobs=old_verified, failed_jobs=old_failed)
    delta = update.tally.minus(before)
    conn.execute(
        "UPDATE batches SET verified = verified + ?, failed = failed + ?, pending = pending + ?, "
        "exported = exported + ?, chunks_verified = chunks_verified + ?, chunks_failed = chunks_failed + ?, "
        "updated_at = ? WHERE batch_id = ?",
        (
            delta.verified_jobs,
            delta.failed_jobs,
            delta.pending,
            delta.exported,
            delta.chunks_verified,
            delta.chunks_failed,
            now,
            update.batch_id,
        ),
    )


def _set_state(conn: sqlite3.Connection, *, batch_id: str, state: BatchState, now: float) -> None:
    finished = now if state in _FINISHED else None
    cursor = conn.execute(
        "UPDATE batches SET state = ?, updated_at = ?, finished_at = ? WHERE batch_id = ?",
        (state.value, now, finished, batch_id),
    )
    if cursor.rowcount == 0:
        raise KeyError(f"no batch {batch_id!r}")


def _claim_chunk(
    conn: sqlite3.Connection, *, key: tuple[str, int], owner: str, now: float, until: float
) -> bool:
    cursor = conn.execute(
        "INSERT INTO chunk_leases (batch_id, idx, owner, expires_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (batch_id, idx) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
        "WHERE chunk_leases.owner = excluded.owner OR chunk_leases.expires_at <= ?",
        (*key, owner, until, now),
    )
    return cursor.rowcount == 1


def _release_chunk(conn: sqlite3.Connection, *, key: tuple[str, int], owner: str) -> None:
    conn.execute("DELETE FROM chunk_leases WHERE batch_id = ? AND idx = ? AND owner = ?", (*key, owner))
