"""`DliClient`: the exporter's two DLI calls (export, paged listing) over aiohttp, signed, paced and retried.

Each attempt, first or retry, takes a rate-limiter slot, so retries count against the shared rate; a 429
pauses the limiter for everyone. What an answer means is decided in `responses.py`, how long to wait in
`retry.py`; this module only moves bytes and keeps score (metrics, logs).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import structlog
import yarl

from exporter import metrics
from exporter.clock import SystemClock
from exporter.dli.responses import (
    error_from_exception,
    parse_export_response,
    parse_list_response,
)
from exporter.dli.retry import RetryPolicy
from exporter.dli.signer import Credentials, canonical_query_string, sdk_date, sign_request, token_headers
from exporter.errors import AuthError, DliError, Permanent, Transient
from exporter.models import ExportResult, JobSummary, ListFilters, check_project_id
from exporter.ports import Clock, RateLimiter

__all__ = ["MAX_PAGE_SIZE", "Auth", "DliClient", "RefreshAuth"]

log = structlog.get_logger(__name__)

Auth = Credentials | str  # AK/SK credentials, or an IAM token
RefreshAuth = Callable[[], Awaitable[Auth]]
MAX_PAGE_SIZE = 100  # DLI's documented maximum `limit` of the job listing
# A server that ignores `offset` would hand back the same full page forever; this many full pages in a row
# without a new job ID ends the listing with an error instead (jobs shifting in at the front while we page
# explain one or two such pages, not three).
_MAX_STALE_PAGES = 3
_EXPORT = "export"
_LIST = "list"

_ResultT = TypeVar("_ResultT")
_Parser = Callable[[int, Mapping[str, str], bytes, float], _ResultT]


@dataclass(frozen=True, slots=True)
class _Request:
    """One DLI request, before signing: everything the signature covers."""

    operation: str
    method: str
    project_id: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None


@dataclass(slots=True)
class _AuthRenewal:
    """Per call: the 401 path (refresh or re-sign, then one more try) is taken at most once."""

    used: bool = False


@dataclass(slots=True)
class _ListingProgress:
    """Where paging stands: the IDs already yielded (the only thing kept in memory) and the next offset."""

    offset: int = 0
    stale_pages: int = 0
    seen: set[int] = field(default_factory=set)

    def take_new(self, jobs: Sequence[JobSummary]) -> list[JobSummary]:
        """The jobs of a page not yielded before, in page order, now remembered as seen."""
        new: list[JobSummary] = []
        for job in jobs:
            if job.job_id not in self.seen:
                self.seen.add(job.job_id)
                new.append(job)
        return new

    def advance(self, page_length: int, new_jobs: int, request_id: str | None) -> None:
        """Move past a full page; raise Transient when full pages keep bringing nothing new."""
        self.stale_pages = 0 if new_jobs else self.stale_pages + 1
        if self.stale_pages >= _MAX_STALE_PAGES:
            raise Transient(
                f"job listing made no progress for {_MAX_STALE_PAGES} full pages at offset {self.offset}: "
                "the server seems to ignore `offset`",
                reason="malformed",
                request_id=request_id,
            )
        self.offset += page_length


class _ReplayFirstFailure:
    """An attempt function for tenacity whose first call re-raises a failure that already happened."""

    __slots__ = ("_attempt", "_failure")

    def __init__(self, failure: Transient, attempt: Callable[..., Awaitable[Any]]) -> None:
        self._failure: Transient | None = failure
        self._attempt = attempt

    async def __call__(self, *args: Any) -> Any:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure
        return await self._attempt(*args)


class DliClient:
    """Implements `ports.DliApi` against a real DLI endpoint (or the simulator)."""

    __slots__ = (
        "_auth",
        "_auth_generation",
        "_auth_lock",
        "_base_path",
        "_clock",
        "_host",
        "_limiter",
        "_origin",
        "_page_size",
        "_policy",
        "_refresh_auth",
        "_session",
    )

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        auth: Auth,
        limiter: RateLimiter,
        policy: RetryPolicy,
        *,
        page_size: int = MAX_PAGE_SIZE,
        refresh_auth: RefreshAuth | None = None,
        clock: Clock | None = None,
    ) -> None:
        base = yarl.URL(endpoint)
        if base.scheme not in {"http", "https"} or not base.host:
            raise ValueError(f"DLI endpoint {endpoint!r} must be an http:// or https:// URL with a host")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1 to {MAX_PAGE_SIZE} (DLI's limit), not {page_size}")
        self._session = session
        self._origin = str(base.origin())
        self._host = base.host_port_subcomponent or base.host
        self._base_path = base.raw_path.rstrip("/")
        self._auth: Auth = auth
        self._auth_generation = 0
        self._auth_lock = asyncio.Lock()
        self._limiter = limiter
        self._policy = policy
        self._page_size = page_size
        self._refresh_auth = refresh_auth
        self._clock: Clock = clock or SystemClock()

    def __repr__(self) -> str:
        kind = "token" if isinstance(self._auth, str) else "aksk"
        return f"<DliClient endpoint={self._origin}{self._base_path} auth={kind} page_size={self._page_size}>"

    # --- the port -----------------------------------------------------------------------------------------

    async def export_jobs(self, project_id: str, obs_dir: str, job_ids: Sequence[int]) -> ExportResult:
        """Export the given jobs into `obs_dir`; raises Transient / Permanent / AuthError."""
        if not job_ids:
            raise ValueError("export_jobs needs at least one job ID (is_selected=true with none is refused)")
        body = _json_body({"obs_dir": obs_dir, "is_selected": True, "job_selected": list(job_ids)})
        return await self._call(self._export_request(project_id, body), parse_export_response)

    async def export_all(self, project_id: str, obs_dir: str) -> ExportResult:
        """Export every job of the project in one call (`is_selected: false`)."""
        body = _json_body({"obs_dir": obs_dir, "is_selected": False})
        return await self._call(self._export_request(project_id, body), parse_export_response)

    async def list_jobs(
        self, project_id: str, filters: ListFilters | None = None
    ) -> AsyncIterator[JobSummary]:
        """Every job matching `filters`, each once, page by page; stops at the first short page.

        The total may change while we page (jobs created or deleted), so it is not trusted as an end mark:
        an inserted job shifts already-seen jobs onto the next page, which the seen-ID set filters out.
        """
        path = f"/v1.0/{check_project_id(project_id)}/streaming/jobs"
        base_query = tuple(filters.query()) if filters else ()
        progress = _ListingProgress()
        while True:
            query = (*base_query, ("offset", str(progress.offset)), ("limit", str(self._page_size)))
            page = await self._call(_Request(_LIST, "GET", project_id, path, query), parse_list_response)
            new_jobs = progress.take_new(page.jobs)
            for job in new_jobs:
                yield job
            log.debug(
                "dli.list.page",
                offset=progress.offset,
                jobs=len(page.jobs),
                new=len(new_jobs),
                total_count=page.total_count,
                request_id=page.request_id,
            )
            if len(page.jobs) < self._page_size:
                return
            progress.advance(len(page.jobs), len(new_jobs), page.request_id)

    # --- one call: retries around attempts ------------------------------------------------------------------

    def _export_request(self, project_id: str, body: bytes) -> _Request:
        path = f"/v1.0/{check_project_id(project_id)}/streaming/jobs/export"
        return _Request(_EXPORT, "POST", project_id, path, body=body)

    async def _call(self, request: _Request, parse: _Parser[_ResultT]) -> _ResultT:
        """Run attempts under the retry policy; the last typed error escapes when it gives up.

        The first attempt runs outside tenacity: most calls succeed at once, and tenacity's machinery
        costs more than signing the request. On a Transient the policy takes over with that failure
        replayed as its own first attempt, so waits, attempt counts and the deadline are unchanged.
        """
        renewal = _AuthRenewal()
        started = self._clock.monotonic()  # the deadline runs from here, whoever counts the attempts
        try:
            return await self._attempt(request, parse, renewal)
        except Transient as first_failure:
            replay = _ReplayFirstFailure(first_failure, self._attempt)
        retrying = self._policy.retrying(self._clock, request.operation, started_at=started)
        result: _ResultT = await retrying(replay, request, parse, renewal)
        return result

    async def _attempt(self, request: _Request, parse: _Parser[_ResultT], renewal: _AuthRenewal) -> _ResultT:
        """One try; on the call's first 401, renew the credentials and try once more straight away."""
        generation = self._auth_generation
        try:
            return await self._send(request, parse)
        except AuthError as error:
            if renewal.used:
                raise
            renewal.used = True
            await self._renew_auth(generation, request, error)
            return await self._send(request, parse)

    async def _renew_auth(self, generation: int, request: _Request, error: AuthError) -> None:
        """Fetch fresh credentials once for all tasks that saw the same 401 (others just re-sign)."""
        if self._refresh_auth is None:  # nothing to refresh: the retry re-signs with a fresh date
            log.info(
                "dli.auth.refresh",
                operation=request.operation,
                refreshed=False,
                status=error.status,
                request_id=error.request_id,
            )
            return
        async with self._auth_lock:
            if self._auth_generation != generation:  # another task refreshed while we waited
                return
            self._auth = await self._refresh_auth()
            self._auth_generation += 1
        log.info(
            "dli.auth.refresh",
            operation=request.operation,
            refreshed=True,
            status=error.status,
            request_id=error.request_id,
        )

    # --- one attempt: limiter slot, signed request, classified answer ---------------------------------------

    async def _send(self, request: _Request, parse: _Parser[_ResultT]) -> _ResultT:
        waited = await self._limiter.acquire()
        metrics.RATE_LIMIT_WAIT.observe(waited)
        url, headers = self._sign(request)
        status, response_headers, payload = await self._exchange(request, url, headers)
        try:
            result = parse(status, response_headers, payload, self._clock.time())
        except DliError as error:
            _count(request.operation, _outcome(error))
            if isinstance(error, Transient) and error.reason == "throttled":
                await self._limiter.pause(self._throttle_pause(error.retry_after))
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

    def _sign(self, request: _Request) -> tuple[yarl.URL, dict[str, str]]:
        """The URL exactly as signed (already encoded, so aiohttp must not touch it) and the headers."""
        path = self._base_path + request.path
        query = canonical_query_string(request.query)
        url = yarl.URL(f"{self._origin}{path}" + (f"?{query}" if query else ""), encoded=True)
        headers = {"Content-Type": "application/json"}  # the official SDK sends it on GET too
        auth = self._auth
        if isinstance(auth, str):
            return url, {**headers, **token_headers(auth, request.project_id)}
        if auth.project_id != request.project_id:  # X-Project-Id must name the project in the path
            auth = replace(auth, project_id=request.project_id)
        date = sdk_date(datetime.fromtimestamp(self._clock.time(), UTC))
        signed, _parts = sign_request(
            request.method, self._host, path, request.query, headers, request.body, auth, date
        )
        return url, signed

    async def _exchange(
        self, request: _Request, url: yarl.URL, headers: Mapping[str, str]
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Send and read the whole answer; network failures come out as Transient."""
        started = self._clock.monotonic()
        inflight: AbstractContextManager[Any] = (
            metrics.INFLIGHT.track_inprogress() if request.operation == _EXPORT else nullcontext()
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
            log.debug(
                "dli.http",
                method=request.method,
                path=url.path,
                status=response.status,
                bytes=len(payload),
                latency_ms=round((self._clock.monotonic() - started) * 1000, 1),
                response_headers=response.headers,
            )
            return response.status, response.headers, payload
        finally:
            metrics.labelled(metrics.DLI_LATENCY, request.operation).observe(
                self._clock.monotonic() - started
            )


def _json_body(payload: Mapping[str, object]) -> bytes:
    """Compact JSON, encoded once: these exact bytes are both signed and sent."""
    return json.dumps(payload, separators=(",", ":")).encode()


def _outcome(error: DliError) -> str:
    if isinstance(error, Transient):
        return error.reason
    if isinstance(error, Permanent):
        return "permanent"
    return "auth"


def _count(operation: str, outcome: str) -> None:
    metrics.labelled(metrics.DLI_REQUESTS, operation, outcome).inc()
