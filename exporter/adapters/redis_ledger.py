"""The ledger on Redis: chunk records in hashes, batch totals kept equal to the chunk states.

Keys (under the prefix):
  ledger:batches           sorted set: batch ID -> created_at (newest first for `list_batches`)
  ledger:batch:<b>         hash: the batch's fixed fields (`info`, JSON), `state`, timestamps and one
                           counter per `Totals` field
  ledger:chunks:<b>        hash: chunk index -> ChunkRecord JSON
  ledger:share:<b>         hash: chunk index -> what that chunk last added to the counters (absent: pending)
  ledger:open:<b>          sorted set of the indexes of chunks not yet terminal, scored by index
  ledger:owner:<b>:<i>     the replica exporting chunk i right now, expiring with its ttl

A chunk's state and the batch counters change in one script that adds the difference between the chunk's
new share and the share recorded for it, so the totals always equal the sum over the chunks, and running
the script twice (a retried call) changes nothing the second time.

A batch's chunks are written to staging keys first and renamed into place by the script that creates the
batch, so a batch is never visible without all of its chunks, and two replicas creating the same batch at
once cannot overwrite each other's progress.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import structlog
from redis.typing import EncodableT, FieldT

from exporter.adapters.redis_connection import RedisConnection, milliseconds
from exporter.models import BatchInfo, BatchState, ChunkRecord, ChunkState, Totals
from exporter.ports import Clock

__all__ = ["SHARE_FIELDS", "RedisLedger", "chunk_share"]

log = structlog.get_logger(__name__)

SHARE_FIELDS = ("verified", "failed", "pending", "exported", "chunks_verified", "chunks_failed")
"""The `Totals` counters a chunk's state contributes to (`jobs` and `chunks` are fixed at creation)."""

_INFO_FIELDS = {
    "batch_id",
    "project_id",
    "obs_dir",
    "campaign",
    "chunk_size",
    "duplicates_dropped",
    "created_at",
}
_CREATE_PAGE = 1000
_READ_PAGE = 100  # chunks a read: at 1,000 IDs a chunk (the most) a page is ~10 MB of objects
_STAGING_TTL_SECONDS = 3600
_TERMINAL_BATCH = {BatchState.COMPLETED, BatchState.COMPLETED_WITH_FAILURES}

_COMMIT_BATCH = """
local batch, batches, staged_chunks, staged_open = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local chunks, open = KEYS[5], KEYS[6]
local token = ARGV[1]
if redis.call('EXISTS', batch) == 1 then
  redis.call('DEL', staged_chunks, staged_open)
  return redis.call('HGET', batch, 'token') == token and 1 or 0
end
if redis.call('EXISTS', staged_chunks) == 1 then
  redis.call('RENAME', staged_chunks, chunks)
  redis.call('PERSIST', chunks)
end
if redis.call('EXISTS', staged_open) == 1 then
  redis.call('RENAME', staged_open, open)
  redis.call('PERSIST', open)
end
redis.call('HSET', batch, 'token', token, 'info', ARGV[2], 'state', ARGV[3], 'created_at', ARGV[4],
           'updated_at', ARGV[5], 'jobs', ARGV[6], 'chunks', ARGV[7], 'pending', ARGV[7],
           'exported', 0, 'verified', 0, 'failed', 0, 'chunks_verified', 0, 'chunks_failed', 0)
redis.call('ZADD', batches, ARGV[4], ARGV[8])
return 1
"""

_SAVE_CHUNK = """
local batch, chunks, shares, open = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local index, record, share, is_open = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HEXISTS', chunks, index) == 0 then return 0 end
local function words(csv)
  local out = {}
  for word in string.gmatch(csv, '[^,]+') do table.insert(out, word) end
  return out
end
local names = words(ARGV[7])
local old = words(redis.call('HGET', shares, index) or ARGV[6])
local new = words(share)
for i, name in ipairs(names) do
  local delta = tonumber(new[i]) - tonumber(old[i])
  if delta ~= 0 then redis.call('HINCRBY', batch, name, delta) end
end
redis.call('HSET', chunks, index, record)
redis.call('HSET', shares, index, share)
if is_open == '1' then
  redis.call('ZADD', open, index, index)
else
  redis.call('ZREM', open, index)
end
redis.call('HSET', batch, 'updated_at', ARGV[5])
return 1
"""

_SET_STATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated_at', ARGV[2])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'finished_at')
else
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[3])
end
return 1
"""

_CLAIM_CHUNK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""

_RELEASE_CHUNK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def chunk_share(chunk: ChunkRecord) -> Totals:
    """What one chunk adds to its batch's totals: job counts by the report rows' states, one chunk count."""
    verified = failed = 0
    for row in chunk.report_rows():
        if row["state"] == ChunkState.VERIFIED:
            verified += len(row["job_ids"])
        elif row["state"] == ChunkState.FAILED:
            failed += len(row["job_ids"])
    return Totals(
        verified=verified,
        failed=failed,
        pending=int(chunk.state is ChunkState.PENDING),
        exported=int(chunk.state is ChunkState.EXPORTED),
        chunks_verified=int(chunk.state is ChunkState.VERIFIED),
        chunks_failed=int(chunk.state is ChunkState.FAILED),
    )


def _share_csv(share: Totals) -> str:
    return ",".join(str(getattr(share, name)) for name in SHARE_FIELDS)


_PENDING_SHARE = _share_csv(Totals(pending=1))
"""The share of a chunk never saved since the batch was created (no share recorded for it yet)."""


def _batch_info(fields: dict[str, str]) -> BatchInfo:
    """Rebuild a BatchInfo from its hash: fixed fields from `info`, the rest from live counters."""
    info: dict[str, Any] = json.loads(fields["info"])
    totals = Totals(**{name: int(fields.get(name, "0")) for name in Totals.model_fields})
    finished_at = fields.get("finished_at")
    return BatchInfo(
        **info,
        state=BatchState(fields["state"]),
        totals=totals,
        updated_at=float(fields["updated_at"]),
        finished_at=float(finished_at) if finished_at else None,
    )


class RedisLedger:
    """`Ledger` on Redis hashes and sorted sets, readable from every replica with the same numbers."""

    __slots__ = ("_clock", "_conn", "_scripts")

    def __init__(self, conn: RedisConnection, *, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock
        self._scripts = {
            "commit_batch": conn.script(_COMMIT_BATCH),
            "save_chunk": conn.script(_SAVE_CHUNK),
            "set_state": conn.script(_SET_STATE),
            "claim_chunk": conn.script(_CLAIM_CHUNK),
            "release_chunk": conn.script(_RELEASE_CHUNK),
        }

    def __repr__(self) -> str:
        return f"<RedisLedger prefix={self._conn.prefix!r}>"

    def _key(self, kind: str, batch_id: str) -> str:
        return self._conn.key("ledger", kind, batch_id)

    async def create_batch(self, info: BatchInfo, chunks: Sequence[Sequence[int]]) -> bool:
        """Stage every chunk in pipelined pages, then make the batch appear atomically."""
        batch_key = self._key("batch", info.batch_id)
        async with self._conn.guard("ledger.create_batch"):
            if await self._conn.client.exists(batch_key):
                return False
        token = uuid.uuid4().hex
        staged_chunks = self._conn.key("ledger", "staging", token, "chunks")
        staged_open = self._conn.key("ledger", "staging", token, "open")
        await self._stage_chunks(info.batch_id, chunks, staged_chunks, staged_open)
        keys = [
            batch_key,
            self._conn.key("ledger", "batches"),
            staged_chunks,
            staged_open,
            self._key("chunks", info.batch_id),
            self._key("open", info.batch_id),
        ]
        args = [
            token,
            info.model_dump_json(include=_INFO_FIELDS),
            info.state.value,
            repr(info.created_at),
            repr(info.updated_at),
            sum(len(chunk) for chunk in chunks),
            len(chunks),
            info.batch_id,
        ]
        created = bool(await self._conn.run("ledger.create_batch", self._scripts["commit_batch"], keys, args))
        log.info("ledger.batch_created", batch_id=info.batch_id, chunks=len(chunks), created=created)
        return created

    async def _stage_chunks(
        self, batch_id: str, chunks: Sequence[Sequence[int]], staged_chunks: str, staged_open: str
    ) -> None:
        """Write the pending chunk records to short-lived staging keys, a page per round trip, so only one
        page of records is ever held in memory (a plan may be a lazy view of a million IDs)."""
        for start in range(0, len(chunks), _CREATE_PAGE):
            page = range(start, min(start + _CREATE_PAGE, len(chunks)))
            records: dict[FieldT, EncodableT] = {
                str(index): ChunkRecord(
                    batch_id=batch_id, index=index, job_ids=list(chunks[index])
                ).model_dump_json()
                for index in page
            }
            pipe = self._conn.client.pipeline(transaction=False)
            pipe.hset(staged_chunks, mapping=records)
            pipe.zadd(staged_open, {str(index): index for index in page})
            pipe.expire(staged_chunks, _STAGING_TTL_SECONDS)
            pipe.expire(staged_open, _STAGING_TTL_SECONDS)
            async with self._conn.guard("ledger.create_batch"):
                await pipe.execute()

    async def get_batch(self, batch_id: str) -> BatchInfo | None:
        """The batch with its live counters, or None."""
        async with self._conn.guard("ledger.get_batch"):
            fields = cast(dict[str, str], await self._conn.client.hgetall(self._key("batch", batch_id)))
        return _batch_info(fields) if fields else None

    async def open_chunks(self, batch_id: str) -> list[ChunkRecord]:
        """Chunks still pending or exported, in index order, from the open index."""
        async with self._conn.guard("ledger.open_chunks"):
            indexes = cast(list[str], await self._conn.client.zrange(self._key("open", batch_id), 0, -1))
        records: list[ChunkRecord] = []
        for start in range(0, len(indexes), _READ_PAGE):
            records.extend(await self._read_chunks(batch_id, indexes[start : start + _READ_PAGE]))
        return records

    async def save_chunk(self, chunk: ChunkRecord) -> None:
        """Store the chunk and move the batch counters by the change of its share, in one script."""
        keys = [
            self._key("batch", chunk.batch_id),
            self._key("chunks", chunk.batch_id),
            self._key("share", chunk.batch_id),
            self._key("open", chunk.batch_id),
        ]
        args = [
            chunk.index,
            chunk.model_dump_json(),
            _share_csv(chunk_share(chunk)),
            "0" if chunk.state.terminal else "1",
            repr(self._clock.time()),
            _PENDING_SHARE,
            ",".join(SHARE_FIELDS),
        ]
        if not await self._conn.run("ledger.save_chunk", self._scripts["save_chunk"], keys, args):
            raise LookupError(f"batch {chunk.batch_id!r} has no chunk {chunk.index}")

    async def get_chunk(self, batch_id: str, index: int) -> ChunkRecord | None:
        """One chunk as stored now, or None."""
        found = await self._read_chunks(batch_id, [str(index)])
        return found[0] if found else None

    async def chunks(self, batch_id: str) -> AsyncIterator[ChunkRecord]:
        """Every chunk in index order, read a page at a time."""
        async with self._conn.guard("ledger.chunks"):
            count = int(await self._conn.client.hget(self._key("batch", batch_id), "chunks") or 0)
        for start in range(0, count, _READ_PAGE):
            indexes = [str(index) for index in range(start, min(start + _READ_PAGE, count))]
            for record in await self._read_chunks(batch_id, indexes):
                yield record

    async def _read_chunks(self, batch_id: str, indexes: Sequence[str]) -> list[ChunkRecord]:
        async with self._conn.guard("ledger.read_chunks"):
            reply = await self._conn.client.hmget(self._key("chunks", batch_id), list(indexes))
        raw = cast(list[str | None], reply)
        return [ChunkRecord.model_validate_json(text) for text in raw if text is not None]

    async def set_batch_state(self, batch_id: str, state: BatchState) -> None:
        """Record the state; a finished state also records when it finished."""
        now = self._clock.time()
        finished_at = repr(now) if state in _TERMINAL_BATCH else ""
        args = [state.value, repr(now), finished_at]
        await self._conn.run(
            "ledger.set_state", self._scripts["set_state"], [self._key("batch", batch_id)], args
        )
        log.info("ledger.batch_state", batch_id=batch_id, state=state.value)

    async def claim_chunk(self, batch_id: str, index: int, owner: str, ttl_seconds: float) -> bool:
        """Own the chunk until the ttl passes; the owner itself may claim again to extend."""
        key = self._conn.key("ledger", "owner", batch_id, index)
        args = [owner, max(1, milliseconds(ttl_seconds))]
        return bool(await self._conn.run("ledger.claim_chunk", self._scripts["claim_chunk"], [key], args))

    async def release_chunk(self, batch_id: str, index: int, owner: str) -> None:
        """Give the chunk up, only if this owner still holds it (its ttl may have passed)."""
        key = self._conn.key("ledger", "owner", batch_id, index)
        await self._conn.run("ledger.release_chunk", self._scripts["release_chunk"], [key], [owner])

    async def list_batches(self, limit: int = 100) -> list[BatchInfo]:
        """The most recent batches, newest first."""
        if limit < 1:
            return []
        async with self._conn.guard("ledger.list_batches"):
            batches_key = self._conn.key("ledger", "batches")
            batch_ids = cast(list[str], await self._conn.client.zrevrange(batches_key, 0, limit - 1))
            pipe = self._conn.client.pipeline(transaction=False)
            for batch_id in batch_ids:
                pipe.hgetall(self._key("batch", batch_id))
            rows: list[dict[str, str]] = await pipe.execute()
        return [_batch_info(fields) for fields in rows if fields]
