"""Learn DLI's gateway rate limit instead of asking users for it (EXPORTER_RATE_LIMIT=auto).

Pure decision logic: no I/O, no asyncio, the clock comes in as floats, so every step is
deterministic and testable with virtual time.

Two sources of truth, best first:

1. The gateway often *states* its policy in the 429 ``APIG.0308`` body ("policy user over
   ratelimit,limit:40,time:1 second"). Then we pace at ``limit/window x (1 - headroom)`` and
   trust that figure until a later 429 states another one.
2. Otherwise we search, in two phases as TCP does:

   - *slow start*: from EXPORTER_RATE_START the rate doubles every second until the first 429. The
     gateway counts a sliding window, so when it first refuses, its window holds what we sent over the
     last second of the climb: with growth g per second that is rate x (1 - 1/g) / ln g (0.72 x rate
     for g = 2), our estimate of the limit. W_max is set to it and the rate to β x W_max.
   - *CUBIC* (RFC 8312, the curve of the AWS SDKs' adaptive retry mode): on success the rate follows
     W(t) = C·(t - K)³ + W_max, K = ∛(W_max·(1 - β)/C); on a 429, W_max = the rate, rate = β x W_max.
     The cubic is flat near W_max (the last rate known to trip the limit), so the pace sits close under
     it most of the time and still probes past it.

   Two changes from the AWS SDKs' constants, because a gateway quota is not a congested path: a
   window that is full refuses, it does not queue, so being a little over costs one 429, and each 429
   pauses the endpoint for its Retry-After (a whole second at least). So β = 0.9, not 0.7 (a tenth
   below the limit is under it), and C is relative to W_max (C = c x W_max) so every cycle back to
   W_max takes the same K (20 s) whatever the limit: with 0.4 req/s³ a 150/s limit came back in 5 s
   and spent a sixth of its time paused; measured in bench/adaptive.py.

If a 429 restates the limit we already pace below, the budget is shared (a "user" policy
across replicas): we stop trusting it as ours alone and search below it as a ceiling. Not while the
gateway's window can still hold requests sent before we paced at the limit (one window and the
cooldown after we began to trust it): those 429s are the crossing itself, seen late.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Adjustment", "RateController", "StatedLimit", "parse_policy"]

_UNIT_SECONDS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_UNIT_SECONDS |= {"h": 3600.0, "hr": 3600.0, "hour": 3600.0}
_LIMIT = re.compile(r"limit\s*[:=]\s*(\d+)", re.IGNORECASE)
_TIME = re.compile(r"time\s*[:=]\s*(\d+(?:\.\d+)?)\s*([a-z]*)", re.IGNORECASE)
_SCOPE = re.compile(r"policy\s+(\w+)\s+over\s+rate\s*limit", re.IGNORECASE)
_SNAPSHOT_VERSION = 1


@dataclass(frozen=True, slots=True)
class StatedLimit:
    """A limit the gateway told us about: ``limit`` calls per ``window_seconds`` for ``scope``."""

    limit: int
    window_seconds: float
    scope: str

    @property
    def per_second(self) -> float:
        return self.limit / self.window_seconds


@dataclass(frozen=True, slots=True)
class Adjustment:
    """One rate change, for a ``rate.adjusted`` log line (reason: stated_limit/throttled/probe)."""

    old: float
    new: float
    reason: str


def _unit_seconds(word: str) -> float | None:
    """Seconds in a unit word; plural and case do not matter, no word means seconds."""
    word = word.lower()
    if not word:
        return 1.0
    return _UNIT_SECONDS.get(word) or _UNIT_SECONDS.get(word.removesuffix("s"))


def parse_policy(message: str) -> StatedLimit | None:
    """The limit an APIG.0308 message states, or None when it states no usable numbers."""
    limit_match = _LIMIT.search(message)
    time_match = _TIME.search(message)
    if limit_match is None or time_match is None:
        return None
    unit = _unit_seconds(time_match.group(2))
    window = float(time_match.group(1)) * (unit or 0.0)
    limit = int(limit_match.group(1))
    if limit <= 0 or window <= 0:
        return None
    scope_match = _SCOPE.search(message)
    scope = scope_match.group(1).lower() if scope_match else "unknown"
    return StatedLimit(limit=limit, window_seconds=window, scope=scope)


class RateController:
    """Current calls-per-second target, moved by throttles and successes.

    The CUBIC curve is stored as ``(w_max, origin)``: W(now) = C·(now - origin)³ + w_max,
    where ``origin`` is when the curve is back at w_max. Storing it this way lets a restored
    replica or a fresh start re-anchor the curve at its current rate with one formula.
    """

    def __init__(
        self,
        *,
        start: float,
        minimum: float,
        maximum: float,
        headroom: float = 0.1,
        beta: float = 0.9,
        cycle: float = 20.0,
        growth: float = 2.0,
        update_interval: float = 0.1,
        cooldown: float = 1.0,
    ) -> None:
        if not 0 < minimum <= start <= maximum:
            raise ValueError(f"need 0 < minimum <= start <= maximum, got {minimum}, {start}, {maximum}")
        if not 0 <= headroom < 1 or not 0 < beta < 1 or cycle <= 0 or growth <= 1:
            raise ValueError(
                f"need 0 <= headroom < 1, 0 < beta < 1, cycle > 0, growth > 1: {headroom}, {beta}, {cycle}"
            )
        self.minimum, self.maximum, self.headroom = minimum, maximum, headroom
        self.beta, self.growth = beta, growth
        self.relative_scale = (1.0 - beta) / cycle**3  # C = this x W_max: K = cycle seconds
        self.update_interval, self.cooldown = update_interval, cooldown
        self.rate = start
        self.slow_start = True
        self.trusted = False
        self.ceiling: float | None = None  # pace derived from the last stated limit
        self._w_max = start
        self._origin: float | None = None  # None: anchor the curve at the next success
        self._last_update = -math.inf
        self._last_throttle = -math.inf

    def _clamp(self, rate: float) -> float:
        top = self.maximum if self.ceiling is None else min(self.maximum, self.ceiling)
        return min(max(rate, self.minimum), max(top, self.minimum))

    def _change(self, now: float, new: float, reason: str) -> Adjustment | None:
        old, self.rate, self._last_update = self.rate, new, now
        return None if new == old else Adjustment(old=old, new=new, reason=reason)

    @property
    def scale(self) -> float:
        """C of the cubic, in requests/s³: relative to W_max."""
        return self.relative_scale * self._w_max

    def on_throttled(self, now: float, stated: StatedLimit | None) -> Adjustment | None:
        """React to a 429 at once; repeats inside ``cooldown`` are the same burst, so ignored."""
        if stated is not None:
            pace = stated.per_second * (1.0 - self.headroom)
            if not (self.trusted and pace == self.ceiling):
                self.ceiling, self.trusted, self._last_throttle = pace, True, now
                self.slow_start = False
                return self._change(now, self._clamp(pace), "stated_limit")
            if now - self._last_throttle < stated.window_seconds + self.cooldown:
                return None  # the gateway's window still counts what was sent before we paced at its limit
        if now - self._last_throttle < self.cooldown:
            return None
        self.trusted, self._last_throttle = False, now
        if self.slow_start:  # the window held the last second of the climb: our estimate of the limit
            self.slow_start = False
            self._w_max = self.rate * (1.0 - 1.0 / self.growth) / math.log(self.growth)
        else:
            self._w_max = self.rate
        self._origin = None  # anchored at the next success, at the rate set here
        return self._change(now, self._clamp(self._w_max * self.beta), "throttled")

    def on_success(self, now: float) -> Adjustment | None:
        """Probe upwards (doubling per second in slow start, else along the cubic), at most once per
        ``update_interval``."""
        if self.trusted or now - self._last_update < self.update_interval:
            return None
        if self.slow_start:
            # the first request only starts the clock; an idle spell is no evidence of room
            elapsed = 0.0 if self._last_update == -math.inf else min(now - self._last_update, 1.0)
            return self._change(now, self._clamp(self.rate * self.growth**elapsed), "probe")
        if self._origin is None:
            self._origin = now - math.cbrt((self.rate - self._w_max) / self.scale)
        target = self.scale * (now - self._origin) ** 3 + self._w_max
        return self._change(now, self._clamp(max(target, self.rate)), "probe")

    def snapshot(self) -> dict[str, Any]:
        """What another replica needs to start from what we learned; no clock values (they are local)."""
        return {
            "version": _SNAPSHOT_VERSION,
            "rate": self.rate,
            "w_max": self._w_max,
            "trusted": self.trusted,
            "slow_start": self.slow_start,
            "ceiling": self.ceiling,
            "stated": self.stated_per_second,  # for people (status); restore() derives it from ceiling
        }

    @property
    def stated_per_second(self) -> float | None:
        """The limit (requests/s) the last trusted 429 stated, before the headroom; None: none stated."""
        return None if self.ceiling is None else self.ceiling / (1.0 - self.headroom)

    def restore(self, state: dict[str, Any], *, throttled_at: float | None = None) -> None:
        """Adopt a snapshot; unknown versions are ignored so a rolling upgrade cannot crash us.

        `throttled_at` (this clock) is when the snapshot's writer reacted to a 429: our own 429s of the
        same burst, inside `cooldown` of it, then cut nothing more."""
        if state.get("version") != _SNAPSHOT_VERSION:
            return
        if throttled_at is not None:
            self._last_throttle = max(self._last_throttle, throttled_at)
        ceiling = state.get("ceiling")
        self.ceiling = None if ceiling is None else float(ceiling)
        self.trusted = bool(state.get("trusted", False))
        self.slow_start = bool(state.get("slow_start", False))
        self._w_max = float(state["w_max"])
        self.rate = self._clamp(float(state["rate"]))
        self._origin = None
