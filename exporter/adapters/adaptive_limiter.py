"""`EXPORTER_RATE_LIMIT=auto`: a limiter whose pace follows what the gateway says (exporter.adaptive).

It wraps the fixed limiter of an endpoint (local, or shared on Redis) and changes its pace: at once to
the policy a 429 states ("limit:40,time:1 second", less the headroom), or along the controller's search
when 429s state nothing. Requests going out without a 429 are the search's signal to go faster (each
`acquire` asks the controller, which changes the pace at most every tenth of a second). Every change is
one `rate.adjusted` log line and the `exporter_rate_limit_per_second{endpoint}` gauge. A 429 still
pauses the endpoint for its Retry-After, as with a fixed rate.
"""

from __future__ import annotations

from typing import Protocol

import structlog

from exporter import metrics
from exporter.adaptive import Adjustment, RateController, parse_policy
from exporter.ports import Clock

__all__ = ["AdaptiveLimiter", "PacedLimiter"]

log = structlog.get_logger("exporter.limiter")


class PacedLimiter(Protocol):
    """A limiter whose pace can be changed (LocalRateLimiter, RedisRateLimiter)."""

    @property
    def rate(self) -> float: ...

    def set_rate(self, rate: float) -> None: ...

    async def acquire(self) -> float: ...

    async def pause(self, seconds: float, message: str = "") -> None: ...


class AdaptiveLimiter:
    """`RateLimiter` pacing an endpoint at the rate its controller learns."""

    __slots__ = ("_clock", "_controller", "_endpoint", "_inner")

    def __init__(
        self, inner: PacedLimiter, controller: RateController, clock: Clock, *, endpoint: str
    ) -> None:
        self._inner = inner
        self._controller = controller
        self._clock = clock
        self._endpoint = endpoint
        inner.set_rate(controller.rate)
        metrics.labelled(metrics.RATE, endpoint).set(controller.rate)

    def __repr__(self) -> str:
        return f"<AdaptiveLimiter {self._endpoint} rate={self._controller.rate:.2f}/s>"

    @property
    def rate(self) -> float:
        return self._controller.rate

    async def acquire(self) -> float:
        self._apply(self._controller.on_success(self._clock.monotonic()))
        return await self._inner.acquire()

    async def pause(self, seconds: float, message: str = "") -> None:
        stated = parse_policy(message)
        self._apply(self._controller.on_throttled(self._clock.monotonic(), stated))
        await self._inner.pause(seconds, message)

    def _apply(self, adjustment: Adjustment | None) -> None:
        if adjustment is None:
            return
        self._inner.set_rate(adjustment.new)
        metrics.labelled(metrics.RATE, self._endpoint).set(adjustment.new)
        log.info(
            "rate.adjusted",
            endpoint=self._endpoint,
            old=round(adjustment.old, 3),
            new=round(adjustment.new, 3),
            reason=adjustment.reason,
        )
