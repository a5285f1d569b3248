"""In-process rate limiter: GCRA spacing so requests leave evenly, never a whole period's quota at once.

DLI's gateway counts requests in a sliding window, so a token bucket that lets `rate` requests out in
one burst earns 429s; here requests leave `1/rate` apart, with at most `burst` back to back. A 429 pauses
every caller, including those already waiting.

A slot is decided when its caller is released, never reserved ahead, so a caller that wakes late is not
sent to the back of the line (reserving again and again starved every caller once the event loop lagged
by more than one interval). Callers take turns in arrival order; each first sleeps, outside the line,
until its slot would come if everyone ahead went on time, so a late loop delays each wake-up once
rather than once per caller ahead. A late release does not push the schedule back by its lateness as
long as that is under one interval (timer jitter costs no throughput), or under `window_slack` when
that is shorter; beyond that the schedule restarts from now, so a stall never releases its backlog of
missed slots. However late the loop runs, no window of W seconds sees more than
`ceil(rate * (W + slack)) + burst - 1` releases: with `window_slack` the headroom's share of the
gateway's window (30 ms of 1 s at 3%), a rate paced 3% under the limit stays within it even at 20/s,
where one whole interval (51 ms) of lateness let a 21st request into a 20-request window.
"""

from __future__ import annotations

import asyncio

from exporter.clock import SystemClock, sleep_unless
from exporter.ports import Clock

__all__ = ["LocalRateLimiter", "ReleaseSpacer", "next_tat"]


def next_tat(tat: float, now: float, interval: float, slack: float) -> float:
    """The theoretical arrival time (TAT) of the next request, after one released at `now`.

    The schedule may trail `now` by at most `slack`: a caller released that late still used its own
    slot (timer jitter), one released later finds the slots it missed gone. A caller that found the
    limiter idle passes no slack: idle time earns no credit beyond `burst`.
    """
    return max(tat, now - slack) + interval


class ReleaseSpacer:
    """Keeps this process's actual releases at least `gap` seconds apart.

    When the event loop runs late, a caller released late may be followed at once by the next one on
    schedule; sent together they arrive as one clump in the gateway's sliding window. Spacing real
    releases by half an interval smooths the clump while a late schedule can still catch up.
    """

    __slots__ = ("_clock", "_last", "gap")

    def __init__(self, gap: float, clock: Clock) -> None:
        self.gap = gap
        self._clock = clock
        self._last = float("-inf")

    async def space(self) -> None:
        """Return once `gap` has passed since the previous release, and count this one as released."""
        while True:
            wait = self._last + self.gap - self._clock.monotonic()
            if wait <= 0:
                self._last = self._clock.monotonic()
                return
            await self._clock.sleep(wait)


class LocalRateLimiter:
    """Admit `rate` requests per second on average, `burst` at most back to back."""

    __slots__ = (
        "_burst",
        "_changed",
        "_clock",
        "_interval",
        "_line",
        "_paused_until",
        "_served",
        "_slack",
        "_spacer",
        "_tat",
        "_tolerance",
        "_waiting",
        "_window_slack",
    )

    def __init__(
        self, rate: float, burst: int = 1, clock: Clock | None = None, *, window_slack: float | None = None
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._clock: Clock = clock or SystemClock()
        self._burst = burst
        self._window_slack = window_slack
        self._tat = float("-inf")  # theoretical arrival time of the next request (GCRA)
        self._paused_until = float("-inf")
        self._waiting = 0
        self._served = 0  # slots taken so far: how far the line moved while a caller slept
        self._changed: asyncio.Event | None = None  # set when the pace changes (adaptive use only)
        self._line = asyncio.Lock()  # FIFO turns: only the caller holding it takes a slot
        self._spacer = ReleaseSpacer(0.0, self._clock)
        self._pace(rate)

    @property
    def rate(self) -> float:
        return 1.0 / self._interval

    def set_rate(self, rate: float) -> None:
        """Pace at `rate` from the next slot on (slots already taken stay where they are); callers
        sleeping towards their turn reckon it again at the new pace."""
        old_interval = self._interval
        self._pace(rate)
        if self._tat > self._clock.monotonic():  # the next slot: one new interval after the last release
            self._tat += self._interval - old_interval
        previous, self._changed = self._changed, asyncio.Event()
        if previous is not None:
            previous.set()

    def _pace(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._interval = 1.0 / rate
        self._tolerance = (self._burst - 1) * self._interval
        # With burst 1 a late release keeps the phase for up to one interval (the spacer below keeps it
        # half an interval from the next); a larger burst's tolerance absorbs that lateness by itself.
        self._slack = max(0.0, self._interval - self._tolerance)
        if self._window_slack is not None:
            self._slack = min(self._slack, max(0.0, self._window_slack))
        # With burst 1 the caller wants smoothness above all: never two releases closer than half a slot.
        self._spacer.gap = self._interval / 2 if self._burst == 1 else 0.0

    def __repr__(self) -> str:
        now = self._clock.monotonic()
        return (
            f"<LocalRateLimiter rate={1 / self._interval:.3f}/s backlog={max(0.0, self._tat - now):.3f}s "
            f"paused={max(0.0, self._paused_until - now):.3f}s waiting={self._waiting}>"
        )

    async def acquire(self) -> float:
        """Wait for one request slot; return the seconds waited."""
        began = self._clock.monotonic()
        ahead, served = self._waiting, self._served
        self._waiting += 1
        try:
            await self._towards_turn(ahead, served)
            async with self._line:
                waited = bool(ahead)
                while (wait := self._take(waited=waited)) > 0:  # a 429 meanwhile just waits longer
                    waited = True
                    await self._nap(wait)
                await self._spacer.space()
            return self._clock.monotonic() - began
        finally:
            self._waiting -= 1

    async def _towards_turn(self, ahead: int, served: int) -> None:
        """Sleep until our slot would come if each caller ahead went on time (towards our turn now,
        rather than once theirs are over); a pace change meanwhile wakes us to reckon it again."""
        while (remaining := ahead - (self._served - served)) > 0:
            early = self._expected(remaining) - self._clock.monotonic()
            if early <= 0:
                return
            if not await self._nap(early):
                return

    async def _nap(self, seconds: float) -> bool:
        """Sleep `seconds`; True when a pace change cut it short (a fixed pace sleeps it through)."""
        if self._changed is None:
            await self._clock.sleep(seconds)
            return False
        return await sleep_unless(self._clock, seconds, self._changed)

    def _expected(self, ahead: int) -> float:
        """When a caller with `ahead` callers in front gets its slot if each of them goes on time."""
        return max(self._paused_until, self._tat - self._tolerance + ahead * self._interval)

    def _take(self, *, waited: bool) -> float:
        """Take a slot now if the schedule allows (0.0), else the seconds until it may."""
        now = self._clock.monotonic()
        earliest = max(self._paused_until, self._tat - self._tolerance)
        if now < earliest:
            return earliest - now
        self._tat = next_tat(self._tat, now, self._interval, self._slack if waited else 0.0)
        self._served += 1
        return 0.0

    async def pause(self, seconds: float, message: str = "") -> None:
        """Nobody gets a slot for `seconds`; later slots are pushed back behind the pause."""
        until = self._clock.monotonic() + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until
            self._tat = max(self._tat, until)
