"""The in-process limiter on a manual clock: even spacing, bounded bursts, shared pauses."""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import math

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
    """The most releases in any half-open window [t, t + window) of sorted `times`."""
    return max((bisect.bisect_left(times, start + window) - i for i, start in enumerate(times)), default=0)


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


async def released_after_a_stall(callers: int, stall: float, burst: int = 1) -> tuple[list[float], float]:
    """Release times of `callers` that were waiting for slots when the loop was blocked for `stall` s."""
    clock = VirtualClock()
    limiter = LocalRateLimiter(10, burst, clock)
    released: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        released.append(clock.monotonic())

    async with clock.running():
        tasks = [asyncio.create_task(one()) for _ in range(callers)]
        await asyncio.sleep(0)
        stalled_until = clock.now = clock.now + stall  # every expected slot passed while the loop was busy
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


async def test_a_stall_never_lets_more_than_burst_out_at_once() -> None:
    """With burst 3, the callers a one-second stall left waiting leave three at once, then one a slot."""
    released, stalled_until = await released_after_a_stall(12, 1.0, burst=3)
    after = [t for t in released if t >= stalled_until]
    assert max_in_window(after, 0.1) <= 3
    assert max_in_window(after, 1.0) <= 10 + 3


class LaggingLoop(VirtualClock):
    """Virtual time on an event loop that another task blocks for `block` seconds in every turn.

    As on a real loop, the timers due at the start of a turn fire, then the blocker runs first, then the
    woken tasks: every wake-up (a timer, a lock handed over) runs at least `block` after it was due.
    """

    def __init__(self, block: float) -> None:
        super().__init__()
        self.block = block

    async def _drive(self) -> None:
        while True:
            while self._sleepers and self._sleepers[0][0] <= self.now:
                _, _, future = heapq.heappop(self._sleepers)
                if not future.done():
                    future.set_result(None)
            self.now += self.block
            await asyncio.sleep(0)


async def releases_for(
    limiter: LocalRateLimiter, clock: VirtualClock, callers: int, seconds: float
) -> list[float]:
    """Release times of `callers` tasks acquiring back to back for `seconds` of virtual time."""
    released: list[float] = []

    async def caller() -> None:
        while True:
            await limiter.acquire()
            released.append(clock.now)

    async with clock.running():
        end = clock.now + seconds
        tasks = [asyncio.create_task(caller()) for _ in range(callers)]
        await clock.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return sorted(t for t in released if t < end)


@pytest.mark.parametrize(
    ("rate", "burst", "at_least"),
    [(1000, 1, 300), (1000, 4, 800), (100, 1, 99)],
)
async def test_a_lagging_loop_slows_callers_down_but_never_starves_them(
    rate: int, burst: int, at_least: int
) -> None:
    """With the loop blocked 3 ms in every turn, 16 callers still get slots (at 1000/s and burst 1,
    about one a turn; at 100/s all of them) and never more than rate + burst in a second."""
    clock = LaggingLoop(block=0.003)
    released = await releases_for(LocalRateLimiter(rate, burst, clock), clock, callers=16, seconds=1.0)
    assert len(released) >= at_least
    assert max_in_window(released, 1.0) <= rate + burst


async def test_an_idle_loop_gets_the_full_rate() -> None:
    """On a loop with nothing else to do, 16 callers at 1000/s get their 1000 slots a second."""
    clock = VirtualClock()
    released = await releases_for(LocalRateLimiter(1000, 1, clock), clock, callers=16, seconds=1.0)
    assert len(released) >= 999
    assert max_in_window(released, 1.0) <= 1000 + 1


@pytest.mark.parametrize("burst", [1, 4])
@pytest.mark.parametrize("block", [0.0005, 0.0015, 0.004, 0.009])
async def test_no_window_sees_more_than_rate_plus_burst_however_the_loop_lags(
    block: float, burst: int
) -> None:
    """Whatever the lag, any window of W seconds (half a slot to a second) holds at most
    ceil(rate * W) + burst releases."""
    rate = 300
    clock = LaggingLoop(block)
    released = await releases_for(LocalRateLimiter(rate, burst, clock), clock, callers=12, seconds=0.5)
    for window in (0.5 / rate, 1 / rate, 2.5 / rate, 0.05, 0.25):
        assert max_in_window(released, window) <= math.ceil(rate * window - 1e-9) + burst, window


class StallingLoop(VirtualClock):
    """Virtual time on a loop that is blocked for `stall` seconds once every `every` seconds (a report
    being written, a GC pass), as seen in bench/campaign.py at 20 requests/s."""

    def __init__(self, stall: float, every: float) -> None:
        super().__init__()
        self.stall, self.every = stall, every
        self.next_stall = self.now + every

    def woken_at(self, wake: float) -> float:
        now = max(self.now, wake)
        if now >= self.next_stall:  # the loop was blocked: this wake-up comes late
            now += self.stall
            self.next_stall = now + self.every
        return now


@pytest.mark.parametrize("stall", [0.04, 0.07, 0.1])
async def test_stalls_never_put_a_request_too_many_in_a_slow_gateways_window(stall: float) -> None:
    """A 20/s gateway paced 3% under (19.4/s): late releases may keep their slot only for the headroom's
    share of the window (30 ms), so no 1-s window ever sees a 21st request (one interval, 51 ms, did)."""
    clock = StallingLoop(stall=stall, every=0.37)
    limiter = LocalRateLimiter(20 * 0.97, 1, clock, window_slack=0.03)
    released = await releases_for(limiter, clock, callers=8, seconds=6.0)
    assert max_in_window(released, 1.0) <= 20
    assert len(released) >= 0.8 * 6 * 20 * 0.97  # the stalls cost time, the limiter no more than that


async def test_set_rate_paces_at_the_new_rate_from_the_next_slot() -> None:
    """What an adaptive pace needs: 10/s, then 40/s; the releases after the change are 25 ms apart."""
    clock = VirtualClock()
    limiter = LocalRateLimiter(10, 1, clock)
    first = await admitted_times(limiter, clock, 5)
    assert min(b - a for a, b in itertools.pairwise(first)) >= 0.1 - 1e-9
    limiter.set_rate(40)
    assert limiter.rate == 40
    second = await admitted_times(limiter, clock, 9)
    gaps = [b - a for a, b in itertools.pairwise(second)]
    assert min(gaps[1:]) >= 0.025 - 1e-9 and max(gaps[1:]) <= 0.025 + 1e-9
    with pytest.raises(ValueError, match="positive"):
        limiter.set_rate(0)


async def test_callers_already_waiting_take_up_a_faster_pace_at_once() -> None:
    """20 callers queued at 1/s, then the pace becomes 100/s half a second in: they are all out within
    a fifth of a second of the change, not at the 1/s slots they expected when they arrived (with an
    adaptive pace, a climb was otherwise held back by the line formed at the old pace)."""
    clock = VirtualClock()
    limiter = LocalRateLimiter(1, 1, clock)
    limiter.set_rate(1)  # an adaptive limiter's pace is set from outside
    times: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        times.append(clock.monotonic())

    async def speed_up() -> None:
        await clock.sleep(0.5)
        limiter.set_rate(100)

    async with clock.running():
        await asyncio.gather(speed_up(), *(one() for _ in range(20)))
    start = 1_000.0
    assert max(times) <= start + 0.5 + 0.2
    ordered = sorted(times)
    assert min(b - a for a, b in itertools.pairwise(ordered[1:])) >= 0.005 - 1e-9  # the spacer's half slot
    assert max_in_window(ordered[1:], 0.1) <= 10 + 1  # and the new pace on average
