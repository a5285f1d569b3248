"""In-process rate limiter: GCRA spacing so requests leave evenly, never a whole period's quota at once.

DLI's gateway counts requests in a sliding window, so a token bucket that lets `rate` requests out in
one burst earns 429s; here each caller reserves the next slot `1/rate` after the previous one, with at
most `burst` slots early. A 429 pauses every caller, including those already holding a reservation.
"""

from __future__ import annotations

from exporter.clock import SystemClock
from exporter.ports import Clock

__all__ = ["LocalRateLimiter", "ReleaseSpacer"]


class ReleaseSpacer:
    """Keeps this process's actual releases at least `gap` seconds apart.

    When the event loop runs late, every caller whose slot has passed wakes in the same turn; sent
    together they arrive as one clump in the gateway's sliding window. Spacing real releases by half an
    interval smooths the clump while a late schedule can still catch up.
    """

    __slots__ = ("_clock", "_gap", "_last")

    def __init__(self, gap: float, clock: Clock) -> None:
        self._gap = gap
        self._clock = clock
        self._last = float("-inf")

    async def space(self) -> None:
        """Return once `gap` has passed since the previous release, and count this one as released."""
        while True:
            wait = self._last + self._gap - self._clock.monotonic()
            if wait <= 0:
                self._last = self._clock.monotonic()
                return
            await self._clock.sleep(wait)


class LocalRateLimiter:
    """Admit `rate` requests per second on average, `burst` at most back to back.

    A caller that wakes more than one interval after its slot (the event loop was blocked) takes a new
    slot instead of using the old one: releasing every missed slot at once after a stall is exactly the
    burst a sliding-window gateway answers with 429.
    """

    __slots__ = ("_clock", "_interval", "_paused_until", "_spacer", "_tat", "_tolerance", "_waiting")

    def __init__(self, rate: float, burst: int = 1, clock: Clock | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._clock: Clock = clock or SystemClock()
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._tat = 0.0  # theoretical arrival time of the next request (GCRA)
        self._paused_until = 0.0
        self._waiting = 0
        # With burst 1 the caller wants smoothness above all: never two releases closer than half a slot.
        self._spacer = ReleaseSpacer(self._interval / 2 if burst == 1 else 0.0, self._clock)

    def __repr__(self) -> str:
        now = self._clock.monotonic()
        return (
            f"<LocalRateLimiter rate={1 / self._interval:.3f}/s backlog={max(0.0, self._tat - now):.3f}s "
            f"paused={max(0.0, self._paused_until - now):.3f}s waiting={self._waiting}>"
        )

    def _reserve(self, now: float) -> float:
        """Take the next slot and return when it may be used."""
        start = max(now, self._paused_until)
        slot = max(start, self._tat - self._tolerance)
        self._tat = max(self._tat, start) + self._interval
        return slot

    async def acquire(self) -> float:
        """Wait for one request slot; return the seconds waited."""
        began = self._clock.monotonic()
        self._waiting += 1
        try:
            now = began
            while True:
                slot = self._reserve(now)
                if slot > now:
                    await self._clock.sleep(slot - now)
                now = self._clock.monotonic()
                if now < self._paused_until:  # a 429 during our wait sends us back in line
                    continue
                if now - slot > self._interval:  # the loop stalled: a missed slot is not caught up
                    continue
                await self._spacer.space()
                return self._clock.monotonic() - began
        finally:
            self._waiting -= 1

    async def pause(self, seconds: float) -> None:
        """Nobody gets a slot for `seconds`; later slots are pushed back behind the pause."""
        until = self._clock.monotonic() + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until
            self._tat = max(self._tat, until)
