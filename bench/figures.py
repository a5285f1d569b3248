"""The arithmetic of the benchmarks: pure functions of measured numbers, so a unit test can check them.

Rates are read from counters sampled over time (the simulator's `exports`), trimmed to the steady part of
a run: the first and last few percent of a campaign include process start-up and the tail, where fewer
requests than the concurrency are left, and say nothing about the pace the exporter holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "Check",
    "Direction",
    "crossing_time",
    "percentile",
    "safe_ratio",
    "steady_rate",
    "value_at",
    "window_rates",
]


class Direction(StrEnum):
    """Whether a figure meets its target from above (`at_least`) or from below (`at_most`)."""

    AT_LEAST = "at_least"
    AT_MOST = "at_most"


@dataclass(frozen=True, slots=True)
class Check:
    """One figure against its target. `vs_target` >= 1 means met, whichever way the target points."""

    label: str
    value: float
    target: float
    direction: Direction
    unit: str = ""
    note: str = ""

    @property
    def met(self) -> bool:
        if math.isnan(self.value):
            return False
        if self.direction is Direction.AT_LEAST:
            return self.value >= self.target
        return self.value <= self.target

    @property
    def vs_target(self) -> float:
        """measured / target for at-least targets, target / measured for at-most ones (inf if 0)."""
        if self.direction is Direction.AT_LEAST:
            return safe_ratio(self.value, self.target)
        return safe_ratio(self.target, self.value)

    @property
    def target_text(self) -> str:
        sign = "≥" if self.direction is Direction.AT_LEAST else "≤"
        return f"{sign} {_number(self.target)}{self.unit}"

    @property
    def value_text(self) -> str:
        return f"{_number(self.value)}{self.unit}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(direction=self.direction.value, vs_target=_finite(self.vs_target), met=self.met)
        data["value"] = _finite(self.value)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Check:
        value = data["value"]
        return cls(
            label=data["label"],
            value=math.nan if value is None else float(value),
            target=float(data["target"]),
            direction=Direction(data["direction"]),
            unit=data.get("unit", ""),
            note=data.get("note", ""),
        )


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    return value if math.isfinite(value) else None


def _number(value: float) -> str:
    """Three significant digits, no exponent for the sizes benchmarks produce."""
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞"
    if value == 0:
        return "0"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:,.{digits}f}"


def safe_ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, with inf for a positive numerator over zero and NaN for 0/0."""
    if denominator == 0:
        return math.nan if numerator == 0 else math.inf
    return numerator / denominator


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def crossing_time(samples: Sequence[tuple[float, float]], level: float) -> float:
    """When a non-decreasing counter sampled as (time, count) first reached `level` (interpolated)."""
    previous: tuple[float, float] | None = None
    for time, count in samples:
        if count >= level:
            if previous is None or count == previous[1]:
                return time
            before_time, before_count = previous
            return before_time + (time - before_time) * (level - before_count) / (count - before_count)
        previous = (time, count)
    return math.nan


def value_at(samples: Sequence[tuple[float, float]], time: float) -> float:
    """A sampled quantity at `time`, interpolated between the samples around it (clamped at the ends)."""
    if not samples:
        return math.nan
    previous = samples[0]
    if time <= previous[0]:
        return previous[1]
    for current in samples[1:]:
        if current[0] >= time:
            span = current[0] - previous[0]
            share = 0.0 if span == 0 else (time - previous[0]) / span
            return previous[1] + (current[1] - previous[1]) * share
        previous = current
    return previous[1]


def steady_rate(
    samples: Sequence[tuple[float, float]], total: float, low: float = 0.05, high: float = 0.95
) -> float:
    """Counts per second between the moments the counter passed `low` and `high` shares of `total`."""
    if not 0 <= low < high <= 1:
        raise ValueError("need 0 <= low < high <= 1")
    start = crossing_time(samples, low * total)
    end = crossing_time(samples, high * total)
    if math.isnan(start) or math.isnan(end):
        return math.nan
    return safe_ratio((high - low) * total, end - start)


def window_rates(samples: Sequence[tuple[float, float]], width: float) -> list[tuple[float, float]]:
    """(window end, counts per second) over consecutive windows of `width` seconds, for plots."""
    if width <= 0:
        raise ValueError("width must be positive")
    if not samples:
        return []
    rates: list[tuple[float, float]] = []
    start_time, start_count = samples[0]
    for time, count in samples[1:]:
        if time - start_time >= width:
            rates.append((time, (count - start_count) / (time - start_time)))
            start_time, start_count = time, count
    return rates
