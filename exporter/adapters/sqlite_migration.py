"""Migration steps and name snapshots in the SQLite file (schema version 4): one row per step, one per batch.

A step's state and attempts are columns of their own, so the compare of `save_step` reads two columns and
never parses the body (a `MigrationStep` as JSON, up to 1,000 job-map rows). The compare and the write run
in one operation of the writer thread, inside its transaction, so no other writer can come between them.
The tally is counted by SQLite itself (`json_each` over the rows, a page of steps per read), without
building a model per row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Final

import structlog

from exporter.adapters.sqlite_db import SqliteDatabase
from exporter.migration.models import MigrationStep, MigrationTally, StepState

__all__ = ["SqliteMigrations"]

log = structlog.get_logger(__name__)

PAGE_SIZE: Final = 100  # steps a read: at 1,000 rows a step a page is a few MB of objects
_TERMINAL: Final = ", ".join(f"'{state.value}'" for state in StepState if state.terminal)
_PAGE: Final = (  # the steps a tally operation counts: one page, so writes can run between pages
    "WITH page AS (SELECT idx, state, body FROM migration_steps WHERE batch_id = ? AND idx > ? "
    "ORDER BY idx LIMIT ?) "
)
_COUNT_STEPS: Final = (
    f"{_PAGE}SELECT count(*), max(idx), "  # noqa: S608 - the state names are constants of StepState
    f"coalesce(sum(state NOT IN ({_TERMINAL})), 0), "
    f"coalesce(sum(state = '{StepState.CONFIRMED.value}'), 0), "
    f"coalesce(sum(state = '{StepState.FAILED.value}'), 0), "
    f"coalesce(sum(state = '{StepState.IMPORTED.value}'), 0) FROM page"
)
_COUNT_ROWS: Final = (
    f"{_PAGE}SELECT json_extract(row.value, '$.state'), count(*) "  # noqa: S608 - constant text
    "FROM page, json_each(page.body, '$.rows') AS row GROUP BY 1"
)
_ROW_FIELDS: Final = {"imported": "imported", "skipped": "skipped", "failed": "import_failed"}


@dataclass(frozen=True, slots=True)
class _StepWrite:
    """A step serialised on the caller's side of the thread hop, and what the stored row must hold."""

    batch_id: str
    index: int
    state: str
    attempts: int
    body: str
    expected: tuple[str, int] | None  # None: insert only if absent

    @classmethod
    def of(cls, step: MigrationStep, expected: MigrationStep | None) -> _StepWrite:
        return cls(
            batch_id=step.batch_id,
            index=step.index,
            state=step.state.value,
            attempts=step.attempts,
            body=step.model_dump_json(),
            expected=None if expected is None else (expected.state.value, expected.attempts),
        )


def _check_move(step: MigrationStep, expected: MigrationStep | None) -> None:
    """A save backwards or out of a terminal state is a bug of the caller: ValueError, nothing written."""
    if expected is not None and not expected.state.may_move_to(step.state):
        raise ValueError(f"a migration step never moves from {expected.state.value} to {step.state.value}")


class SqliteMigrations:
    """`MigrationLedger` on the shared SQLite file."""

    __slots__ = ("_db",)

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    def __repr__(self) -> str:
        return f"<SqliteMigrations {self._db.path}>"

    async def save_snapshot(self, batch_id: str, names: Mapping[str, int]) -> bool:
        """Insert the batch's snapshot unless it has one (the first write wins)."""
        body = json.dumps(dict(names), separators=(",", ":"))
        return await self._db.write(partial(_insert_snapshot, batch_id=batch_id, names=body))

    async def get_snapshot(self, batch_id: str) -> dict[str, int] | None:
        return await self._db.read(partial(_select_snapshot, batch_id=batch_id))

    async def get_step(self, batch_id: str, index: int) -> MigrationStep | None:
        return await self._db.read(partial(_select_step, batch_id=batch_id, index=index))

    async def save_step(self, step: MigrationStep, expected: MigrationStep | None) -> bool:
        """Compare-and-set on (state, attempts); True also when the very step is stored already (a retry)."""
        _check_move(step, expected)
        saved = await self._db.write(partial(_save_step, write=_StepWrite.of(step, expected)))
        if not saved:
            log.info("migration.step_save_refused", batch_id=step.batch_id, index=step.index)
        return saved

    async def steps(self, batch_id: str) -> AsyncIterator[MigrationStep]:
        """Every step in index order, read a page at a time."""
        after = -1
        while True:
            page = await self._db.read(partial(_step_page, batch_id=batch_id, after=after, limit=PAGE_SIZE))
            for step in page:
                yield step
            if len(page) < PAGE_SIZE:
                return
            after = page[-1].index

    async def tally(self, batch_id: str) -> MigrationTally:
        """Counted by SQLite a page of steps per read: a big batch (a million rows takes about a second)
        never holds the writer thread, and every write waiting on it, for the whole count."""
        total, after = MigrationTally(), -1
        while True:
            page, last = await self._db.read(partial(_tally_page, batch_id=batch_id, after=after))
            total = _add(total, page)
            if page.steps < PAGE_SIZE:
                return total
            after = last


def _insert_snapshot(conn: sqlite3.Connection, *, batch_id: str, names: str) -> bool:
    cursor = conn.execute(
        "INSERT INTO migration_snapshots (batch_id, names) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (batch_id, names),
    )
    return cursor.rowcount == 1


def _select_snapshot(conn: sqlite3.Connection, *, batch_id: str) -> dict[str, int] | None:
    row = conn.execute("SELECT names FROM migration_snapshots WHERE batch_id = ?", (batch_id,)).fetchone()
    return None if row is None else {str(name): int(job_id) for name, job_id in json.loads(row[0]).items()}


def _select_step(conn: sqlite3.Connection, *, batch_id: str, index: int) -> MigrationStep | None:
    row = conn.execute(
        "SELECT body FROM migration_steps WHERE batch_id = ? AND idx = ?", (batch_id, index)
    ).fetchone()
    return None if row is None else MigrationStep.model_validate_json(row[0])


def _step_page(conn: sqlite3.Connection, *, batch_id: str, after: int, limit: int) -> list[MigrationStep]:
    rows = conn.execute(
        "SELECT body FROM migration_steps WHERE batch_id = ? AND idx > ? ORDER BY idx LIMIT ?",
        (batch_id, after, limit),
    ).fetchall()
    return [MigrationStep.model_validate_json(row[0]) for row in rows]


def _save_step(conn: sqlite3.Connection, *, write: _StepWrite) -> bool:
    """Insert if absent (`expected` None) or update if the row still holds the expected state and attempts."""
    key = (write.batch_id, write.index)
    stored = conn.execute(
        "SELECT state, attempts, body FROM migration_steps WHERE batch_id = ? AND idx = ?", key
    ).fetchone()
    if stored is not None and stored[2] == write.body:
        return True  # the same save again: its first answer may have been lost
    current = None if stored is None else (stored[0], stored[1])
    if current != write.expected:
        return False
    conn.execute(
        "INSERT INTO migration_steps (batch_id, idx, state, attempts, body) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (batch_id, idx) DO UPDATE SET state = excluded.state, attempts = excluded.attempts, "
        "body = excluded.body",
        (*key, write.state, write.attempts, write.body),
    )
    return True


def _tally_page(conn: sqlite3.Connection, *, batch_id: str, after: int) -> tuple[MigrationTally, int]:
    """The counts of the page of steps after index `after`, and the last index it holds."""
    page = (batch_id, after, PAGE_SIZE)
    steps, last, open_, confirmed, failed, imported_steps = conn.execute(_COUNT_STEPS, page).fetchone()
    rows = {
        _ROW_FIELDS[state]: count for state, count in conn.execute(_COUNT_ROWS, page) if state in _ROW_FIELDS
    }
    tally = MigrationTally(
        steps=steps, open=open_, confirmed=confirmed, failed=failed, imported_steps=imported_steps, **rows
    )
    return tally, after if last is None else last


def _add(total: MigrationTally, more: MigrationTally) -> MigrationTally:
    return MigrationTally(
        **{name: getattr(total, name) + getattr(more, name) for name in MigrationTally.FIELDS}
    )
