"""The Redis ledger's Lua scripts: each runs atomically on the server, so a compare and its write, or a
chunk's record and its batch's counters, can never be seen (or retried) half done.

A chunk's share (what it adds to the batch counters) travels as comma-separated integers in
`ChunkTally.FIELDS` order, the same order older versions wrote, so shares recorded by them still read.
"""

from __future__ import annotations

from typing import Final

from exporter.models import ChunkTally

__all__ = [
    "CLAIM_CHUNK",
    "COMMIT_BATCH",
    "NO_SUCH_CHUNK",
    "RELEASE_CHUNK",
    "SAVED",
    "SAVE_CHUNK",
    "SAVE_REFUSED",
    "SET_STATE",
    "share_csv",
]

SAVED: Final = 1
SAVE_REFUSED: Final = 0
NO_SUCH_CHUNK: Final = -1


def share_csv(tally: ChunkTally) -> str:
    """A tally as the scripts store it in `ledger:share:<b>`."""
    return ",".join(str(value) for value in tally.values())


def _lua_list(values: tuple[str, ...]) -> str:
    return "{" + ", ".join(f"'{value}'" for value in values) + "}"


# KEYS: batch, batches, staged chunks, chunks. ARGV: token, info JSON, state, updated_at, jobs, chunks,
# created_at, batch ID, error JSON or ''. Returns 1 when this call (or an earlier try of it, same token)
# created the batch, 0 when the batch existed already.
COMMIT_BATCH: Final = """
local batch, batches, staged, chunks = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token = ARGV[1]
if redis.call('EXISTS', batch) == 1 then
  redis.call('DEL', staged)
  return redis.call('HGET', batch, 'token') == token and 1 or 0
end
if redis.call('EXISTS', staged) == 1 then
  redis.call('RENAME', staged, chunks)
  redis.call('PERSIST', chunks)
end
redis.call('HSET', batch, 'token', token, 'info', ARGV[2], 'state', ARGV[3], 'updated_at', ARGV[4],
           'jobs', ARGV[5], 'chunks', ARGV[6], 'pending', ARGV[6], 'exported', 0, 'verified', 0,
           'failed', 0, 'chunks_verified', 0, 'chunks_failed', 0)
if ARGV[9] ~= '' then redis.call('HSET', batch, 'error', ARGV[9]) end
redis.call('ZADD', batches, ARGV[7], ARGV[8])
return 1
"""

# KEYS: batch, chunks, shares. ARGV: index, record JSON, share, expected state, expected attempts, now.
# Saving the very record stored already is a success that changes nothing: a retried call (its answer
# lost with the connection) must not read as refused.
SAVE_CHUNK: Final = f"""
local batch, chunks, shares = KEYS[1], KEYS[2], KEYS[3]
local index, record, share = ARGV[1], ARGV[2], ARGV[3]
local stored = redis.call('HGET', chunks, index)
if not stored then return {NO_SUCH_CHUNK} end
if stored == record then return {SAVED} end
local current = cjson.decode(stored)
if current['state'] ~= ARGV[4] or current['attempts'] ~= tonumber(ARGV[5]) then return {SAVE_REFUSED} end
local function words(csv)
  local out = {{}}
  for word in string.gmatch(csv, '[^,]+') do table.insert(out, word) end
  return out
end
local names = {_lua_list(ChunkTally.FIELDS)}
local old = words(redis.call('HGET', shares, index) or '{share_csv(ChunkTally(pending=1))}')
local new = words(share)
for i, name in ipairs(names) do
  local delta = tonumber(new[i]) - tonumber(old[i])
  if delta ~= 0 then redis.call('HINCRBY', batch, name, delta) end
end
redis.call('HSET', chunks, index, record)
redis.call('HSET', shares, index, share)
redis.call('HSET', batch, 'updated_at', ARGV[6])
return {SAVED}
"""

# KEYS: batch. ARGV: state, updated_at, finished_at or '', error JSON or ''. 0 when there is no batch.
SET_STATE: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated_at', ARGV[2])
local function put(name, value)
  if value == '' then redis.call('HDEL', KEYS[1], name) else redis.call('HSET', KEYS[1], name, value) end
end
put('finished_at', ARGV[3])
put('error', ARGV[4])
return 1
"""

# KEYS: owner key. ARGV: owner, ttl in ms.
CLAIM_CHUNK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""

# KEYS: owner key. ARGV: owner.
RELEASE_CHUNK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
