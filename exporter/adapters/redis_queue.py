"""The batch queue on a Redis stream with a consumer group, shared by every replica.

Keys (under the prefix):
  queue:stream    the messages; an entry lives until it is acked or parked (XACK + XDEL together), so the
                  stream holds exactly the messages waiting, in flight or delayed
  queue:leases    sorted set: message ID -> lease deadline (server ms) of the message in flight
  queue:delayed   sorted set: message ID -> when a nacked message becomes visible again (server ms)
  queue:handbacks hash: message ID -> clean nacks, so only deliveries that ended without finishing (a
                  lost lease, a crashed worker) count towards parking a message as poison
  queue:dead      stream of parked messages with their reason
  queue:accepted  hash: batch ID -> token of the `put` that accepted it (idempotent submit)
  queue:done:<t>  the answer of the call with token t, kept briefly so a retried call repeats it

A claimed message stays in the group's pending list (PEL) until it is acked, so its delivery counter is the
one Redis keeps (`XREADGROUP` sets 1, each `XCLAIM` that hands it over adds 1). Lease deadlines are kept in a
sorted set on the server clock (`TIME`) rather than read from the PEL's idle time with `XAUTOCLAIM`, which
hands over every entry idle longer than the *claimer's* lease: it would cut a holder's extended lease short
and take nacked messages (still in the PEL) before their delay. Expired entries are handed over with
`XCLAIM` instead, in deadline order, so a dead consumer's message goes to the next claimer.

Each step is one Lua script, so a state change is atomic; every script is safe to run twice, because
redis-py re-sends a command when the connection drops before its answer arrives.

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
from exporter.errors import StoreUnavailable
from exporter.metrics import DEAD_LETTERS, labelled
from exporter.ports import Claim, Clock, DeadLetter

__all__ = ["PRUNE_EVERY_SECONDS", "STALE_CONSUMER_SECONDS", "RedisQueue"]

STALE_CONSUMER_SECONDS = 3600.0  # a consumer idle this long with nothing pending belongs to a gone pod
PRUNE_EVERY_SECONDS = 600.0  # per process, and only when a claim found nothing to do

log = structlog.get_logger(__name__)

_TOKEN_TTL_MS = 600_000
_DEAD_LETTER_PAGE = 500
_STREAM_ID = re.compile(r"\d+-\d+")
_KEY_NAMES = ("stream", "leases", "delayed", "handbacks", "dead", "accepted")

_COMMON = """
local stream, leases, delayed, handbacks, dead, accepted, done =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local group = ARGV[1]

local function pending(id)
  local found = redis.pcall('XPENDING', stream, group, id, id, 1)
  if type(found) ~= 'table' or found.err or not found[1] then return false end
  return found[1]
end

local function handed_back(id)
  return tonumber(redis.call('HGET', handbacks, id) or '0')
end

local function holds(id, consumer, deliveries)
  local entry = pending(id)
  if not entry or entry[2] ~= consumer or entry[4] ~= deliveries then return false end
  return redis.call('ZSCORE', leases, id) ~= false
end

local function body_of(id)
  local rows = redis.call('XRANGE', stream, id, id)
  if #rows == 0 then return false end
  return field(rows[1][2], 'body')
end

local function forget(id)
  redis.call('ZREM', leases, id)
  redis.call('ZREM', delayed, id)
  redis.call('HDEL', handbacks, id)
end

local function remove(id)
  redis.call('XACK', stream, group, id)
  local removed = redis.call('XDEL', stream, id)
  forget(id)
  return removed
end

local function park(id, body, reason, deliveries, parked_at)
  redis.call('XADD', dead, '*', 'body', body, 'reason', reason, 'deliveries', deliveries,
             'created_at', parked_at, 'message_id', id)
  remove(id)
end
"""
"""Every script gets the same keys (the last one a fresh answer key) and the group as ARGV[1].

`pending(id)` is the PEL entry {id, consumer, idle ms, deliveries} or false; `holds` is true while a
claim is the current one: same consumer, same delivery, and still leased (not handed back).
"""

_PUT = """
local accepted_by = redis.call('HGET', accepted, ARGV[2])
if accepted_by then
  return accepted_by == ARGV[4] and 1 or 0
end
redis.call('XADD', stream, '*', 'body', ARGV[3], 'batch_id', ARGV[2])
redis.call('HSET', accepted, ARGV[2], ARGV[4])
return 1
"""

_PUT_RAW = """
local earlier = redis.call('GET', done)
if earlier then return earlier end
local id = redis.call('XADD', stream, '*', 'body', ARGV[2])
redis.call('SET', done, id, 'PX', ARGV[3])
return id
"""

_CLAIM = """
local consumer, lease_ms, max_unfinished = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local parked_at, token_ttl = ARGV[5], ARGV[6]
local now = now_ms()
redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')

local function grant(id, body, deliveries)
  redis.call('ZREM', delayed, id)
  redis.call('ZADD', leases, int(now + lease_ms), id)
  redis.call('SET', done, id, 'PX', token_ttl)
  return {id, body, deliveries, handed_back(id)}
end

local function hand_over(id)
  local entry = pending(id)
  if not entry then
    forget(id)
    return false
  end
  local unfinished = entry[4] - handed_back(id)
  if unfinished >= max_unfinished then
    local reason = 'poison: delivered ' .. unfinished .. ' times without finishing'
    park(id, body_of(id) or '', reason, entry[4], parked_at)
    return {'parked', id}
  end
  local got = redis.call('XCLAIM', stream, group, consumer, 0, id)
  if #got == 0 then
    forget(id)
    return false
  end
  return grant(id, field(got[1][2], 'body'), entry[4] + 1)
end

local earlier = redis.call('GET', done)
if earlier then
  local entry = pending(earlier)
  if not entry or entry[2] ~= consumer then return false end
  return {earlier, body_of(earlier), entry[4], handed_back(earlier)}
end

local parked = {}
local function answer(result)
  return {result[1], result[2], result[3], result[4], unpack(parked)}
end

for _ = 1, 32 do
  local id = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 1)[1]
  if not id then id = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1)[1] end
  if not id then break end
  local result = hand_over(id)
  if result and result[1] == 'parked' then
    table.insert(parked, result[2])
  elseif result then
    return answer(result)
  end
end

local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'STREAMS', stream, '>')
if not read or #read == 0 or #read[1][2] == 0 then
  return answer({false, false, 0, 0})
end
local entry = read[1][2][1]
return answer(grant(entry[1], field(entry[2], 'body'), 1))
"""

_PRUNE_CONSUMERS = """
local min_idle_ms, keep = tonumber(ARGV[2]), ARGV[3]
local consumers = redis.pcall('XINFO', 'CONSUMERS', stream, group)
if type(consumers) ~= 'table' or consumers.err then return {} end
local removed = {}
for _, row in ipairs(consumers) do
  local info = {}
  for i = 1, #row, 2 do info[row[i]] = row[i + 1] end
  if info.name ~= keep and tonumber(info.pending) == 0 and tonumber(info.idle) >= min_idle_ms then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, info.name)
    table.insert(removed, info.name)
  end
end
return removed
"""

_EXTEND = """
local id = ARGV[2]
if not holds(id, ARGV[3], tonumber(ARGV[4])) then return 0 end
redis.call('ZADD', leases, int(now_ms() + tonumber(ARGV[5])), id)
redis.call('XCLAIM', stream, group, ARGV[3], 0, id, 'JUSTID')
return 1
"""

_NACK = """
local id = ARGV[2]
if not holds(id, ARGV[3], tonumber(ARGV[4])) then return 0 end
redis.call('ZREM', leases, id)
redis.call('ZADD', delayed, int(now_ms() + tonumber(ARGV[5])), id)
redis.call('HINCRBY', handbacks, id, 1)
return 1
"""

_ACK = """
return remove(ARGV[2])
"""

_DEAD_LETTER = """
local id = ARGV[2]
if not holds(id, ARGV[3], tonumber(ARGV[4])) then return 0 end
park(id, ARGV[5], ARGV[6], ARGV[4], ARGV[7])
return 1
"""

_REQUEUE = """
if redis.call('GET', done) then return 1 end
local rows = redis.call('XRANGE', dead, ARGV[2], ARGV[2])
if #rows == 0 then return 0 end
redis.call('XADD', stream, '*', 'body', field(rows[1][2], 'body') or '')
redis.call('XDEL', dead, ARGV[2])
redis.call('SET', done, '1', 'PX', ARGV[3])
return 1
"""


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
        self._keys = [conn.key("queue", name) for name in _KEY_NAMES]
        sources = {
            "put": _PUT,
            "put_raw": _PUT_RAW,
            "claim": _CLAIM,
            "extend": _EXTEND,
            "nack": _NACK,
            "ack": _ACK,
            "dead_letter": _DEAD_LETTER,
            "requeue": _REQUEUE,
            "prune_consumers": _PRUNE_CONSUMERS,
        }
        self._scripts = {name: conn.script(_COMMON + body) for name, body in sources.items()}

    def __repr__(self) -> str:
        return f"<RedisQueue stream={self._keys[0]!r} group={self._group!r}>"

    async def _run(self, name: str, *args: str | int) -> Any:
        """Run a script; its fresh answer key lets a re-sent call find its first attempt's answer."""
        keys = [*self._keys, self._conn.key("queue", "done", _token())]
        return await self._conn.run(f"queue.{name}", self._scripts[name], keys, [self._group, *args])

    async def put(self, batch_id: str, body: str) -> bool:
        """Enqueue once per batch ID: the accepted-marker and the entry are written by one script."""
        accepted = bool(await self._run("put", batch_id, body, _token()))
        log.info("queue.put", batch_id=batch_id, accepted=accepted)
        return accepted

    async def put_raw(self, body: str) -> str:
        """Enqueue a body as it is; returns the stream entry ID."""
        message_id: str = await self._run("put_raw", body, _TOKEN_TTL_MS)
        log.info("queue.put_raw", message_id=message_id)
        return message_id

    async def claim(self, consumer: str, lease_seconds: float) -> Claim | None:
        """Expired leases first (their holder died), then nacked messages past their delay, then new ones.

        A message that already ended `max_deliveries` times without finishing (lease lost, not handed back)
        is parked as poison instead of being handed out again.
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

    async def nack(self, claim: Claim, delay_seconds: float) -> None:
        """Hand the message back, visible after the delay; a no-op when the claim was lost meanwhile."""
        applied = bool(await self._run("nack", *self._fence(claim), milliseconds(delay_seconds)))
        log.info("queue.nacked", message_id=claim.message_id, delay_seconds=delay_seconds, applied=applied)

    async def dead_letter(self, claim: Claim, reason: str) -> None:
        """Park the message with the reason; a no-op when the claim was lost (acked, parked or taken over)."""
        parked_at = repr(self._clock.time())
        applied = bool(await self._run("dead_letter", *self._fence(claim), claim.body, reason, parked_at))
        log.warning("queue.dead_lettered", message_id=claim.message_id, reason=reason, applied=applied)

    async def dead_letters(self) -> list[DeadLetter]:
        """Every parked message, oldest first, read in pages."""
        letters: list[DeadLetter] = []
        start = "-"
        while True:
            async with self._conn.guard("queue.dead_letters"):
                reply = await self._conn.client.xrange(self._keys[4], start, "+", count=_DEAD_LETTER_PAGE)
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
            length: int = await self._conn.client.xlen(self._keys[0])
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
