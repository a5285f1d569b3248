"""Turn what DLI answered (status, headers, body bytes) into a result or a typed error, without I/O.

Every outcome of a DLI call is decided here, so the client stays a thin loop around the network and each
rule can be tested with a table. The rules:

| answer                                             | outcome                                       |
| -------------------------------------------------- | --------------------------------------------- |
| 429 (DLI body, APIGW.0308 body or no body)         | Transient("throttled", retry_after)           |
| 5xx (JSON, HTML gateway page, empty)               | Transient("server_error", retry_after)        |
| 408                                                | Transient("timeout")                          |
| 401                                                | AuthError (the client re-signs once)          |
| 400 `DLI.0999` (server-side error)                 | Transient("server_error")                     |
| 400 `DLI.0019` (the task times out)                | Transient("timeout")                          |
| any other 4xx (400 `DLI.xxxx`, 403, 404, ...)      | Permanent(body's error_code, else `HTTP_<n>`) |
| 2xx, body not JSON / truncated / wrong shape       | Transient("malformed")                        |
| 2xx, `is_success` false, message in the table      | Permanent("NOT_SUCCESS")                      |
| 2xx, `is_success` false, any other message         | Transient("not_success")                      |
| 2xx, `is_success` true                             | ExportResult / JobPage                        |
| anything else (1xx, 3xx: redirects are not signed) | Permanent(`HTTP_<n>`)                         |

`is_success` is a boolean in the export documentation and a string in the listing one; both forms (and
any case of "true"/"false") are accepted. Every error and result carries the `X-Request-Id` header.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import aiohttp
from multidict import CIMultiDict
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from exporter.errors import AuthError, DliError, Permanent, Transient
from exporter.models import ExportResult, JobSummary

__all__ = [
    "NOT_SUCCESS_CODE",
    "PERMANENT_MESSAGES",
    "REQUEST_ID_HEADER",
    "JobPage",
    "error_from_exception",
    "error_from_status",
    "parse_export_response",
    "parse_is_success",
    "parse_list_response",
    "parse_retry_after",
]

REQUEST_ID_HEADER = "X-Request-Id"
NOT_SUCCESS_CODE = "NOT_SUCCESS"

# `is_success: false` with a message saying the input itself is wrong will fail the same way next time.
# Anything else (DLI busy, an internal hiccup, an empty message) is worth another try.
PERMANENT_MESSAGES: tuple[re.Pattern[str], ...] = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"\bnot exists?\b|\bdoesn't exist\b|\bnot found\b|\bno such\b",  # "job 42 does not exist"
        r"\b(invalid|illegal)\b",  # "invalid obs_dir", "illegal job id"
        r"\b(no|without) permission\b|\bpermission denied\b|\bnot authori[sz]ed\b|\bforbidden\b",
        r"\bnot supported\b|\bunsupported\b",
    )
)

# 400s that DLI documents as its own failures, not the caller's: retrying is the right answer.
_TRANSIENT_DLI_CODES: Mapping[str, str] = {"DLI.0999": "server_error", "DLI.0019": "timeout"}
_MESSAGE_LIMIT = 300


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of DLI's job listing."""

    jobs: list[JobSummary]
    total_count: int | None
    request_id: str | None


def parse_is_success(value: object) -> bool | None:
    """True/False from a JSON boolean or a "true"/"false" string in any case; None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    return None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None when absent or unreadable.

    `now` is the wall-clock time (epoch seconds) the HTTP-date is measured against; a date in the past
    means "now", i.e. 0 seconds.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:  # RFC 9110 dates are GMT; a naive parse means an obsolete format
            return None
        seconds = moment.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def error_from_exception(error: BaseException) -> Transient | None:
    """The Transient for a network failure (timeout, reset, truncated payload), None if it is not one."""
    if isinstance(error, TimeoutError):  # asyncio.TimeoutError and aiohttp.ServerTimeoutError are both this
        return Transient(f"DLI request timed out: {type(error).__name__}", reason="timeout")
    if isinstance(error, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return Transient(f"connection to DLI failed: {type(error).__name__}: {error}", reason="connection")
    if isinstance(error, aiohttp.ClientResponseError):  # the gateway spoke broken HTTP
        return Transient(f"DLI sent an unreadable response: {error.message}", reason="connection")
    return None


def error_from_status(status: int, headers: Mapping[str, str], body: bytes, now: float) -> DliError | None:
    """The typed error for a non-2xx answer, None for 2xx (whose body decides)."""
    if 200 <= status < 300:
        return None
    request_id = _request_id(headers)
    code, detail = _error_body(body)
    message = f"DLI answered HTTP {status}" + (f": {detail}" if detail else "")
    common: dict[str, Any] = {"status": status, "code": code, "request_id": request_id}
    retry_after = parse_retry_after(CIMultiDict(headers).get("Retry-After"), now)
    if status == 429:
        return Transient(message, reason="throttled", retry_after=retry_after, **common)
    if status >= 500:  # a 503 may say when to come back, too
        return Transient(message, reason="server_error", retry_after=retry_after, **common)
    if status == 408:
        return Transient(message, reason="timeout", **common)
    if status == 401:
        return AuthError(message, **common)
    if status == 400 and code is not None and code in _TRANSIENT_DLI_CODES:
        return Transient(message, reason=_TRANSIENT_DLI_CODES[code], **common)
    return Permanent(message, code=code or f"HTTP_{status}", status=status, request_id=request_id)


def parse_export_response(status: int, headers: Mapping[str, str], body: bytes, now: float) -> ExportResult:
    """ExportResult for a successful export; raises Transient / Permanent / AuthError otherwise."""
    _raise_for_status(status, headers, body, now)
    request_id = _request_id(headers)
    parsed = _validate(_ExportBody, body, status, request_id)
    _raise_unless_success(parsed.is_success, parsed.message, status, request_id)
    return ExportResult(
        is_success=True, message=parsed.message or "", zip_files=parsed.zip_file, request_id=request_id
    )


def parse_list_response(status: int, headers: Mapping[str, str], body: bytes, now: float) -> JobPage:
    """JobPage for a successful listing; raises Transient / Permanent / AuthError otherwise."""
    _raise_for_status(status, headers, body, now)
    request_id = _request_id(headers)
    parsed = _validate(_ListBody, body, status, request_id)
    _raise_unless_success(parsed.is_success, parsed.message, status, request_id)
    if parsed.job_list is None:
        raise _malformed("job_list: missing", status, request_id)
    return JobPage(jobs=parsed.job_list.jobs, total_count=parsed.job_list.total_count, request_id=request_id)


# --- private ----------------------------------------------------------------------------------------------


class _SuccessBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    is_success: bool
    message: str | None = None

    @field_validator("is_success", mode="before")
    @classmethod
    def _is_success(cls, value: object) -> bool:
        parsed = parse_is_success(value)
        if parsed is None:
            raise ValueError("is_success must be true or false")
        return parsed


def _none_is_empty(value: object) -> object:
    return [] if value is None else value


_NoneIsEmpty = BeforeValidator(_none_is_empty)
"""DLI sends `null` where a list is empty (`zip_file`, `job_mapping`): read it as the empty list."""


class _ExportBody(_SuccessBody):
    zip_file: Annotated[list[str], _NoneIsEmpty] = Field(default_factory=list)


class _JobList(BaseModel):
    model_config = ConfigDict(extra="ignore")

    total_count: int | None = None
    jobs: list[JobSummary]


class _ListBody(_SuccessBody):
    job_list: _JobList | None = None  # absent when is_success is false


_BodyT = TypeVar("_BodyT", bound=_SuccessBody)


def _request_id(headers: Mapping[str, str]) -> str | None:
    value = CIMultiDict(headers).get(REQUEST_ID_HEADER)
    return value or None


def _error_body(body: bytes) -> tuple[str | None, str]:
    """(error_code, error_msg) from a JSON error body; (None, "") for HTML pages and other noise."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly nested JSON
        return None, ""
    if not isinstance(data, dict):
        return None, ""
    nested = data.get("error")
    if isinstance(nested, dict):  # IAM-style {"error": {"code": ..., "message": ...}}
        data = {"error_code": nested.get("code"), "error_msg": nested.get("message")}
    code = data.get("error_code")
    detail = data.get("error_msg") or data.get("message") or ""
    return (str(code) if code not in (None, "") else None), str(detail)[:_MESSAGE_LIMIT]


def _raise_for_status(status: int, headers: Mapping[str, str], body: bytes, now: float) -> None:
    error = error_from_status(status, headers, body, now)
    if error is not None:
        raise error


def _validate(model: type[_BodyT], body: bytes, status: int, request_id: str | None) -> _BodyT:
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        raise _malformed(f"{where}: {problem['msg']}", status, request_id) from None


def _malformed(problem: str, status: int, request_id: str | None) -> Transient:
    return Transient(
        f"DLI answered HTTP {status} with an unreadable body ({problem})",
        reason="malformed",
        status=status,
        request_id=request_id,
    )


def _raise_unless_success(is_success: bool, message: str | None, status: int, request_id: str | None) -> None:
    if is_success:
        return
    text = (message or "").strip()[:_MESSAGE_LIMIT]
    described = f"DLI reported is_success=false: {text or '(no message)'}"
    if any(pattern.search(text) for pattern in PERMANENT_MESSAGES):
        raise Permanent(described, code=NOT_SUCCESS_CODE, status=status, request_id=request_id)
    raise Transient(described, reason="not_success", status=status, request_id=request_id)
