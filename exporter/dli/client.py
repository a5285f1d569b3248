"""`DliClient`: the exporter's DLI calls (export, paged listing; import and job detail for migrations) over
aiohttp, signed, paced and retried.

A call is a series of attempts under the retry policy (`retry.py`); one attempt is a rate-limiter slot and
a signed exchange (`transport.py`), whose answer `responses.py` classifies (`import_responses.py` for the
import side); paging is `listing.py`. What spans attempts lives here: the retry loop and the credentials,
renewed at most once per call on a 401. Credentials are fixed, or a `CredentialSource` asked before
every attempt (so rotated keys sign the next request) and refreshed on a 401.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import structlog

from exporter.attempts import ReplayFirst
from exporter.clock import SystemClock
from exporter.credentials.source import CredentialSource, StaticSource
from exporter.dli.import_responses import parse_import_response, parse_job_detail_response
from exporter.dli.listing import list_pages
from exporter.dli.responses import JobPage, parse_export_response, parse_list_response
from exporter.dli.retry import RetryPolicy
from exporter.dli.signer import Credentials
from exporter.dli.transport import (
    EXPORT,
    IMPORT,
    JOB_DETAIL,
    LIST,
    Auth,
    DliRequest,
    DliTransport,
    Parser,
    ResultT,
)
from exporter.errors import AuthError, Transient
from exporter.migration.ports import ImportResult, JobDetail
from exporter.models import (
    MAX_JOB_ID,
    ExportResult,
    JobSummary,
    ListFilters,
    check_project_id,
    split_obs_path,
)
from exporter.ports import Clock, RateLimiter

__all__ = ["MAX_PAGE_SIZE", "Auth", "DliClient", "RefreshAuth"]

log = structlog.get_logger(__name__)

RefreshAuth = Callable[[], Awaitable[Auth]]
MAX_PAGE_SIZE = 100  # DLI's documented maximum `limit` of the job listing


@dataclass(slots=True)
class _AuthRenewal:
    """Per call: the 401 path (refresh or re-sign, then one more try) is taken at most once."""

    used: bool = False


class DliClient:
    """Implements `ports.DliApi` and `migration.ports.DliImporter` against a real DLI endpoint (or the
    simulator)."""

    __slots__ = (
        "_auth_generation",
        "_auth_lock",
        "_clock",
        "_page_size",
        "_policy",
        "_refresh_auth",
        "_source",
        "_transport",
    )

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        auth: Auth | CredentialSource,
        limiter: RateLimiter,
        policy: RetryPolicy,
        *,
        page_size: int = MAX_PAGE_SIZE,
        refresh_auth: RefreshAuth | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self._transport = DliTransport(session, endpoint, limiter, policy, self._clock)
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1 to {MAX_PAGE_SIZE} (DLI's limit), not {page_size}")
        self._source = _source_of(auth, refresh_auth)
        self._auth_generation = 0
        self._auth_lock = asyncio.Lock()
        self._policy = policy
        self._page_size = page_size
        static = type(self._source) is StaticSource  # a hooked one refreshes
        self._refresh_auth: RefreshAuth | None = None if static else self._source.refresh

    def __repr__(self) -> str:
        kind = getattr(self._source, "kind", type(self._source).__name__)  # never a value
        return f"<DliClient endpoint={self._transport.endpoint} auth={kind} page_size={self._page_size}>"

    # --- the port -----------------------------------------------------------------------------------------

    async def export_jobs(self, project_id: str, obs_dir: str, job_ids: Sequence[int]) -> ExportResult:
        """Export the given jobs into `obs_dir`; raises Transient / Permanent / AuthError."""
        if not job_ids:
            raise ValueError("export_jobs needs at least one job ID (is_selected=true with none is refused)")
        path = f"/v1.0/{check_project_id(project_id)}/streaming/jobs/export"
        body = _json_body({"obs_dir": obs_dir, "is_selected": True, "job_selected": list(job_ids)})
        return await self._call(
            DliRequest(EXPORT, "POST", project_id, path, body=body), parse_export_response
        )

    async def list_jobs(
        self, project_id: str, filters: ListFilters | None = None, *, ahead: int = 0
    ) -> AsyncIterator[JobSummary]:
        """Every job matching `filters`, each once, page by page; stops at the first short page.

        Jobs created while we page shift already-yielded jobs onto the next page; `listing.py` filters
        them out, remembering only the last pages' IDs. `ahead` > 0 requests that many later pages while
        one is read: faster, but it can miss a job created meanwhile (`listing.py` says when to use it).
        """
        path = f"/v1.0/{check_project_id(project_id)}/streaming/jobs"
        base_query = tuple(filters.query()) if filters else ()

        async def fetch_page(offset: int) -> JobPage:
            query = (*base_query, ("offset", str(offset)), ("limit", str(self._page_size)))
            return await self._call(DliRequest(LIST, "GET", project_id, path, query), parse_list_response)

        async for job in list_pages(fetch_page, self._page_size, ahead=ahead):
            yield job

    async def import_jobs(self, project_id: str, zip_file: str, *, is_cover: bool) -> ImportResult:
        """Import the jobs of `zip_file` (`bucket/key`, or a folder of ZIPs); raises like `export_jobs`.

        Retried like every call, so an answer lost on the way may mean DLI imported twice: the caller
        reconciles by job name (`list_jobs`), as only it knows what the target held before.
        """
        bucket, key = split_obs_path(zip_file)
        if not bucket or not key:
            raise ValueError(f"zip_file must be bucket/key, not {zip_file!r}")
        path = f"/v1.0/{check_project_id(project_id)}/streaming/jobs/import"
        body = _json_body({"zip_file": f"{bucket}/{key}", "is_cover": is_cover})
        return await self._call(
            DliRequest(IMPORT, "POST", project_id, path, body=body), parse_import_response
        )

    async def get_job(self, project_id: str, job_id: int) -> JobDetail | None:
        """One job's detail, None when DLI says there is no such job; raises Transient / Permanent /
        AuthError otherwise."""
        if isinstance(job_id, bool) or not 1 <= job_id <= MAX_JOB_ID:
            raise ValueError(f"job_id must be 1 to {MAX_JOB_ID}, not {job_id!r}")
        path = f"/v1.0/{check_project_id(project_id)}/streaming/jobs/{job_id}"
        return await self._call(DliRequest(JOB_DETAIL, "GET", project_id, path), parse_job_detail_response)

    # --- one call: retries around attempts ------------------------------------------------------------------

    async def _call(self, request: DliRequest, parse: Parser[ResultT]) -> ResultT:
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
            replay: ReplayFirst[ResultT] = ReplayFirst(self._attempt, first_failure)
        retrying = self._policy.retrying(self._clock, request.operation, started_at=started)
        result: ResultT = await retrying(replay, request, parse, renewal)
        return result

    async def _attempt(self, request: DliRequest, parse: Parser[ResultT], renewal: _AuthRenewal) -> ResultT:
        """One try; on the call's first 401, renew the credentials and try once more straight away."""
        generation = self._auth_generation
        try:
            return await self._transport.send(request, self._source.current, parse)
        except AuthError as error:
            if renewal.used:
                raise
            renewal.used = True
            await self._renew_auth(generation, request, error)
            return await self._transport.send(request, self._source.current, parse)

    async def _renew_auth(self, generation: int, request: DliRequest, error: AuthError) -> None:
        """Fetch fresh credentials once for all tasks that saw the same 401 (others just re-sign with what
        that fetch gave: the source's current credentials). Without a refresh hook there is nothing to
        fetch: the retry re-signs the same credentials with a fresh date."""
        refreshed = self._refresh_auth is not None
        if self._refresh_auth is not None:
            async with self._auth_lock:
                if self._auth_generation == generation:  # else another task refreshed while we waited
                    await self._refresh_auth()  # the source's current() gives the result
                    self._auth_generation += 1
        log.info(
            "dli.auth.refresh",
            operation=request.operation,
            refreshed=refreshed,
            status=error.status,
            request_id=error.request_id,
        )


class _Hooked(StaticSource):
    """Fixed credentials with a refresh hook (embedding programs, tests): a refresh replaces them."""

    __slots__ = ("_hook",)

    def __init__(self, auth: Auth, hook: RefreshAuth) -> None:
        super().__init__(auth)
        self._hook = hook

    def __repr__(self) -> str:
        return f"<refreshable {self.kind}>"

    async def refresh(self) -> Auth:
        self._auth = await self._hook()
        return self._auth


def _source_of(auth: Auth | CredentialSource, refresh_auth: RefreshAuth | None) -> CredentialSource:
    if not isinstance(auth, Credentials | str):
        if refresh_auth is not None:
            raise ValueError("a credential source refreshes itself: give it, or auth and refresh_auth")
        return auth
    return StaticSource(auth) if refresh_auth is None else _Hooked(auth, refresh_auth)


def _json_body(payload: Mapping[str, object]) -> bytes:
    """Compact JSON, encoded once: these exact bytes are both signed and sent."""
    return json.dumps(payload, separators=(",", ":")).encode()
