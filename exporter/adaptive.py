"""Learn DLI's gateway rate limit instead of asking users for it (EXPORTER_RATE_LIMIT=auto).

Pure decision logic: no I/O, no asyncio, the clock comes in as floats, so every step is
deterministic and testable with virtual time.

Two sources of truth, best first:

1. The gateway often *states* its policy in the 429 ``APIG.0308`` body ("policy user over
   ratelimit,limit:40,time:1 second"). Then we pace at ``limit/window x (1 - headroom)`` and
   trust that figure until a later 429 states another one.
2. Otherwise we search, using CUBIC (RFC 8312) exactly as the AWS SDKs' *adaptive* retry mode
   does: on a throttle multiply the rate by β = 0.7 and remember the rate at the throttle
   (W_max); on success grow along W(t) = C·(t - K)³ + W_max with K = ∛(W_max·(1 - β)/C) and
   C = 0.4. We took CUBIC over plain AIMD because the cubic curve is flat near W_max (the
   last rate known to work), so the steady state sits close to the real limit (≈ 92 % of it
   on average for β = 0.7) while still probing past it, and recovery time does not depend
   on how many requests per second we send. β = 0.7 is the value both RFC 8312 and the AWS
   SDKs use. (The issue wrote K = ∛(W_max·β/C); with β as the *kept* fraction the drop is
   W_max·(1 - β), which is what RFC 8312 and botocore compute.)

If a 429 restates the limit we already pace below, the budget is shared (a "user" policy
across replicas): we stop trusting it as ours alone and search below it as a ceiling.
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
        beta: float = 0.7,
        scale: float = 0.4,
        update_interval: float = 0.1,
        cooldown: float = 1.0,
    ) -> None:
        if not 0 < minimum <= start <= maximum:
            raise ValueError(f"need 0 < minimum <= start <= maximum, got {minimum}, {start}, {maximum}")
        if not 0 <= headroom < 1 or not 0 < beta < 1 or scale <= 0:
            raise ValueError(f"need 0 <= headroom < 1, 0 < beta < 1, scale > 0: {headroom}, {beta}, {scale}")
        self.minimum, self.maximum, self.headroom = minimum, maximum, headroom
        self.beta, self.scale = beta, scale
        self.update_interval, self.cooldown = update_interval, cooldown
        self.rate = start
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

    def on_throttled(self, now: float, stated: StatedLimit | None) -> Adjustment | None:
        """React to a 429 at once; repeats inside ``cooldown`` are the same burst, so ignored."""
        pace = None if stated is None else stated.per_second * (1.0 - self.headroom)
        if pace is not None and not (self.trusted and pace == self.ceiling):
            self.ceiling, self.trusted, self._last_throttle = pace, True, now
            return self._change(now, self._clamp(pace), "stated_limit")
        if now - self._last_throttle < self.cooldown:
            return None
        self.trusted, self._last_throttle = False, now
        self._w_max = self.rate
        self._origin = now + math.cbrt(self._w_max * (1.0 - self.beta) / self.scale)
        return self._change(now, self._clamp(self.rate * self.beta), "throttled")

    def on_success(self, now: float) -> Adjustment | None:
        """Probe upwards along the CUBIC curve, at most once per ``update_interval``."""
        if self.trusted or now - self._last_update < self.update_interval:
            return None
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
        self._w_max = float(state["w_max"])
        self.rate = self._clamp(float(state["rate"]))
        self._origin = None
