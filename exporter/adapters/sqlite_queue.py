"""The batch queue on SQLite: one row per message, leases as a visibility time, claims under a write lock.

A message is claimable when `visible_at <= now`: new messages get their enqueue time, a nack pushes it
`delay` ahead, a claim pushes it `lease` ahead, so an expired lease needs no sweeper. Each claim bumps
`deliveries`, and (message ID, deliveries) is the claim's token: whoever claimed after us changed it,
which is how `extend` knows the lease was lost. Claims run inside `BEGIN IMMEDIATE` (the writer thread's
transactions), so two processes on the same file never both get a message.

`accepted_batches` remembers every batch ID ever put, with the identity it was put with, so a repeated
put is refused with the identity of the first. A nack counts in `handbacks` only when it is a deliberate
deferral; a failed attempt (`handback=False`) is left counted as an unfinished delivery, like a crash.
This queue parks nothing by itself: the worker decides from `Claim.unfinished_deliveries`.
"""

from __future__ import annotations

import sqlite3
from functools import partial

import structlog

from exporter.adapters.sqlite_db import SqliteDatabase
from exporter.clock import SystemClock
from exporter.ports import Claim, Clock, DeadLetter, PutResult

__all__ = ["SqliteQueue"]

log = structlog.get_logger(__name__)


class SqliteQueue:
    """`BatchQueue` on the shared SQLite file; times come from the injected clock."""

    __slots__ = ("_clock", "_db")

    def __init__(self, db: SqliteDatabase, clock: Clock | None = None) -> None:
        self._db = db
        self._clock: Clock = clock or SystemClock()

    def __repr__(self) -> str:
        return f"<SqliteQueue {self._db.path}>"

    async def put(self, batch_id: str, body: str, identity: str = "") -> PutResult:
        """Enqueue and remember `identity`; when `batch_id` was accepted before, enqueue nothing and
        answer the identity stored then ("" for a record older than identities)."""
        put = partial(_put, batch_id=batch_id, body=body, identity=identity, now=self._clock.time())
        result = await self._db.write(put)
        log.info("queue.put", batch_id=batch_id, accepted=result.accepted)
        return result

    async def put_raw(self, body: str) -> str:
        """Enqueue a body as it is, without the batch-id check; returns its message ID.

        Not part of the `BatchQueue` port: the demo and the tests use it to queue malformed messages.
        """
        message_id = await self._db.write(partial(_insert, batch_id=None, body=body, now=self._clock.time()))
        log.info("queue.put_raw", message_id=message_id)
        return message_id

    async def claim(self, consumer: str, lease_seconds: float) -> Claim | None:
        """Take the oldest visible message and hide it from everyone else for `lease_seconds`."""
        now = self._clock.time()
        claim = await self._db.write(partial(_claim, consumer=consumer, now=now, until=now + lease_seconds))
        if claim is not None:
            log.info("queue.claimed", message_id=claim.message_id, deliveries=claim.deliveries)
        return claim

    async def extend(self, claim: Claim, lease_seconds: float) -> bool:
        """Push the lease forward; False when the message was acked, nacked or claimed by someone else."""
        until = self._clock.time() + lease_seconds
        kept = await self._db.write(partial(_move_visibility, claim=claim, visible_at=until, keep=True))
        if not kept:
            log.warning("queue.lease_lost", message_id=claim.message_id, consumer=claim.consumer)
        return kept

    async def ack(self, claim: Claim) -> None:
        """Remove the message for good (even if the lease lapsed meanwhile: the work is done)."""
        await self._db.write(partial(_delete, message_id=claim.message_id))
        log.info("queue.acked", message_id=claim.message_id)

    async def nack(self, claim: Claim, delay_seconds: float, *, handback: bool = True) -> None:
        """Hand the message back, visible again after `delay_seconds`; a no-op if the claim was lost.

        Only a `handback` is counted in `handbacks`; a failed attempt stays an unfinished delivery.
        """
        visible_at = self._clock.time() + max(0.0, delay_seconds)
        moved = await self._db.write(
            partial(_move_visibility, claim=claim, visible_at=visible_at, keep=False, handback=handback)
        )
        log.info(
            "queue.nacked",
            message_id=claim.message_id,
            delay_seconds=delay_seconds,
            handback=handback,
            applied=moved,
        )

    async def dead_letter(self, claim: Claim, reason: str) -> None:
        """Move the message to the dead letters with the reason; a no-op if the claim was lost."""
        parked = await self._db.write(
            partial(_dead_letter, claim=claim, reason=reason, now=self._clock.time())
        )
        log.warning("queue.dead_lettered", message_id=claim.message_id, reason=reason, applied=parked)

    async def dead_letters(self, newest: int | None = None) -> list[DeadLetter]:
        """Parked messages, oldest first: every one, or the `newest` most recent."""
        return await self._db.read(partial(_dead_letters, newest=newest))

    async def requeue(self, dead_letter_id: str) -> bool:
        """Put a parked message back as a new message (deliveries start again at zero)."""
        done = await self._db.write(partial(_requeue, dead_letter_id=dead_letter_id, now=self._clock.time()))
        log.info("queue.requeued", dead_letter_id=dead_letter_id, found=done)
        return done

    async def depth(self) -> int:
        """Messages waiting or in flight (not dead letters)."""
        return await self._db.read(_depth)

    async def ping(self) -> None:
        """Raise `StoreUnavailable` if the file cannot be read."""
        await self._db.read(_ping)


# --- operations (run on the writer thread, inside its transaction) -------------------------------------


def _insert(conn: sqlite3.Connection, *, batch_id: str | None, body: str, now: float) -> str:
    cursor = conn.execute(
        "INSERT INTO messages (batch_id, body, enqueued_at, visible_at) VALUES (?, ?, ?, ?)",
        (batch_id, body, now, now),
    )
    return str(cursor.lastrowid)


def _put(conn: sqlite3.Connection, *, batch_id: str, body: str, identity: str, now: float) -> PutResult:
    cursor = conn.execute(
        "INSERT INTO accepted_batches (batch_id, accepted_at, identity) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (batch_id, now, identity),
    )
    if cursor.rowcount == 0:
        row = conn.execute("SELECT identity FROM accepted_batches WHERE batch_id = ?", (batch_id,)).fetchone()
        return PutResult(accepted=False, identity=row[0])
    _insert(conn, batch_id=batch_id, body=body, now=now)
    return PutResult(accepted=True)


def _claim(conn: sqlite3.Connection, *, consumer: str, now: float, until: float) -> Claim | None:
    rows = conn.execute(
        "UPDATE messages SET deliveries = deliveries + 1, consumer = ?, visible_at = ? "
        "WHERE id = (SELECT id FROM messages WHERE visible_at <= ? ORDER BY id LIMIT 1) "
        "RETURNING id, body, deliveries, handbacks",
        (consumer, until, now),
    ).fetchall()
    if not rows:
        return None
    message_id, body, deliveries, handbacks = rows[0]
    return Claim(
        message_id=str(message_id), body=body, deliveries=deliveries, consumer=consumer, handbacks=handbacks
    )


def _move_visibility(
    conn: sqlite3.Connection, *, claim: Claim, visible_at: float, keep: bool, handback: bool = False
) -> bool:
    """Set when the message shows again, only if `claim` is still the latest claim on it.

    `keep` keeps the claim (an extended lease); otherwise the message is released, counted in
    `handbacks` when it is a `handback`.
    """
    cursor = conn.execute(
        "UPDATE messages SET visible_at = ?, consumer = CASE WHEN ? THEN consumer END, "
        "handbacks = handbacks + ? "
        "WHERE id = ? AND deliveries = ? AND consumer = ?",
        (
            visible_at,
            keep,
            int(handback and not keep),
            _row_id(claim.message_id),
            claim.deliveries,
            claim.consumer,
        ),
    )
    return cursor.rowcount == 1


def _delete(conn: sqlite3.Connection, *, message_id: str) -> None:
    conn.execute("DELETE FROM messages WHERE id = ?", (_row_id(message_id),))


def _dead_letter(conn: sqlite3.Connection, *, claim: Claim, reason: str, now: float) -> bool:
    row_id = _row_id(claim.message_id)
    cursor = conn.execute(
        "INSERT INTO dead_letters (batch_id, body, reason, deliveries, created_at) "
        "SELECT batch_id, body, ?, deliveries, ? FROM messages "
        "WHERE id = ? AND deliveries = ? AND consumer = ?",
        (reason, now, row_id, claim.deliveries, claim.consumer),
    )
    if cursor.rowcount == 0:
        return False
    conn.execute("DELETE FROM messages WHERE id = ?", (row_id,))
    return True


def _dead_letters(conn: sqlite3.Connection, *, newest: int | None) -> list[DeadLetter]:
    rows = conn.execute(
        "SELECT id, body, reason, deliveries, created_at FROM dead_letters ORDER BY id DESC LIMIT ?",
        (-1 if newest is None else newest,),  # SQLite: a negative limit is no limit
    ).fetchall()
    return [
        DeadLetter(dead_letter_id=str(row_id), body=body, reason=reason, deliveries=n, created_at=created)
        for row_id, body, reason, n, created in reversed(rows)
    ]


def _requeue(conn: sqlite3.Connection, *, dead_letter_id: str, now: float) -> bool:
    rows = conn.execute(
        "DELETE FROM dead_letters WHERE id = ? RETURNING batch_id, body", (_row_id(dead_letter_id),)
    ).fetchall()
    if not rows:
        return False
    batch_id, body = rows[0]
    _insert(conn, batch_id=batch_id, body=body, now=now)
    return True


def _depth(conn: sqlite3.Connection) -> int:
    count: int = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    return count


def _ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1 FROM messages LIMIT 1").fetchall()


def _row_id(message_id: str) -> int:
    """Our IDs are row numbers; anything else names no row (-1 never exists)."""
    if message_id.isascii() and message_id.isdigit() and len(message_id) <= 18:
        return int(message_id)
    return -1
