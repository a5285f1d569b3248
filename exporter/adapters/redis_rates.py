"""Learned rates on Redis: one hash per limiter scope, written by a compare-and-set script.

`prefix:limiter:SCOPE:learned` holds seq, state (JSON), reason and saved_at (the server's clock); the set
`prefix:limiter:learned` names the scopes, for `status`. No expiry: what an endpoint taught us stays
true across restarts (a stale rate is corrected by the next 429 or the next probe).
"""

from __future__ import annotations

from typing import Any

import orjson

from exporter.adapters.redis_connection import RedisConnection
from exporter.rate_states import SharedRate

__all__ = ["RedisRateStates"]

_SAVE = """
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if seq ~= tonumber(ARGV[1]) then
  local old = redis.call('HMGET', KEYS[1], 'state', 'reason', 'saved_at')
  return {0, seq, old[1] or '{}', old[2] or '', old[3] or '0'}
end
local t = redis.call('TIME')
local saved_at = string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
redis.call('HSET', KEYS[1], 'seq', seq + 1, 'state', ARGV[2], 'reason', ARGV[3], 'saved_at', saved_at)
redis.call('SADD', KEYS[2], ARGV[4])
return {1, seq + 1, ARGV[2], ARGV[3], saved_at}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _record(seq: Any, state: Any, reason: Any, saved_at: Any) -> SharedRate:
    loaded = orjson.loads(_text(state) or "{}")
    return SharedRate(
        seq=int(_text(seq)),
        state=loaded if isinstance(loaded, dict) else {},
        reason=_text(reason),
        saved_at=float(_text(saved_at) or 0),
    )


class RedisRateStates:
    """`RateStates` under the backend's key prefix."""

    __slots__ = ("_conn", "_save")

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn
        self._save = conn.script(_SAVE)

    def _key(self, scope: str) -> str:
        return self._conn.key("limiter", scope, "learned")

    async def load(self, scope: str) -> SharedRate | None:
        async with self._conn.guard("load learned rate"):
            fields = await self._conn.client.hmget(self._key(scope), "seq", "state", "reason", "saved_at")
        return None if fields[0] is None else _record(*fields)

    async def save(
        self, scope: str, state: dict[str, Any], reason: str, expect_seq: int
    ) -> tuple[bool, SharedRate]:
        body = orjson.dumps(state).decode()
        keys = [self._key(scope), self._conn.key("limiter", "learned")]
        stored, *fields = await self._conn.run(
            "save learned rate", self._save, keys, [expect_seq, body, reason, scope]
        )
        return bool(int(stored)), _record(*fields)

    async def all(self) -> dict[str, SharedRate]:
        async with self._conn.guard("list learned rates"):
            members = await self._conn.client.smembers(self._conn.key("limiter", "learned"))
        scopes = sorted(_text(member) for member in members)
        found = {scope: await self.load(scope) for scope in scopes}
        return {scope: record for scope, record in found.items() if record is not None}
