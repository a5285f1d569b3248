"""The adaptive rate controller: policy parsing, stated-limit pacing, CUBIC search, bounds, sharing."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest

from exporter.adaptive import RateController, StatedLimit, parse_policy

PREFIX = "The throttling threshold has been reached: "


def controller(start: float = 1.0, maximum: float = 1000.0) -> RateController:
    return RateController(start=start, minimum=0.5, maximum=maximum, headroom=0.1)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (PREFIX + "policy user over ratelimit,limit:40,time:1 second", StatedLimit(40, 1.0, "user")),
        (PREFIX + "policy user over ratelimit,limit:600,time:1 minute", StatedLimit(600, 60.0, "user")),
        (PREFIX + "policy ip over ratelimit,limit:20,time:1 second", StatedLimit(20, 1.0, "ip")),
        ("POLICY IP OVER RATELIMIT , LIMIT : 5 , TIME : 60 Seconds", StatedLimit(5, 60.0, "ip")),
        ("policy user over ratelimit,limit:3600,time:1 hour", StatedLimit(3600, 3600.0, "user")),
        ("limit:10,time:2 minutes", StatedLimit(10, 120.0, "unknown")),
    ],
)
def test_parse_policy_reads_stated_limits(message: str, expected: StatedLimit) -> None:
    assert parse_policy(message) == expected


def test_per_second_divides_by_the_window() -> None:
    assert StatedLimit(600, 60.0, "user").per_second == 10.0


@pytest.mark.parametrize(
    "message",
    [
        PREFIX + "policy user over ratelimit",
        "APIG.0308",
        "",
        "limit:abc,time:x second",
        "limit:0,time:1 second",
        "limit:10,time:1 fortnight",
        "\x00\xff{}<html>",
    ],
)
def test_parse_policy_returns_none_without_usable_numbers(message: str) -> None:
    assert parse_policy(message) is None


def test_stated_limit_paces_below_it_and_stops_probing() -> None:
    ctl = controller()
    adjustment = ctl.on_throttled(0.0, StatedLimit(40, 1.0, "user"))
    assert adjustment is not None
    assert adjustment.reason == "stated_limit"
    assert adjustment.new == pytest.approx(36.0)
    assert ctl.trusted
    assert all(ctl.on_success(t / 10) is None for t in range(1, 1000))
    assert ctl.rate == pytest.approx(36.0)


def test_a_later_429_stating_another_limit_replaces_it() -> None:
    ctl = controller()
    ctl.on_throttled(0.0, StatedLimit(40, 1.0, "user"))
    adjustment = ctl.on_throttled(5.0, StatedLimit(600, 60.0, "user"))
    assert adjustment is not None
    assert adjustment.new == pytest.approx(9.0)
    assert ctl.trusted


def test_a_burst_of_429s_counts_once() -> None:
    ctl = controller(start=10.0)
    assert ctl.on_throttled(0.0, None) is not None
    assert ctl.on_throttled(0.2, None) is None
    assert ctl.on_throttled(0.2, StatedLimit(40, 1.0, "user")) is not None
    assert ctl.on_throttled(0.3, StatedLimit(40, 1.0, "user")) is None
    assert ctl.rate == pytest.approx(36.0)


def test_restated_limit_means_a_shared_budget_so_search_below_it() -> None:
    ctl = controller()
    ctl.on_throttled(0.0, StatedLimit(40, 1.0, "user"))
    adjustment = ctl.on_throttled(5.0, StatedLimit(40, 1.0, "user"))
    assert adjustment is not None
    assert adjustment.reason == "throttled"
    assert adjustment.new == pytest.approx(36.0 * 0.9)
    assert not ctl.trusted
    for step in range(1, 2000):
        ctl.on_success(5.0 + step / 10)
    assert ctl.rate == pytest.approx(36.0)  # the stated pace stays a ceiling


def test_a_restated_limit_while_the_window_still_holds_the_crossing_is_not_a_shared_budget() -> None:
    """Requests sent before we paced at the stated limit stay in the gateway's window for one window:
    their 429s, restating the limit, keep the limit trusted; one after the window drained does not."""
    ctl = controller()
    ctl.on_throttled(0.0, StatedLimit(40, 1.0, "user"))
    assert ctl.on_throttled(1.5, StatedLimit(40, 1.0, "user")) is None  # past the cooldown, in the window
    assert ctl.trusted and ctl.rate == pytest.approx(36.0)
    shared = ctl.on_throttled(2.5, StatedLimit(40, 1.0, "user"))
    assert shared is not None and shared.reason == "throttled" and not ctl.trusted


def test_a_minute_window_keeps_its_crossing_for_a_minute() -> None:
    ctl = controller()
    ctl.on_throttled(0.0, StatedLimit(600, 60.0, "user"))
    assert all(ctl.on_throttled(t, StatedLimit(600, 60.0, "user")) is None for t in (2.0, 30.0, 60.5))
    assert ctl.trusted and ctl.rate == pytest.approx(9.0)


def test_the_first_unstated_throttle_ends_slow_start_at_what_the_window_held() -> None:
    """Doubling per second, the sliding window held rate x (1 - 1/2) / ln 2 when it refused."""
    ctl = controller(start=5.0)
    ctl.on_success(0.0)
    for step in range(1, 41):
        ctl.on_success(step / 10)
    assert ctl.rate == pytest.approx(5.0 * 2**4)  # four seconds of slow start
    adjustment = ctl.on_throttled(4.05, None)
    assert adjustment is not None and adjustment.reason == "throttled"
    estimate = 80.0 * 0.5 / math.log(2)
    assert adjustment.new == pytest.approx(0.9 * estimate)
    assert not ctl.slow_start


def test_unstated_throttle_decreases_by_beta_and_comes_back_in_one_cycle() -> None:
    ctl = controller(start=100.0)
    ctl.slow_start = False
    adjustment = ctl.on_throttled(0.0, None)
    assert adjustment is not None
    assert (adjustment.old, adjustment.reason) == (100.0, "throttled")
    assert adjustment.new == pytest.approx(90.0)
    ctl.on_success(0.1)  # anchors the curve at 90/s
    ctl.on_success(10.1)
    assert 90.0 < ctl.rate < 99.0  # the cubic: fast at first, flat near W_max
    ctl.on_success(20.1)
    assert ctl.rate == pytest.approx(100.0)  # back at W_max after K = 20 s, whatever W_max is


def test_success_changes_rate_at_most_every_update_interval() -> None:
    ctl = controller(start=10.0)
    first = ctl.on_success(0.0)
    assert ctl.on_success(0.05) is None
    second = ctl.on_success(2.0)
    assert first is None or first.reason == "probe"
    assert second is not None
    assert second.reason == "probe"
    assert second.new > second.old


def test_bounds_hold_at_minimum_and_maximum() -> None:
    ctl = controller(start=1.0, maximum=50.0)
    for step in range(100):
        ctl.on_throttled(step * 2.0, None)
    assert ctl.rate == 0.5
    for step in range(1, 3000):
        ctl.on_success(200.0 + step / 10)
    assert ctl.rate == 50.0
    assert ctl.on_success(1000.0) is None  # pinned at maximum: nothing changed
    ctl.on_throttled(2000.0, StatedLimit(10_000, 1.0, "user"))
    assert ctl.rate == 50.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start": 1.0, "minimum": 0.0, "maximum": 10.0},
        {"start": 20.0, "minimum": 1.0, "maximum": 10.0},
        {"start": 1.0, "minimum": 1.0, "maximum": 10.0, "headroom": 1.0},
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need"):
        RateController(**kwargs)


def test_snapshot_round_trips_through_json() -> None:
    ctl = controller(start=10.0)
    ctl.on_throttled(0.0, None)
    ctl.on_throttled(3.0, StatedLimit(40, 1.0, "user"))
    state = json.loads(json.dumps(ctl.snapshot()))
    other = controller()
    other.restore(state)
    assert other.snapshot() == ctl.snapshot()
    assert other.trusted


def test_restored_replica_resumes_probing_from_the_shared_rate() -> None:
    ctl = controller(start=10.0)
    ctl.on_throttled(0.0, None)
    other = controller()
    other.restore(ctl.snapshot())
    expected = 10.0 * 0.5 / math.log(2) * 0.9  # slow start ended at the first throttle
    assert other.rate == pytest.approx(expected) and not other.slow_start
    other.on_success(500.0)  # another process's clock: the curve re-anchors, no jump
    assert other.rate == pytest.approx(expected)
    other.on_success(501.0)
    assert expected < other.rate < expected / 0.9


def test_unknown_snapshot_version_is_ignored() -> None:
    ctl = controller(start=10.0)
    ctl.restore({"version": 99, "rate": 500.0})
    assert ctl.rate == 10.0


@dataclass
class Run:
    accepted: int
    throttled: int
    seconds: float


def simulate(ctl: RateController, limit: float, seconds: float, stated: StatedLimit | None) -> Run:
    """A gateway that refuses any call sent while the client's rate exceeds ``limit``."""
    now, accepted, throttled, warmup = 0.0, 0, 0, seconds / 4
    while now < seconds:
        if ctl.rate > limit:
            ctl.on_throttled(now, stated)
            throttled += now >= warmup
        else:
            ctl.on_success(now)
            accepted += now >= warmup
        now += 1.0 / ctl.rate
    return Run(accepted, throttled, seconds - warmup)


@pytest.mark.parametrize("limit", [20.0, 60.0, 150.0])
def test_search_converges_under_an_unstated_limit(limit: float) -> None:
    run = simulate(controller(), limit, 200.0, stated=None)
    assert run.accepted / run.seconds >= 0.85 * limit
    assert run.throttled / (run.accepted + run.throttled) < 0.03


@pytest.mark.parametrize("limit", [20.0, 60.0, 150.0])
def test_stated_limit_converges_at_once(limit: float) -> None:
    run = simulate(controller(), limit, 200.0, stated=StatedLimit(int(limit), 1.0, "user"))
    assert run.accepted / run.seconds == pytest.approx(0.9 * limit, rel=0.01)
    assert run.throttled == 0
