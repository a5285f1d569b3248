"""The DLI simulator: an aiohttp.web server speaking DLI's export, listing and import APIs.

It checks AK/SK signatures (or an IAM token) like the real gateway, writes real ZIPs into an S3 server,
and injects the faults the exporter must survive: throttling with `Retry-After`, latency, 5xx answers,
gateway HTML pages, connection resets, truncated JSON, `is_success: false`, answers that come too late,
ZIPs that appear late or never.

Order of events for a DLI call (mirrors gateway, then service):
throttle (429 APIG.0308, refused calls do not count) -> latency -> authentication (401 DLI.0013) ->
project (404 DLI.0023: the error table's "No related resources were found") -> response fault dice ->
the API itself. Before-work faults (500, 503, HTML 502, reset, `is_success: false`) skip the work; a
`timeout` sleeps and then does the work (the client has usually given up by then: exactly the case that
produces repeated exports); `malformed` does the work and truncates the answer.

Unknown paths answer 404 `APIG.0101` like the gateway. Control endpoints under `/_sim/` need no
authentication and are neither throttled nor faulted: `GET|POST /_sim/faults` (read or change knobs),
`GET /_sim/stats` (counters, see `SimStats.snapshot` and `SimulatorState.snapshot`) and
`POST /_sim/reset` (zero the counters and the throttle window, reseed the dice).
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import io
import json
import random
import re
import socket
import struct
import time
import zipfile
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import aioboto3
import structlog
from aiobotocore.config import AioConfig
from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from exporter.dli.signer import SignatureError, verify_request
from exporter.models import check_obs_dir, split_obs_path
from exporter.simulator.faults import (
    FaultKind,
    FaultKnobs,
    SlidingWindow,
    ZipFate,
    decide_fault,
    decide_zip_fate,
    latency_seconds,
    merge_knobs,
    retry_after_header,
)
from exporter.simulator.jobs import (
    JobCatalogue,
    JobFilter,
    job_detail,
    job_document,
    job_name,
    job_summary,
    parse_list_query,
)
from exporter.simulator.settings import SimulatorSettings
from exporter.simulator.zips import UniqueMillis, build_zip, zip_key

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = [
    "STATE",
    "SimulatorHandle",
    "SimulatorState",
    "create_app",
    "running_simulator",
    "serve_simulator",
]

log = structlog.get_logger(__name__)

EXPORT_ROUTE = "export_jobs"
LIST_ROUTE = "list_jobs"
IMPORT_ROUTE = "import_jobs"
_API_ROUTES = frozenset({EXPORT_ROUTE, LIST_ROUTE, IMPORT_ROUTE})
_REPEATED_IDS_SHOWN = 100
_MISSING_IDS_NAMED = 100
_IMPORT_MAX_ZIPS = 100
_INLINE_ZIP_JOBS = 1000
_ENTRY_ID = re.compile(r"flink_job_(\d+)\.json")
_GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DliFailure(Exception):
    """An error answer in DLI's shape: `{"error_code": ..., "error_msg": ...}` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _NoAnswer(web.Response):
    """Stands for a connection that was reset instead of answered (aiohttp cannot write it: fine)."""


# --- state ------------------------------------------------------------------------------------------------


class SimStats:
    """Counters behind `GET /_sim/stats`; plain integers, updated on the request path, so kept cheap.

    `requests[route][status]` counts every answer (`reset` for a dropped connection); `exports` counts
    export calls that answered success (their ZIPs may still be late or never written); `job_exports`
    counts per job ID how often it was in such an export, which is how campaigns measure repeats.
    """

    __slots__ = (
        "auth_failures",
        "exports",
        "faults",
        "job_exports",
        "repeated_ids",
        "requests",
        "throttled",
        "zips_written",
    )

    def __init__(self) -> None:
        self.requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.throttled = 0
        self.auth_failures = 0
        self.faults: Counter[str] = Counter()
        self.job_exports: Counter[int] = Counter()
        self.repeated_ids: set[int] = set()
        self.exports = 0
        self.zips_written = 0

    def record_export(self, job_ids: list[int]) -> None:
        self.exports += 1
        counts = self.job_exports
        for job_id in job_ids:
            counts[job_id] += 1
            if counts[job_id] == 2:
                self.repeated_ids.add(job_id)

    def snapshot(self) -> dict[str, Any]:
        repeated = len(self.repeated_ids)
        return {
            "requests": {route: dict(statuses) for route, statuses in self.requests.items()},
            "requests_total": sum(sum(statuses.values()) for statuses in self.requests.values()),
            "throttled": self.throttled,
            "auth_failures": self.auth_failures,
            "faults": dict(self.faults),
            "exports": self.exports,
            "jobs_exported": len(self.job_exports),
            "job_exports_total": sum(self.job_exports.values()),
            "job_ids_exported_more_than_once": repeated,
            "repeated_job_ids": sorted(self.repeated_ids) if repeated <= _REPEATED_IDS_SHOWN else None,
            "zips_written": self.zips_written,
        }


class SimulatorState:
    """Everything the handlers share: settings, live knobs, dice, throttle window, counters, S3 client."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.catalogue = JobCatalogue(settings.sim_jobs, settings.sim_missing_ids)
        self.knobs = settings.fault_knobs()
        self.rng = random.Random(settings.sim_seed)
        self.window = SlidingWindow(self.knobs.rate_window_seconds, None)
        self.stats = SimStats()
        self.millis = UniqueMillis()
        self.s3: S3Client | None = None
        self.known_buckets: set[str] = set()
        self.late_writes: set[asyncio.Task[None]] = set()
        self._apply_window()

    def __repr__(self) -> str:
        return f"<SimulatorState {self.catalogue!r} {self.window!r} late_writes={len(self.late_writes)}>"

    def set_faults(self, changes: dict[str, Any]) -> FaultKnobs:
        """Change knobs at runtime (validated as a whole); ValueError leaves the old ones in place."""
        self.knobs = merge_knobs(self.knobs, changes)
        self._apply_window()
        log.info("simulator.faults_changed", changes=sorted(changes))
        return self.knobs

    def reset(self) -> None:
        """Zero the counters and the window; reseed the dice so a rerun meets the same faults."""
        self.stats = SimStats()
        self.window.reset()
        self.rng.seed(self.settings.sim_seed)

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.stats.snapshot(),
            "max_in_window": self.window.max_in_window,
            "rate_window_seconds": self.knobs.rate_window_seconds,
            "zips_pending": len(self.late_writes),
        }

    def success_flag(self) -> bool | str:
        return "true" if self.knobs.is_success_as_string else True

    def secret_for_ak(self, ak: str) -> str | None:
        settings = self.settings
        if settings.ak is None or settings.sk is None:
            return None
        if not hmac.compare_digest(ak.encode(), settings.ak.get_secret_value().encode()):
            return None
        return settings.sk.get_secret_value()

    def _apply_window(self) -> None:
        capacity = self.knobs.window_capacity if self.knobs.rate_limit > 0 else None
        self.window.configure(self.knobs.rate_window_seconds, capacity)


STATE = web.AppKey("simulator_state", SimulatorState)


# --- answers ----------------------------------------------------------------------------------------------


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json(status, {"error_code": code, "error_msg": message}, headers)


def _throttled(knobs: FaultKnobs, wait_seconds: float) -> web.Response:
    window = knobs.rate_window_seconds
    unit = "1 second" if window == 1 else f"{window:g} seconds"
    message = (
        "The throttling threshold has been reached: policy user over ratelimit,"
        f"limit:{knobs.window_capacity},time:{unit}"
    )
    return _error(429, "APIG.0308", message, {"Retry-After": retry_after_header(wait_seconds)})


def reset_connection(request: web.Request) -> web.Response:
    """Abort the TCP connection with an RST (SO_LINGER 0), the way a crashing backend drops it."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return _NoAnswer(status=500)


def _before_work_fault(fault: FaultKind, request: web.Request, state: SimulatorState) -> web.Response | None:
    """The answer for a fault that replaces the work, or None when the work must happen."""
    if fault is FaultKind.SERVER_ERROR:
        return _error(500, "DLI.0999", "Internal server error.")
    if fault is FaultKind.UNAVAILABLE:
        return _error(503, "DLI.0999", "The service is temporarily unavailable. Try again later.")
    if fault is FaultKind.HTML:
        return web.Response(status=502, text=_GATEWAY_HTML, content_type="text/html")
    if fault is FaultKind.RESET:
        return reset_connection(request)
    if fault is FaultKind.NOT_SUCCESS:
        listing = request.match_info.route.name == LIST_ROUTE
        flag: bool | str = "false" if listing or state.knobs.is_success_as_string else False
        return _json(200, {"is_success": flag, "message": "The system is busy. Try again later."})
    return None


def _truncated(response: web.Response) -> web.Response:
    """The same answer with its JSON cut in half: a 200 no parser accepts."""
    body = response.body if isinstance(response.body, bytes) else b"{}"
    return web.Response(status=200, body=body[: max(1, len(body) // 2)], content_type="application/json")


# --- middlewares ------------------------------------------------------------------------------------------


@web.middleware
async def _frame(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Every answer: DLI-shaped errors, an `X-Request-Id`, and a count by route and status."""
    try:
        response = await handler(request)
    except DliFailure as failure:
        response = _error(failure.status, failure.code, failure.message)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        response = _error(
            404, "APIG.0101", "The API does not exist or has not been published in the environment"
        )
    except web.HTTPException as error:  # e.g. 413 from an oversized body
        response = _error(error.status, "DLI.0001" if error.status < 500 else "DLI.0999", error.reason)
    except (BotoCoreError, ClientError) as error:
        store_failure = _store_failure(error)
        response = _error(store_failure.status, store_failure.code, store_failure.message)
    response.headers["X-Request-Id"] = uuid4().hex
    status = "reset" if isinstance(response, _NoAnswer) else str(response.status)
    request.app[STATE].stats.requests[request.match_info.route.name or "unknown"][status] += 1
    return response


@web.middleware
async def _gateway(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """What stands before a DLI API: throttle, latency, authentication, project check, fault dice."""
    if request.match_info.route.name not in _API_ROUTES:
        return await handler(request)
    state = request.app[STATE]
    knobs = state.knobs
    wait = state.window.admit(time.monotonic())
    if wait is not None:
        state.stats.throttled += 1
        return _throttled(knobs, wait)
    delay = latency_seconds(knobs, state.rng)
    if delay > 0:
        await asyncio.sleep(delay)
    _authenticate(request, state, await request.read())
    if request.match_info["project_id"] != state.settings.project_id:
        raise DliFailure(404, "DLI.0023", f"Project {request.match_info['project_id']} was not found.")
    return await _with_fault(request, handler, state)


async def _with_fault(request: web.Request, handler: _Handler, state: SimulatorState) -> web.StreamResponse:
    """Roll the response-fault dice once and answer accordingly (see the module docstring)."""
    fault = decide_fault(state.knobs, state.rng)
    if fault is None:
        return await handler(request)
    state.stats.faults[fault.value] += 1
    if fault is FaultKind.TIMEOUT:
        await asyncio.sleep(state.knobs.timeout_seconds)
        return await handler(request)
    early = _before_work_fault(fault, request, state)
    if early is not None:
        return early
    response = await handler(request)
    return _truncated(response) if isinstance(response, web.Response) else response


def _authenticate(request: web.Request, state: SimulatorState, body: bytes) -> None:
    """Accept a valid AK/SK signature or the configured IAM token; raise 401 DLI.0013 otherwise."""
    try:
        _check_credentials(request, state, body)
    except SignatureError as error:
        state.stats.auth_failures += 1
        log.debug("simulator.auth_refused", reason=error.reason, path=request.path)
        raise DliFailure(401, "DLI.0013", f"User authentication failed: {error.message}") from None


def _check_credentials(request: web.Request, state: SimulatorState, body: bytes) -> None:
    settings = state.settings
    token = request.headers.get("X-Auth-Token")
    if token is not None:
        expected = settings.auth_token.get_secret_value() if settings.auth_token else None
        if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
            raise SignatureError("the X-Auth-Token is not valid", reason="unknown_ak")
        return
    verify_request(
        request.method,
        request.host,
        request.raw_path.partition("?")[0],
        list(request.query.items()),
        request.headers,
        body,
        state.secret_for_ak,
    )
    required = settings.security_token.get_secret_value() if settings.security_token else None
    given = request.headers.get("X-Security-Token", "")
    if required is not None and not hmac.compare_digest(given.encode(), required.encode()):
        raise SignatureError("the X-Security-Token is missing or not valid", reason="unknown_ak")


# --- request bodies ---------------------------------------------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        raise DliFailure(400, "DLI.0001", "The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise DliFailure(400, "DLI.0001", "The request body must be a JSON object.")
    return payload


def _bad(message: str) -> DliFailure:
    return DliFailure(400, "DLI.0001", message)


def _obs_location(value: Any, name: str) -> tuple[str, str]:
    """`bucket[/prefix]` checked like OBS names; DLI.0001 when it is not one."""
    if not isinstance(value, str) or not value.strip():
        raise _bad(f"Parameter {name} is required and must be a non-empty string.")
    try:
        return split_obs_path(check_obs_dir(value))
    except ValueError as error:
        raise _bad(f"Parameter {name} is invalid: {error}") from None


def _selected_ids(payload: dict[str, Any]) -> list[int] | None:
    """The IDs to export, first-seen order without repeats; None when `is_selected` is false."""
    is_selected = payload.get("is_selected")
    if not isinstance(is_selected, bool):
        raise _bad("Parameter is_selected is required and must be true or false.")
    if not is_selected:
        return None
    selected = payload.get("job_selected")
    if not isinstance(selected, list) or not selected:
        raise _bad("Parameter job_selected is mandatory when is_selected is true.")
    if not all(type(job_id) is int and job_id > 0 for job_id in selected):
        raise _bad("Parameter job_selected must hold job IDs (positive integers).")
    return list(dict.fromkeys(selected))


def _refuse_unknown(catalogue: JobCatalogue, job_ids: list[int]) -> None:
    unknown = catalogue.unknown(job_ids)
    if unknown:
        named = ", ".join(str(job_id) for job_id in unknown[:_MISSING_IDS_NAMED])
        more = f" and {len(unknown) - _MISSING_IDS_NAMED} more" if len(unknown) > _MISSING_IDS_NAMED else ""
        raise DliFailure(400, "DLI.0002", f"The following jobs do not exist: {named}{more}.")


# --- object store -----------------------------------------------------------------------------------------


def _s3(state: SimulatorState) -> S3Client:
    if state.s3 is None:
        raise DliFailure(500, "DLI.0999", "The simulator has no object store client (not started?).")
    return state.s3


def _is_missing_bucket(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in {"NoSuchBucket", "404", "NotFound"}


def _no_bucket(bucket: str) -> DliFailure:
    return DliFailure(400, "DLI.0002", f"The OBS bucket {bucket} does not exist.")


async def _ensure_bucket(state: SimulatorState, bucket: str) -> None:
    if bucket in state.known_buckets:
        return
    try:
        await _s3(state).head_bucket(Bucket=bucket)
    except ClientError as error:
        if _is_missing_bucket(error):
            raise _no_bucket(bucket) from None
        raise
    state.known_buckets.add(bucket)


def _store_failure(error: Exception) -> DliFailure:
    log.warning("simulator.store_failed", error=repr(error))
    return DliFailure(500, "DLI.0999", "Writing to OBS failed; try again later.")


async def _put_zip(state: SimulatorState, bucket: str, key: str, data: bytes) -> None:
    try:
        await _s3(state).put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/zip")
    except ClientError as error:
        if _is_missing_bucket(error):
            state.known_buckets.discard(bucket)
            raise _no_bucket(bucket) from None
        raise
    state.known_buckets.add(bucket)
    state.stats.zips_written += 1


async def _put_zip_later(state: SimulatorState, bucket: str, key: str, data: bytes) -> None:
    await asyncio.sleep(state.knobs.late_seconds)
    try:
        await _put_zip(state, bucket, key, data)
    except (DliFailure, BotoCoreError, ClientError) as error:
        log.warning("simulator.late_zip_failed", bucket=bucket, key=key, error=repr(error))
    else:
        log.debug("simulator.late_zip_written", bucket=bucket, key=key)


async def _deliver(state: SimulatorState, bucket: str, key: str, data: bytes) -> None:
    """Write the ZIP now, schedule it for later, or drop it, as the dice say."""
    fate = decide_zip_fate(state.knobs, state.rng)
    if fate is ZipFate.NOW:
        await _put_zip(state, bucket, key, data)
        return
    await _ensure_bucket(state, bucket)
    state.stats.faults[fate.value] += 1
    if fate is ZipFate.LATE:
        task = asyncio.create_task(_put_zip_later(state, bucket, key, data))
        state.late_writes.add(task)
        task.add_done_callback(state.late_writes.discard)


# --- DLI APIs ---------------------------------------------------------------------------------------------


async def _zip_of(job_ids: list[int], project_id: str) -> bytes:
    """Small ZIPs are built in line (cheapest); big ones in a thread so the server keeps answering."""

    def document(job_id: int) -> dict[str, Any]:
        return job_document(job_id, project_id)

    if len(job_ids) <= _INLINE_ZIP_JOBS:
        return build_zip(job_ids, document)
    return await asyncio.to_thread(build_zip, job_ids, document)


async def export_jobs(request: web.Request) -> web.Response:
    """POST /v1.0/{project_id}/streaming/jobs/export: one ZIP per call, `bucket/key` in `zip_file`."""
    state = request.app[STATE]
    payload = _json_object(await request.read())
    bucket, prefix = _obs_location(payload.get("obs_dir"), "obs_dir")
    selected = _selected_ids(payload)
    if selected is None:
        job_ids = list(state.catalogue.select(JobFilter()))
        if not job_ids:
            raise DliFailure(400, "DLI.0002", "There are no jobs to export.")
    else:
        _refuse_unknown(state.catalogue, selected)
        job_ids = selected
    data = await _zip_of(job_ids, state.settings.project_id)
    key = zip_key(prefix, job_name(job_ids[0]), state.millis.next())
    await _deliver(state, bucket, key, data)
    state.stats.record_export(job_ids)
    return _json(
        200,
        {
            "is_success": state.success_flag(),
            "message": "The job is exported successfully.",
            "zip_file": [f"{bucket}/{key}"],
        },
    )


async def list_jobs(request: web.Request) -> web.Response:
    """GET /v1.0/{project_id}/streaming/jobs: paged, filtered; `is_success` is the string the docs show."""
    state = request.app[STATE]
    try:
        query = parse_list_query(request.query.items())
    except ValueError as error:
        raise _bad(str(error)) from None
    total, job_ids = state.catalogue.page(query)
    project_id = state.settings.project_id
    jobs = (
        [job_detail(job_id, project_id) for job_id in job_ids]
        if query.show_detail
        else [job_summary(job_id) for job_id in job_ids]
    )
    return _json(
        200,
        {
            "is_success": "true",
            "message": "Querying of the job list succeeds.",
            "job_list": {"total_count": total, "jobs": jobs},
        },
    )


async def import_jobs(request: web.Request) -> web.Response:
    """POST /v1.0/{project_id}/streaming/jobs/import: reads the ZIP(s) and maps old to new job IDs.

    The catalogue does not change: with `is_cover` a job keeps its ID; without it a job whose name
    already exists maps to -1, as the docs describe.
    """
    state = request.app[STATE]
    payload = _json_object(await request.read())
    bucket, key = _obs_location(payload.get("zip_file"), "zip_file")
    is_cover = payload.get("is_cover", False)
    if not isinstance(is_cover, bool):
        raise _bad("Parameter is_cover must be true or false.")
    job_ids = await _imported_job_ids(state, bucket, key)
    mapping = [_job_mapping(state.catalogue, job_id, is_cover=is_cover) for job_id in job_ids]
    return _json(
        200,
        {
            "is_success": state.success_flag(),
            "message": "The job is successfully imported.",
            "job_mapping": mapping,
        },
    )


def _job_mapping(catalogue: JobCatalogue, job_id: int, *, is_cover: bool) -> dict[str, Any]:
    if job_id not in catalogue:
        return {"old_job_id": job_id, "new_job_id": job_id, "remark": "Job successfully created"}
    if is_cover:
        return {"old_job_id": job_id, "new_job_id": job_id, "remark": "Job successfully covered"}
    return {"old_job_id": job_id, "new_job_id": -1, "remark": "A job with the same name already exists"}


async def _imported_job_ids(state: SimulatorState, bucket: str, key: str) -> list[int]:
    """Job IDs named by the entries of the ZIP at `key`, or of every ZIP in the folder `key`."""
    keys = await _zip_keys(state, bucket, key)
    job_ids: list[int] = []
    for zip_key_ in keys:
        try:
            response = await _s3(state).get_object(Bucket=bucket, Key=zip_key_)
            async with response["Body"] as stream:
                data = await stream.read()
        except ClientError as error:
            raise DliFailure(400, "DLI.0002", f"The file {bucket}/{zip_key_} does not exist.") from error
        job_ids.extend(_entry_job_ids(data, f"{bucket}/{zip_key_}"))
    return job_ids


async def _zip_keys(state: SimulatorState, bucket: str, key: str) -> list[str]:
    await _ensure_bucket(state, bucket)
    if key.endswith(".zip"):
        return [key]
    prefix = f"{key}/" if key else ""
    listing = await _s3(state).list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=_IMPORT_MAX_ZIPS)
    keys = [item["Key"] for item in listing.get("Contents", []) if item["Key"].endswith(".zip")]
    if not keys:
        raise DliFailure(400, "DLI.0002", f"There is no ZIP file in {bucket}/{key}.")
    return keys


def _entry_job_ids(data: bytes, where: str) -> list[int]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        raise _bad(f"The file {where} is not a ZIP file.") from None
    return [int(match[1]) for name in names if (match := _ENTRY_ID.fullmatch(name))]


# --- control endpoints ------------------------------------------------------------------------------------


async def _get_faults(request: web.Request) -> web.Response:
    return _json(200, request.app[STATE].knobs.model_dump())


async def _post_faults(request: web.Request) -> web.Response:
    """Change fault knobs: a JSON object of knob -> value (`p_500` or `sim_p_500`)."""
    try:
        changes = json.loads(await request.read())
    except ValueError:
        changes = None
    if not isinstance(changes, dict):
        return _json(400, {"error": "send a JSON object of knob -> value"})
    try:
        knobs = request.app[STATE].set_faults(changes)
    except ValueError as error:
        return _json(400, {"error": str(error)})
    return _json(200, knobs.model_dump())


async def _get_stats(request: web.Request) -> web.Response:
    return _json(200, request.app[STATE].snapshot())


async def _post_reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return _json(200, {"reset": True})


# --- application ------------------------------------------------------------------------------------------


def _s3_config(settings: SimulatorSettings) -> AioConfig:
    return AioConfig(
        s3={"addressing_style": settings.obs_addressing_style},
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=64,
        connect_timeout=5,
        read_timeout=30,
    )


async def _object_store(app: web.Application) -> AsyncIterator[None]:
    """Open the S3 client for the app's lifetime; cancel ZIP writes still waiting when it stops."""
    state = app[STATE]
    settings = state.settings
    session = aioboto3.Session()
    async with session.client(
        "s3",
        endpoint_url=settings.obs_endpoint,
        region_name=settings.obs_region,
        aws_access_key_id=settings.obs_ak.get_secret_value() if settings.obs_ak else None,
        aws_secret_access_key=settings.obs_sk.get_secret_value() if settings.obs_sk else None,
        config=_s3_config(settings),
    ) as client:
        state.s3 = client
        try:
            yield
        finally:
            pending = list(state.late_writes)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            state.s3 = None


def create_app(settings: SimulatorSettings) -> web.Application:
    """The simulator as an aiohttp application (S3 client opened on startup, closed on cleanup)."""
    app = web.Application(middlewares=[_frame, _gateway], client_max_size=8 * 1024 * 1024)
    app[STATE] = SimulatorState(settings)
    api = "/v1.0/{project_id}/streaming/jobs"
    app.router.add_post(f"{api}/export", export_jobs, name=EXPORT_ROUTE)
    app.router.add_get(api, list_jobs, name=LIST_ROUTE, allow_head=False)
    app.router.add_post(f"{api}/import", import_jobs, name=IMPORT_ROUTE)
    app.router.add_get("/_sim/faults", _get_faults, name="sim_faults_get", allow_head=False)
    app.router.add_post("/_sim/faults", _post_faults, name="sim_faults")
    app.router.add_get("/_sim/stats", _get_stats, name="sim_stats", allow_head=False)
    app.router.add_post("/_sim/reset", _post_reset, name="sim_reset")
    app.cleanup_ctx.append(_object_store)
    return app


@dataclass(frozen=True, slots=True)
class SimulatorHandle:
    """A running simulator: where it listens, and in-process access to its knobs and counters."""

    url: str
    port: int
    app: web.Application

    def set_faults(self, **knobs: Any) -> FaultKnobs:
        """Change fault knobs (`p_500=1.0`, `rate_limit=5`, ...); ValueError when invalid."""
        return self.app[STATE].set_faults(knobs)

    def stats(self) -> dict[str, Any]:
        return self.app[STATE].snapshot()

    def reset(self) -> None:
        self.app[STATE].reset()


@asynccontextmanager
async def running_simulator(
    settings: SimulatorSettings, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[SimulatorHandle]:
    """Serve the simulator on host:port (0 = a free port) for the duration of the block."""
    app = create_app(settings)
    # A short shutdown grace: handlers asleep in a `timeout` fault would otherwise hold the exit.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
        url_host = f"[{host}]" if ":" in host else host
        handle = SimulatorHandle(url=f"http://{url_host}:{bound_port}", port=bound_port, app=app)
        log.info("simulator.started", url=handle.url, jobs=settings.sim_jobs, project_id=settings.project_id)
        yield handle
    finally:
        await runner.cleanup()
        log.info("simulator.stopped")


_COLLECT_EVERY_SECONDS = 5.0


async def serve_simulator(settings: SimulatorSettings, host: str, port: int) -> None:
    """Run the simulator until the task is cancelled (the CLI's `simulate` command).

    The simulator stamps a request when its event loop reaches it, so a garbage-collector pause bunches
    evenly spaced requests into a clump that its strict rate window answers with 429: jitter of its own
    making, which a real gateway, stamping on arrival, would not add. So once it is up, everything
    allocated so far (aiohttp, botocore's models, the job table) is frozen out of the collector's sight,
    and instead of collections at moments of the collector's choosing, a short one runs every few seconds.
    """
    async with running_simulator(settings, host, port):
        gc.freeze()
        gc.disable()
        try:
            while True:
                await asyncio.sleep(_COLLECT_EVERY_SECONDS)
                gc.collect()
        finally:
            gc.enable()
