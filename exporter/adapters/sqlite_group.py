"""Group commit on the writer thread: one transaction for many operations, each undone alone on failure.

A `Request` is one operation waiting for the writer thread and the future its caller awaits. The thread
runs a whole group in one transaction (`run_group_transaction`), each operation inside its own SAVEPOINT,
then hands every outcome back to its caller's event loop (`settle_all`) only after COMMIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Operation", "Request", "run_group_transaction", "settle_all"]

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], T]


@dataclass(slots=True)
class Request(Generic[T]):
    """One operation waiting for the writer thread, and where to send its outcome."""

    operation: Operation[T]
    write: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    result: Any = None
    error: BaseException | None = None

    def settle_on_loop(self) -> None:
        """Resolve the caller's future; runs on the caller's event loop."""
        if self.future.done():  # the caller was cancelled; the write happened anyway (at-least-once)
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.result)


def settle_all(requests: list[Request[Any]]) -> None:
    """Hand every outcome of a group to its event loop with one thread-safe call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Request[Any]]] = {}
    for request in requests:
        by_loop.setdefault(request.loop, []).append(request)
    for loop, waiting in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the caller's loop closed meanwhile; nobody is waiting
            loop.call_soon_threadsafe(_settle_on_loop, waiting)


def _settle_on_loop(requests: list[Request[Any]]) -> None:
    for request in requests:
        request.settle_on_loop()


def run_group_transaction(conn: sqlite3.Connection, group: list[Request[Any]]) -> None:
    """Run the group in one transaction; an operation that fails, for any reason, is undone alone.

    When SQLite answers an operation's error by abandoning the whole transaction (it may, for
    SQLITE_FULL or SQLITE_IOERR), the operations that had not failed lost their writes too: they run
    again in a fresh transaction. Each round drops at least the failed operation, so this ends.
    """
    todo = group
    while todo:
        conn.execute("BEGIN IMMEDIATE" if any(r.write for r in todo) else "BEGIN")
        try:
            todo = _run_until_abandoned(conn, todo)
            if conn.in_transaction:
                conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _run_until_abandoned(conn: sqlite3.Connection, requests: list[Request[Any]]) -> list[Request[Any]]:
    """Run each request in its SAVEPOINT; return the ones to run again if SQLite abandoned the transaction."""
    for position, request in enumerate(requests):
        if not _run_in_savepoint(conn, request):
            undone = [r for r in requests[:position] if r.error is None]
            return undone + requests[position + 1 :]
    return []


def _run_in_savepoint(conn: sqlite3.Connection, request: Request[Any]) -> bool:
    """Run one operation, keeping its error for its caller; False if SQLite dropped the transaction."""
    if request.write:
        conn.execute("SAVEPOINT op")
    try:
        request.result = request.operation(conn)
    except Exception as exc:  # noqa: BLE001 - the caller's own error (or SQLite's), re-raised in the caller
        request.result, request.error = None, exc
        if not conn.in_transaction:
            return False
        if request.write:
            conn.execute("ROLLBACK TO op")
    if request.write:
        conn.execute("RELEASE op")
    return True
