"""Turn DLI's answers to the import side (importing a ZIP, one job's detail) into results or typed errors.

The rules are `responses.py`'s (status first, then `is_success`, boolean or string), so an import fails
exactly as an export does. What these two answers add:

- job IDs arrive as JSON numbers or as strings of digits (the import page's own example sends strings);
  both become int, anything else (a float, "12a", a boolean) is a malformed answer, like any other shape
  error;
- a job that does not exist is an answer, not a failure: the detail query returns None for DLI's
  400 `DLI.16001` (what DLI answers for an unknown Flink job; Huawei's Terraform provider reads exactly
  this code as "gone"), the error table's 400 `DLI.0002` ("the object does not exist") and 404
  `DLI.0023` ("no related resources"), or an `is_success: false` whose message says the job does not
  exist. A migration asks exactly that question. Any other 4xx (a gateway's 404 for an unknown API too)
  stays an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from exporter.dli.responses import (
    _malformed,
    _NoneIsEmpty,
    _raise_for_status,
    _raise_unless_success,
    _request_id,
    _SuccessBody,
    _validate,
    error_from_status,
)
from exporter.errors import DliError, Permanent
from exporter.migration.ports import ImportedJob, ImportResult, JobDetail
from exporter.models import MAX_JOB_ID

__all__ = ["NO_SUCH_JOB_CODES", "parse_import_response", "parse_job_detail_response", "parse_job_id"]

# (HTTP status, DLI error code) pairs that mean "there is no such job" on the detail query.
NO_SUCH_JOB_CODES: frozenset[tuple[int, str]] = frozenset(
    {(400, "DLI.16001"), (400, "DLI.0002"), (404, "DLI.0023")}
)

_DIGITS = re.compile(r"-?[0-9]{1,19}")
_NO_SUCH_JOB_MESSAGE = re.compile(r"\bnot exists?\b|\bdoesn't exist\b|\bnot found\b|\bno such\b", re.I)


def parse_job_id(value: object) -> int:
    """A job ID from a JSON number or a string of digits; ValueError for anything else.

    Booleans are refused although Python counts them as ints: `true` is no job. The bound is DLI's Long.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        number = int(value.strip())
    else:  # ValueError, not TypeError: pydantic reports only ValueError as a validation problem
        raise ValueError("a job ID must be an integer or a string of digits")
    if abs(number) > MAX_JOB_ID:
        raise ValueError(f"a job ID must fit a signed 64-bit integer, not {number}")
    return number


JobId = Annotated[int, BeforeValidator(parse_job_id)]


def parse_import_response(status: int, headers: Mapping[str, str], body: bytes, now: float) -> ImportResult:
    """ImportResult for a successful import; raises Transient / Permanent / AuthError otherwise.

    A `new_job_id` of -1 (a job of that name existed and `is_cover` was false) is passed on as it is:
    what to make of it is the caller's business.
    """
    _raise_for_status(status, headers, body, now)
    request_id = _request_id(headers)
    parsed = _validate(_ImportBody, body, status, request_id)
    _raise_unless_success(parsed.is_success, parsed.message, status, request_id)
    mapping = [
        ImportedJob(old_job_id=entry.old_job_id, new_job_id=entry.new_job_id, remark=entry.remark)
        for entry in parsed.job_mapping
    ]
    return ImportResult(job_mapping=mapping, message=parsed.message, request_id=request_id)


def parse_job_detail_response(
    status: int, headers: Mapping[str, str], body: bytes, now: float
) -> JobDetail | None:
    """JobDetail for a job that exists, None for one DLI says does not; raises the usual errors otherwise."""
    error = error_from_status(status, headers, body, now)
    if error is not None:
        if _means_no_such_job(error):
            return None
        raise error
    request_id = _request_id(headers)
    parsed = _validate(_DetailBody, body, status, request_id)
    if not parsed.is_success and _NO_SUCH_JOB_MESSAGE.search(parsed.message or ""):
        return None
    _raise_unless_success(parsed.is_success, parsed.message, status, request_id)
    detail = parsed.job_detail
    if detail is None:
        raise _malformed("job_detail: missing", status, request_id)
    return JobDetail(job_id=detail.job_id, name=detail.name, status=detail.status)


# --- private ----------------------------------------------------------------------------------------------


def _means_no_such_job(error: DliError) -> bool:
    return isinstance(error, Permanent) and (error.status or 0, error.code) in NO_SUCH_JOB_CODES


class _MappingEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    old_job_id: JobId
    new_job_id: JobId
    remark: str | None = None


class _ImportBody(_SuccessBody):
    job_mapping: Annotated[list[_MappingEntry], _NoneIsEmpty] = Field(default_factory=list)


class _Detail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_id: JobId
    name: str | None = None
    status: str | None = None


class _DetailBody(_SuccessBody):
    job_detail: _Detail | None = None  # absent when is_success is false
