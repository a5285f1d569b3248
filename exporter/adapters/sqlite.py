"""The embedded backend: queue and ledger in one SQLite file (WAL), opened from `sqlite:///...` URLs.

The composition root calls `open_sqlite(sqlite_path_from_url(settings.queue_url))` and hands
`backend.queue` and `backend.ledger` to the worker; several processes may open the same file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from exporter.adapters.sqlite_campaigns import SqliteCampaigns
from exporter.adapters.sqlite_db import BUSY_TIMEOUT, SqliteDatabase
from exporter.adapters.sqlite_ledger import SqliteLedger
from exporter.adapters.sqlite_migration import SqliteMigrations
from exporter.adapters.sqlite_queue import SqliteQueue
from exporter.adapters.sqlite_rates import SqliteRateStates
from exporter.clock import SystemClock
from exporter.ports import Clock

__all__ = ["SqliteBackend", "open_sqlite", "sqlite_path_from_url"]


@dataclass(frozen=True, slots=True)
class SqliteBackend:
    """The queue, the ledger, the campaign records, the migration steps and
    the learned rates sharing one file and one writer
    thread."""

    queue: SqliteQueue
    ledger: SqliteLedger
    campaigns: SqliteCampaigns
    migrations: SqliteMigrations
    rates: SqliteRateStates
    database: SqliteDatabase

    @property
    def path(self) -> Path:
        return self.database.path


def sqlite_path_from_url(url: str) -> Path:
    """`sqlite:///./x.db` → `./x.db`, `sqlite:////abs/x.db` → `/abs/x.db`; ValueError for anything else.

    In-memory databases are refused: the queue and the ledger exist to survive a crash.
    """
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ValueError(f"not a sqlite:/// URL: {url!r}")
    if parts.netloc or not parts.path.startswith("/"):
        raise ValueError(f"a SQLite URL has three slashes then the file path: {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"a SQLite URL takes no query or fragment: {url!r}")
    path = unquote(parts.path[1:])
    if not path or path.endswith("/"):
        raise ValueError(f"the SQLite URL names no file: {url!r}")
    if path == ":memory:" or path.startswith("file:"):
        raise ValueError("an in-memory SQLite database would lose every batch on exit; name a file")
    return Path(path)


@asynccontextmanager
async def open_sqlite(
    path: str | Path, *, clock: Clock | None = None, busy_timeout: float = BUSY_TIMEOUT
) -> AsyncIterator[SqliteBackend]:
    """Open (creating and migrating if needed) the file; closes it after finishing queued writes.

    `busy_timeout` is how long a write waits for another process holding the file's write lock before
    the operation fails with `StoreUnavailable`.
    """
    database = SqliteDatabase(Path(path), busy_timeout=busy_timeout)
    await database.open()
    try:
        yield SqliteBackend(
            queue=SqliteQueue(database, clock),
            ledger=SqliteLedger(database, clock),
            campaigns=SqliteCampaigns(database),
            migrations=SqliteMigrations(database),
            rates=SqliteRateStates(database, clock or SystemClock()),
            database=database,
        )
    finally:
        await database.close()
