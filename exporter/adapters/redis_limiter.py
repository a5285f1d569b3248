"""Global rate limiter on Redis: GCRA in one Lua script on the server clock, shared by every replica.

The theoretical arrival time (TAT) of the next request lives in Redis and is read and moved by one
script, so all replicas together stay under the rate, and only the server clock decides, so replicas'
clocks never matter. As in the in-process `LocalRateLimiter`, a slot is decided when its caller is
released, never reserved ahead: the script answers "go" (and moves the TAT) or "ask again in N µs", so a
caller that wakes late because its event loop lagged is not sent to the back of the line. Within a
process callers take turns (only the head of the line asks Redis), each first sleeping towards its turn;
across replicas the heads ask in parallel, and a loser is told how long until the next slot. A late
release keeps the schedule's phase for up to one interval with burst 1; beyond that the schedule
restarts from now, so a stall never releases its backlog of missed slots.

A 429 sets a shared "paused until" key (the later of the old and new deadline), which the script checks
at every ask. When Redis is slow or unreachable the caller waits and asks again (tenacity: full-jitter
exponential backoff, at most two seconds between asks) and after `give_up_after` seconds (a minute by
default) raises `StoreUnavailable`, which hands the batch back for later: it never sends a request
without a slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.wait import wait_random_exponential

from exporter.adapters.limiter import ReleaseSpacer
from exporter.adapters.redis_connection import RedisConnection
from exporter.clock import SystemClock
from exporter.errors import StoreUnavailable
from exporter.ports import Clock

__all__ = ["GIVE_UP_AFTER", "RedisRateLimiter"]

log = structlog.get_logger(__name__)

GIVE_UP_AFTER: Final = 60.0
"""Seconds a caller keeps asking an unreachable Redis for a slot before it raises `StoreUnavailable`."""

_MICROSECONDS: Final = 1_000_000
_FIRST_RETRY: Final = 0.05
_LONGEST_RETRY: Final = 2.0

_NOW_US: Final = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function expire_ms(deadline_us, now)
  return int(math.ceil((deadline_us - now) / 1000) + 1000)
end
"""

# KEYS: tat, paused_until. ARGV: interval, tolerance, slack (all µs). Returns 0 for "go", else the µs
# until the next slot (never 0 then: a caller must not mistake "almost" for "go").
_TAKE: Final = (
    _NOW_US
    + """
local now = now_us()
local interval, tolerance, slack = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local paused_until = tonumber(redis.call('GET', KEYS[2]) or '0')
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local earliest = math.max(paused_until, tat - tolerance)
if now < earliest then return math.max(1, math.ceil(earliest - now)) end
local next_tat = math.max(tat, now - slack) + interval
redis.call('SET', KEYS[1], int(next_tat), 'PX', expire_ms(next_tat, now))
return 0
"""
)

_PAUSE: Final = (
    _NOW_US
    + """
local now = now_us()
local until_us = now + tonumber(ARGV[1])
local paused_until = tonumber(redis.call('GET', KEYS[2]) or '0')
if until_us > paused_until then
  redis.call('SET', KEYS[2], int(until_us), 'PX', expire_ms(until_us, now))
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < until_us then redis.call('SET', KEYS[1], int(until_us), 'PX', expire_ms(until_us, now)) end
  paused_until = until_us
end
return int(paused_until - now)
"""
)


class RedisRateLimiter:
    """Admit `rate` requests per second across every replica sharing the key prefix, `burst` back to back."""

    __slots__ = (
        "_burst",
        "_clock",
        "_conn",
        "_give_up_after",
        "_interval",
        "_keys",
        "_line",
        "_scripts",
        "_slack_us",
        "_spacer",
        "_tolerance_us",
        "_waiting",
    )

    def __init__(
        self,
        conn: RedisConnection,
        rate: float,
        burst: int = 1,
        clock: Clock | None = None,
        *,
        give_up_after: float = GIVE_UP_AFTER,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._conn = conn
        self._clock: Clock = clock or SystemClock()
        self._give_up_after = give_up_after
        self._burst = burst
        self._interval = 1.0 / rate
        self._tolerance_us = (burst - 1) * self._interval * _MICROSECONDS
        # As in LocalRateLimiter: burst 1 keeps the phase through one interval of lateness (the spacer
        # smooths the pair that makes), a larger burst's tolerance absorbs it by itself.
        self._slack_us = max(0.0, self._interval * _MICROSECONDS - self._tolerance_us)
        self._keys = [conn.key("limiter", "tat"), conn.key("limiter", "paused_until")]
        self._scripts = {"take": conn.script(_TAKE), "pause": conn.script(_PAUSE)}
        self._waiting = 0
        self._line = asyncio.Lock()  # FIFO turns: only the caller holding it asks Redis for a slot
        # Slots are shared; clumps are local: a late event loop wakes several of our callers at once.
        self._spacer = ReleaseSpacer(self._interval / 2 if burst == 1 else 0.0, self._clock)

    def __repr__(self) -> str:
        rate = 1 / self._interval
        return f"<RedisRateLimiter rate={rate:.3f}/s key={self._keys[0]!r} waiting={self._waiting}>"

    async def acquire(self) -> float:
        """Wait for one shared slot, asking Redis again after each "not yet" (or a pause begun meanwhile)."""
        began = self._clock.monotonic()
        ahead = self._waiting
        self._waiting += 1
        try:
            if (early := (ahead - self._burst) * self._interval) > 0:  # nobody's slot comes sooner
                await self._clock.sleep(early)
            async with self._line:
                waited = ahead > 0
                while (wait_us := await self._take(waited=waited)) > 0:
                    waited = True
                    await self._clock.sleep(wait_us / _MICROSECONDS)
                await self._spacer.space()
            return self._clock.monotonic() - began
        finally:
            self._waiting -= 1

    async def _take(self, *, waited: bool) -> int:
        """0 when Redis gave us a slot, else the µs until we may ask again."""
        slack = self._slack_us if waited else 0.0
        return await self._patiently("take", [self._interval * _MICROSECONDS, self._tolerance_us, slack])

    async def pause(self, seconds: float) -> None:
        """Nobody on any replica gets a slot until `seconds` from now (or a later pause already set)."""
        left_us = await self._patiently("pause", [max(0.0, seconds) * _MICROSECONDS])
        log.info("limiter.paused", seconds=seconds, paused_for=left_us / _MICROSECONDS)

    async def _patiently(self, name: str, args: list[Any]) -> int:
        """Run a script, asking again while Redis does not answer, until `give_up_after` has passed."""
        deadline = self._clock.monotonic() + self._give_up_after
        retrying = AsyncRetrying(
            sleep=self._clock.sleep,
            stop=lambda state: self._clock.monotonic() + state.upcoming_sleep > deadline,
            wait=wait_random_exponential(multiplier=_FIRST_RETRY, max=_LONGEST_RETRY),
            retry=retry_if_exception_type(StoreUnavailable),
            before_sleep=_log_retry(name),
            reraise=True,
        )
        try:
            answer: Any = await retrying(
                self._conn.run, f"limiter.{name}", self._scripts[name], self._keys, args
            )
        except StoreUnavailable as error:
            log.error("limiter.gave_up", operation=name, seconds=self._give_up_after, error=str(error))
            raise StoreUnavailable(
                f"no rate-limiter slot: Redis did not answer for {self._give_up_after:g} s ({error})"
            ) from error
        return int(answer)


def _log_retry(operation: str) -> Callable[[RetryCallState], None]:
    """tenacity `before_sleep` hook: one warning per failed ask."""

    def record(state: RetryCallState) -> None:
        log.warning(
            "limiter.redis_unavailable",
            operation=operation,
            attempt=state.attempt_number,
            retry_in=round(state.upcoming_sleep, 3),
        )

    return record
