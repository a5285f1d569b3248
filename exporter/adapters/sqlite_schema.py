"""The SQLite file's schema and its migrations, applied in order on open (`PRAGMA user_version`)."""

from __future__ import annotations

import sqlite3
from typing import Final

from exporter.errors import ConfigError

__all__ = ["SCHEMA_VERSION", "migrate"]

SCHEMA_VERSION: Final = 5

# Version 1. Times are seconds since the epoch from the injected Clock. `visible_at` alone decides
# whether a message can be claimed: enqueue time when new, `now + delay` after a nack, `now + lease`
# while claimed (so an expired lease simply makes the message visible again).
_SCHEMA_V1: Final = """
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id    TEXT,
    body        TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    visible_at  REAL NOT NULL,
    deliveries  INTEGER NOT NULL DEFAULT 0,
    handbacks   INTEGER NOT NULL DEFAULT 0,
    consumer    TEXT
);
CREATE INDEX messages_visible ON messages (visible_at, id);
CREATE TABLE accepted_batches (
    batch_id    TEXT PRIMARY KEY,
    accepted_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE dead_letters (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id   TEXT,
    body       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    deliveries INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE batches (
    batch_id           TEXT PRIMARY KEY,
    project_id         TEXT NOT NULL,
    obs_dir            TEXT NOT NULL,
    campaign           TEXT,
    chunk_size         INTEGER NOT NULL,
    state              TEXT NOT NULL,
    duplicates_dropped INTEGER NOT NULL,
    created_at         REAL NOT NULL,
    updated_at         REAL NOT NULL,
    finished_at        REAL,
    jobs               INTEGER NOT NULL,
    chunks             INTEGER NOT NULL,
    verified           INTEGER NOT NULL DEFAULT 0,
    failed             INTEGER NOT NULL DEFAULT 0,
    pending            INTEGER NOT NULL,
    exported           INTEGER NOT NULL DEFAULT 0,
    chunks_verified    INTEGER NOT NULL DEFAULT 0,
    chunks_failed      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX batches_recent ON batches (created_at);
CREATE TABLE chunks (
    batch_id      TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    job_ids       TEXT NOT NULL,
    state         TEXT NOT NULL,
    segments      TEXT NOT NULL DEFAULT '[]',
    attempts      INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    verified_jobs INTEGER NOT NULL DEFAULT 0,
    failed_jobs   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, idx)
);
CREATE INDEX chunks_open ON chunks (batch_id, idx) WHERE state IN ('pending', 'exported');
CREATE TABLE chunk_leases (
    batch_id   TEXT NOT NULL,
    idx        INTEGER NOT NULL,
    owner      TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (batch_id, idx)
) WITHOUT ROWID;
"""
# Version 2: the identity a batch ID was accepted with (a reused ID with other content is refused), the
# error a whole batch failed with, and no more index of open chunks (nothing reads chunks by state).
_SCHEMA_V2: Final = """
ALTER TABLE accepted_batches ADD COLUMN identity TEXT NOT NULL DEFAULT '';
ALTER TABLE batches ADD COLUMN error TEXT;
DROP INDEX chunks_open;
"""
# Version 3: the region a batch runs in, and campaigns (one record each: its identity and its batches).
_SCHEMA_V3: Final = """
ALTER TABLE batches ADD COLUMN region TEXT;
CREATE TABLE campaigns (
    campaign_id TEXT PRIMARY KEY,
    identity    TEXT NOT NULL,
    created_at  REAL NOT NULL,
    body        TEXT NOT NULL
) WITHOUT ROWID;
"""
# Version 4: migrations. Where a batch's jobs are imported (a `Destination`, JSON), each chunk's migration
# step (state and attempts as columns for the compare-and-set, the whole `MigrationStep` as JSON) and the
# target's job names taken before the first import (name -> ID, JSON).
_SCHEMA_V4: Final = """
ALTER TABLE batches ADD COLUMN migration TEXT;
CREATE TABLE migration_steps (
    batch_id TEXT NOT NULL,
    idx      INTEGER NOT NULL,
    state    TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    body     TEXT NOT NULL,
    PRIMARY KEY (batch_id, idx)
) WITHOUT ROWID;
CREATE TABLE migration_snapshots (
    batch_id TEXT PRIMARY KEY,
    names    TEXT NOT NULL
) WITHOUT ROWID;
"""
# Version 5: the rate each DLI endpoint's limiter learned (EXPORTER_RATE_LIMIT=auto), so a restart starts
# from it; `seq` is the compare-and-set, `state` the controller's snapshot (JSON).
_SCHEMA_V5: Final = """
CREATE TABLE rate_states (
    scope    TEXT PRIMARY KEY,
    seq      INTEGER NOT NULL,
    state    TEXT NOT NULL,
    reason   TEXT NOT NULL,
    saved_at REAL NOT NULL
) WITHOUT ROWID;
"""
_MIGRATIONS: Final = {
    1: _SCHEMA_V1,
    2: _SCHEMA_V2,
    3: _SCHEMA_V3,
    4: _SCHEMA_V4,
    5: _SCHEMA_V5,
}  # version -> script that brings version-1 up to it


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION in one IMMEDIATE transaction (safe with two processes racing)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        _check_known(version)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION


def _check_known(version: int) -> None:
    """Refuse a file written by a newer exporter rather than misread it."""
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"the SQLite file has schema version {version}; this exporter knows up to {SCHEMA_VERSION}"
        )
