"""`EXPORTER_RATE_LIMIT=auto`: a limiter whose pace follows what the gateway says (exporter.adaptive).

It wraps the fixed limiter of an endpoint (local, or shared on Redis) and changes its pace: at once to
the policy a 429 states ("limit:40,time:1 second", less the headroom), or along the controller's search
when 429s state nothing. Requests going out without a 429 are the search's signal to go faster (each
`acquire` asks the controller, which changes the pace at most every tenth of a second). With a
`RateSync`, the learned rate is one record for every replica and survives restarts (adapters.rate_sync).

Every cut, stated limit and adopted record is one `rate.adjusted` log line; the climb logs only when it
has moved a tenth since the last line (a search changes the pace ten times a second). The gauge
`exporter_rate_limit_per_second{endpoint}` follows every change. A 429 still pauses the endpoint for its
Retry-After, as with a fixed rate; `MeteredLimiter` counts 429s and the stated limit for a fixed rate.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

import structlog

from exporter import metrics
from exporter.adapters.rate_sync import RateSync
from exporter.adaptive import Adjustment, RateController, StatedLimit, parse_policy
from exporter.errors import StoreUnavailable
from exporter.ports import Clock

__all__ = ["AdaptiveLimiter", "MeteredLimiter", "PacedLimiter"]

log = structlog.get_logger("exporter.limiter")

_LOGGED_MOVE = 0.1
"""A climb is logged once it has moved this share of the rate last logged."""


class PacedLimiter(Protocol):
    """A limiter whose pace can be changed (LocalRateLimiter, RedisRateLimiter)."""

    @property
    def rate(self) -> float: ...

    def set_rate(self, rate: float) -> None: ...

    async def acquire(self) -> float: ...

    async def pause(self, seconds: float, message: str = "") -> None: ...


def _throttled(endpoint: str, message: str) -> StatedLimit | None:
    """Count a 429 of the endpoint; the limit its message states (also shown as a gauge), if any."""
    metrics.labelled(metrics.THROTTLED, endpoint).inc()
    stated = parse_policy(message)
    if stated is not None:
        metrics.labelled(metrics.STATED_LIMIT, endpoint).set(stated.per_second)
    return stated


def _expose(endpoint: str, rate: float) -> None:
    """The endpoint's series exist from the start (dashboards and alerts see 0, not nothing)."""
    metrics.labelled(metrics.RATE, endpoint).set(rate)
    metrics.labelled(metrics.THROTTLED, endpoint).inc(0)
    metrics.labelled(metrics.STATED_LIMIT, endpoint).inc(0)


class MeteredLimiter:
    """A fixed pace: the inner limiter, with its 429s and their stated limit in the metrics."""

    __slots__ = ("_endpoint", "_inner")

    def __init__(self, inner: PacedLimiter, *, endpoint: str) -> None:
        self._inner = inner
        self._endpoint = endpoint
        _expose(endpoint, inner.rate)

    def __repr__(self) -> str:
        return f"<MeteredLimiter {self._endpoint} rate={self._inner.rate:.2f}/s>"

    @property
    def rate(self) -> float:
        return self._inner.rate

    async def acquire(self) -> float:
        return await self._inner.acquire()

    async def pause(self, seconds: float, message: str = "") -> None:
        _throttled(self._endpoint, message)
        await self._inner.pause(seconds, message)


class AdaptiveLimiter:
    """`RateLimiter` pacing an endpoint at the rate its controller learns."""

    __slots__ = ("_clock", "_controller", "_endpoint", "_inner", "_logged", "_sync")

    def __init__(
        self,
        inner: PacedLimiter,
        controller: RateController,
        clock: Clock,
        *,
        endpoint: str,
        sync: RateSync | None = None,
    ) -> None:
        self._inner = inner
        self._controller = controller
        self._clock = clock
        self._endpoint = endpoint
        self._sync = sync
        self._logged = controller.rate
        inner.set_rate(controller.rate)
        _expose(endpoint, controller.rate)

    def __repr__(self) -> str:
        return f"<AdaptiveLimiter {self._endpoint} rate={self._controller.rate:.2f}/s>"

    @property
    def rate(self) -> float:
        return self._controller.rate

    async def acquire(self) -> float:
        now = self._clock.monotonic()
        adjustment = self._controller.on_success(now)
        if adjustment is not None and self._sync is not None:
            self._sync.probed()
        self._apply(adjustment)
        if self._sync is not None and self._sync.claim(now):
            await self._share(self._sync.exchange(self._controller))
        return await self._inner.acquire()

    async def pause(self, seconds: float, message: str = "") -> None:
        stated = _throttled(self._endpoint, message)
        adjustment = self._controller.on_throttled(self._clock.monotonic(), stated)
        self._apply(adjustment)
        if adjustment is not None and self._sync is not None:
            await self._share(self._sync.push(self._controller, adjustment.reason))
        await self._inner.pause(seconds, message)

    async def _share(self, exchange: Awaitable[Adjustment | None]) -> None:
        """Run an exchange with the shared record; an unreachable store leaves the local rate in charge."""
        try:
            self._apply(await exchange)
        except StoreUnavailable as error:
            log.warning("rate.share_failed", endpoint=self._endpoint, error=str(error))

    def _apply(self, adjustment: Adjustment | None) -> None:
        if adjustment is None:
            return
        self._inner.set_rate(adjustment.new)
        metrics.labelled(metrics.RATE, self._endpoint).set(adjustment.new)
        stated = self._controller.stated_per_second
        if stated is not None:
            metrics.labelled(metrics.STATED_LIMIT, self._endpoint).set(stated)
        probe = adjustment.reason == "probe"
        if probe and abs(adjustment.new - self._logged) < _LOGGED_MOVE * self._logged:
            return
        old, self._logged = (self._logged if probe else adjustment.old), adjustment.new
        log.info(
            "rate.adjusted",
            endpoint=self._endpoint,
            old=round(old, 3),
            new=round(adjustment.new, 3),
            reason=adjustment.reason,
        )
