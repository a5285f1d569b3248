"""Migration steps and name snapshots on Redis, under the backend's prefix (so `purge` removes them).

Keys:
  migration:<b>:steps     hash: chunk index -> MigrationStep JSON
  migration:<b>:snapshot  the target's job names before the first import (name -> ID, JSON), SET NX

A step's save is one script: it compares the stored step's state and attempts with the caller's
expectation (or, inserting, that there is none) and writes only when they match, so two replicas saving
from the same read cannot both land. Moves backwards are refused in Python before any call, as the ledger
does. The tally is counted here from the steps, a page at a time, so Redis never parses a whole batch.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Final, cast

import structlog

from exporter.adapters.redis_connection import RedisConnection
from exporter.migration.models import MigrationStep, MigrationTally

__all__ = ["RedisMigrations"]

log = structlog.get_logger(__name__)

_READ_PAGE: Final = 100  # steps a read: at 1,000 rows a step a page is a few MB of objects
_SAVED: Final = 1

# KEYS: steps hash. ARGV: index, step JSON, expected state ('' = insert only if absent), expected attempts.
# Saving the very step stored already is a success that changes nothing: a retried call (its answer lost
# with the connection) must not read as refused.
_SAVE_STEP: Final = f"""
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored == ARGV[2] then return {_SAVED} end
if ARGV[3] == '' then
  if stored then return 0 end
else
  if not stored then return 0 end
  local current = cjson.decode(stored)
  if current['state'] ~= ARGV[3] or current['attempts'] ~= tonumber(ARGV[4]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {_SAVED}
"""


def _check_move(step: MigrationStep, expected: MigrationStep | None) -> None:
    """A save backwards or out of a terminal state is a bug of the caller: ValueError, nothing sent."""
    if expected is not None and not expected.state.may_move_to(step.state):
        raise ValueError(f"a migration step never moves from {expected.state.value} to {step.state.value}")


def _add(total: MigrationTally, more: MigrationTally) -> MigrationTally:
    return MigrationTally(
        **{name: getattr(total, name) + getattr(more, name) for name in MigrationTally.FIELDS}
    )


class RedisMigrations:
    """`MigrationLedger` on Redis, the same on every replica."""

    __slots__ = ("_conn", "_save")

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn
        self._save = conn.script(_SAVE_STEP)

    def __repr__(self) -> str:
        return f"<RedisMigrations prefix={self._conn.prefix!r}>"

    def _key(self, batch_id: str, kind: str) -> str:
        return self._conn.key("migration", batch_id, kind)

    async def save_snapshot(self, batch_id: str, names: Mapping[str, int]) -> bool:
        """SET NX: the first snapshot of a batch wins, on any replica."""
        body = json.dumps(dict(names), separators=(",", ":"))
        async with self._conn.guard("migrations.save_snapshot"):
            return bool(await self._conn.client.set(self._key(batch_id, "snapshot"), body, nx=True))

    async def get_snapshot(self, batch_id: str) -> dict[str, int] | None:
        async with self._conn.guard("migrations.get_snapshot"):
            body = await self._conn.client.get(self._key(batch_id, "snapshot"))
        return None if body is None else {str(name): int(job_id) for name, job_id in json.loads(body).items()}

    async def get_step(self, batch_id: str, index: int) -> MigrationStep | None:
        found = await self._read(batch_id, [index])
        return found[0] if found else None

    async def save_step(self, step: MigrationStep, expected: MigrationStep | None) -> bool:
        """Compare-and-set on (state, attempts) in one script; True also when the very step is stored."""
        _check_move(step, expected)
        args = [
            step.index,
            step.model_dump_json(),
            "" if expected is None else expected.state.value,
            0 if expected is None else expected.attempts,
        ]
        keys = [self._key(step.batch_id, "steps")]
        saved = bool(await self._conn.run("migrations.save_step", self._save, keys, args) == _SAVED)
        if not saved:
            log.info("migration.step_save_refused", batch_id=step.batch_id, index=step.index)
        return saved

    async def steps(self, batch_id: str) -> AsyncIterator[MigrationStep]:
        """Every step in index order: the indexes first (small), then the steps a page at a time."""
        async with self._conn.guard("migrations.steps"):
            fields = cast(list[str], await self._conn.client.hkeys(self._key(batch_id, "steps")))
        indexes = sorted(int(field) for field in fields)
        for start in range(0, len(indexes), _READ_PAGE):
            for step in await self._read(batch_id, indexes[start : start + _READ_PAGE]):
                yield step

    async def tally(self, batch_id: str) -> MigrationTally:
        """Counted a page of steps at a time, so only one page is ever held in memory."""
        total, page = MigrationTally(), []
        async for step in self.steps(batch_id):
            page.append(step)
            if len(page) == _READ_PAGE:
                total, page = _add(total, MigrationTally.of(page)), []
        return _add(total, MigrationTally.of(page))

    async def _read(self, batch_id: str, indexes: Sequence[int]) -> list[MigrationStep]:
        async with self._conn.guard("migrations.read_steps"):
            reply = await self._conn.client.hmget(self._key(batch_id, "steps"), [str(i) for i in indexes])
        raw = cast(list[str | None], reply)
        return [MigrationStep.model_validate_json(text) for text in raw if text is not None]
