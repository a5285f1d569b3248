"""DliClient over aiohttp (mocked with aioresponses): signing, retries, rate limiting, 401 renewal, paging."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web
from aiohttp.test_utils import TestServer
from aioresponses import CallbackResult, aioresponses
from structlog.testing import capture_logs
from support import TEST_AK, TEST_PROJECT, TEST_SK

from exporter import metrics
from exporter.adapters.limiter import LocalRateLimiter
from exporter.dli.client import DliClient
from exporter.dli.listing import REMEMBERED_PAGES, ListingProgress
from exporter.dli.responses import NOT_SUCCESS_CODE as NOT_SUCCESS
from exporter.dli.retry import RetryPolicy
from exporter.dli.session import SessionOptions, create_session, ssl_context
from exporter.dli.signer import Credentials, canonical_query_string, sdk_date, verify_request
from exporter.errors import AuthError, DliError, Permanent, Transient
from exporter.models import JobSummary, ListFilters

ENDPOINT = "http://127.0.0.1:18765"
HOST = "127.0.0.1:18765"
EXPORT_PATH = f"/v1.0/{TEST_PROJECT}/streaming/jobs/export"
EXPORT_URL = yarl.URL(ENDPOINT + EXPORT_PATH)
LIST_PATH = f"/v1.0/{TEST_PROJECT}/streaming/jobs"
LIST_PATTERN = re.compile(rf"^{re.escape(ENDPOINT + LIST_PATH)}\?")
OK = {"is_success": True, "message": "ok", "zip_file": ["dli-exports/p/a.zip"]}
WALL_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class ManualClock:
    """Time moves only when someone sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return WALL_START + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


class RecordingLimiter:
    """A rate limiter that admits at once and records every acquire and pause."""

    def __init__(self) -> None:
        self.acquired = 0
        self.pauses: list[float] = []
        self.messages: list[str] = []

    async def acquire(self) -> float:
        self.acquired += 1
        return 0.25

    async def pause(self, seconds: float, message: str = "") -> None:
        self.pauses.append(seconds)
        self.messages.append(message)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def limiter() -> RecordingLimiter:
    return RecordingLimiter()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def make_client(
    session: aiohttp.ClientSession,
    limiter: Any,
    clock: ManualClock,
    *,
    policy: RetryPolicy | None = None,
    auth: Credentials | str | None = None,
    **options: Any,
) -> DliClient:
    return DliClient(
        session,
        ENDPOINT,
        auth if auth is not None else Credentials(TEST_AK, TEST_SK),
        limiter,
        policy or RetryPolicy(max_attempts=3, initial_backoff=0.5, max_backoff=30, deadline=300),
        clock=clock,
        **options,
    )


def calls(mocked: aioresponses, method: str = "POST", url: yarl.URL = EXPORT_URL) -> list[Any]:
    return list(mocked.requests.get((method, url), []))


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def dli_error(code: str) -> dict[str, str]:
    return {"error_code": code, "error_msg": f"what {code} says"}


def http_date(wall: float) -> str:
    return format_datetime(datetime.fromtimestamp(wall, UTC), usegmt=True)


# --- the request on the wire ------------------------------------------------------------------------------


async def test_export_sends_compact_body_signed_over_the_exact_bytes(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """The export body is the compact JSON DLI expects, and the signature verifies over those very bytes."""
    mocked.post(EXPORT_URL, payload=OK, headers={"X-Request-Id": "req-1"})
    client = make_client(session, limiter, clock)

    result = await client.export_jobs(TEST_PROJECT, "dli-exports/p", [3, 1, 2])

    assert result.zip_files == ["dli-exports/p/a.zip"]
    assert result.request_id == "req-1"
    (call,) = calls(mocked)
    body = call.kwargs["data"]
    assert body == b'{"obs_dir":"dli-exports/p","is_selected":true,"job_selected":[3,1,2]}'
    headers = call.kwargs["headers"]
    assert headers["Authorization"].startswith(f"SDK-HMAC-SHA256 Access={TEST_AK}, SignedHeaders=")
    assert headers["X-Sdk-Date"] == sdk_date(datetime.fromtimestamp(WALL_START, UTC))
    assert headers["X-Project-Id"] == TEST_PROJECT
    assert headers["Content-Type"] == "application/json"
    now = datetime.fromtimestamp(WALL_START, UTC)
    ak = verify_request("POST", HOST, EXPORT_PATH, [], headers, body, {TEST_AK: TEST_SK}.get, now=now)
    assert ak == TEST_AK
    assert call.kwargs["allow_redirects"] is False


async def test_x_project_id_follows_the_project_of_the_call(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """Credentials made for another project are signed with the project named in the URL."""
    mocked.post(EXPORT_URL, payload=OK)
    client = make_client(session, limiter, clock, auth=Credentials(TEST_AK, TEST_SK, project_id="other0"))
    await client.export_jobs(TEST_PROJECT, "dli-exports", [1])
    assert calls(mocked)[0].kwargs["headers"]["X-Project-Id"] == TEST_PROJECT


async def test_temporary_credentials_send_a_signed_security_token(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """Temporary AK/SK add X-Security-Token, and it is among the signed headers."""
    mocked.post(EXPORT_URL, payload=OK)
    auth = Credentials(TEST_AK, TEST_SK, security_token="temporary-token-value")
    await make_client(session, limiter, clock, auth=auth).export_jobs(TEST_PROJECT, "dli-exports", [1])
    headers = calls(mocked)[0].kwargs["headers"]
    assert headers["X-Security-Token"] == "temporary-token-value"
    assert "x-security-token" in headers["Authorization"]


async def test_iam_token_replaces_signing(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """With an IAM token the request carries X-Auth-Token and X-Project-Id, and no Authorization."""
    mocked.post(EXPORT_URL, payload=OK)
    await make_client(session, limiter, clock, auth="iam-token-1").export_jobs(TEST_PROJECT, "b-1/x", [5])
    headers = calls(mocked)[0].kwargs["headers"]
    assert headers["X-Auth-Token"] == "iam-token-1"
    assert headers["X-Project-Id"] == TEST_PROJECT
    assert "Authorization" not in headers


async def test_listing_query_goes_on_the_wire_exactly_as_signed(
    limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """On a real 127.0.0.1 server, filters with spaces, '/', unicode and '~' arrive as the signed query."""
    seen: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        raw_path, _, raw_query = request.raw_path.partition("?")
        pairs = list(request.query.items())
        now = datetime.fromtimestamp(WALL_START, UTC)
        verify_request(
            "GET", request.host, raw_path, pairs, request.headers, None, {TEST_AK: TEST_SK}.get, now=now
        )
        seen.append({"raw_query": raw_query, "pairs": pairs})
        return web.json_response(
            {"is_success": "true", "job_list": {"total_count": 1, "jobs": [{"job_id": 9}]}}
        )

    app = web.Application()
    app.router.add_get(LIST_PATH, handler)
    filters = ListFilters(name="my job/ü~x", tags="k1=v1", status="job_running")
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as real_session:
        client = DliClient(
            real_session,
            str(server.make_url("")),
            Credentials(TEST_AK, TEST_SK),
            limiter,
            RetryPolicy(max_attempts=1),
            clock=clock,
        )
        jobs = [job.job_id async for job in client.list_jobs(TEST_PROJECT, filters)]

    assert jobs == [9]
    (request,) = seen
    assert request["raw_query"] == canonical_query_string(request["pairs"])
    assert request["raw_query"] == (
        "limit=100&name=my%20job%2F%C3%BC~x&offset=0&status=job_running&tags=k1%3Dv1"
    )


# --- errors and retries -----------------------------------------------------------------------------------

ERROR_CASES: list[tuple[dict[str, Any], type[DliError], str, int]] = [
    ({"status": 400, "payload": dli_error("DLI.0001")}, Permanent, "DLI.0001", 1),
    ({"status": 403, "payload": dli_error("DLI.0003")}, Permanent, "DLI.0003", 1),
    ({"status": 404, "body": "not here"}, Permanent, "HTTP_404", 1),
    ({"status": 200, "payload": {"is_success": "no", "message": "no such job"}}, Transient, "malformed", 3),
    ({"status": 200, "payload": {"is_success": "false", "message": "no such"}}, Permanent, NOT_SUCCESS, 1),
    ({"status": 500, "payload": dli_error("DLI.0999")}, Transient, "server_error", 3),
    ({"status": 502, "body": "<html><body>Bad Gateway</body></html>"}, Transient, "server_error", 3),
    ({"status": 429, "payload": dli_error("APIGW.0308")}, Transient, "throttled", 3),
    ({"status": 200, "body": '{"is_success": true, "zip_fi'}, Transient, "malformed", 3),
    ({"status": 200, "payload": {"is_success": False, "message": "busy"}}, Transient, "not_success", 3),
    ({"exception": TimeoutError()}, Transient, "timeout", 3),
    ({"exception": aiohttp.ServerTimeoutError("read")}, Transient, "timeout", 3),
    ({"exception": aiohttp.ServerDisconnectedError()}, Transient, "connection", 3),
    ({"exception": aiohttp.ClientConnectionError("reset")}, Transient, "connection", 3),
    ({"exception": aiohttp.ClientPayloadError("cut short")}, Transient, "connection", 3),
]  # fmt: skip


@pytest.mark.parametrize(("response", "kind", "label", "requests"), ERROR_CASES)
async def test_each_outcome_raises_its_typed_error_after_the_right_number_of_tries(
    session: aiohttp.ClientSession,
    mocked: aioresponses,
    limiter: RecordingLimiter,
    clock: ManualClock,
    response: dict[str, Any],
    kind: type[DliError],
    label: str,
    requests: int,
) -> None:
    """Permanent errors are raised at once; Transient ones after max_attempts, as such (no RetryError)."""
    mocked.post(EXPORT_URL, repeat=True, headers={"X-Request-Id": "req-9"}, **response)
    client = make_client(session, limiter, clock)

    with pytest.raises(DliError) as caught:
        await client.export_jobs(TEST_PROJECT, "dli-exports", [7])

    error = caught.value
    assert type(error) is kind
    assert (error.reason if isinstance(error, Transient) else error.code) == label
    assert len(calls(mocked)) == requests
    assert limiter.acquired == requests  # every try, first and retries, takes a limiter slot
    if "exception" not in response:
        assert error.request_id == "req-9"


async def test_transient_then_success_records_metrics_and_one_retry_log(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """A 503 then a 200 gives the result, one `dli.request.retry` line and matching counters."""
    mocked.post(EXPORT_URL, status=503, body="busy", headers={"X-Request-Id": "req-a"})
    mocked.post(EXPORT_URL, payload=OK, headers={"X-Request-Id": "req-b"})
    before = {
        "error": sample("exporter_dli_requests_total", operation="export", outcome="server_error"),
        "ok": sample("exporter_dli_requests_total", operation="export", outcome="ok"),
        "retries": sample("exporter_dli_retries_total", reason="server_error"),
        "waits": sample("exporter_rate_limit_wait_seconds_count"),
        "latency": sample("exporter_dli_request_seconds_count", operation="export"),
    }

    with capture_logs() as logs:
        result = await make_client(session, limiter, clock).export_jobs(TEST_PROJECT, "dli-exports", [1])

    assert result.request_id == "req-b"
    after = {
        "error": sample("exporter_dli_requests_total", operation="export", outcome="server_error"),
        "ok": sample("exporter_dli_requests_total", operation="export", outcome="ok"),
        "retries": sample("exporter_dli_retries_total", reason="server_error"),
        "waits": sample("exporter_rate_limit_wait_seconds_count"),
        "latency": sample("exporter_dli_request_seconds_count", operation="export"),
    }
    assert {key: after[key] - before[key] for key in after} == {
        "error": 1, "ok": 1, "retries": 1, "waits": 2, "latency": 2
    }  # fmt: skip
    (retry,) = [entry for entry in logs if entry["event"] == "dli.request.retry"]
    assert retry["reason"] == "server_error"
    assert retry["attempt"] == 1
    assert retry["status"] == 503
    assert retry["request_id"] == "req-a"
    assert retry["wait_s"] == pytest.approx(clock.sleeps[0], abs=0.001)
    assert 0 <= clock.sleeps[0] <= 0.5
    assert sample("exporter_inflight_exports") == 0


async def test_429_retry_after_seconds_is_waited_and_pauses_the_limiter(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """A 429 with Retry-After: 7 pauses everyone for 7 s and the retry waits at least 7 s."""
    mocked.post(EXPORT_URL, status=429, headers={"Retry-After": "7"}, payload={"error_code": "APIGW.0308"})
    mocked.post(EXPORT_URL, payload=OK)

    result = await make_client(session, limiter, clock).export_jobs(TEST_PROJECT, "dli-exports", [1])

    assert result.is_success
    assert limiter.pauses == [7.0]
    assert clock.sleeps == [7.0]  # jitter (at most 0.5 s here) never shortens the server's wait
    assert limiter.acquired == 2


async def test_429_retry_after_http_date_is_honoured(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """Retry-After as an HTTP-date is measured against the clock's wall time."""
    mocked.post(EXPORT_URL, status=429, headers={"Retry-After": http_date(WALL_START + 12)})
    mocked.post(EXPORT_URL, payload=OK)
    await make_client(session, limiter, clock).export_jobs(TEST_PROJECT, "dli-exports", [1])
    assert limiter.pauses == [12.0]
    assert clock.sleeps == [12.0]


async def test_429_without_retry_after_backs_off_and_pauses_briefly(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """Without Retry-After a 429 backs off with jitter and pauses the limiter for the initial backoff."""
    mocked.post(EXPORT_URL, status=429)
    mocked.post(EXPORT_URL, payload=OK)
    await make_client(session, limiter, clock).export_jobs(TEST_PROJECT, "dli-exports", [1])
    assert limiter.pauses == [0.5]
    assert len(clock.sleeps) == 1
    assert 0 <= clock.sleeps[0] <= 0.5


async def test_429_slows_the_shared_rate_limiter(
    session: aiohttp.ClientSession, mocked: aioresponses, clock: ManualClock
) -> None:
    """With the real in-process limiter, the retry after a 429 cannot start before Retry-After has passed."""
    rate_limiter = LocalRateLimiter(rate=1000, burst=10, clock=clock)
    mocked.post(EXPORT_URL, status=429, headers={"Retry-After": "5"})
    mocked.post(EXPORT_URL, payload=OK)
    await make_client(session, rate_limiter, clock).export_jobs(TEST_PROJECT, "dli-exports", [1])
    assert clock.now >= 5.0
    waited = await rate_limiter.acquire()  # the pause is over: the next caller is admitted at once
    assert waited == 0.0


async def test_backoff_is_full_jitter_and_capped(
    session: aiohttp.ClientSession,
    mocked: aioresponses,
    limiter: RecordingLimiter,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each wait is drawn from [0, min(initial * 2^n, max)]: the window doubles, then stops at max_backoff."""
    windows: list[tuple[float, float]] = []

    def top_of_window(low: float, high: float) -> float:
        windows.append((low, high))
        return high

    monkeypatch.setattr("random.uniform", top_of_window)
    mocked.post(EXPORT_URL, status=500, repeat=True)
    policy = RetryPolicy(max_attempts=6, initial_backoff=0.5, max_backoff=2.0, deadline=300)

    with pytest.raises(Transient):
        await make_client(session, limiter, clock, policy=policy).export_jobs(
            TEST_PROJECT, "dli-exports", [1]
        )

    assert {low for low, _ in windows} == {0}  # full jitter: any wait from zero up to the window
    assert clock.sleeps == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert len(calls(mocked)) == 6


async def test_deadline_stops_retrying_before_sleeping_past_it(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """With a 10 s deadline and Retry-After: 4, tries go out at 0, 4 and 8 s; none at 12 s."""
    mocked.post(EXPORT_URL, status=429, headers={"Retry-After": "4"}, repeat=True)
    policy = RetryPolicy(max_attempts=100, initial_backoff=0.1, max_backoff=1, deadline=10)

    with pytest.raises(Transient) as caught:
        await make_client(session, limiter, clock, policy=policy).export_jobs(
            TEST_PROJECT, "dli-exports", [1]
        )

    assert caught.value.reason == "throttled"
    assert len(calls(mocked)) == 3
    assert clock.sleeps == [4.0, 4.0]
    assert clock.now <= 10


async def test_the_first_attempts_own_time_counts_against_the_deadline(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """A first try that took 7 s of a 10 s deadline leaves no room for a retry 4 s later."""

    def slow_throttle(url: yarl.URL, **kwargs: Any) -> CallbackResult:
        clock.now += 7.0
        return CallbackResult(status=429, headers={"Retry-After": "4"}, payload={})

    mocked.post(EXPORT_URL, callback=slow_throttle, repeat=True)
    policy = RetryPolicy(max_attempts=100, initial_backoff=0.1, max_backoff=1, deadline=10)
    with pytest.raises(Transient):
        await make_client(session, limiter, clock, policy=policy).export_jobs(
            TEST_PROJECT, "dli-exports", [1]
        )
    assert len(calls(mocked)) == 1
    assert clock.sleeps == []


async def test_retry_after_beyond_the_deadline_gives_up_at_once(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """A Retry-After longer than the whole deadline ends the call now instead of sleeping for nothing."""
    mocked.post(EXPORT_URL, status=429, headers={"Retry-After": "3600"}, repeat=True)
    policy = RetryPolicy(max_attempts=5, initial_backoff=0.1, max_backoff=1, deadline=60)
    with pytest.raises(Transient) as caught:
        await make_client(session, limiter, clock, policy=policy).export_jobs(
            TEST_PROJECT, "dli-exports", [1]
        )
    assert caught.value.retry_after == 3600
    assert clock.sleeps == []
    assert limiter.pauses == [60]  # the others still slow down, for at most the deadline


# --- 401 --------------------------------------------------------------------------------------------------


async def test_401_refreshes_credentials_once_and_retries(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """On a 401 the client fetches fresh credentials once, re-signs and succeeds, without backoff."""
    mocked.post(EXPORT_URL, status=401, payload={"error_code": "DLI.0013"}, headers={"X-Request-Id": "r401"})
    mocked.post(EXPORT_URL, payload=OK)
    refreshed: list[int] = []

    async def refresh() -> Credentials:
        refreshed.append(1)
        return Credentials("AKFRESHEXAMPLE000002", "SKfresh")

    client = make_client(session, limiter, clock, refresh_auth=refresh)
    with capture_logs() as logs:
        result = await client.export_jobs(TEST_PROJECT, "dli-exports", [1])

    assert result.is_success
    assert refreshed == [1]
    first, second = calls(mocked)
    assert f"Access={TEST_AK}," in first.kwargs["headers"]["Authorization"]
    assert "Access=AKFRESHEXAMPLE000002," in second.kwargs["headers"]["Authorization"]
    assert clock.sleeps == []
    assert limiter.acquired == 2
    (event,) = [entry for entry in logs if entry["event"] == "dli.auth.refresh"]
    assert (event["refreshed"], event["status"], event["request_id"]) == (True, 401, "r401")
    assert TEST_SK not in repr(logs)
    assert "Signature=" not in repr(logs)


async def test_401_after_refresh_raises_auth_error(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """A second 401 after the refresh is final: AuthError, one refresh, two requests."""
    mocked.post(EXPORT_URL, status=401, repeat=True, headers={"X-Request-Id": "r2"})
    refreshed: list[int] = []

    async def refresh() -> str:
        refreshed.append(1)
        return "new-iam-token"

    client = make_client(session, limiter, clock, refresh_auth=refresh)
    with pytest.raises(AuthError) as caught:
        await client.export_jobs(TEST_PROJECT, "dli-exports", [1])
    assert caught.value.request_id == "r2"
    assert refreshed == [1]
    first, second = calls(mocked)
    assert "Authorization" in first.kwargs["headers"]
    assert second.kwargs["headers"]["X-Auth-Token"] == "new-iam-token"


async def test_401_without_refresh_resigns_once_then_raises(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """Without a refresh hook the client re-signs once with a fresh date, then raises AuthError."""
    mocked.post(EXPORT_URL, status=401, repeat=True)
    with capture_logs() as logs, pytest.raises(AuthError):
        await make_client(session, limiter, clock).export_jobs(TEST_PROJECT, "dli-exports", [1])
    assert len(calls(mocked)) == 2
    assert [entry["refreshed"] for entry in logs if entry["event"] == "dli.auth.refresh"] == [False]


async def test_401_is_renewed_at_most_once_per_call_even_after_transient_retries(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """401, refresh, 503 (retried), 401 again: the call ends in AuthError instead of refreshing forever."""
    for status in (401, 503, 401):
        mocked.post(EXPORT_URL, status=status)
    refreshed: list[int] = []

    async def refresh() -> str:
        refreshed.append(1)
        return "token-2"

    with pytest.raises(AuthError):
        await make_client(session, limiter, clock, refresh_auth=refresh).export_jobs(
            TEST_PROJECT, "d-1x", [1]
        )
    assert refreshed == [1]
    assert len(calls(mocked)) == 3


async def test_concurrent_401s_refresh_only_once(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """Two tasks refused with the same credentials share one refresh; both then succeed with the new ones."""
    both_refused = asyncio.Event()
    refused = 0

    def answer(url: yarl.URL, **kwargs: Any) -> CallbackResult:
        nonlocal refused
        if kwargs["headers"].get("X-Auth-Token") == "fresh":
            return CallbackResult(payload=OK)
        refused += 1
        if refused == 2:
            both_refused.set()
        return CallbackResult(status=401)

    mocked.post(EXPORT_URL, callback=answer, repeat=True)
    refreshed: list[int] = []

    async def refresh() -> str:
        await both_refused.wait()  # hold the refresh until the second task has seen its 401 too
        refreshed.append(1)
        return "fresh"

    client = make_client(session, limiter, clock, auth="stale", refresh_auth=refresh)
    results = await asyncio.wait_for(
        asyncio.gather(
            client.export_jobs(TEST_PROJECT, "dli-exports", [1]),
            client.export_jobs(TEST_PROJECT, "dli-exports", [2]),
        ),
        timeout=10,
    )
    assert [result.is_success for result in results] == [True, True]
    assert refreshed == [1]
    assert len(calls(mocked)) == 4


class RotatingSource:
    """A credential source whose keys change while a request waits in the limiter."""

    def __init__(self) -> None:
        self.auth: Credentials = Credentials(TEST_AK, TEST_SK)
        self.refreshed = 0

    async def current(self) -> Credentials:
        return self.auth

    async def refresh(self) -> Credentials:
        self.refreshed += 1
        return self.auth


class RotatingLimiter(RecordingLimiter):
    """Grants the slot only after the source's keys were rotated: the wait a busy limiter imposes."""

    def __init__(self, source: RotatingSource) -> None:
        super().__init__()
        self.source = source

    async def acquire(self) -> float:
        self.source.auth = Credentials("AKROTATEDINLIMITER01", "SKrotated")
        return await super().acquire()


async def test_a_request_signs_with_the_keys_of_the_moment_its_slot_is_granted(
    session: aiohttp.ClientSession, mocked: aioresponses, clock: ManualClock
) -> None:
    """Keys rotated (or renewed) while a request waited for its rate-limiter slot: it signs with the new
    ones, never with keys picked before the wait (they may have expired meanwhile)."""
    mocked.post(EXPORT_URL, payload=OK)
    source = RotatingSource()
    client = DliClient(session, ENDPOINT, source, RotatingLimiter(source), RetryPolicy(), clock=clock)
    assert (await client.export_jobs(TEST_PROJECT, "dli-exports", [1])).is_success
    (sent,) = calls(mocked)
    assert "Access=AKROTATEDINLIMITER01," in sent.kwargs["headers"]["Authorization"]


async def test_a_source_is_refreshed_once_on_a_401_and_the_retry_signs_with_its_answer(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """A credential source instead of fixed keys: the 401 calls its refresh() once, the retry signs with
    what it then gives; a source that refreshes itself takes no refresh_auth as well."""
    mocked.post(EXPORT_URL, status=401)
    mocked.post(EXPORT_URL, payload=OK)
    source = RotatingSource()

    async def rotate() -> Credentials:
        source.refreshed += 1
        source.auth = Credentials("AKAFTERREFRESH000001", "SKafter")
        return source.auth

    source.refresh = rotate  # type: ignore[method-assign]
    client = DliClient(session, ENDPOINT, source, limiter, RetryPolicy(), clock=clock)
    assert (await client.export_jobs(TEST_PROJECT, "dli-exports", [1])).is_success
    first, second = calls(mocked)
    assert f"Access={TEST_AK}," in first.kwargs["headers"]["Authorization"]
    assert "Access=AKAFTERREFRESH000001," in second.kwargs["headers"]["Authorization"]
    assert source.refreshed == 1 and "RotatingSource" in repr(client)
    with pytest.raises(ValueError, match="refreshes itself"):
        DliClient(session, ENDPOINT, source, limiter, RetryPolicy(), refresh_auth=rotate)


# --- listing ----------------------------------------------------------------------------------------------


class ListingServer:
    """A job listing that pages by offset; `on_page` may change the jobs between pages."""

    def __init__(self, job_ids: list[int], on_page: Any = None) -> None:
        self.job_ids = job_ids
        self.on_page = on_page
        self.offsets: list[int] = []
        self.limits: list[int] = []

    def __call__(self, url: yarl.URL, **kwargs: Any) -> CallbackResult:
        offset, limit = int(url.query["offset"]), int(url.query["limit"])
        self.offsets.append(offset)
        self.limits.append(limit)
        page = self.job_ids[offset : offset + limit]
        body = {
            "is_success": "true",
            "message": "Jobs are successfully listed.",
            "job_list": {
                "total_count": len(self.job_ids),
                "jobs": [{"job_id": i, "name": f"j{i}"} for i in page],
            },
        }
        if self.on_page:
            self.on_page(self)
        return CallbackResult(body=json.dumps(body), headers={"X-Request-Id": f"list-{offset}"})


async def test_listing_pages_by_offset_and_dedupes_when_jobs_are_inserted_mid_way(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """Two jobs created after page one shift the list: every old job is still yielded exactly once,
    and paging goes past the first total (10) because it stops on a short page, not on that total."""

    def insert_after_first_page(server: ListingServer) -> None:
        if len(server.offsets) == 1:
            server.job_ids[:0] = [12, 11]

    server = ListingServer(list(range(10, 0, -1)), insert_after_first_page)
    mocked.get(LIST_PATTERN, callback=server, repeat=True)
    client = make_client(session, limiter, clock, page_size=3)

    jobs = [job.job_id async for job in client.list_jobs(TEST_PROJECT)]

    assert jobs == [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    assert server.offsets == [0, 3, 6, 9, 12]
    assert set(server.limits) == {3}


async def test_listing_stops_on_the_first_short_page(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """A page with fewer jobs than the page size is the last one: no further request is made."""
    server = ListingServer([1, 2, 3, 4, 5])
    mocked.get(LIST_PATTERN, callback=server, repeat=True)
    jobs = [
        job.job_id async for job in make_client(session, limiter, clock, page_size=3).list_jobs(TEST_PROJECT)
    ]
    assert jobs == [1, 2, 3, 4, 5]
    assert server.offsets == [0, 3]


async def test_listing_of_an_empty_project(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """An empty first page ends the listing with no jobs after one request."""
    server = ListingServer([])
    mocked.get(LIST_PATTERN, callback=server, repeat=True)
    assert [job async for job in make_client(session, limiter, clock).list_jobs(TEST_PROJECT)] == []
    assert server.offsets == [0]


async def test_listing_a_server_that_ignores_offset_fails_instead_of_looping(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """When full pages keep repeating known jobs the listing raises Transient instead of paging forever."""
    page = {"is_success": True, "job_list": {"total_count": 99, "jobs": [{"job_id": 1}, {"job_id": 2}]}}
    mocked.get(LIST_PATTERN, payload=page, repeat=True)
    client = make_client(session, limiter, clock, page_size=2)
    seen: list[int] = []

    async def drain() -> None:
        async for job in client.list_jobs(TEST_PROJECT):
            seen.append(job.job_id)
            if len(seen) > 50:  # bound the loop should the guard ever break
                return

    with pytest.raises(Transient) as caught:
        await drain()
    assert caught.value.reason == "malformed"
    assert seen == [1, 2]
    assert sum(len(v) for (method, _), v in mocked.requests.items() if method == "GET") == 4


async def test_listing_retries_a_failed_page_and_sends_filters(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """A 503 on a page is retried like any call, and the filters travel in every signed page request."""
    mocked.get(LIST_PATTERN, status=503)
    mocked.get(LIST_PATTERN, payload={"is_success": "TRUE", "job_list": {"jobs": [{"job_id": 4}]}})
    client = make_client(session, limiter, clock)
    jobs = [job.job_id async for job in client.list_jobs(TEST_PROJECT, ListFilters(status="job_running"))]
    assert jobs == [4]
    urls = [url for (method, url), v in mocked.requests.items() if method == "GET" for _ in v]
    assert len(urls) == 2
    assert all(url.query["status"] == "job_running" and url.query["limit"] == "100" for url in urls)
    first_call = next(iter(mocked.requests.values()))[0]
    assert first_call.kwargs["headers"]["Authorization"].startswith("SDK-HMAC-SHA256 ")
    assert first_call.kwargs["data"] is None


async def test_listing_never_yields_a_job_twice_when_jobs_keep_arriving(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """A job created in front after every page shifts one seen job onto each next page, over 100 pages:
    each old job is yielded once, in order, and paging goes on past the original end."""
    created = iter(range(10_000, 20_000))

    def insert_one(server: ListingServer) -> None:
        server.job_ids.insert(0, next(created))

    server = ListingServer(list(range(300, 0, -1)), insert_one)
    mocked.get(LIST_PATTERN, callback=server, repeat=True)
    client = make_client(session, limiter, clock, page_size=3)

    jobs = [job.job_id async for job in client.list_jobs(TEST_PROJECT)]

    assert jobs == list(range(300, 0, -1))
    assert server.offsets == list(range(0, 448, 3))  # each page repeats one job: 150 pages, not 100


async def test_listing_filters_a_job_shifted_by_more_than_a_page(
    session: aiohttp.ClientSession, mocked: aioresponses, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """Five jobs created at once after page two (of three jobs each) bring back jobs of pages one and two:
    none of them is yielded again."""

    def insert_five_after_second_page(server: ListingServer) -> None:
        if len(server.offsets) == 2:
            server.job_ids[:0] = [105, 104, 103, 102, 101]

    server = ListingServer(list(range(1, 11)), insert_five_after_second_page)
    mocked.get(LIST_PATTERN, callback=server, repeat=True)
    client = make_client(session, limiter, clock, page_size=3)

    jobs = [job.job_id async for job in client.list_jobs(TEST_PROJECT)]

    assert jobs == list(range(1, 11))
    assert server.offsets == [0, 3, 6, 9, 12, 15]  # page three was [2, 3, 4]: from two pages back and one


def summaries(job_ids: range | list[int]) -> list[JobSummary]:
    return [JobSummary(job_id=job_id) for job_id in job_ids]


def test_listing_memory_stays_at_two_pages_however_many_pages() -> None:
    """Over 1,000 full pages of 100, each repeating the previous page's last job (one job created in front
    per page), the listing holds at most two pages of IDs and never yields a job twice."""
    progress = ListingProgress()
    page_size = 100
    fresh = iter(range(1, 200_000))
    last: list[int] = []
    yielded = 0
    for _ in range(1_000):
        new_ids = [next(fresh) for _ in range(page_size - len(last))]
        new = progress.take_new(summaries([*last, *new_ids]))
        assert [job.job_id for job in new] == new_ids
        assert progress.remembered <= REMEMBERED_PAGES * page_size
        progress.advance(page_size, len(new), None)
        yielded += len(new)
        last = new_ids[-1:]
    assert REMEMBERED_PAGES == 2
    assert yielded == 1_000 * (page_size - 1) + 1
    assert progress.offset == 1_000 * page_size


def test_listing_forgets_pages_older_than_the_window() -> None:
    """Only the last two pages are remembered: a job from three pages back counts as new again."""
    progress = ListingProgress()
    for page in ([1, 2], [3, 4], [5, 6]):
        assert [job.job_id for job in progress.take_new(summaries(page))] == page
    assert [job.job_id for job in progress.take_new(summaries([4, 5, 1, 7, 7]))] == [1, 7]
    assert progress.remembered == 6  # pages [5, 6] and [4, 5, 1, 7]


# --- refusals and set-up ----------------------------------------------------------------------------------


async def test_refuses_requests_that_can_never_work(
    session: aiohttp.ClientSession, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """An empty job list, a project ID that could change the URL path, or a bad page size fail at once."""
    client = make_client(session, limiter, clock)
    with pytest.raises(ValueError, match="at least one job"):
        await client.export_jobs(TEST_PROJECT, "dli-exports", [])
    with pytest.raises(ValueError, match="project ID"):
        await client.export_jobs("../other", "dli-exports", [1])
    with pytest.raises(ValueError, match="page_size"):
        make_client(session, limiter, clock, page_size=101)
    with pytest.raises(ValueError, match="endpoint"):
        DliClient(session, "dli.example.com", "token", limiter, RetryPolicy())
    assert limiter.acquired == 0


async def test_repr_shows_no_credentials(
    session: aiohttp.ClientSession, limiter: RecordingLimiter, clock: ManualClock
) -> None:
    """The client's repr names the endpoint and the kind of auth, never the keys."""
    text = repr(make_client(session, limiter, clock))
    assert "auth=aksk" in text
    assert TEST_AK not in text
    assert TEST_SK not in text


def test_options_refuse_values_that_can_never_work() -> None:
    """A retry policy without attempts, or a session without connections or time, fails at once."""
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="pool_size"):
        SessionOptions(pool_size=0)
    with pytest.raises(ValueError, match="read_timeout"):
        SessionOptions(read_timeout=0)


async def test_session_uses_pool_size_and_timeouts_from_its_options() -> None:
    """The shared session caps connections at pool_size and bounds connect and read times, not the total."""
    options = SessionOptions(pool_size=7, connect_timeout=3, read_timeout=9, tls_verify=False)
    async with create_session(options) as dli_session:
        assert isinstance(dli_session.connector, aiohttp.TCPConnector)
        assert dli_session.connector.limit == 7
        assert dli_session.timeout.connect == 3
        assert dli_session.timeout.sock_read == 9
        assert dli_session.timeout.total is None


def test_tls_policy_follows_the_options(tmp_path: Path) -> None:
    """tls_verify=false disables verification; otherwise certificates are required, from ca_bundle if set."""
    assert ssl_context(SessionOptions(tls_verify=False)) is False
    default = ssl_context(SessionOptions())
    assert isinstance(default, ssl.SSLContext)
    assert default.verify_mode == ssl.CERT_REQUIRED
    assert default.check_hostname
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    with pytest.raises(ssl.SSLError):  # proves the bundle named in the options is the one loaded
        ssl_context(SessionOptions(ca_bundle=bundle))
