"""Learned rates in the SQLite file (schema version 5): one row per limiter scope, compare-and-set on seq."""

from __future__ import annotations

import sqlite3
from functools import partial
from typing import Any

import orjson

from exporter.adapters.sqlite_db import SqliteDatabase
from exporter.ports import Clock
from exporter.rate_states import SharedRate

__all__ = ["SqliteRateStates"]

_COLUMNS = "seq, state, reason, saved_at"


def _record(row: tuple[Any, ...]) -> SharedRate:
    seq, state, reason, saved_at = row
    loaded = orjson.loads(state)
    return SharedRate(int(seq), loaded if isinstance(loaded, dict) else {}, str(reason), float(saved_at))


def _select(conn: sqlite3.Connection, *, scope: str) -> SharedRate | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM rate_states WHERE scope = ?", (scope,)).fetchone()  # noqa: S608
    return None if row is None else _record(row)


def _select_all(conn: sqlite3.Connection) -> dict[str, SharedRate]:
    rows = conn.execute(f"SELECT scope, {_COLUMNS} FROM rate_states ORDER BY scope").fetchall()  # noqa: S608
    return {row[0]: _record(row[1:]) for row in rows}


def _save(
    conn: sqlite3.Connection, *, scope: str, body: str, reason: str, expect_seq: int, now: float
) -> tuple[bool, SharedRate]:
    current = _select(conn, scope=scope)
    if (current.seq if current else 0) != expect_seq:
        assert current is not None  # noqa: S101 - seq 0 is "no row", so a mismatch means a row
        return False, current
    conn.execute(
        "INSERT INTO rate_states (scope, seq, state, reason, saved_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (scope) DO UPDATE SET seq = excluded.seq, state = excluded.state, "
        "reason = excluded.reason, saved_at = excluded.saved_at",
        (scope, expect_seq + 1, body, reason, now),
    )
    return True, SharedRate(expect_seq + 1, orjson.loads(body), reason, now)


class SqliteRateStates:
    """`RateStates` on the shared SQLite file (one daemon; restarts start from what it learned)."""

    __slots__ = ("_clock", "_db")

    def __init__(self, db: SqliteDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def load(self, scope: str) -> SharedRate | None:
        return await self._db.read(partial(_select, scope=scope))

    async def save(
        self, scope: str, state: dict[str, Any], reason: str, expect_seq: int
    ) -> tuple[bool, SharedRate]:
        body = orjson.dumps(state).decode()
        operation = partial(
            _save, scope=scope, body=body, reason=reason, expect_seq=expect_seq, now=self._clock.time()
        )
        return await self._db.write(operation)

    async def all(self) -> dict[str, SharedRate]:
        return await self._db.read(_select_all)
