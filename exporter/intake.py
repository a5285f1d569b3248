"""Turning user input (flags, ID files, HTTP bodies, queue messages) into a valid BatchRequest.

Everything here is pure and raises only `InvalidInput` with a message a person can act on, so the CLI,
`POST /batches` and the worker refuse bad input with the same words.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from exporter.errors import InvalidInput
from exporter.models import MAX_JOB_ID, BatchRequest, ListFilters

__all__ = [
    "FILTER_FLAGS",
    "build_request",
    "describe_validation_error",
    "new_batch_id",
    "parse_batch_message",
    "parse_id_lines",
    "parse_id_list",
    "parse_tags",
    "request_from_flags",
    "selected_ids",
]

FILTER_FLAGS = ("status", "job_type", "queue_name", "name", "user_name")


_MAX_JOB_ID_DIGITS = len(str(MAX_JOB_ID))
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def new_batch_id() -> str:
    """A fresh, sortable-enough, unique batch ID for submissions that do not name one."""
    return f"b-{uuid.uuid4().hex[:16]}"


def _parse_job_id(text: str, where: str) -> int:
    token = text.strip()
    if not token.isdigit() or not token.isascii():
        raise InvalidInput(f"{where}: {token!r} is not a job ID (a positive whole number)", field="job_ids")
    if len(token.lstrip("0")) > _MAX_JOB_ID_DIGITS:  # before int(): 4,300+ digits raise ValueError
        raise InvalidInput(
            f"{where}: job ID {token[:24]}... is out of range 1..{MAX_JOB_ID}", field="job_ids"
        )
    value = int(token)
    if not 1 <= value <= MAX_JOB_ID:
        raise InvalidInput(f"{where}: job ID {value} is out of range 1..{MAX_JOB_ID}", field="job_ids")
    return value


def parse_id_list(text: str) -> list[int]:
    """Parse `1,2, 3` (commas and/or spaces) into IDs; duplicates are kept for the model to count."""
    tokens = [token for token in text.replace(",", " ").split() if token]
    return [_parse_job_id(token, f"--job-ids item {n}") for n, token in enumerate(tokens, start=1)]


def parse_id_lines(lines: Iterable[str], source: str = "IDs file") -> Iterator[int]:
    """Yield one ID per line; blank lines and `#` comments are allowed, anything else names its line."""
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            yield _parse_job_id(line, f"{source} line {number}")


def parse_tags(pairs: Iterable[str]) -> str | None:
    """`K=V` flags into DLI's `tags` filter (comma-separated `k=v`); a pair without `=` is an error."""
    cleaned = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"tag {pair!r} must look like KEY=VALUE", field="tags")
        cleaned.append(f"{key.strip()}={value.strip()}")
    return ",".join(cleaned) or None


def describe_validation_error(error: ValidationError) -> str:
    """`job_ids.3: Input should be greater than or equal to 1` lines, without echoing huge inputs. One
    line whatever the message held: a key of the sender's own is quoted, control characters escaped."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        location = ".".join(_location_part(part) for part in item["loc"]) or "message"
        parts.append(f"{location}: {item['msg'].removeprefix('Value error, ')}")
    text = "; ".join(parts[:10]) + (f" (and {len(parts) - 10} more)" if len(parts) > 10 else "")
    return _CONTROL.sub(lambda m: json.dumps(m.group())[1:-1], text)


def _location_part(part: int | str) -> str:
    """A field name or index as it is; any other key (the sender's) quoted and cut to 40 characters."""
    text = str(part)
    return text if _PLAIN_KEY.fullmatch(text) else json.dumps(text[:40])


def _first_field(error: ValidationError) -> str | None:
    """The top-level field of the first problem; None for rules on the whole request (the selection)."""
    for item in error.errors(include_input=False, include_url=False):
        if item["loc"]:
            return str(item["loc"][0])
    return None


def build_request(data: dict[str, Any], *, max_jobs: int | None = None) -> BatchRequest:
    """Validate a request dict into a BatchRequest, enforcing the per-batch ID limit."""
    try:
        request = BatchRequest.model_validate(data)
    except ValidationError as error:
        raise InvalidInput(describe_validation_error(error), field=_first_field(error)) from None
    if max_jobs is not None and request.job_ids is not None and len(request.job_ids) > max_jobs:
        raise InvalidInput(
            f"batch has {len(request.job_ids)} job IDs, more than the limit of {max_jobs} "
            "(EXPORTER_MAX_JOBS_PER_BATCH); split it into several batches",
            field="job_ids",
        )
    return request


def parse_batch_message(body: str | bytes, *, max_jobs: int | None = None) -> BatchRequest:
    """Parse a queue message; malformed JSON or an invalid request raises InvalidInput with the reason."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidInput(f"message is not valid JSON: {error}") from None
    except RecursionError:
        raise InvalidInput("message is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"message must be a JSON object, not {type(data).__name__}")
    return build_request(data, max_jobs=max_jobs)


def selected_ids(job_ids: str | None, id_file: Iterable[str] | None, source: str) -> list[int] | None:
    """The explicit IDs of `--job-ids` or `--job-ids-file` (None for `--all`).

    A flag that was given but holds no ID is refused with its own name, so "the selection is empty" never
    reads as if the flag had been forgotten.
    """
    if job_ids is not None:
        ids = parse_id_list(job_ids)
        if not ids:
            raise InvalidInput("--job-ids is empty: give at least one job ID", field="job_ids")
        return ids
    if id_file is not None:
        ids = list(parse_id_lines(id_file, source=source))
        if not ids:
            raise InvalidInput(
                f"--job-ids-file {source} holds no job IDs (only blank lines or comments)", field="job_ids"
            )
        return ids
    return None


def _given(value: Any, default: Any) -> Any:
    """A flag's value when it was given at all (an explicit `0` or `''` is refused later, not replaced)."""
    return default if value is None else value


def request_from_flags(
    flags: Mapping[str, Any], *, project_id: str | None, chunk_size: int, max_jobs: int
) -> BatchRequest:
    """`submit`'s flags (click's parameter names) into a request, by the rules of `POST /batches`.

    `project_id` and `chunk_size` are the settings' defaults for flags left out.
    """
    id_file = flags.get("job_ids_file")
    source = str(getattr(id_file, "name", "IDs file"))
    select_all = bool(flags.get("select_all"))
    filters = None
    if select_all:
        tags = parse_tags(flags.get("tags") or ())
        filters = ListFilters(tags=tags, **{name: flags.get(name) for name in FILTER_FLAGS}).model_dump()
    data: dict[str, Any] = {
        "batch_id": _given(flags.get("batch_id"), new_batch_id()),
        "project_id": _given(flags.get("project_id"), project_id or ""),
        "obs_dir": flags.get("obs_dir"),
        "job_ids": selected_ids(flags.get("job_ids"), id_file, source),
        "select_all": select_all,
        "filters": filters,
        "chunk_size": _given(flags.get("chunk_size"), chunk_size),
        "campaign": flags.get("campaign"),
    }
    return build_request(data, max_jobs=max_jobs)
