"""One attempt at a DLI request: a rate-limiter slot, the signed request on the wire, the answer classified.

Each attempt, first or retry, takes a limiter slot, so retries count against the shared rate; a 429
pauses the limiter for everyone. What an answer means is decided in `responses.py`; this module only
moves bytes and keeps score (metrics, logs). Retries and credential renewal are the client's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import aiohttp
import structlog
import yarl

from exporter import metrics
from exporter.dli.canonical import sdk_date_of
from exporter.dli.responses import error_from_exception
from exporter.dli.retry import RetryPolicy
from exporter.dli.signer import Credentials, canonical_query_string, sign_request, token_headers
from exporter.errors import DliError, Permanent, Transient
from exporter.ports import Clock, RateLimiter

__all__ = [
    "EXPORT",
    "IMPORT",
    "JOB_DETAIL",
    "LIST",
    "Auth",
    "AuthNow",
    "DliRequest",
    "DliTransport",
    "Parser",
    "ResultT",
]

log = structlog.get_logger(__name__)

Auth = Credentials | str  # AK/SK credentials, or an IAM token
AuthNow = Callable[[], Awaitable[Auth]]  # the credentials to sign with at this moment
EXPORT = "export"
LIST = "list"
IMPORT = "import"
JOB_DETAIL = "job_detail"

ResultT = TypeVar("ResultT")
Parser = Callable[[int, Mapping[str, str], bytes, float], ResultT]  # status, headers, body, now -> result


@dataclass(frozen=True, slots=True)
class DliRequest:
    """One DLI request, before signing: everything the signature covers."""

    operation: str
    method: str
    project_id: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None


class DliTransport:
    """Sends one attempt of a request to one DLI endpoint over the shared session."""

    __slots__ = ("_base_path", "_clock", "_host", "_limiter", "_origin", "_policy", "_session")

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        limiter: RateLimiter,
        policy: RetryPolicy,
        clock: Clock,
    ) -> None:
        base = yarl.URL(endpoint)
        if base.scheme not in {"http", "https"} or not base.host:
            raise ValueError(f"DLI endpoint {endpoint!r} must be an http:// or https:// URL with a host")
        self._session = session
        self._origin = str(base.origin())
        self._host = base.host_port_subcomponent or base.host
        self._base_path = base.raw_path.rstrip("/")
        self._limiter = limiter
        self._policy = policy
        self._clock = clock

    @property
    def endpoint(self) -> str:
        """The base URL requests go to (no credentials in it)."""
        return f"{self._origin}{self._base_path}"

    async def send(self, request: DliRequest, auth: Auth | AuthNow, parse: Parser[ResultT]) -> ResultT:
        """One attempt: wait for a limiter slot, sign with `auth`, send, parse; a 429 pauses the limiter.

        `auth` may be a function giving the credentials of the moment: it is called once the slot is
        ours, just before signing, so a request that waited in the limiter never signs with keys that
        expired (or were rotated) while it waited."""
        waited = await self._limiter.acquire()
        metrics.RATE_LIMIT_WAIT.observe(waited)
        url, headers = self._sign(request, auth if isinstance(auth, Credentials | str) else await auth())
        status, response_headers, payload = await self._exchange(request, url, headers)
        try:
            result = parse(status, response_headers, payload, self._clock.time())
        except DliError as error:
            _count(request.operation, _outcome(error))
            if isinstance(error, Transient) and error.reason == "throttled":
                await self._limiter.pause(self._throttle_pause(error.retry_after), str(error))
            raise
        _count(request.operation, "ok")
        return result

    def _throttle_pause(self, retry_after: float | None) -> float:
        """How long a 429 stops every caller: its Retry-After, but no longer than a whole call may last.

        The pause blocks every batch at once, so a gateway asking for the year 9999 must not freeze the
        daemon; beyond the retry deadline the throttled call has given up anyway.
        """
        if retry_after is None:
            return self._policy.initial_backoff
        return min(retry_after, self._policy.deadline)

    def _sign(self, request: DliRequest, auth: Auth) -> tuple[yarl.URL, dict[str, str]]:
        """The URL exactly as signed (already encoded, so aiohttp must not touch it) and the headers."""
        path = self._base_path + request.path
        query = canonical_query_string(request.query)
        url = yarl.URL(f"{self._origin}{path}" + (f"?{query}" if query else ""), encoded=True)
        headers = {"Content-Type": "application/json"}  # the official SDK sends it on GET too
        if isinstance(auth, str):
            return url, {**headers, **token_headers(auth, request.project_id)}
        if auth.project_id != request.project_id:  # X-Project-Id must name the project in the path
            auth = replace(auth, project_id=request.project_id)
        date = sdk_date_of(self._clock.time())
        signed, _parts = sign_request(
            request.method, self._host, path, request.query, headers, request.body, auth, date
        )
        return url, signed

    async def _exchange(
        self, request: DliRequest, url: yarl.URL, headers: Mapping[str, str]
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Send and read the whole answer; network failures come out as Transient."""
        started = self._clock.monotonic()
        inflight: AbstractContextManager[Any] = (
            metrics.INFLIGHT.track_inprogress() if request.operation == EXPORT else nullcontext()
        )
        try:
            with inflight:
                async with self._session.request(
                    request.method, url, headers=headers, data=request.body, allow_redirects=False
                ) as response:
                    payload = await response.read()
        except (TimeoutError, aiohttp.ClientError) as failure:
            error = error_from_exception(failure)
            if error is None:
                raise
            _count(request.operation, error.reason)
            raise error from failure
        else:
            self._log_answer(request, url, response, len(payload), started)
            return response.status, response.headers, payload
        finally:
            latency = self._clock.monotonic() - started
            metrics.labelled(metrics.DLI_LATENCY, request.operation).observe(latency)

    def _log_answer(
        self, request: DliRequest, url: yarl.URL, response: aiohttp.ClientResponse, size: int, started: float
    ) -> None:
        log.debug(
            "dli.http",
            method=request.method,
            path=url.path,
            status=response.status,
            bytes=size,
            latency_ms=round((self._clock.monotonic() - started) * 1000, 1),
            response_headers=response.headers,
        )


def _outcome(error: DliError) -> str:
    if isinstance(error, Transient):
        return error.reason
    if isinstance(error, Permanent):
        return "permanent"
    return "auth"


def _count(operation: str, outcome: str) -> None:
    metrics.labelled(metrics.DLI_REQUESTS, operation, outcome).inc()
