"""One learned rate per endpoint across replicas and restarts (adapters.rate_sync, AdaptiveLimiter).

Each "replica" here is an AdaptiveLimiter of its own over one FakeRateStates, on one virtual clock.
"""

from __future__ import annotations

import pytest
from fakes import FakeRateStates, VirtualClock
from structlog.testing import capture_logs

from exporter.adapters.adaptive_limiter import AdaptiveLimiter
from exporter.adapters.limiter import LocalRateLimiter
from exporter.adapters.rate_sync import RateSync
from exporter.adaptive import RateController

SCOPE = "dli.test:443"
STATED = (
    "APIG.0308: The throttling threshold has been reached: policy user over ratelimit,limit:40,time:1 second"
)
BARE = "APIG.0308: The throttling threshold has been reached."


def replica(
    clock: VirtualClock, states: FakeRateStates, start: float = 5.0, interval: float = 0.5
) -> AdaptiveLimiter:
    controller = RateController(start=start, minimum=1, maximum=500, headroom=0.03)
    sync = RateSync(states, SCOPE, clock, interval=interval)
    return AdaptiveLimiter(LocalRateLimiter(start, 1, clock), controller, clock, endpoint=SCOPE, sync=sync)


async def test_a_stated_limit_one_replica_heard_paces_the_others() -> None:
    clock = VirtualClock()
    states = FakeRateStates(clock)
    first, second = replica(clock, states), replica(clock, states)
    async with clock.running():
        await second.acquire()  # loads: nothing learned yet
        await first.pause(0.0, STATED)
        clock.now += 1.0  # the next exchange is due
        await second.acquire()
    assert abs(first.rate - 38.8) < 1e-9
    assert abs(second.rate - 38.8) < 1e-9
    assert states.records[SCOPE].reason == "stated_limit"


async def test_one_burst_of_429s_seen_by_three_replicas_cuts_the_shared_rate_once() -> None:
    """Each replica gets its 429 of the burst a little later, after adopting the first one's cut: the
    cut it adopted is the burst's (under a second old), so it cuts nothing more."""
    clock = VirtualClock()
    states = FakeRateStates(clock)
    replicas = [replica(clock, states, start=20.0, interval=0.1) for _ in range(3)]
    async with clock.running():
        for limiter in replicas:
            await limiter.acquire()  # every one loaded the (empty) record
        cuts = []
        for limiter in replicas:
            clock.now += 0.2
            await limiter.acquire()  # adopts whatever the replicas before it wrote
            await limiter.pause(0.0, BARE)
            cuts.append(limiter.rate)
    # the first replica's cut once (and a step of the climb since), not cut again by each
    assert cuts[0] < 20.0
    assert [limiter.rate for limiter in replicas] == [pytest.approx(cuts[0], abs=0.05)] * 3
    assert states.records[SCOPE].rate == pytest.approx(cuts[0], abs=0.05)


async def test_a_restarted_replica_starts_from_the_learned_rate() -> None:
    clock = VirtualClock()
    states = FakeRateStates(clock)
    async with clock.running():
        await replica(clock, states).pause(0.0, STATED)
        restarted = replica(clock, states)
        assert restarted.rate == 5.0  # EXPORTER_RATE_START until its first request
        with capture_logs() as logs:
            await restarted.acquire()
    assert abs(restarted.rate - 38.8) < 1e-9
    assert [line["reason"] for line in logs if line["event"] == "rate.adjusted"] == ["shared"]


async def test_the_climb_is_written_so_a_restart_does_not_start_from_the_last_cut() -> None:
    clock = VirtualClock()
    states = FakeRateStates(clock)
    limiter = replica(clock, states)
    async with clock.running():
        for _ in range(300):
            await limiter.acquire()
        await limiter.acquire()
    assert limiter.rate > 10
    record = states.records[SCOPE]
    assert record.reason == "probe"
    assert record.rate > 0.8 * limiter.rate  # written at most half a second behind


async def test_an_unreachable_store_leaves_the_local_rate_in_charge() -> None:
    clock = VirtualClock()
    states = FakeRateStates(clock, down=True)
    limiter = replica(clock, states)
    with capture_logs() as logs:
        async with clock.running():
            await limiter.pause(0.0, STATED)
            await limiter.acquire()
    assert abs(limiter.rate - 38.8) < 1e-9
    assert any(line["event"] == "rate.share_failed" for line in logs)
