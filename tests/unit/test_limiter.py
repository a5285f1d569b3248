"""The in-process limiter on a manual clock: even spacing, bounded bursts, shared pauses."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from fakes import ManualClock, VirtualClock

from exporter.adapters.limiter import LocalRateLimiter


async def admitted_times(limiter: LocalRateLimiter, clock: VirtualClock, count: int) -> list[float]:
    times: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        times.append(clock.monotonic())

    async with clock.running():
        await asyncio.gather(*(one() for _ in range(count)))
    return sorted(times)


def max_in_window(times: list[float], window: float) -> int:
    best = 0
    for i, start in enumerate(times):
        best = max(best, sum(1 for t in times[i:] if t < start + window))
    return best


async def test_requests_are_spaced_evenly() -> None:
    """At 10/s with burst 1, 30 concurrent callers leave 0.1 s apart, never two at once."""
    clock = VirtualClock()
    limiter = LocalRateLimiter(10, 1, clock)
    times = await admitted_times(limiter, clock, 30)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(0.1)
    assert max_in_window(times, 1.0) <= 10


async def test_burst_allows_that_many_back_to_back_only() -> None:
    """Burst 5 lets five out at once, then the rate holds: never more than rate*window+burst."""
    clock = VirtualClock()
    limiter = LocalRateLimiter(10, 5, clock)
    times = await admitted_times(limiter, clock, 40)
    assert times[:5] == pytest.approx([times[0]] * 5)
    assert times[5] == pytest.approx(times[0] + 0.1)
    assert max_in_window(times, 1.0) <= 10 + 5


async def test_pause_holds_everyone_including_reserved_callers() -> None:
    """A 429 pause of 2 s admits nobody until it ends, even callers already waiting for a slot."""
    clock = VirtualClock()
    limiter = LocalRateLimiter(10, 1, clock)
    async with clock.running():
        await limiter.acquire()
        start = clock.now
        waiters = [asyncio.create_task(limiter.acquire()) for _ in range(3)]
        await asyncio.sleep(0)
        await limiter.pause(2.0)
        waited = await asyncio.gather(*waiters)
    assert clock.now >= start + 2.0
    assert min(waited) >= 2.0


def test_impossible_configuration_refused() -> None:
    """A zero rate or burst is refused at once."""
    with pytest.raises(ValueError, match="rate"):
        LocalRateLimiter(0)
    with pytest.raises(ValueError, match="burst"):
        LocalRateLimiter(1, 0)


def test_repr_shows_live_state() -> None:
    """repr tells the rate and backlog, useful in a debugger."""
    assert "rate=10.000/s" in repr(LocalRateLimiter(10, 1, ManualClock()))


async def released_after_a_stall(callers: int, stall: float) -> tuple[list[float], float]:
    """Release times of `callers` that reserved slots just before the loop was blocked for `stall` s."""
    clock = VirtualClock()
    limiter = LocalRateLimiter(10, 1, clock)
    released: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        released.append(clock.monotonic())

    async with clock.running():
        tasks = [asyncio.create_task(one()) for _ in range(callers)]
        await asyncio.sleep(0)
        stalled_until = clock.now = clock.now + stall  # every reserved slot passed while the loop was busy
        await asyncio.gather(*tasks)
    return sorted(released), stalled_until


async def test_late_wake_up_does_not_release_a_clump() -> None:
    """When the loop wakes several callers late at once, releases still leave half a slot apart."""
    released, _ = await released_after_a_stall(5, 1.0)
    assert min(b - a for a, b in itertools.pairwise(released)) >= 0.05 - 1e-9


async def test_slots_missed_during_a_stall_are_not_caught_up() -> None:
    """After the loop was blocked for a second, callers take new slots: the rate after a stall stays R."""
    released, stalled_until = await released_after_a_stall(25, 1.0)
    assert max_in_window([t for t in released if t >= stalled_until], 1.0) <= 10 + 1
