"""The SQLite ledger's operations and row mapping: plain functions run on the writer thread.

Each operation runs inside the writer's transaction (in a SAVEPOINT of its own), so what one of them reads
and writes is atomic: the compare of a compare-and-set and its write cannot be split by another writer.
Values are serialised on the caller's side of the thread hop (`ChunkUpdate`), so the writer thread does
no pydantic work for a save.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from pydantic import TypeAdapter

from exporter.errors import NotFound
from exporter.models import (
    BatchInfo,
    BatchState,
    ChunkRecord,
    ChunkState,
    ChunkTally,
    Destination,
    ErrorInfo,
    Segment,
    Totals,
)

__all__ = [
    "PAGE_SIZE",
    "ChunkUpdate",
    "chunk_page",
    "claim_chunk",
    "create_batch",
    "error_json",
    "get_batch",
    "list_batches",
    "one_chunk",
    "release_chunk",
    "save_chunk",
    "set_state",
]

PAGE_SIZE: Final = 100  # chunks a read: at 1,000 IDs a chunk (the most) a page is ~10 MB of objects
_SEGMENTS: Final = TypeAdapter(list[Segment])
_CHUNK_COLUMNS: Final = "batch_id, idx, job_ids, state, segments, attempts, error"
_FIXED_COLUMNS: Final = (
    "batch_id, project_id, obs_dir, campaign, chunk_size, state, duplicates_dropped, created_at, "
    "updated_at, finished_at, error, region, migration"
)
_TOTALS_FIELDS: Final = ("jobs", "chunks", *ChunkTally.FIELDS)  # the batch columns share the names
_TOTALS_COLUMNS: Final = ", ".join(_TOTALS_FIELDS)
_BATCH_COLUMNS: Final = f"{_FIXED_COLUMNS}, {_TOTALS_COLUMNS}"
_FIXED_COUNT: Final = len(_FIXED_COLUMNS.split(","))
_ADD_TALLY: Final = ", ".join(f"{name} = {name} + ?" for name in ChunkTally.FIELDS)


@dataclass(frozen=True, slots=True)
class ChunkUpdate:
    """A chunk's new row values and the state/attempts the stored row must still have to take them."""

    batch_id: str
    index: int
    state: str
    segments: str
    attempts: int
    error: str | None
    tally: ChunkTally
    expected_state: str
    expected_attempts: int

    @classmethod
    def of(cls, chunk: ChunkRecord, expected: ChunkRecord) -> ChunkUpdate:
        return cls(
            batch_id=chunk.batch_id,
            index=chunk.index,
            state=chunk.state.value,
            segments=_SEGMENTS.dump_json(chunk.segments).decode(),
            attempts=chunk.attempts,
            error=error_json(chunk.error),
            tally=ChunkTally.of_chunk(chunk),
            expected_state=expected.state.value,
            expected_attempts=expected.attempts,
        )


def error_json(error: ErrorInfo | None) -> str | None:
    return error.model_dump_json() if error else None


def _error_of(text: str | None) -> ErrorInfo | None:
    return ErrorInfo.model_validate_json(text) if text else None


# --- batches ---------------------------------------------------------------------------------------------


def create_batch(conn: sqlite3.Connection, *, info: BatchInfo, chunks: Sequence[Sequence[int]]) -> bool:
    """Insert the batch row (every chunk pending) and its chunk rows; False if the batch exists."""
    cursor = conn.execute(
        f"INSERT INTO batches ({_BATCH_COLUMNS}) "  # noqa: S608 - column names are constants
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, 0, 0, 0) ON CONFLICT DO NOTHING",
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
            error_json(info.error),
            info.region,
            info.migration.model_dump_json() if info.migration else None,
            sum(len(ids) for ids in chunks),
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


def get_batch(conn: sqlite3.Connection, *, batch_id: str) -> BatchInfo | None:
    row = conn.execute(
        f"SELECT {_BATCH_COLUMNS} FROM batches WHERE batch_id = ?",  # noqa: S608 - constant columns
        (batch_id,),
    ).fetchone()
    return None if row is None else _batch_from_row(row)


def list_batches(conn: sqlite3.Connection, *, limit: int) -> list[BatchInfo]:
    rows = conn.execute(
        f"SELECT {_BATCH_COLUMNS} FROM batches "  # noqa: S608 - constant columns
        "ORDER BY created_at DESC, rowid DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [_batch_from_row(row) for row in rows]


def _batch_from_row(row: tuple[Any, ...]) -> BatchInfo:
    batch_id, project_id, obs_dir, campaign, chunk_size, state, dropped, created, updated, finished = row[:10]
    error, region, migration = row[10:_FIXED_COUNT]
    return BatchInfo(
        batch_id=batch_id,
        project_id=project_id,
        obs_dir=obs_dir,
        campaign=campaign,
        region=region,
        migration=Destination.model_validate_json(migration) if migration else None,
        chunk_size=chunk_size,
        state=BatchState(state),
        duplicates_dropped=dropped,
        created_at=created,
        updated_at=updated,
        finished_at=finished,
        error=_error_of(error),
        totals=Totals(**dict(zip(_TOTALS_FIELDS, row[_FIXED_COUNT:], strict=True))),
    )


def set_state(
    conn: sqlite3.Connection, *, batch_id: str, state: BatchState, error: str | None, now: float
) -> None:
    """Set state and error (None clears an older one); a finished state stamps finished_at."""
    finished = now if state.finished else None
    cursor = conn.execute(
        "UPDATE batches SET state = ?, error = ?, updated_at = ?, finished_at = ? WHERE batch_id = ?",
        (state.value, error, now, finished, batch_id),
    )
    if cursor.rowcount == 0:
        raise NotFound(f"no batch {batch_id!r}")


# --- chunks ----------------------------------------------------------------------------------------------


def chunk_page(conn: sqlite3.Connection, *, batch_id: str, after: int) -> list[ChunkRecord]:
    rows = conn.execute(
        f"SELECT {_CHUNK_COLUMNS} FROM chunks "  # noqa: S608 - constant columns
        "WHERE batch_id = ? AND idx > ? ORDER BY idx LIMIT ?",
        (batch_id, after, PAGE_SIZE),
    ).fetchall()
    return [_chunk_from_row(row) for row in rows]


def one_chunk(conn: sqlite3.Connection, *, batch_id: str, index: int) -> ChunkRecord | None:
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
        error=_error_of(error),
    )


def save_chunk(conn: sqlite3.Connection, *, update: ChunkUpdate, now: float) -> bool:
    """Compare-and-set one chunk row and move its batch's counters by the change of its tally.

    True also when the row already holds exactly these values (the same save again changes nothing).
    """
    key = (update.batch_id, update.index)
    old = conn.execute(
        "SELECT state, attempts, segments, error, verified_jobs, failed_jobs FROM chunks "
        "WHERE batch_id = ? AND idx = ?",
        key,
    ).fetchone()
    if old is None:
        raise NotFound(f"batch {update.batch_id!r} has no chunk {update.index}")
    state, attempts, segments, error, verified_jobs, failed_jobs = old
    if (state, attempts, segments, error) == (update.state, update.attempts, update.segments, update.error):
        return True
    if (state, attempts) != (update.expected_state, update.expected_attempts):
        return False
    new = update.tally
    conn.execute(
        "UPDATE chunks SET state = ?, segments = ?, attempts = ?, error = ?, verified_jobs = ?, "
        "failed_jobs = ? WHERE batch_id = ? AND idx = ?",
        (update.state, update.segments, update.attempts, update.error, new.verified, new.failed, *key),
    )
    # A chunk row keeps its job counts (they depend on its segments); its chunk counts follow its state.
    old_tally = replace(ChunkTally.of(ChunkState(state), 0, ()), verified=verified_jobs, failed=failed_jobs)
    conn.execute(
        f"UPDATE batches SET {_ADD_TALLY}, updated_at = ? WHERE batch_id = ?",  # noqa: S608 - constant columns
        (*new.minus(old_tally).values(), now, update.batch_id),
    )
    return True


# --- chunk leases ----------------------------------------------------------------------------------------


def claim_chunk(
    conn: sqlite3.Connection, *, key: tuple[str, int], owner: str, now: float, until: float
) -> bool:
    cursor = conn.execute(
        "INSERT INTO chunk_leases (batch_id, idx, owner, expires_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (batch_id, idx) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
        "WHERE chunk_leases.owner = excluded.owner OR chunk_leases.expires_at <= ?",
        (*key, owner, until, now),
    )
    return cursor.rowcount == 1


def release_chunk(conn: sqlite3.Connection, *, key: tuple[str, int], owner: str) -> None:
    conn.execute("DELETE FROM chunk_leases WHERE batch_id = ? AND idx = ? AND owner = ?", (*key, owner))
