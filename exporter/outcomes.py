"""One rule for how a batch pass ends: every exception is classified here, by its class alone.

- invalid input or a permanent DLI/OBS refusal ends the batch (`fail`): its ledger state and report say
  failed with the code and message, and the dead letter carries the same text;
- a refused credential waits for it to be fixed (`auth`), a transient error or a store outage is
  retried later (`retry`): nacked with backoff, as a deliberate hand-back;
- anything else is a bug (`bug`): logged once with its traceback, counted, nacked with backoff as a
  failed attempt, and parked after EXPORTER_MAX_DELIVERIES with its text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from exporter.errors import AuthError, InvalidInput, Permanent, StoreUnavailable, Transient
from exporter.models import ErrorInfo

__all__ = ["Outcome", "OutcomeKind", "bug_backoff", "classify"]


class OutcomeKind(StrEnum):
    FAIL = "fail"
    AUTH = "auth"
    RETRY = "retry"
    BUG = "bug"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with a batch whose pass raised: the kind, the error to record, when to try again."""

    kind: OutcomeKind
    error: ErrorInfo
    retry_after: float | None = None
    label: str = ""


def classify(error: Exception) -> Outcome:
    """Map an exception escaping a batch pass to its outcome."""
    if isinstance(error, InvalidInput):
        return Outcome(OutcomeKind.FAIL, ErrorInfo(code="INVALID_INPUT", message=str(error)), label="invalid")
    if isinstance(error, AuthError):
        info = ErrorInfo(code=error.code or "AUTH", message=error.message)
        return Outcome(OutcomeKind.AUTH, info, label="auth")
    if isinstance(error, Permanent):
        return Outcome(OutcomeKind.FAIL, ErrorInfo(code=error.code, message=error.message), label="refused")
    if isinstance(error, Transient):
        info = ErrorInfo(code=error.code or error.reason, message=error.message)
        return Outcome(OutcomeKind.RETRY, info, retry_after=error.retry_after, label=error.reason)
    if isinstance(error, StoreUnavailable):
        return Outcome(
            OutcomeKind.RETRY, ErrorInfo(code="STORE_UNAVAILABLE", message=str(error)), label="store"
        )
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return Outcome(OutcomeKind.BUG, ErrorInfo(code="INTERNAL_ERROR", message=text), label="bug")


def bug_backoff(failures: int, floor: float, ceiling: float) -> float:
    """Seconds before a failed attempt runs again: doubling from `floor` per failure, at most `ceiling`."""
    return min(ceiling, floor * 2.0 ** max(0, failures - 1))
