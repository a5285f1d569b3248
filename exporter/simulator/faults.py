"""Fault decisions of the DLI simulator: pure functions of the knobs and a seeded `random.Random`.

Every request rolls the dice once for a *response fault* (the probabilities of the kinds are laid end to
end on [0, 1), so they must add up to at most 1 and one kind at probability 1.0 always fires), and every
successful export rolls once more for the *fate of its ZIP* (written now, late or never). With a fixed
seed the same request sequence meets the same faults, which keeps campaigns and benchmarks repeatable.

The throttling window lives here too: it decides 429s from explicit timestamps, so it is as easy to
reason about as the dice. So do the fixed errors (`list_error`, `export_error`, `import_error`): no dice
at all, every call of that API answers the same permanent error, e.g. `403:DLI.0003` (no IAM permission);
`iam_error` does the same for the simulated IAM project listing, e.g. `403:IAM.0002`. An import that was
applied rolls once more: with `p_import_lost` its answer is lost (the connection reset after the work).
"""

from __future__ import annotations

import math
import random
import re
from collections import deque
from enum import StrEnum
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "FaultKind",
    "FaultKnobs",
    "FixedError",
    "SlidingWindow",
    "ZipFate",
    "decide_fault",
    "decide_zip_fate",
    "latency_seconds",
    "merge_knobs",
    "parse_fixed_error",
    "retry_after_header",
]


class FaultKind(StrEnum):
    """What goes wrong with one answer instead of (or on top of) the normal reply."""

    SERVER_ERROR = "500"
    UNAVAILABLE = "503"
    RESET = "reset"
    MALFORMED = "malformed"
    HTML = "html"
    NOT_SUCCESS = "not_success"
    TIMEOUT = "timeout"


class ZipFate(StrEnum):
    """When the ZIP of a successful export reaches the object store."""

    NOW = "now"
    LATE = "late"
    NEVER = "never"


class FixedError(NamedTuple):
    """A permanent error that an API answers on every call, from a knob such as `403:DLI.0003`."""

    status: int
    code: str
    message: str


_FIXED_ERROR = re.compile(r"([45]\d\d):([A-Za-z][A-Za-z0-9_.-]*)(?::(.*))?", re.DOTALL)
# Messages for the codes of error_codes.rst a test is likely to pin; DLI.0003 is what DLI answers a
# user whose IAM policies do not allow the operation.
_FIXED_MESSAGES = {
    "DLI.0001": "Parameter check errors occur.",
    "DLI.0002": "The object does not exist.",
    "DLI.0003": "Permission denied: the user has no permission for this DLI operation (check IAM policies).",
    "DLI.0007": "The operation is not supported.",
    "DLI.0011": "The file permission check fails.",
    "DLI.0013": "User authentication errors occur.",
    "DLI.0999": "Server-side errors occur.",
    "IAM.0001": "The request you have made requires authentication.",
    "IAM.0002": "You are not authorized to perform the requested action.",
    "IAM.0006": "An unexpected error prevented the server from fulfilling your request.",
}


def parse_fixed_error(spec: str) -> FixedError:
    """`STATUS:CODE[:MESSAGE]` with a 4xx/5xx status (`403:DLI.0003`); ValueError when it is not one."""
    match = _FIXED_ERROR.fullmatch(spec.strip())
    if match is None:
        raise ValueError(
            f"must be STATUS:CODE[:MESSAGE] with a 4xx or 5xx status, e.g. 403:DLI.0003; got {spec!r}"
        )
    status, code, message = match.groups()
    default = _FIXED_MESSAGES.get(code, f"The request failed with {code}.")
    return FixedError(int(status), code, (message or "").strip() or default)


class FaultKnobs(BaseModel):
    """The knobs that may change while the simulator runs (`POST /_sim/faults`), validated as a whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float = Field(default=0.0, ge=0, le=600_000)
    latency_jitter_ms: float = Field(default=0.0, ge=0, le=600_000)
    rate_limit: float = Field(default=0.0, ge=0, le=1_000_000, description="requests/s; 0 = off")
    rate_window_seconds: float = Field(default=1.0, gt=0, le=3600)
    throttle_states_limit: bool = Field(default=True, description="the 429 message names limit and window")
    throttle_policy: Literal["user", "ip"] = Field(default="user", description="policy named in the 429")
    p_500: float = Field(default=0.0, ge=0, le=1)
    p_503: float = Field(default=0.0, ge=0, le=1)
    p_reset: float = Field(default=0.0, ge=0, le=1)
    p_malformed: float = Field(default=0.0, ge=0, le=1)
    p_html: float = Field(default=0.0, ge=0, le=1)
    p_not_success: float = Field(default=0.0, ge=0, le=1)
    p_timeout: float = Field(default=0.0, ge=0, le=1)
    timeout_seconds: float = Field(default=60.0, ge=0, le=3600)
    p_late: float = Field(default=0.0, ge=0, le=1)
    late_seconds: float = Field(default=5.0, ge=0, le=86_400)
    p_never: float = Field(default=0.0, ge=0, le=1)
    p_import_lost: float = Field(default=0.0, ge=0, le=1, description="applied import, answer reset")
    import_ids_as_strings: bool = Field(default=True, description="job_mapping IDs as the docs' example")
    is_success_as_string: bool = False
    list_error: str | None = Field(
        default=None, description="STATUS:CODE[:MESSAGE] every listing answers, e.g. 403:DLI.0003; None = off"
    )
    export_error: str | None = Field(
        default=None, description="STATUS:CODE[:MESSAGE] every export answers; None = off"
    )
    iam_error: str | None = Field(
        default=None, description="STATUS:CODE[:MESSAGE] every IAM project listing answers; None = off"
    )
    import_error: str | None = Field(
        default=None, description="STATUS:CODE[:MESSAGE] every import answers; None = off"
    )

    @field_validator("list_error", "export_error", "iam_error", "import_error")
    @classmethod
    def _fixed_error(cls, value: str | None) -> str | None:
        """An empty string turns the knob off too (handy in environment variables)."""
        if value is None or not value.strip():
            return None
        parse_fixed_error(value)
        return value.strip()

    @model_validator(mode="after")
    def _probabilities_fit(self) -> FaultKnobs:
        response_total = sum(probability for _, probability in self.response_faults())
        if response_total > 1 + 1e-9:
            raise ValueError(
                "the response fault probabilities (p_500, p_503, p_reset, p_malformed, p_html, "
                f"p_not_success, p_timeout) add up to {response_total:g}; they must add up to at most 1"
            )
        if self.p_late + self.p_never > 1 + 1e-9:
            raise ValueError(f"p_late + p_never is {self.p_late + self.p_never:g}; it must be at most 1")
        return self

    def response_faults(self) -> tuple[tuple[FaultKind, float], ...]:
        """Each response fault with its probability, in the fixed order the dice are read."""
        return (
            (FaultKind.SERVER_ERROR, self.p_500),
            (FaultKind.UNAVAILABLE, self.p_503),
            (FaultKind.RESET, self.p_reset),
            (FaultKind.MALFORMED, self.p_malformed),
            (FaultKind.HTML, self.p_html),
            (FaultKind.NOT_SUCCESS, self.p_not_success),
            (FaultKind.TIMEOUT, self.p_timeout),
        )

    @property
    def list_failure(self) -> FixedError | None:
        """The error every listing answers, or None when `list_error` is off."""
        return parse_fixed_error(self.list_error) if self.list_error else None

    @property
    def export_failure(self) -> FixedError | None:
        """The error every export answers, or None when `export_error` is off."""
        return parse_fixed_error(self.export_error) if self.export_error else None

    @property
    def import_failure(self) -> FixedError | None:
        """The error every import answers, or None when `import_error` is off."""
        return parse_fixed_error(self.import_error) if self.import_error else None

    @property
    def iam_failure(self) -> FixedError | None:
        """The error every IAM project listing answers, or None when `iam_error` is off."""
        return parse_fixed_error(self.iam_error) if self.iam_error else None

    @property
    def window_capacity(self) -> int:
        """Requests admitted per window: `rate_limit x window`, at least 1 so a tiny rate still moves."""
        return max(1, math.floor(self.rate_limit * self.rate_window_seconds + 1e-9))


def merge_knobs(current: FaultKnobs, changes: dict[str, Any]) -> FaultKnobs:
    """Apply `changes` (names with or without the `sim_` prefix) to `current`; ValueError names bad ones."""
    normalised = {name.removeprefix("sim_"): value for name, value in changes.items()}
    unknown = sorted(set(normalised) - set(FaultKnobs.model_fields))
    if unknown:
        allowed = ", ".join(sorted(FaultKnobs.model_fields))
        raise ValueError(f"unknown fault knob(s): {', '.join(unknown)}; allowed: {allowed}")
    try:
        return FaultKnobs.model_validate({**current.model_dump(), **normalised})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'knobs'}: "
            f"{item['msg'].removeprefix('Value error, ')}"
            for item in error.errors()
        )
        raise ValueError(problems) from None


def decide_fault(knobs: FaultKnobs, rng: random.Random) -> FaultKind | None:
    """One roll: which response fault (if any) this request meets."""
    roll = rng.random()
    threshold = 0.0
    for kind, probability in knobs.response_faults():
        threshold += probability
        if probability > 0 and roll < threshold:
            return kind
    return None


def decide_zip_fate(knobs: FaultKnobs, rng: random.Random) -> ZipFate:
    """One roll: whether the ZIP of a successful export is written now, late or never."""
    if knobs.p_late == 0 and knobs.p_never == 0:
        return ZipFate.NOW
    roll = rng.random()
    if roll < knobs.p_never:
        return ZipFate.NEVER
    if roll < knobs.p_never + knobs.p_late:
        return ZipFate.LATE
    return ZipFate.NOW


def latency_seconds(knobs: FaultKnobs, rng: random.Random) -> float:
    """The artificial service time of one request: the base latency plus uniform jitter."""
    jitter = rng.uniform(0, knobs.latency_jitter_ms) if knobs.latency_jitter_ms else 0.0
    return (knobs.latency_ms + jitter) / 1000.0


class SlidingWindow:
    """Counts admitted requests in the last `window` seconds and refuses those over `capacity`.

    Strict on purpose: the gateway we imitate counts every request in a sliding window, so a client that
    bursts its whole quota at once is told to wait. Refused requests do not count. The window keeps
    tracking (and `max_in_window` keeps growing) while the limit is off, because the rate-limit tests
    read it to prove the *client* stayed under its own limit.
    """

    __slots__ = ("_admitted", "_capacity", "_window", "max_in_window")

    def __init__(self, window: float, capacity: int | None) -> None:
        self._window = window
        self._capacity = capacity
        self._admitted: deque[float] = deque()
        self.max_in_window = 0

    def __repr__(self) -> str:
        return (
            f"<SlidingWindow window={self._window}s capacity={self._capacity} "
            f"in_window={len(self._admitted)} max_in_window={self.max_in_window}>"
        )

    def configure(self, window: float, capacity: int | None) -> None:
        """Change the window length or capacity (None = no limit) without forgetting admissions."""
        self._window = window
        self._capacity = capacity

    def reset(self) -> None:
        """Forget every admission and the maximum."""
        self._admitted.clear()
        self.max_in_window = 0

    def admit(self, now: float) -> float | None:
        """Admit a request at `now` (None) or return how many seconds until a slot frees up."""
        admitted = self._admitted
        horizon = now - self._window
        while admitted and admitted[0] <= horizon:
            admitted.popleft()
        if self._capacity is not None and len(admitted) >= self._capacity:
            return admitted[0] - horizon
        admitted.append(now)
        self.max_in_window = max(self.max_in_window, len(admitted))
        return None


def retry_after_header(wait_seconds: float) -> str:
    """`Retry-After` in whole seconds, rounded up and at least 1 (HTTP allows no fractions)."""
    return str(max(1, math.ceil(wait_seconds)))
