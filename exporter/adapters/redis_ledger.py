"""The ledger on Redis: chunk records in hashes, batch totals kept equal to the chunk states.

Keys (under the prefix):
  ledger:batches                 sorted set: batch ID -> created_at (newest first for `list_batches`)
  ledger:batch:<b>               hash: `token` (makes a retried create idempotent), `info` (the fixed
                                 fields, JSON), `state`, `updated_at`, `finished_at`, `error` (ErrorInfo
                                 JSON, when the whole batch failed) and one counter per `Totals` field
  ledger:chunks:<b>              hash: chunk index -> ChunkRecord JSON
  ledger:share:<b>               hash: chunk index -> what that chunk last added to the counters (absent:
                                 pending)
  ledger:owner:<b>:<i>           the replica exporting chunk i right now, expiring with its ttl
  ledger:staging:<token>:chunks  chunk records of a batch being created, expiring after an hour

Older versions also wrote `ledger:open:<b>` (a sorted set of open chunks) and a `created_at` field in the
batch hash (a copy of the one in `info`); nothing reads them now, and `purge` removes them with the rest.

A chunk's save compares the stored record's state and attempts with the caller's expectation and, when
they match, stores the record and adds the difference between its new share and the share recorded for
it to the counters, all in one script: the totals always equal the sum over the chunks.

A batch's chunks are written to a staging key first and renamed into place by the script that creates the
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

from exporter.adapters import redis_ledger_scripts as lua
from exporter.adapters.redis_connection import RedisConnection, milliseconds
from exporter.errors import NotFound
from exporter.models import (
    BatchInfo,
    BatchState,
    ChunkRecord,
    ChunkTally,
    ErrorInfo,
    Totals,
    check_transition,
)
from exporter.ports import Clock

__all__ = ["RedisLedger"]

log = structlog.get_logger(__name__)

_INFO_FIELDS = {
    "batch_id",
    "project_id",
    "obs_dir",
    "campaign",
    "region",
    "migration",
    "chunk_size",
    "duplicates_dropped",
    "created_at",
}
_CREATE_PAGE = 1000
_READ_PAGE = 100  # chunks a read: at 1,000 IDs a chunk (the most) a page is ~10 MB of objects
_STAGING_TTL_SECONDS = 3600


def _batch_info(fields: dict[str, str]) -> BatchInfo:
    """Rebuild a BatchInfo from its hash: fixed fields from `info`, the rest from live fields."""
    info: dict[str, Any] = json.loads(fields["info"])
    totals = Totals(**{name: int(fields.get(name, "0")) for name in Totals.model_fields})
    finished_at = fields.get("finished_at")
    error = fields.get("error")
    return BatchInfo(
        **info,
        state=BatchState(fields["state"]),
        totals=totals,
        updated_at=float(fields["updated_at"]),
        finished_at=float(finished_at) if finished_at else None,
        error=ErrorInfo.model_validate_json(error) if error else None,
    )


def _error_json(error: ErrorInfo | None) -> str:
    return error.model_dump_json() if error else ""


class RedisLedger:
    """`Ledger` on Redis hashes and sorted sets, readable from every replica with the same numbers."""

    __slots__ = ("_clock", "_conn", "_scripts")

    def __init__(self, conn: RedisConnection, *, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock
        self._scripts = {
            "commit_batch": conn.script(lua.COMMIT_BATCH),
            "save_chunk": conn.script(lua.SAVE_CHUNK),
            "set_state": conn.script(lua.SET_STATE),
            "claim_chunk": conn.script(lua.CLAIM_CHUNK),
            "release_chunk": conn.script(lua.RELEASE_CHUNK),
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
        staged = self._conn.key("ledger", "staging", token, "chunks")
        await self._stage_chunks(info.batch_id, chunks, staged)
        keys = [batch_key, self._conn.key("ledger", "batches"), staged, self._key("chunks", info.batch_id)]
        args = [
            token,
            info.model_dump_json(include=_INFO_FIELDS),
            info.state.value,
            repr(info.updated_at),
            sum(len(chunk) for chunk in chunks),
            len(chunks),
            repr(info.created_at),
            info.batch_id,
            _error_json(info.error),
        ]
        created = bool(await self._conn.run("ledger.create_batch", self._scripts["commit_batch"], keys, args))
        log.info("ledger.batch_created", batch_id=info.batch_id, chunks=len(chunks), created=created)
        return created

    async def _stage_chunks(self, batch_id: str, chunks: Sequence[Sequence[int]], staged: str) -> None:
        """Write the pending chunk records to a short-lived staging key, a page per round trip, so only one
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
            pipe.hset(staged, mapping=records)
            pipe.expire(staged, _STAGING_TTL_SECONDS)
            async with self._conn.guard("ledger.create_batch"):
                await pipe.execute()

    async def get_batch(self, batch_id: str) -> BatchInfo | None:
        """The batch with its live counters, or None."""
        async with self._conn.guard("ledger.get_batch"):
            fields = cast(dict[str, str], await self._conn.client.hgetall(self._key("batch", batch_id)))
        return _batch_info(fields) if fields else None

    async def save_chunk(self, chunk: ChunkRecord, expected: ChunkRecord) -> bool:
        """Compare-and-set the chunk and move the batch counters by the change of its share, in one
        script."""
        check_transition(expected.state, chunk.state)
        keys = [self._key(kind, chunk.batch_id) for kind in ("batch", "chunks", "share")]
        args = [
            chunk.index,
            chunk.model_dump_json(),
            lua.share_csv(ChunkTally.of_chunk(chunk)),
            expected.state.value,
            expected.attempts,
            repr(self._clock.time()),
        ]
        outcome = await self._conn.run("ledger.save_chunk", self._scripts["save_chunk"], keys, args)
        if outcome == lua.NO_SUCH_CHUNK:
            raise NotFound(f"batch {chunk.batch_id!r} has no chunk {chunk.index}")
        if outcome == lua.SAVE_REFUSED:
            log.info("ledger.chunk_save_refused", batch_id=chunk.batch_id, index=chunk.index)
        return bool(outcome == lua.SAVED)

    async def get_chunk(self, batch_id: str, index: int) -> ChunkRecord | None:
        """One chunk as stored now, or None."""
        found = await self._read_chunks(batch_id, [str(index)])
        return found[0] if found else None

    async def chunks(self, batch_id: str) -> AsyncIterator[ChunkRecord]:
        """Every chunk in index order, read a page at a time (nothing for an unknown batch)."""
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

    async def set_batch_state(self, batch_id: str, state: BatchState, error: ErrorInfo | None = None) -> None:
        """Record the state and error (none clears an older one); a finished state also records when it
        finished. NotFound for an unknown batch."""
        now = self._clock.time()
        args = [state.value, repr(now), repr(now) if state.finished else "", _error_json(error)]
        key = self._key("batch", batch_id)
        if not await self._conn.run("ledger.set_state", self._scripts["set_state"], [key], args):
            raise NotFound(f"no batch {batch_id!r}")
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
