"""When and how long to retry a DLI call: full-jitter exponential backoff that honours Retry-After.

Built on tenacity. Two things tenacity does not do by itself are added here: a server's `retry_after` hint
is a floor under the random wait, and the deadline is measured on the injected `Clock` (tenacity's own
`stop_after_delay` reads the real monotonic clock, which a test cannot move). Only `Transient` errors are
retried; after the last attempt the last `Transient` itself is raised, never tenacity's `RetryError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_random_exponential

from exporter import metrics
from exporter.errors import Transient
from exporter.ports import Clock

__all__ = ["RetryPolicy"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a DLI request is retried; `deadline` bounds the whole call in seconds.

    These are the client's own options: `exporter.wiring.retry_policy` builds one from the settings.
    """

    max_attempts: int = 8
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    deadline: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff <= 0 or self.max_backoff <= 0 or self.deadline <= 0:
            raise ValueError("initial_backoff, max_backoff and deadline must be positive")

    def retrying(self, clock: Clock, operation: str, started_at: float | None = None) -> AsyncRetrying:
        """A fresh tenacity controller for one call; its deadline runs from `started_at` (default: now)."""
        started = clock.monotonic() if started_at is None else started_at
        return AsyncRetrying(
            sleep=clock.sleep,
            stop=stop_after_attempt(self.max_attempts) | _StopAtDeadline(clock, started + self.deadline),
            wait=_WaitAtLeastRetryAfter(multiplier=self.initial_backoff, max=self.max_backoff),
            retry=retry_if_exception_type(Transient),
            before_sleep=_record_retry(operation),
            reraise=True,
        )


class _WaitAtLeastRetryAfter(wait_random_exponential):
    """Full jitter, but never sooner than the server asked: a 429's Retry-After is a floor, not a hint."""

    def __call__(self, retry_state: RetryCallState) -> float:
        jittered: float = super().__call__(retry_state)
        return max(jittered, _retry_after(retry_state) or 0.0)


class _StopAtDeadline(stop_base):
    """Stop when the next attempt would start after the deadline (there is no point sleeping past it)."""

    def __init__(self, clock: Clock, stop_at: float) -> None:
        self._clock = clock
        self._stop_at = stop_at

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._clock.monotonic() + retry_state.upcoming_sleep > self._stop_at


def _retry_after(retry_state: RetryCallState) -> float | None:
    error = _failure(retry_state)
    return error.retry_after if isinstance(error, Transient) else None


def _failure(retry_state: RetryCallState) -> BaseException | None:
    outcome = retry_state.outcome
    return outcome.exception() if outcome is not None and outcome.failed else None


def _record_retry(operation: str) -> Callable[[RetryCallState], None]:
    """tenacity `before_sleep` hook: one metric and one log line per retry, never headers or secrets."""

    def record(retry_state: RetryCallState) -> None:
        error = _failure(retry_state)
        fields: dict[str, Any] = {"reason": "unknown", "request_id": None, "status": None}
        if isinstance(error, Transient):
            fields = {"reason": error.reason, "request_id": error.request_id, "status": error.status}
        metrics.labelled(metrics.DLI_RETRIES, str(fields["reason"])).inc()
        log.info(
            "dli.request.retry",
            operation=operation,
            attempt=retry_state.attempt_number,
            wait_s=round(retry_state.upcoming_sleep, 3),
            **fields,
        )

    return record
