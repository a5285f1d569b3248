"""Errors named for their outcome, so callers decide by class, never by parsing messages.

`Transient` means "try again later" (and may say when), `Permanent` means "this input will never work",
`AuthError` means "the credentials were refused". Everything the exporter raises on purpose derives from
`ExporterError`; anything else escaping a component is a bug.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "Conflict",
    "DliError",
    "ExporterError",
    "InvalidInput",
    "NotFound",
    "Permanent",
    "StoreUnavailable",
    "Transient",
]


class ExporterError(Exception):
    """Base of every error the exporter raises deliberately."""


class ConfigError(ExporterError):
    """A setting is missing or invalid; the message names the variable and what is allowed."""


class InvalidInput(ExporterError):
    """A batch request or queue message that can never be processed (it is dead-lettered, not retried)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Conflict(ExporterError):
    """An idempotency key (a batch ID) reused with other content; the message says what differs.

    The CLI answers it with exit code 2, `POST /batches` with HTTP 409. The same content again is a quiet
    success, never a Conflict.
    """


class NotFound(ExporterError, LookupError):
    """The ledger has no such batch or chunk (the same error on every backend)."""


class StoreUnavailable(ExporterError):
    """The queue or ledger backend cannot be reached right now; the worker waits and retries."""


class DliError(ExporterError):
    """An outcome of a call to DLI (or OBS) that did not succeed."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, request_id={self.request_id!r})"
        )


class Transient(DliError):
    """Worth retrying: throttling, 5xx, timeouts, resets, malformed bodies, a retryable `is_success: false`.

    `reason` is a short stable label for metrics and logs (`throttled`, `server_error`, `timeout`,
    `connection`, `malformed`, `not_success`, `store`); `retry_after` is the server's hint in seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        retry_after: float | None = None,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, request_id=request_id)
        self.reason = reason
        self.retry_after = retry_after


class Permanent(DliError):
    """Will fail the same way every time (400 `DLI.xxxx`, 403, 404): record it, do not retry."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, request_id=request_id)
        self.code: str = code


class AuthError(DliError):
    """The credentials were refused (401); the client re-signs once, then surfaces this."""
