"""The batch queue on a Redis stream with a consumer group, shared by every replica.

Keys (under the prefix):
  queue:stream    the messages; an entry lives until it is acked or parked (XACK + XDEL together), so the
                  stream holds exactly the messages waiting, in flight or delayed
  queue:leases    sorted set: message ID -> lease deadline (server ms) of the message in flight
  queue:delayed   sorted set: message ID -> when a nacked message becomes visible again (server ms)
  queue:handbacks hash: message ID -> deliberate nacks (`handback=True`), so only deliveries that ended
                  without finishing (a lost lease, a crashed worker, a failed attempt) count towards
                  parking a message as poison
  queue:failures  hash: message ID -> failed attempts (`nack(handback=False)`), so a parked message's
                  reason tells failed attempts from deliveries that ended without an answer
  queue:dead      stream of parked messages with their reason
  queue:accepted  hash: batch ID -> token of the `put` that accepted it (idempotent submit)
  queue:identities hash: batch ID -> the identity it was accepted with (absent: accepted before
                  identities, or with an empty one); written by the same script as `accepted`
  queue:done:<t>  the answer of the call with token t, kept briefly so a retried call repeats it

A claimed message stays in the group's pending list (PEL) until it is acked, so its delivery counter is the
one Redis keeps (`XREADGROUP` sets 1, each `XCLAIM` that hands it over adds 1). Lease deadlines are kept in a
sorted set on the server clock (`TIME`) rather than read from the PEL's idle time with `XAUTOCLAIM`, which
hands over every entry idle longer than the *claimer's* lease: it would cut a holder's extended lease short
and take nacked messages (still in the PEL) before their delay. Expired entries are handed over with
`XCLAIM` instead, in deadline order, so a dead consumer's message goes to the next claimer.

Each step is one Lua script (in `redis_queue_scripts`), so a state change is atomic; every script is safe
to run twice, because redis-py re-sends a command when the connection drops before its answer arrives.
A message that came back `max_deliveries` times unfinished is parked by the claim script itself, with a
reason that says how those deliveries ended.

Every pod restart brings a new consumer name (hostname-PID) into the group, and Redis keeps a consumer until
it is deleted. So when a claim finds nothing to do (at most every ten minutes per process), consumers idle
for an hour with nothing pending are deleted, in one script, so one that claims meanwhile is kept. A message
is never lost this way: a consumer that still holds anything, nacked messages included, is not touched.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, cast

import structlog

from exporter.adapters.redis_connection import RedisConnection, milliseconds
from exporter.adapters.redis_queue_scripts import KEY_NAMES, SCRIPTS
from exporter.errors import StoreUnavailable
from exporter.metrics import DEAD_LETTERS, labelled
from exporter.ports import Claim, Clock, DeadLetter, PutResult

__all__ = ["PRUNE_EVERY_SECONDS", "STALE_CONSUMER_SECONDS", "RedisQueue"]

STALE_CONSUMER_SECONDS = 3600.0  # a consumer idle this long with nothing pending belongs to a gone pod
PRUNE_EVERY_SECONDS = 600.0  # per process, and only when a claim found nothing to do

log = structlog.get_logger(__name__)

_TOKEN_TTL_MS = 600_000
_DEAD_LETTER_PAGE = 500
_STREAM_ID = re.compile(r"\d+-\d+")


def _token() -> str:
    return uuid.uuid4().hex


class RedisQueue:
    """`BatchQueue` on a Redis stream: at-least-once delivery with leases, shared by every replica."""

    __slots__ = (
        "_clock",
        "_conn",
        "_group",
        "_keys",
        "_max_deliveries",
        "_pruned_at",
        "_scripts",
        "_stale_consumer_seconds",
    )

    def __init__(
        self,
        conn: RedisConnection,
        *,
        group: str,
        clock: Clock,
        max_deliveries: int = 5,
        stale_consumer_seconds: float = STALE_CONSUMER_SECONDS,
    ) -> None:
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        self._conn = conn
        self._group = group
        self._clock = clock
        self._max_deliveries = max_deliveries
        self._stale_consumer_seconds = stale_consumer_seconds
        self._pruned_at: float | None = None
        self._keys = [conn.key("queue", name) for name in KEY_NAMES]
        self._scripts = {name: conn.script(source) for name, source in SCRIPTS.items()}

    def __repr__(self) -> str:
        return f"<RedisQueue stream={self._stream!r} group={self._group!r}>"

    @property
    def _stream(self) -> str:
        return self._keys[KEY_NAMES.index("stream")]

    @property
    def _dead(self) -> str:
        return self._keys[KEY_NAMES.index("dead")]

    async def _run(self, name: str, *args: str | int) -> Any:
        """Run a script; its fresh answer key lets a re-sent call find its first attempt's answer."""
        keys = [*self._keys, self._conn.key("queue", "done", _token())]
        return await self._conn.run(f"queue.{name}", self._scripts[name], keys, [self._group, *args])

    async def put(self, batch_id: str, body: str, identity: str = "") -> PutResult:
        """Enqueue once per batch ID: the accepted marker, the identity and the entry are written by one
        script; a repeat gets the identity stored then ("" for a batch accepted before identities)."""
        accepted, stored = await self._run("put", batch_id, body, _token(), identity)
        result = (
            PutResult(accepted=True) if int(accepted) else PutResult(accepted=False, identity=stored or "")
        )
        log.info("queue.put", batch_id=batch_id, accepted=result.accepted)
        return result

    async def put_raw(self, body: str) -> str:
        """Enqueue a body as it is; returns the stream entry ID.

        Not part of the `BatchQueue` port: the demo and the tests use it to queue malformed messages.
        """
        message_id: str = await self._run("put_raw", body, _TOKEN_TTL_MS)
        log.info("queue.put_raw", message_id=message_id)
        return message_id

    async def claim(self, consumer: str, lease_seconds: float) -> Claim | None:
        """Expired leases first (their holder died), then nacked messages past their delay, then new ones.

        A message that already ended `max_deliveries` times without finishing (lease lost, or a failed
        attempt; not handed back) is parked instead of being handed out again, its reason saying so.
        """
        reply = await self._run(
            "claim",
            consumer,
            milliseconds(lease_seconds),
            self._max_deliveries,
            repr(self._clock.time()),
            _TOKEN_TTL_MS,
        )
        if not reply:
            return None
        message_id, body, deliveries, handbacks, *parked = reply
        for parked_id in parked:
            labelled(DEAD_LETTERS, "poison").inc()
            log.warning("queue.poison_parked", message_id=parked_id, max_deliveries=self._max_deliveries)
        if not message_id:
            await self._prune_consumers_now_and_then(consumer)
            return None
        log.info("queue.claimed", message_id=message_id, deliveries=deliveries)
        return Claim(
            message_id=message_id,
            body=body or "",
            deliveries=int(deliveries),
            consumer=consumer,
            handbacks=int(handbacks),
        )

    async def _prune_consumers_now_and_then(self, consumer: str) -> None:
        """Delete consumers of gone pods (idle, nothing pending); housekeeping, so a failure only logs."""
        now = self._clock.monotonic()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = now
        try:
            removed = await self._run("prune_consumers", milliseconds(self._stale_consumer_seconds), consumer)
        except StoreUnavailable as error:
            log.warning("queue.prune_consumers.failed", error=str(error))
            return
        if removed:
            log.info("queue.consumers_pruned", consumers=list(removed), group=self._group)

    async def extend(self, claim: Claim, lease_seconds: float) -> bool:
        """Push the lease forward, unless the message was handed to someone else (or back) meanwhile."""
        kept = bool(await self._run("extend", *self._fence(claim), milliseconds(lease_seconds)))
        if not kept:
            log.warning("queue.lease_lost", message_id=claim.message_id, consumer=claim.consumer)
        return kept

    async def ack(self, claim: Claim) -> None:
        """Remove the message for good (acknowledged and deleted in one step), even after a lost lease."""
        await self._run("ack", claim.message_id)
        log.info("queue.acked", message_id=claim.message_id)

    async def nack(self, claim: Claim, delay_seconds: float, *, handback: bool = True) -> None:
        """Hand the message back, visible after the delay; a no-op when the claim was lost meanwhile.

        Only a `handback` is counted in `handbacks`; a failed attempt stays an unfinished delivery.
        """
        delay = milliseconds(delay_seconds)
        applied = bool(await self._run("nack", *self._fence(claim), delay, "1" if handback else "0"))
        log.info(
            "queue.nacked",
            message_id=claim.message_id,
            delay_seconds=delay_seconds,
            handback=handback,
            applied=applied,
        )

    async def dead_letter(self, claim: Claim, reason: str) -> None:
        """Park the message with the reason; a no-op when the claim was lost (acked, parked or taken over)."""
        parked_at = repr(self._clock.time())
        applied = bool(await self._run("dead_letter", *self._fence(claim), claim.body, reason, parked_at))
        log.warning("queue.dead_lettered", message_id=claim.message_id, reason=reason, applied=applied)

    async def dead_letters(self, newest: int | None = None) -> list[DeadLetter]:
        """Parked messages, oldest first: every one (read in pages), or the `newest` most recent."""
        if newest is not None:
            if newest <= 0:
                return []
            async with self._conn.guard("queue.dead_letters"):
                reply = await self._conn.client.xrevrange(self._dead, "+", "-", count=newest)
            rows = cast(list[tuple[str, dict[str, str]]], reply)
            return [_dead_letter(entry_id, fields) for entry_id, fields in reversed(rows)]
        letters: list[DeadLetter] = []
        start = "-"
        while True:
            async with self._conn.guard("queue.dead_letters"):
                reply = await self._conn.client.xrange(self._dead, start, "+", count=_DEAD_LETTER_PAGE)
            rows = cast(list[tuple[str, dict[str, str]]], reply)
            letters.extend(_dead_letter(entry_id, fields) for entry_id, fields in rows)
            if len(rows) < _DEAD_LETTER_PAGE:
                return letters
            start = "(" + rows[-1][0]

    async def requeue(self, dead_letter_id: str) -> bool:
        """Move a parked message back onto the queue as a new message (its counts start again)."""
        found = _STREAM_ID.fullmatch(dead_letter_id) is not None and bool(
            await self._run("requeue", dead_letter_id, _TOKEN_TTL_MS)
        )
        log.info("queue.requeued", dead_letter_id=dead_letter_id, found=found)
        return found

    async def depth(self) -> int:
        """Entries still in the stream: waiting, delayed or in flight."""
        async with self._conn.guard("queue.depth"):
            length: int = await self._conn.client.xlen(self._stream)
        return length

    async def ping(self) -> None:
        """Raise StoreUnavailable when Redis does not answer within the budget."""
        async with self._conn.guard("queue.ping"):
            await self._conn.client.ping()

    @staticmethod
    def _fence(claim: Claim) -> tuple[str, str, int]:
        """What tells this claim apart from later deliveries of the same message."""
        return claim.message_id, claim.consumer, claim.deliveries


def _dead_letter(entry_id: str, fields: dict[str, str]) -> DeadLetter:
    return DeadLetter(
        dead_letter_id=entry_id,
        body=fields.get("body", ""),
        reason=fields.get("reason", ""),
        deliveries=int(fields.get("deliveries", "0")),
        created_at=float(fields.get("created_at", "0")),
    )
