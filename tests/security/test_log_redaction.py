"""A logged request never shows its Authorization signature or X-Security-Token, whatever its shape.

The headers are real: those `sign_request` makes for temporary AK/SK credentials, and those aiohttp
reports to a trace hook while sending a signed request to the simulator. Each shape a request can
reach a log call in (a dict, aiohttp's multidicts, its RequestInfo, name/value pairs, raw HTTP text, a
ClientResponseError) goes through the production structlog set-up at debug level, both as the CLI
configures it (secrets registered with the redactor) and as an embedding program might (nothing
registered: only key names and patterns protect it).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import structlog
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from exporter.devstack import DEV_PROJECT, create_bucket
from exporter.dli.signer import Credentials, sign_request
from exporter.logs import configure_logging
from exporter.simulator import SimulatorSettings, running_simulator

AK = "AKREDACTQ7W3E9R1T5Y8"
SK = "skRedact-Zq93nVx1Lm0Pw7Rt4Ys2Hd6Kb8Jf5Gc"
TOKEN = "tokRedact-Session-Hx28Vn41Qp73Lm95Rt06Yw18Ks52Jd97"
CREDENTIALS = Credentials(AK, SK, DEV_PROJECT, TOKEN)
DATE = "20250101T000000Z"
PATH = f"/v1.0/{DEV_PROJECT}/streaming/jobs/export"

Shape = Callable[[dict[str, str]], Any]


def _request_info(headers: dict[str, str]) -> aiohttp.RequestInfo:
    url = yarl.URL(f"https://dli.example.com{PATH}")
    return aiohttp.RequestInfo(url, "POST", CIMultiDictProxy(CIMultiDict(headers)), url)


def _raw_http(headers: dict[str, str]) -> str:
    lines = [f"POST {PATH} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items())]
    return "\r\n".join(lines)


SHAPES: dict[str, Shape] = {
    "dict": dict,
    "multidict": CIMultiDict,
    "multidict-proxy": lambda headers: CIMultiDictProxy(CIMultiDict(headers)),
    "header-pairs": lambda headers: list(headers.items()),
    "raw-http-text": _raw_http,
    "request-info": _request_info,
    "client-response-error": lambda headers: aiohttp.ClientResponseError(
        _request_info(headers), (), status=503, message="Service Unavailable"
    ),
}


def _cases() -> list[Any]:
    cases = []
    for registered in (True, False):
        for shape in SHAPES:
            label = f"{shape}-{'registered' if registered else 'unregistered'}"
            cases.append(pytest.param(shape, registered, id=label))
    return cases


def signed_headers() -> tuple[dict[str, str], str]:
    """The headers the client sends for one export with temporary credentials, and their signature."""
    headers, parts = sign_request(
        "POST", "dli.example.com", PATH, [], {"Content-Type": "application/json"}, b"{}", CREDENTIALS, DATE
    )
    return headers, parts.signature


def log_into_buffer(registered: bool) -> io.StringIO:
    """The production structlog set-up at debug level, rendering JSON into a buffer."""
    buffer = io.StringIO()
    configure_logging("json", "debug", stream=buffer, secrets=(AK, SK, TOKEN) if registered else ())
    return buffer


def assert_redacted(rendered: str, signature: str) -> None:
    assert rendered.strip(), "something was logged"
    assert signature not in rendered, "the Authorization signature was logged"
    assert TOKEN not in rendered, "the X-Security-Token value was logged"
    assert SK not in rendered


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("shape", "registered"), _cases())
def test_logged_request_headers_are_redacted(shape: str, registered: bool) -> None:
    """A signed request's headers in this shape, logged at debug, show neither signature nor token."""
    headers, signature = signed_headers()
    assert headers["X-Security-Token"] == TOKEN and signature in headers["Authorization"]
    buffer = log_into_buffer(registered)
    structlog.get_logger("test").debug(
        "http.request", method="POST", path=PATH, headers=SHAPES[shape](headers)
    )
    assert_redacted(buffer.getvalue(), signature)


@pytest.mark.usefixtures("restore_logging")
def test_sensitive_keys_are_masked_even_unregistered() -> None:
    """Fields named like the headers themselves are masked by name, registered or not."""
    headers, signature = signed_headers()
    buffer = log_into_buffer(registered=False)
    structlog.get_logger("test").debug(
        "http.request",
        authorization=headers["Authorization"],
        x_security_token=headers["X-Security-Token"],
        **{"X-Security-Token": TOKEN, "Authorization": headers["Authorization"]},
    )
    event = json.loads(buffer.getvalue())
    assert event["authorization"] == event["x_security_token"] == event["X-Security-Token"] == "***"
    assert_redacted(buffer.getvalue(), signature)


@pytest.mark.usefixtures("restore_logging")
async def test_requests_seen_by_aiohttp_trace_are_redacted(s3_server: str) -> None:
    """Headers of real signed requests, as aiohttp hands them to a trace hook, are logged redacted."""
    await create_bucket(s3_server, "redaction")
    sim_settings = SimulatorSettings(
        project_id=DEV_PROJECT, ak=AK, sk=SK, security_token=TOKEN, obs_endpoint=s3_server
    )
    buffer = log_into_buffer(registered=True)
    log = structlog.get_logger("trace")
    sent: list[str] = []

    async def on_start(_session: Any, _context: SimpleNamespace, params: Any) -> None:
        sent.append(params.headers["Authorization"])
        log.debug("http.request.start", method=params.method, url=str(params.url), headers=params.headers)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    async with (
        running_simulator(sim_settings) as simulator,
        aiohttp.ClientSession(trace_configs=[trace]) as session,
    ):
        host = yarl.URL(simulator.url).authority
        body = json.dumps({"obs_dir": "redaction/x", "is_selected": True, "job_selected": [1]}).encode()
        headers, parts = sign_request(
            "POST", host, PATH, [], {"Content-Type": "application/json"}, body, CREDENTIALS
        )
        async with session.post(yarl.URL(simulator.url + PATH), data=body, headers=headers) as response:
            assert response.status == 200, await response.text()
    assert sent and parts.signature in sent[0]
    assert_redacted(buffer.getvalue(), parts.signature)
