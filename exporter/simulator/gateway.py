"""The simulator's middlewares: what stands before DLI's APIs, and what frames every answer.

Order of events for a DLI call (mirrors gateway, then service):
throttle (429 APIG.0308, refused calls do not count) -> latency -> authentication (401 DLI.0013) ->
project (404 DLI.0023: the error table's "No related resources were found") -> response fault dice ->
the API itself. Before-work faults (500, 503, HTML 502, reset, `is_success: false`) skip the work; a
`timeout` sleeps and then does the work (the client has usually given up by then: exactly the case that
produces repeated exports); `malformed` does the work and truncates the answer. For an import that means:
a 500/503/502/reset/`is_success: false` was NOT applied, a timeout or truncated answer WAS (and
`p_import_lost`, rolled by the import itself, resets the connection after applying it).

Unknown paths answer 404 `APIG.0101` like the gateway. Routes other than the DLI APIs pass the gateway
untouched: the `/_sim/` control endpoints (no authentication at all) and IAM's project listing, which
authenticates by itself (`iam.py`) and is neither throttled nor faulted: IAM is a global service, not
behind this region's DLI gateway limit. The throttle window is one per simulator, whatever the project:
one gateway limit per region and account.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from uuid import uuid4

from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from exporter.simulator.answers import DliFailure, NoAnswer, error_response, json_response, reset_connection
from exporter.simulator.auth import authenticate
from exporter.simulator.faults import FaultKind, FaultKnobs, decide_fault, latency_seconds, retry_after_header
from exporter.simulator.state import STATE, SimulatorState
from exporter.simulator.store import store_failure

__all__ = ["API_ROUTES", "DETAIL_ROUTE", "EXPORT_ROUTE", "IMPORT_ROUTE", "LIST_ROUTE", "frame", "gateway"]

EXPORT_ROUTE = "export_jobs"
LIST_ROUTE = "list_jobs"
IMPORT_ROUTE = "import_jobs"
DETAIL_ROUTE = "show_job"
API_ROUTES = frozenset({EXPORT_ROUTE, LIST_ROUTE, IMPORT_ROUTE, DETAIL_ROUTE})
_STRING_FLAG_ROUTES = frozenset({LIST_ROUTE, DETAIL_ROUTE})  # their docs show `is_success` as a string
_GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def frame(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Every answer: DLI-shaped errors, an `X-Request-Id`, and a count by route and status."""
    try:
        response = await handler(request)
    except DliFailure as failure:
        response = failure.response()
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        response = error_response(
            404, "APIG.0101", "The API does not exist or has not been published in the environment"
        )
    except web.HTTPException as error:  # e.g. 413 from an oversized body
        response = error_response(
            error.status, "DLI.0001" if error.status < 500 else "DLI.0999", error.reason
        )
    except (BotoCoreError, ClientError) as error:
        response = store_failure(error).response()
    response.headers["X-Request-Id"] = uuid4().hex
    status = "reset" if isinstance(response, NoAnswer) else str(response.status)
    request.app[STATE].stats.requests[request.match_info.route.name or "unknown"][status] += 1
    return response


@web.middleware
async def gateway(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """What stands before a DLI API: throttle, latency, authentication, project check, fault dice."""
    if request.match_info.route.name not in API_ROUTES:
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
    authenticate(request, state, await request.read())
    if request.match_info["project_id"] not in state.projects:
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
    if isinstance(response, NoAnswer) or not isinstance(response, web.Response):
        return response  # a reset (e.g. `p_import_lost`) has no answer left to truncate
    return _truncated(response)


def _throttled(knobs: FaultKnobs, wait_seconds: float) -> web.Response:
    """APIG's 429; with `throttle_states_limit` off it names no numbers, as a discreet gateway would."""
    message = "The throttling threshold has been reached."
    if knobs.throttle_states_limit:
        message = (
            f"The throttling threshold has been reached: policy {knobs.throttle_policy} over ratelimit,"
            f"limit:{knobs.window_capacity},time:{_window_text(knobs.rate_window_seconds)}"
        )
    return error_response(429, "APIG.0308", message, {"Retry-After": retry_after_header(wait_seconds)})


def _window_text(seconds: float) -> str:
    """`1 second`, `0.2 seconds`, `1 minute`, `5 minutes`: whole minutes read as APIG prints them."""
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute" + ("" if minutes == 1 else "s")
    return "1 second" if seconds == 1 else f"{seconds:g} seconds"


def _before_work_fault(fault: FaultKind, request: web.Request, state: SimulatorState) -> web.Response | None:
    """The answer for a fault that replaces the work, or None when the work must happen."""
    if fault is FaultKind.SERVER_ERROR:
        return error_response(500, "DLI.0999", "Internal server error.")
    if fault is FaultKind.UNAVAILABLE:
        return error_response(503, "DLI.0999", "The service is temporarily unavailable. Try again later.")
    if fault is FaultKind.HTML:
        return web.Response(status=502, text=_GATEWAY_HTML, content_type="text/html")
    if fault is FaultKind.RESET:
        return reset_connection(request)
    if fault is FaultKind.NOT_SUCCESS:
        flag = state.failure_flag(listing=request.match_info.route.name in _STRING_FLAG_ROUTES)
        return json_response(200, {"is_success": flag, "message": "The system is busy. Try again later."})
    return None


def _truncated(response: web.Response) -> web.Response:
    """The same answer with its JSON cut in half: a 200 no parser accepts."""
    body = response.body if isinstance(response.body, bytes) else b"{}"
    return web.Response(status=200, body=body[: max(1, len(body) // 2)], content_type="application/json")
