"""One SQLite file, one writer thread, group commit: the engine under the SQLite queue and ledger.

sqlite3 blocks, so every statement runs on a dedicated thread that owns the only connection; the event
loop just waits on a future. Operations are plain functions `(connection) -> result`. While the thread
commits one transaction, new operations pile up in its inbox; it then runs all of them in the next
single transaction (each inside its own SAVEPOINT, so one operation's failure cannot undo its
neighbours) and answers every caller only after COMMIT. Many concurrent `save_chunk` calls therefore cost
one commit, yet each caller returns only once its own write is committed.

An operation that meets a `sqlite3.Error` (a full disk while it grows the file, say) is undone alone and
its caller alone gets `StoreUnavailable`; if SQLite had to abandon the whole transaction, the operations
that had not failed run again in a new one. Only a failure of BEGIN or COMMIT itself (I/O error, a lock
held by another process past `busy_timeout`) fails every caller of the group. Nothing raw escapes.
The transaction and savepoint mechanics live in `sqlite_group`; this module owns the thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import structlog

from exporter.adapters.sqlite_group import Operation, Request, run_group_transaction, settle_all
from exporter.adapters.sqlite_schema import SCHEMA_VERSION, migrate
from exporter.errors import StoreUnavailable

__all__ = ["BUSY_TIMEOUT", "SCHEMA_VERSION", "SqliteDatabase", "Stats", "unavailable"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT: Final = 10.0  # seconds to wait for another process holding the write lock
MAX_GROUP: Final = 1_000  # operations per transaction; bounds how long one commit keeps callers waiting


class _Stop:
    """Sentinel that tells the writer thread to finish the inbox and close."""


_STOP: Final = _Stop()


@dataclass(slots=True)
class Stats:
    """Counters that show group commit at work (tests and benchmarks read them); written by one thread."""

    transactions: int = 0
    operations: int = 0
    failed_transactions: int = 0  # BEGIN or COMMIT failed: every caller of the group got the error
    failed_operations: int = 0  # callers answered StoreUnavailable, alone or with their whole group
    largest_group: int = 0


def unavailable(path: Path, exc: BaseException) -> StoreUnavailable:
    """The error callers see for any SQLite failure: which file, and SQLite's own words."""
    error = StoreUnavailable(f"SQLite store {path} is unavailable: {exc}")
    error.__cause__ = exc
    return error


class SqliteDatabase:
    """The writer thread and its connection; `read`/`write` run an operation there and await it."""

    __slots__ = ("_busy_timeout", "_closed", "_inbox", "_opened", "_outbox", "_thread", "path", "stats")

    def __init__(self, path: Path, *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self.stats = Stats()
        self._inbox: queue.SimpleQueue[list[Request[Any]] | _Stop] = queue.SimpleQueue()
        # Requests of the current event-loop turn, handed to the thread together: one wake-up of the
        # writer per turn instead of one per save (the overhead benchmark saw ~30 us per put).
        self._outbox: list[Request[Any]] = []
        self._opened: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._closed = True
        self._thread = threading.Thread(target=self._serve, name=f"sqlite-writer:{path.name}", daemon=True)

    def __repr__(self) -> str:
        return (
            f"<SqliteDatabase {self.path} closed={self._closed} transactions={self.stats.transactions} "
            f"operations={self.stats.operations} backlog={self.backlog}>"
        )

    @property
    def backlog(self) -> int:
        """Operations waiting for the writer thread (not counting the transaction running now)."""
        return self._inbox.qsize() + len(self._outbox)

    async def open(self) -> None:
        """Start the thread, which connects, sets pragmas and migrates; raises if the file is unusable."""
        self._closed = False
        self._thread.start()
        try:
            version = await asyncio.wrap_future(self._opened)
        except BaseException:
            await self.close()
            raise
        log.info("sqlite.opened", path=str(self.path), schema_version=version)

    async def close(self) -> None:
        """Finish every queued operation, close the connection and join the thread."""
        if self._closed:
            return
        self._closed = True
        self._hand_over()
        self._inbox.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        log.info("sqlite.closed", path=str(self.path), transactions=self.stats.transactions)

    async def read(self, operation: Operation[T]) -> T:
        """Run a read-only operation on the writer thread (a deferred transaction, no write lock)."""
        return await self._submit(operation, write=False)

    async def write(self, operation: Operation[T]) -> T:
        """Run an operation in the next group transaction; return once that transaction is committed."""
        return await self._submit(operation, write=True)

    async def _submit(self, operation: Operation[T], *, write: bool) -> T:
        if self._closed or not self._thread.is_alive():
            raise StoreUnavailable(f"SQLite store {self.path} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._outbox:
            loop.call_soon(self._hand_over)
        self._outbox.append(Request(operation=operation, write=write, loop=loop, future=future))
        return await future

    def _hand_over(self) -> None:
        """Give the thread everything submitted during this loop turn, in one put."""
        if self._outbox:
            requests, self._outbox = self._outbox, []
            self._inbox.put(requests)

    # --- writer thread ---------------------------------------------------------------------------------

    def _serve(self) -> None:
        """Thread body: connect, then run whatever is queued as one transaction, until told to stop."""
        try:
            conn = self._connect()
        except BaseException as exc:  # noqa: BLE001 - open() awaits this and re-raises it
            self._opened.set_exception(exc)
            self._fail_leftovers()
            return
        self._opened.set_result(SCHEMA_VERSION)
        try:
            stopping = False
            while not stopping:
                group, stopping = self._next_group()
                if group:
                    self._run_group(conn, group)
        finally:
            self._fail_leftovers()
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        """Open the file in WAL mode and migrate it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise unavailable(self.path, exc) from exc
        try:
            _prepare(conn, self._busy_timeout)
        except sqlite3.Error as exc:
            conn.close()
            raise unavailable(self.path, exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _next_group(self) -> tuple[list[Request[Any]], bool]:
        """Block for one request, then take every request already waiting (up to MAX_GROUP)."""
        group: list[Request[Any]] = []
        item = self._inbox.get()
        while not isinstance(item, _Stop):
            group.extend(item)
            if len(group) >= MAX_GROUP:
                return group, False
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return group, False
        return group, True

    def _run_group(self, conn: sqlite3.Connection, group: list[Request[Any]]) -> None:
        """One transaction for the whole group; answers go out only after COMMIT (or the failure)."""
        try:
            run_group_transaction(conn, group)
        except sqlite3.Error as exc:  # BEGIN or COMMIT failed (I/O error, lock timeout): the whole group
            self.stats.failed_transactions += 1
            self.stats.failed_operations += len(group)
            log.warning(
                "sqlite.transaction_failed", path=str(self.path), operations=len(group), error=str(exc)
            )
            for request in group:
                request.result, request.error = None, unavailable(self.path, exc)
        except BaseException as exc:  # the thread is going down: still answer every caller in the group
            for request in group:
                request.result, request.error = None, unavailable(self.path, exc)
            raise
        else:
            self.stats.transactions += 1
            self.stats.operations += len(group)
            self.stats.largest_group = max(self.stats.largest_group, len(group))
            self._report_failed_operations(group)
        finally:
            settle_all(group)

    def _report_failed_operations(self, group: list[Request[Any]]) -> None:
        """Turn the SQLite errors single operations met into StoreUnavailable, with one log line a group."""
        failed = [(request, request.error) for request in group if isinstance(request.error, sqlite3.Error)]
        if not failed:
            return
        self.stats.failed_operations += len(failed)
        log.warning(
            "sqlite.operations_failed",
            path=str(self.path),
            failed=len(failed),
            operations=len(group),
            error=str(failed[0][1]),
        )
        for request, error in failed:
            request.error = unavailable(self.path, error)

    def _fail_leftovers(self) -> None:
        """Answer anything still queued after the thread stops, so no caller waits forever."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, list):
                for request in item:
                    request.error = StoreUnavailable(f"SQLite store {self.path} is closed")
                settle_all(item)


def _prepare(conn: sqlite3.Connection, busy_timeout: float) -> int:
    """Pragmas and schema migrations; returns the schema version now in the file."""
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"journal_mode is {mode!r}, WAL is required")
    conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a commit survives a process crash
    return migrate(conn)
