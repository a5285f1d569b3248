"""Fuzzing the DLI answer parser and error classifier (exporter/dli/responses.py).

Whatever status, headers and body bytes come back, and whatever the network throws, the outcome is a
result or one of the project's typed errors (`Transient`, `Permanent`, `AuthError`), never a stray
ValueError, KeyError or RecursionError that would kill a worker task instead of being retried.
"""

from __future__ import annotations

import math
from typing import Any

import aiohttp
import pytest
import yarl
from fuzz.strategies import FUZZ, almost_json, any_json, bodies_around, retry_after_values
from hypothesis import event, example, given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from exporter.dli.responses import (
    JobPage,
    error_from_exception,
    error_from_status,
    parse_export_response,
    parse_is_success,
    parse_list_response,
    parse_retry_after,
)
from exporter.errors import AuthError, DliError, Permanent, Transient
from exporter.models import ExportResult

NOW = 1_750_000_000.0
# A third of the answers are plain 200s, so the body parsers get as much fuzz as the status rules.
statuses = (
    st.just(200)
    | st.sampled_from([201, 204, 400, 401, 403, 404, 408, 429, 500, 502, 503, 504])
    | st.integers(100, 599)
)
success_flags = st.sampled_from([True, False, "true", "false", "TRUE", " False ", "yes", 1, None])
messages = st.text(max_size=60) | st.sampled_from(["job 3 does not exist", "The system is busy.", ""])
well_formed_exports = st.fixed_dictionaries(
    {
        "is_success": st.sampled_from([True, False, "true", "false"]),
        "message": messages,
        "zip_file": st.lists(st.text(max_size=30), max_size=3),
    }
)
export_bodies = bodies_around(well_formed_exports) | bodies_around(
    almost_json(
        {
            "is_success": success_flags,
            "message": messages,
            "zip_file": st.lists(st.text(max_size=30), max_size=3),
        }
    )
)
well_formed_jobs = st.fixed_dictionaries(
    {"job_id": st.integers(1, 2**63 - 1), "name": st.text(max_size=10), "status": st.text(max_size=10)}
)
job_summaries = well_formed_jobs | almost_json(
    {"job_id": st.integers(-5, 2**64), "name": st.text(max_size=10), "status": st.text(max_size=10)}
)
well_formed_lists = st.fixed_dictionaries(
    {
        "is_success": st.sampled_from([True, False, "true", "false"]),
        "message": messages,
        "job_list": st.fixed_dictionaries(
            {"total_count": st.integers(0, 10**6), "jobs": st.lists(well_formed_jobs, max_size=3)}
        ),
    }
)
list_bodies = bodies_around(well_formed_lists) | bodies_around(
    almost_json(
        {
            "is_success": success_flags,
            "message": messages,
            "job_list": almost_json(
                {"total_count": st.integers(-1, 2**64), "jobs": st.lists(job_summaries, max_size=3)}
            ),
        }
    )
)
error_bodies = bodies_around(
    almost_json(
        {
            "error_code": st.sampled_from(["DLI.0002", "DLI.0999", "DLI.0019", "APIG.0308", ""]),
            "error_msg": st.text(max_size=40),
            "error": almost_json({"code": st.text(max_size=8), "message": st.text(max_size=20)}),
        }
    )
)
header_maps = st.builds(
    lambda retry_after, request_id, extra: {
        **extra,
        **({"Retry-After": retry_after} if retry_after is not None else {}),
        **({"X-Request-Id": request_id} if request_id is not None else {}),
    },
    retry_after_values,
    st.none() | st.text(max_size=20),
    st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=20), max_size=3),
)


def check_typed_error(error: DliError, status: int) -> str:
    """What every typed error must carry for the retry loop and the report to use it; returns its kind."""
    assert error.status == status
    if isinstance(error, Transient):
        assert error.reason in {"throttled", "server_error", "timeout", "malformed", "not_success"}
        assert error.retry_after is None or (math.isfinite(error.retry_after) and error.retry_after >= 0)
    elif isinstance(error, Permanent):
        assert error.code
    else:
        assert isinstance(error, AuthError) and status == 401
    return f"{type(error).__name__}:{error.reason}" if isinstance(error, Transient) else type(error).__name__


@FUZZ
@given(statuses, header_maps, export_bodies | error_bodies)
def test_export_answer_is_a_result_or_a_typed_error(
    status: int, headers: dict[str, str], body: bytes
) -> None:
    """Any export answer parses to an ExportResult (2xx, is_success true) or raises a typed DliError."""
    try:
        result = parse_export_response(status, headers, body, NOW)
    except DliError as error:
        event(check_typed_error(error, status))
        return
    event("ExportResult")
    assert 200 <= status < 300
    assert isinstance(result, ExportResult) and result.is_success
    assert all(isinstance(path, str) for path in result.zip_files)


@FUZZ
@given(statuses, header_maps, list_bodies | error_bodies)
def test_list_answer_is_a_page_or_a_typed_error(status: int, headers: dict[str, str], body: bytes) -> None:
    """Any listing answer parses to a JobPage of valid jobs or raises a typed DliError."""
    try:
        page = parse_list_response(status, headers, body, NOW)
    except DliError as error:
        event(check_typed_error(error, status))
        return
    event("JobPage")
    assert 200 <= status < 300
    assert isinstance(page, JobPage)
    assert all(job.job_id >= 1 for job in page.jobs)


@FUZZ
@given(statuses, header_maps, error_bodies | st.binary(max_size=300))
def test_error_classifier_never_raises(status: int, headers: dict[str, str], body: bytes) -> None:
    """error_from_status returns None exactly for 2xx and a typed error for everything else."""
    error = error_from_status(status, headers, body, NOW)
    if 200 <= status < 300:
        assert error is None
    else:
        assert error is not None
        event(check_typed_error(error, status))


@FUZZ
@given(retry_after_values, st.floats(min_value=0, max_value=4e9))
@example("Fri, 31 Dec 9999 23:59:59 GMT", NOW)
@example("Mon, 01 Jan 99999 00:00:00 GMT", NOW)
@example("1e999", NOW)
def test_retry_after_is_none_or_a_finite_wait(value: str | None, now: float) -> None:
    """Retry-After parses to None or a finite, non-negative number of seconds; it never raises."""
    seconds = parse_retry_after(value, now)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@FUZZ
@given(any_json)
def test_is_success_reads_only_true_and_false(value: Any) -> None:
    """parse_is_success accepts booleans and "true"/"false" strings only; anything else is None."""
    parsed = parse_is_success(value)
    if isinstance(value, bool):
        assert parsed is value
    elif isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        assert parsed is (value.strip().lower() == "true")
    else:
        assert parsed is None


def _request_info() -> aiohttp.RequestInfo:
    url = yarl.URL("https://dli.example.com/v1.0/p/streaming/jobs/export")
    return aiohttp.RequestInfo(url, "POST", CIMultiDictProxy(CIMultiDict()), url)


network_errors = st.text(max_size=40).flatmap(
    lambda text: st.sampled_from(
        [
            TimeoutError(text),
            aiohttp.ServerTimeoutError(text),
            aiohttp.ClientConnectionError(text),
            aiohttp.ServerDisconnectedError(text or None),
            aiohttp.ClientOSError(104, text),
            aiohttp.ClientPayloadError(text),
            aiohttp.ClientResponseError(_request_info(), (), status=400, message=text),
        ]
    )
)
other_errors = st.text(max_size=40).flatmap(
    lambda text: st.sampled_from([ValueError(text), KeyError(text), RuntimeError(text), OSError(text)])
)


@FUZZ
@given(network_errors)
def test_network_failures_are_transient(error: BaseException) -> None:
    """Timeouts, resets, truncated payloads and broken HTTP all become a Transient with a known reason."""
    classified = error_from_exception(error)
    assert isinstance(classified, Transient)
    assert classified.reason in {"timeout", "connection"}


@FUZZ
@given(other_errors)
def test_other_exceptions_are_not_mistaken_for_network_failures(error: BaseException) -> None:
    """A programming error is not classified as a retryable network failure (it must surface as a bug)."""
    assert error_from_exception(error) is None


DEEP_JSON = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("parse", [parse_export_response, parse_list_response])
def test_deeply_nested_success_body_is_malformed(parse: Any) -> None:
    """A 200 body nested 100,000 levels deep is a Transient("malformed"), not a RecursionError."""
    with pytest.raises(Transient) as caught:
        parse(200, {}, DEEP_JSON, NOW)
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize("status", [400, 429, 503])
def test_deeply_nested_error_body_is_classified(status: int) -> None:
    """A 4xx error body nested 100,000 levels deep is still classified by its status."""
    error = error_from_status(status, {}, DEEP_JSON, NOW)
    assert error is not None
    check_typed_error(error, status)
