"""EXPORTER_RATE_LIMIT=auto at the limiter: a stated policy sets the pace at once; silence is searched."""

from __future__ import annotations

from fakes import VirtualClock
from structlog.testing import capture_logs

from exporter import metrics
from exporter.adapters.adaptive_limiter import AdaptiveLimiter
from exporter.adapters.limiter import LocalRateLimiter
from exporter.adaptive import RateController

STATED = (
    "APIG.0308: The throttling threshold has been reached: policy user over ratelimit,limit:40,time:1 second"
)


def adaptive(clock: VirtualClock) -> AdaptiveLimiter:
    controller = RateController(start=5, minimum=1, maximum=500, headroom=0.03)
    return AdaptiveLimiter(LocalRateLimiter(5, 1, clock), controller, clock, endpoint="dli.test:443")


def gauge() -> float:
    return float(metrics.labelled(metrics.RATE, "dli.test:443")._value.get())  # type: ignore[attr-defined]


async def test_a_stated_policy_sets_the_pace_to_it_less_the_headroom() -> None:
    clock = VirtualClock()
    limiter = adaptive(clock)
    assert limiter.rate == 5 and gauge() == 5
    with capture_logs() as logs:
        async with clock.running():
            await limiter.pause(1.0, STATED)
    assert abs(limiter.rate - 40 * 0.97) < 1e-9 and abs(gauge() - 38.8) < 1e-9
    adjusted = [line for line in logs if line["event"] == "rate.adjusted"]
    assert adjusted and adjusted[0]["reason"] == "stated_limit" and adjusted[0]["old"] == 5


async def test_silence_is_searched_up_and_a_bare_429_cuts_the_pace() -> None:
    clock = VirtualClock()
    limiter = adaptive(clock)
    async with clock.running():
        for _ in range(200):
            await limiter.acquire()
    raised = limiter.rate
    assert raised > 5  # requests went out without a 429: faster
    async with clock.running():
        await limiter.pause(1.0, "APIG.0308: The throttling threshold has been reached.")
    assert limiter.rate < raised
