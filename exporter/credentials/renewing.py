"""Credentials that expire (temporary keys of an agency, IAM tokens): renewed well before they do.

A `Lease` is what one fetch brought: the credentials, when they were obtained and when they expire. It is
renewed after two thirds of its lifetime (a 24-hour IAM token after 16 hours, 6-hour agency keys after 4,
keys that live a minute after 40 seconds), in the background, while requests go on signing with it. Many
callers at once start one fetch (single flight). A fetch that fails keeps the lease in use while it is
still valid and is tried again after a doubling backoff; only once it is no longer valid do callers wait
for a fetch, and get its error (Transient for a network or server failure: the call is retried later).

Validity leaves a margin (a twentieth of the lifetime, at most 30 s): a request signed just before expiry
could arrive just after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from exporter.credentials.source import Auth, SecretHistory, auth_kind
from exporter.errors import ExporterError, Transient
from exporter.ports import Clock

__all__ = ["RENEW_AT", "Lease", "RenewingSource"]

log = structlog.get_logger("exporter.credentials")

RENEW_AT = 2 / 3  # share of the lifetime after which a lease is renewed
_MARGIN_SHARE = 0.05
_MARGIN_MAX = 30.0


@dataclass(frozen=True, slots=True, repr=False)
class Lease:
    """Credentials with their lifetime (epoch seconds)."""

    auth: Auth
    obtained_at: float
    expires_at: float

    def __repr__(self) -> str:
        return f"Lease({auth_kind(self.auth)}, lifetime={self.lifetime:.0f}s)"

    @property
    def lifetime(self) -> float:
        return max(0.0, self.expires_at - self.obtained_at)

    def renew_at(self) -> float:
        """When to fetch the next lease: after two thirds of this one's lifetime."""
        return self.obtained_at + self.lifetime * RENEW_AT

    def usable(self, now: float) -> bool:
        """Whether a request signed now still arrives before expiry (with a margin)."""
        return now < self.expires_at - min(_MARGIN_MAX, self.lifetime * _MARGIN_SHARE)


Fetch = Callable[[], Awaitable[Lease]]


def _consume(task: asyncio.Task[Lease]) -> None:
    """A background renewal that failed was logged already; nobody else may be waiting for it."""
    if not task.cancelled():
        task.exception()


class RenewingSource:
    """A `CredentialSource` over a fetch of leases: metadata keys, IAM tokens."""

    __slots__ = (
        "_clock",
        "_failures",
        "_fetch",
        "_history",
        "_lease",
        "_max_backoff",
        "_min_backoff",
        "_name",
        "_next_try",
        "_task",
    )

    def __init__(
        self, name: str, fetch: Fetch, clock: Clock, *, min_backoff: float = 1.0, max_backoff: float = 60.0
    ) -> None:
        self._name = name
        self._fetch = fetch
        self._clock = clock
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._lease: Lease | None = None
        self._next_try = 0.0
        self._failures = 0
        self._task: asyncio.Task[Lease] | None = None
        self._history = SecretHistory()

    def __repr__(self) -> str:
        return f"<RenewingSource {self._name} lease={self._lease!r} failures={self._failures}>"

    async def current(self) -> Auth:
        lease, now = self._lease, self._clock.time()
        if lease is None or not lease.usable(now):
            return (await self._renewed()).auth
        if now >= self._next_try:
            self._start()  # due (or due again after a failure): renew while this lease goes on signing
        return lease.auth

    async def refresh(self) -> Auth:
        """After a 401: a new lease (joining a renewal already under way). Tokens are revoked before
        their time (a changed password, say), so a lease is never trusted over the server's refusal; the
        client asks once per wave of 401s."""
        return (await self._renewed()).auth

    async def aclose(self) -> None:
        """Stop a renewal in flight (the runtime is closing)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _renewed(self) -> Lease:
        return await asyncio.shield(self._start())

    def _start(self) -> asyncio.Task[Lease]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._renew(), name=f"credentials-{self._name}")
            self._task.add_done_callback(_consume)
        return self._task

    async def _renew(self) -> Lease:
        try:
            lease = await self._fetch()
        except ExporterError as error:
            self._failed(error)
            raise
        now = self._clock.time()
        if lease.expires_at <= now:
            stale = Transient(
                f"{self._name}: the credentials fetched have expired already", reason="credentials"
            )
            self._failed(stale)
            raise stale
        self._lease, self._failures, self._next_try = lease, 0, lease.renew_at()
        self._history.add(lease.auth)
        log.info(
            "credentials.renewed",
            source=self._name,
            kind=auth_kind(lease.auth),
            expires_in_s=round(lease.expires_at - now, 1),
            renew_in_s=round(self._next_try - now, 1),
        )
        return lease

    def _failed(self, error: ExporterError) -> None:
        self._failures += 1
        delay = min(self._max_backoff, self._min_backoff * 2.0 ** (self._failures - 1))
        now = self._clock.time()
        self._next_try = now + delay
        log.warning(
            "credentials.renew_failed",
            source=self._name,
            error=str(error),
            failures=self._failures,
            retry_in_s=delay,
            still_valid=self._lease is not None and self._lease.usable(now),
        )
