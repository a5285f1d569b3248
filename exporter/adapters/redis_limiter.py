"""Global rate limiter on Redis: GCRA in one Lua script on the server clock, shared by every replica.

Each caller reserves the next slot `1/rate` after the previous one (at most `burst` slots early), exactly
like the in-process `LocalRateLimiter`, but the theoretical arrival time lives in Redis and is read and
moved by one script, so all replicas together stay under the rate. The script answers "your slot is in
N µs" and the caller sleeps locally; only the server clock decides slots, so replicas' clocks never matter.

A 429 sets a shared "paused until" key (the later of the old and new deadline); a caller whose sleep ends
inside a pause reserves again behind it. A caller that wakes late uses its slot while the lateness is one
that the gateway's window absorbs (up to 20 ms, or one interval when that is longer, but never more than
`window_slack`, the headroom's share of the window: 30 ms of one second at 3%), so a loop a few milliseconds
late on every turn slows callers but never starves them; later than that (its event loop stalled) it
reserves a new slot rather than release a backlog of missed slots at once. When Redis is slow or unreachable
the caller asks again with jittered backoff (tenacity, built only after a first failure: the hot path is one
script call), and after `give_up_after` seconds it raises `StoreUnavailable`: it never sends a request
without a slot.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

import structlog
from redis.commands.core import AsyncScript
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.wait import wait_random_exponential

from exporter.adapters.gate import ReservationGate
from exporter.adapters.limiter import ReleaseSpacer
from exporter.adapters.redis_connection import RedisConnection
from exporter.clock import SystemClock
from exporter.errors import StoreUnavailable
from exporter.ports import Clock

__all__ = ["GIVE_UP_AFTER", "RedisRateLimiter"]

log = structlog.get_logger(__name__)

_MICROSECONDS = 1_000_000
_FIRST_RETRY = 0.05
_LONGEST_RETRY = 2.0
_LATE_ENOUGH = 0.02
_LEAST_LATENESS = 0.005  # below this, a loop a little late on every turn would take new slots for ever
_RESERVE_AHEAD = 0.25  # seconds of slots an adaptive pace lets this replica's callers hold at once
GIVE_UP_AFTER: Final = 60.0
"""Seconds a caller keeps asking an unreachable Redis for a slot before it raises StoreUnavailable."""

_NOW_US = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function expire_ms(deadline_us, now)
  return int(math.ceil((deadline_us - now) / 1000) + 1000)
end
"""

_RESERVE = (
    _NOW_US
    + """
local now = now_us()
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local paused_until = tonumber(redis.call('GET', KEYS[2]) or '0')
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(now, paused_until)
local slot = math.max(start, tat - tolerance)
local next_tat = math.max(tat, start) + interval
redis.call('SET', KEYS[1], int(next_tat), 'PX', expire_ms(next_tat, now))
return int(slot - now)
"""
)

_PAUSE = (
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

_PAUSE_LEFT = (
    _NOW_US
    + """
local paused_until = tonumber(redis.call('GET', KEYS[1]) or '0')
return int(math.max(0, paused_until - now_us()))
"""
)


class RedisRateLimiter:
    """Admit `rate` requests per second across every replica sharing the key prefix, `burst` back to back."""

    __slots__ = (
        "_burst",
        "_clock",
        "_conn",
        "_gate",
        "_give_up_after",
        "_interval_us",
        "_keys",
        "_late",
        "_scripts",
        "_spacer",
        "_tolerance_us",
        "_waiting",
        "_window_slack",
    )

    def __init__(
        self,
        conn: RedisConnection,
        rate: float,
        burst: int = 1,
        clock: Clock | None = None,
        *,
        give_up_after: float = GIVE_UP_AFTER,
        scope: str | None = None,
        window_slack: float | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._conn = conn
        self._clock: Clock = clock or SystemClock()
        self._give_up_after = give_up_after
        self._burst = burst
        self._window_slack = window_slack
        space = ("limiter",) if scope is None else ("limiter", scope)
        self._keys = [conn.key(*space, "tat"), conn.key(*space, "paused_until")]
        self._scripts = {
            "reserve": conn.script(_RESERVE),
            "pause": conn.script(_PAUSE),
            "pause_left": conn.script(_PAUSE_LEFT),
        }
        self._waiting = 0
        self._spacer = ReleaseSpacer(0.0, self._clock)
        self._gate: ReservationGate | None = None  # an adaptive pace only (see set_rate)
        self._pace(rate)

    @property
    def rate(self) -> float:
        return _MICROSECONDS / self._interval_us

    def set_rate(self, rate: float) -> None:
        """Pace this replica's reservations at `rate` from the next one on (each replica sets its own:
        the shared schedule is the TAT, moved by every reservation's interval).

        A pace set from outside (EXPORTER_RATE_LIMIT=auto) also bounds how far ahead this replica's
        callers reserve: at most a quarter second of slots at a time, so a faster pace reaches the
        shared schedule within that, instead of after every slot reserved at the old one."""
        self._pace(rate)
        holders = max(2, self._burst, math.ceil(rate * _RESERVE_AHEAD))
        if self._gate is None:
            self._gate = ReservationGate(holders)
        else:
            self._gate.resize(holders)

    def _pace(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._interval_us = _MICROSECONDS / rate
        self._late = max(1.0 / rate, _LATE_ENOUGH)
        if self._window_slack is not None:  # never more lateness than the gateway's window absorbs
            self._late = min(self._late, max(self._window_slack, _LEAST_LATENESS))
        self._tolerance_us = (self._burst - 1) * self._interval_us
        # Slots are shared; clumps are local: a late event loop wakes several of our callers at once.
        self._spacer.gap = 1.0 / rate / 2 if self._burst == 1 else 0.0

    def __repr__(self) -> str:
        return (
            f"<RedisRateLimiter rate={_MICROSECONDS / self._interval_us:.3f}/s "
            f"key={self._keys[0]!r} waiting={self._waiting}>"
        )

    async def acquire(self) -> float:
        """Reserve the next shared slot, sleep until it, and reserve again if a pause began meanwhile or
        our loop stalled well past the slot."""
        began = self._clock.monotonic()
        self._waiting += 1
        try:
            if self._gate is None:
                await self._reserve()
            else:
                async with self._gate:
                    await self._reserve()
            await self._spacer.space()
            return self._clock.monotonic() - began
        finally:
            self._waiting -= 1

    async def _reserve(self) -> None:
        """Take a shared slot and sleep until it (again, if a pause began or our loop stalled)."""
        while True:
            wait_us = await self._patiently("reserve", self._keys, [self._interval_us, self._tolerance_us])
            if wait_us <= 0:
                return
            slot = self._clock.monotonic() + wait_us / _MICROSECONDS
            await self._clock.sleep(wait_us / _MICROSECONDS)
            if self._clock.monotonic() - slot > self._late:
                continue  # our loop stalled past the slot: take a new one rather than burst
            if await self._patiently("pause_left", self._keys[1:], []) <= 0:
                return

    async def pause(self, seconds: float, message: str = "") -> None:
        """Nobody on any replica gets a slot until `seconds` from now (or a later pause already set)."""
        left_us = await self._patiently("pause", self._keys, [max(0.0, seconds) * _MICROSECONDS])
        log.info("limiter.paused", seconds=seconds, paused_for=left_us / _MICROSECONDS)

    async def _patiently(self, name: str, keys: list[str], args: list[Any]) -> int:
        """Run a script, asking again while Redis does not answer, until `give_up_after` has passed."""
        script: AsyncScript = self._scripts[name]
        try:
            return int(await self._conn.run(f"limiter.{name}", script, keys, args))
        except StoreUnavailable:
            log.warning("limiter.redis_unavailable", operation=name, attempt=1)
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
            answer: Any = await retrying(self._conn.run, f"limiter.{name}", script, keys, args)
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
