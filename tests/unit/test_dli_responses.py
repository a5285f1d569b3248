"""Classification of every DLI answer (status, headers, body) and network failure into results and errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from exporter.dli.responses import (
    NOT_SUCCESS_CODE,
    error_from_exception,
    error_from_status,
    parse_export_response,
    parse_is_success,
    parse_list_response,
    parse_retry_after,
)
from exporter.errors import AuthError, DliError, Permanent, Transient

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
RID = {"X-Request-Id": "req-42"}
OK_EXPORT = {"is_success": True, "message": "ok", "zip_file": ["bucket/exports/a.zip"]}
APIGW_THROTTLED = {"error_code": "APIGW.0308", "error_msg": "The throttling threshold has been reached"}
HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


def _json(data: Any) -> bytes:
    return json.dumps(data).encode()


def _dli(code: str, message: str) -> bytes:
    return _json({"error_code": code, "error_msg": message})


def _http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + seconds_from_now, UTC), usegmt=True)


# --- is_success and Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("True", True),
        ("TRUE", True),
        (" false ", False),
        ("False", False),
        ("yes", None),
        ("1", None),
        (1, None),
        (0, None),
        (None, None),
        ("", None),
    ],
)
def test_is_success_accepts_booleans_and_true_false_strings_only(
    value: object, expected: bool | None
) -> None:
    """`is_success` is read from a JSON boolean or a "true"/"false" string in any case, nothing looser."""
    assert parse_is_success(value) is expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("5", 5.0),
        (" 2 ", 2.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        (_http_date(12), 12.0),
        (_http_date(-30), 0.0),
        ("Thu, 01 Jan 2026 00:00:10 -0000", None),  # no zone: not an RFC 9110 date
        ("Fri, 99 Foo 2026 00:00:10 GMT", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(header: str | None, expected: float | None) -> None:
    """Retry-After gives seconds either directly or as an HTTP-date measured from `now`; junk gives None."""
    assert parse_retry_after(header, NOW) == expected


# --- non-2xx statuses -------------------------------------------------------------------------------------

# (status, headers, body, error class, Transient reason or Permanent/Auth code, retry_after)
STATUS_TABLE: list[tuple[int, dict[str, str], bytes, type[DliError], str | None, float | None]] = [
    (429, {"Retry-After": "1"}, _json(APIGW_THROTTLED), Transient, "throttled", 1.0),
    (429, {}, _dli("DLI.0009", "too many"), Transient, "throttled", None),
    (429, {"Retry-After": _http_date(20)}, b"", Transient, "throttled", 20.0),
    (500, {}, _dli("DLI.0999", "Internal server error."), Transient, "server_error", None),
    (500, {}, b"Internal Server Error", Transient, "server_error", None),
    (502, {"Content-Type": "text/html"}, HTML_502, Transient, "server_error", None),
    (503, {"Retry-After": "7"}, b"", Transient, "server_error", 7.0),
    (504, {}, b"", Transient, "server_error", None),
    (408, {}, b"", Transient, "timeout", None),
    (400, {}, _dli("DLI.0999", "Server-side errors occur."), Transient, "server_error", None),
    (400, {}, _dli("DLI.0019", "The task times out."), Transient, "timeout", None),
    (400, {}, _dli("DLI.0001", "Parameter obs_dir is invalid."), Permanent, "DLI.0001", None),
    (400, {}, _dli("DLI.0002", "job 7 does not exist"), Permanent, "DLI.0002", None),
    (400, {}, HTML_502, Permanent, "HTTP_400", None),
    (403, {}, _dli("DLI.0003", "no permission"), Permanent, "DLI.0003", None),
    (403, {}, b"", Permanent, "HTTP_403", None),
    (404, {}, _dli("DLI.0023", "No related resources"), Permanent, "DLI.0023", None),
    (404, {}, b"[1, 2]", Permanent, "HTTP_404", None),
    (409, {}, b"", Permanent, "HTTP_409", None),
    (302, {"Location": "https://elsewhere.example"}, b"", Permanent, "HTTP_302", None),
    (401, {}, _dli("DLI.0013", "User authentication errors occur."), AuthError, "DLI.0013", None),
    (
        401,
        {},
        _json({"error": {"code": "APIGW.0301", "message": "bad IAM token"}}),
        AuthError,
        "APIGW.0301",
        None,
    ),
    (401, {}, b"", AuthError, None, None),
]


@pytest.mark.parametrize(("status", "headers", "body", "kind", "label", "retry_after"), STATUS_TABLE)
@pytest.mark.parametrize("parse", [parse_export_response, parse_list_response])
def test_non_2xx_statuses_are_classified_by_the_table(
    parse: Any,
    status: int,
    headers: dict[str, str],
    body: bytes,
    kind: type[DliError],
    label: str | None,
    retry_after: float | None,
) -> None:
    """A status (DLI, gateway, HTML or empty body) gives its error class, code or reason, hint, request ID."""
    with pytest.raises(DliError) as caught:
        parse(status, {**headers, **RID}, body, NOW)
    error = caught.value
    assert type(error) is kind
    assert error.status == status
    assert error.request_id == "req-42"
    if isinstance(error, Transient):
        assert error.reason == label
        assert error.retry_after == retry_after
    else:
        assert error.code == label
    assert "<html" not in error.message  # gateway pages are noise, not messages


def test_error_message_carries_dli_error_text() -> None:
    """A DLI error body's `error_msg` ends up in the error's message so reports can say what was wrong."""
    body = _json({"error_code": "DLI.0001", "error_msg": "Parameter obs_dir is invalid."})
    error = error_from_status(400, {}, body, NOW)
    assert isinstance(error, Permanent)
    assert "Parameter obs_dir is invalid." in error.message
    assert error.request_id is None


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_is_not_an_error_by_status(status: int) -> None:
    """A 2xx status alone is never an error: the body decides."""
    assert error_from_status(status, {}, b"", NOW) is None


def test_request_id_header_is_found_in_any_case() -> None:
    """Header names ignore case, so `x-request-id` is read as well as `X-Request-Id`."""
    result = parse_export_response(200, {"x-request-id": "lower"}, _json(OK_EXPORT), NOW)
    assert result.request_id == "lower"


def test_request_id_is_read_from_aiohttp_headers() -> None:
    """The headers aiohttp hands over (a case-insensitive proxy) work as well as plain dicts."""
    headers = CIMultiDictProxy(CIMultiDict({"X-REQUEST-ID": "upper", "Retry-After": "3"}))
    error = error_from_status(429, headers, b"", NOW)
    assert isinstance(error, Transient)
    assert (error.request_id, error.retry_after) == ("upper", 3.0)


# --- 2xx export bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", [True, "true", "True", "TRUE"])
def test_export_success_in_every_is_success_spelling(flag: object) -> None:
    """A successful export gives its ZIP paths, message and request ID whatever the type of `is_success`."""
    body = _json({**OK_EXPORT, "is_success": flag})
    result = parse_export_response(200, RID, body, NOW)
    assert result.is_success is True
    assert result.zip_files == ["bucket/exports/a.zip"]
    assert result.message == "ok"
    assert result.request_id == "req-42"


@pytest.mark.parametrize(
    ("body", "zip_files", "message"),
    [
        ({"is_success": True}, [], ""),
        ({"is_success": True, "zip_file": None, "message": None}, [], ""),
        ({"is_success": "true", "zip_file": ["b/1.zip", "b/2.zip"], "extra": 1}, ["b/1.zip", "b/2.zip"], ""),
    ],
)
def test_export_success_with_optional_fields_missing(
    body: dict[str, Any], zip_files: list[str], message: str
) -> None:
    """Absent or null `zip_file` / `message` read as empty, and unknown fields are ignored."""
    result = parse_export_response(200, {}, _json(body), NOW)
    assert (result.zip_files, result.message, result.request_id) == (zip_files, message, None)


MALFORMED_EXPORT_BODIES = [
    b"",
    b"{",
    b'{"is_success": true, "zip_file": ["bucket/a.z',  # truncated mid-body
    b"\xff\xfe\x00garbage",
    HTML_502,
    b"null",
    b"[]",
    b'"true"',
    b'{"message": "no is_success at all"}',
    b'{"is_success": "maybe"}',
    b'{"is_success": null}',
    b'{"is_success": 1}',
    b'{"is_success": true, "zip_file": "bucket/a.zip"}',
    b'{"is_success": true, "zip_file": [1, 2]}',
    b'{"is_success": true, "message": {"nested": 1}}',
]


@pytest.mark.parametrize("body", MALFORMED_EXPORT_BODIES)
def test_export_200_with_unreadable_body_is_transient_malformed(body: bytes) -> None:
    """A 200 whose body is not JSON, is cut short or has the wrong shape is retried as `malformed`."""
    with pytest.raises(Transient) as caught:
        parse_export_response(200, RID, body, NOW)
    assert caught.value.reason == "malformed"
    assert (caught.value.status, caught.value.request_id) == (200, "req-42")


# is_success false: (message, permanent?)
NOT_SUCCESS_TABLE = [
    ("The job 42 does not exist.", True),
    ("Job doesn't exist", True),
    ("job not exists", True),
    ("Resource not found", True),
    ("No such job: 7", True),
    ("Invalid OBS path", True),
    ("illegal job id", True),
    ("You have no permission to export jobs", True),
    ("Permission denied", True),
    ("User not authorized", True),
    ("Forbidden", True),
    ("Operation not supported", True),
    ("Unsupported job type", True),
    ("System busy, please try again later", False),
    ("Internal error", False),
    ("", False),
    ("The job is exported successfully.", False),  # a contradictory answer: try again
]


@pytest.mark.parametrize(("message", "permanent"), NOT_SUCCESS_TABLE)
@pytest.mark.parametrize("flag", [False, "false", "FALSE"])
def test_export_not_success_is_permanent_only_when_the_message_says_so(
    message: str, permanent: bool, flag: object
) -> None:
    """`is_success: false` is Permanent(NOT_SUCCESS) for messages in the table, else Transient."""
    body = _json({"is_success": flag, "message": message})
    with pytest.raises(DliError) as caught:
        parse_export_response(200, RID, body, NOW)
    error = caught.value
    assert error.request_id == "req-42"
    if permanent:
        assert isinstance(error, Permanent)
        assert error.code == NOT_SUCCESS_CODE
    else:
        assert isinstance(error, Transient)
        assert error.reason == "not_success"
    assert (message or "(no message)") in error.message


def test_not_success_without_message_field_is_transient() -> None:
    """`is_success: false` with no message at all says nothing permanent, so it is retried."""
    with pytest.raises(Transient) as caught:
        parse_export_response(200, {}, b'{"is_success": false}', NOW)
    assert caught.value.reason == "not_success"


# --- 2xx listing bodies -----------------------------------------------------------------------------------

LISTING = {
    "is_success": "true",
    "message": "Jobs are successfully listed.",
    "job_list": {
        "total_count": 26,
        "jobs": [
            {
                "job_id": 146,
                "name": "aaaaa",
                "job_type": "flink_sql_job",
                "status": "job_init",
                "root_id": -1,
            },
            {"job_id": 147, "name": "作业-ü", "status": "job_running", "job_config": {"cu_number": 2}},
        ],
    },
}


def test_listing_page_is_parsed() -> None:
    """The documented listing answer (string `is_success`, extra job fields) yields its jobs and total."""
    page = parse_list_response(200, RID, _json(LISTING), NOW)
    assert [job.job_id for job in page.jobs] == [146, 147]
    assert page.jobs[0].job_type == "flink_sql_job"
    assert page.jobs[1].name == "作业-ü"
    assert (page.total_count, page.request_id) == (26, "req-42")


def test_empty_listing_page_is_parsed() -> None:
    """An empty page (the end of the listing) is a page, not an error; total_count is optional."""
    page = parse_list_response(200, {}, b'{"is_success": true, "job_list": {"jobs": []}}', NOW)
    assert (page.jobs, page.total_count) == ([], None)


@pytest.mark.parametrize(
    "body",
    [
        b'{"is_success": "true"}',
        b'{"is_success": "true", "job_list": null}',
        b'{"is_success": "true", "job_list": {"total_count": 3}}',
        b'{"is_success": "true", "job_list": {"jobs": {"job_id": 1}}}',
        b'{"is_success": "true", "job_list": {"jobs": [{"name": "no id"}]}}',
        b'{"is_success": "true", "job_list": {"jobs": [{"job_id": "abc"}]}}',
        b'{"is_success": "true", "job_list": {"total_count": "many", "jobs": []}}',
        b'{"is_success": "true", "job_list": {"jobs": [{"job_id": 1}, {"job_',
    ],
)
def test_listing_with_wrong_shape_is_transient_malformed(body: bytes) -> None:
    """A listing without `job_list.jobs`, or with a job lacking a numeric job_id, is malformed."""
    with pytest.raises(Transient) as caught:
        parse_list_response(200, RID, body, NOW)
    assert caught.value.reason == "malformed"
    assert caught.value.request_id == "req-42"


def test_listing_not_success_follows_the_message_table() -> None:
    """A listing with `is_success: "false"` is classified by its message like an export."""
    with pytest.raises(Transient) as busy:
        parse_list_response(200, {}, b'{"is_success": "false", "message": "busy"}', NOW)
    assert busy.value.reason == "not_success"
    with pytest.raises(Permanent) as invalid:
        parse_list_response(200, {}, b'{"is_success": "false", "message": "invalid job_type"}', NOW)
    assert invalid.value.code == NOT_SUCCESS_CODE


# --- network failures -------------------------------------------------------------------------------------


def _response_error() -> aiohttp.ClientResponseError:
    info = aiohttp.RequestInfo(
        yarl.URL("http://127.0.0.1/"), "GET", CIMultiDictProxy(CIMultiDict()), yarl.URL("http://127.0.0.1/")
    )
    return aiohttp.ClientResponseError(info, (), status=400, message="Invalid constant string")


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (TimeoutError(), "timeout"),
        (aiohttp.ServerTimeoutError("read timed out"), "timeout"),
        (aiohttp.ConnectionTimeoutError("connect timed out"), "timeout"),
        (aiohttp.SocketTimeoutError("sock_read"), "timeout"),
        (aiohttp.ServerDisconnectedError(), "connection"),
        (aiohttp.ClientConnectionError("reset"), "connection"),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), "connection"),
        (aiohttp.ClientPayloadError("Response payload is not completed"), "connection"),
        (_response_error(), "connection"),
    ],
)
def test_network_failures_are_transient(failure: BaseException, reason: str) -> None:
    """Timeouts, resets, disconnects, cut payloads and broken HTTP are Transient with a stable reason."""
    error = error_from_exception(failure)
    assert isinstance(error, Transient)
    assert error.reason == reason
    assert error.retry_after is None


@pytest.mark.parametrize("failure", [ValueError("bug"), KeyError("x"), RuntimeError("Session is closed")])
def test_other_exceptions_are_not_classified(failure: BaseException) -> None:
    """Anything that is not a network failure is left alone (it is a bug and must surface as such)."""
    assert error_from_exception(failure) is None
