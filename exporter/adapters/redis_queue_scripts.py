"""The Lua scripts of the Redis queue: each state change of a message is one atomic script.

Every script gets the same keys, in `KEY_NAMES` order (under the prefix, `queue:<name>`), then a fresh
answer key (`done`, the call's token) last, and the consumer group as ARGV[1]. Each is safe to run twice:
redis-py re-sends a command when the connection drops before its answer arrives.
"""

from __future__ import annotations

from typing import Final

__all__ = ["KEY_NAMES", "SCRIPTS"]

KEY_NAMES: Final = ("stream", "leases", "delayed", "handbacks", "failures", "dead", "accepted", "identities")

_COMMON: Final = """
local stream, leases, delayed, handbacks, failures, dead, accepted, identities, done =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local group = ARGV[1]

local function pending(id)
  local found = redis.pcall('XPENDING', stream, group, id, id, 1)
  if type(found) ~= 'table' or found.err or not found[1] then return false end
  return found[1]
end

local function count_in(hash, id)
  return tonumber(redis.call('HGET', hash, id) or '0')
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
  redis.call('HDEL', failures, id)
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
"""`pending(id)` is the PEL entry {id, consumer, idle ms, deliveries} or false; `holds` is true while a
claim is the current one: same consumer, same delivery, and still leased (not handed back)."""

# ARGV: group, batch ID, body, call token, identity. Answers {1, ''} when accepted (also to a re-sent
# call, which finds its own token), else {0, the identity the batch ID was accepted with}.
_PUT: Final = """
local accepted_by = redis.call('HGET', accepted, ARGV[2])
if accepted_by then
  if accepted_by == ARGV[4] then return {1, ''} end
  return {0, redis.call('HGET', identities, ARGV[2]) or ''}
end
redis.call('XADD', stream, '*', 'body', ARGV[3], 'batch_id', ARGV[2])
redis.call('HSET', accepted, ARGV[2], ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', identities, ARGV[2], ARGV[5]) end
return {1, ''}
"""

_PUT_RAW: Final = """
local earlier = redis.call('GET', done)
if earlier then return earlier end
local id = redis.call('XADD', stream, '*', 'body', ARGV[2])
redis.call('SET', done, id, 'PX', ARGV[3])
return id
"""

# Why a message is parked: how often it came back unfinished, and how those deliveries ended.
_POISON_REASON: Final = """
local LOST = 'ended without an answer (the process died, or lost its lease)'

local function plural(n, one, many)
  return n .. ' ' .. (n == 1 and one or many)
end

local function poison_reason(unfinished, failed, handed_back)
  local lost = unfinished - failed
  local how = 'each delivery ' .. LOST
  if lost == 0 then
    how = 'each attempt failed (handed back as a failure)'
  elseif failed > 0 then
    how = plural(failed, 'attempt', 'attempts') .. ' failed (handed back as failures), '
      .. plural(lost, 'delivery', 'deliveries') .. ' ' .. LOST
  end
  local besides = ''
  if handed_back > 0 then
    besides = ' (besides ' .. plural(handed_back, 'deliberate hand-back', 'deliberate hand-backs') .. ')'
  end
  return 'delivered ' .. unfinished .. ' times without finishing' .. besides .. ': ' .. how
end
"""

_CLAIM: Final = (
    _POISON_REASON
    + """
local consumer, lease_ms, max_unfinished = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local parked_at, token_ttl = ARGV[5], ARGV[6]
local now = now_ms()
redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')

local function grant(id, body, deliveries)
  redis.call('ZREM', delayed, id)
  redis.call('ZADD', leases, int(now + lease_ms), id)
  redis.call('SET', done, id, 'PX', token_ttl)
  return {id, body, deliveries, count_in(handbacks, id)}
end

local function hand_over(id)
  local entry = pending(id)
  if not entry then
    forget(id)
    return false
  end
  local handed_back = count_in(handbacks, id)
  local unfinished = entry[4] - handed_back
  if unfinished >= max_unfinished then
    local reason = poison_reason(unfinished, count_in(failures, id), handed_back)
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
  return {earlier, body_of(earlier), entry[4], count_in(handbacks, earlier)}
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
)

_PRUNE_CONSUMERS: Final = """
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

_EXTEND: Final = """
local id = ARGV[2]
if not holds(id, ARGV[3], tonumber(ARGV[4])) then return 0 end
redis.call('ZADD', leases, int(now_ms() + tonumber(ARGV[5])), id)
redis.call('XCLAIM', stream, group, ARGV[3], 0, id, 'JUSTID')
return 1
"""

# ARGV[6] is '1' for a deliberate hand-back, '0' for a failed attempt (counted apart, for the reason).
_NACK: Final = """
local id = ARGV[2]
if not holds(id, ARGV[3], tonumber(ARGV[4])) then return 0 end
redis.call('ZREM', leases, id)
redis.call('ZADD', delayed, int(now_ms() + tonumber(ARGV[5])), id)
if ARGV[6] == '1' then
  redis.call('HINCRBY', handbacks, id, 1)
else
  redis.call('HINCRBY', failures, id, 1)
end
return 1
"""

_ACK: Final = """
return remove(ARGV[2])
"""

_DEAD_LETTER: Final = """
local id = ARGV[2]
if not holds(id, ARGV[3], tonumber(ARGV[4])) then return 0 end
park(id, ARGV[5], ARGV[6], ARGV[4], ARGV[7])
return 1
"""

_REQUEUE: Final = """
if redis.call('GET', done) then return 1 end
local rows = redis.call('XRANGE', dead, ARGV[2], ARGV[2])
if #rows == 0 then return 0 end
redis.call('XADD', stream, '*', 'body', field(rows[1][2], 'body') or '')
redis.call('XDEL', dead, ARGV[2])
redis.call('SET', done, '1', 'PX', ARGV[3])
return 1
"""

SCRIPTS: Final = {
    name: _COMMON + body
    for name, body in {
        "put": _PUT,
        "put_raw": _PUT_RAW,
        "claim": _CLAIM,
        "extend": _EXTEND,
        "nack": _NACK,
        "ack": _ACK,
        "dead_letter": _DEAD_LETTER,
        "requeue": _REQUEUE,
        "prune_consumers": _PRUNE_CONSUMERS,
    }.items()
}
"""Script name -> source (without the connection's shared prelude, which `RedisConnection.script` adds)."""
