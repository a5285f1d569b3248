"""The daemon's HTTP face: probes, Prometheus metrics, batch intake and progress.

Errors answer JSON `{"error": "..."}`: 400 for bad input, 404 for an unknown batch, 409 for a batch ID
reused with other content, 503 when the queue or ledger cannot be reached.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from exporter import metrics
from exporter.errors import Conflict, InvalidInput, StoreUnavailable
from exporter.intake import build_request, new_batch_id
from exporter.models import BatchRequest
from exporter.ports import BatchQueue, Ledger
from exporter.scrape import refresh_on_scrape
from exporter.settings import Settings
from exporter.submission import submit_batch

__all__ = ["PROBE_PATHS", "SUBMISSION_ERRORS", "ReadinessSource", "create_http_app", "refusal"]

PROBE_PATHS = ("/healthz", "/readyz", "/metrics")
READY_TIMEOUT_SECONDS = 2.0
MAX_BODY_BYTES = 64 * 1024 * 1024  # a million IDs as JSON, with room to spare


class ReadinessSource(Protocol):
    """What /readyz asks: is the worker taking work (not draining, queue reachable)?"""

    @property
    def ready(self) -> bool: ...


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


SUBMISSION_ERRORS = (InvalidInput, Conflict, StoreUnavailable)


def refusal(error: InvalidInput | Conflict | StoreUnavailable) -> web.Response:
    """How a submission (a batch or a campaign) is refused: 400 bad input, 409 a reused ID with other
    content, 503 the queue or ledger unreachable."""
    if isinstance(error, StoreUnavailable):
        return _error(503, f"queue/ledger unreachable: {error}")
    return _error(409 if isinstance(error, Conflict) else 400, str(error))


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; InvalidInput for anything else."""
    try:
        data: Any = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise InvalidInput("body must be a JSON object")
    return data


def _submitted(batch: BatchRequest, *, accepted: bool) -> web.Response:
    body = {
        "batch_id": batch.batch_id,
        "accepted": accepted,
        "jobs": len(batch.job_ids or ()),
        "duplicates_dropped": batch.duplicates_dropped,
    }
    return web.json_response(body, status=202 if accepted else 200)


class _Endpoints:
    """The route handlers, over the stores and settings they answer from."""

    __slots__ = ("_ledger", "_queue", "_readiness", "_settings")

    def __init__(
        self, queue: BatchQueue, ledger: Ledger, readiness: ReadinessSource, settings: Settings
    ) -> None:
        self._queue = queue
        self._ledger = ledger
        self._readiness = readiness
        self._settings = settings

    async def healthz(self, _: web.Request) -> web.Response:
        # Answering at all proves the event loop is alive: that is what liveness is for.
        return web.json_response({"status": "ok"})

    async def readyz(self, _: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):  # a probe must answer before kubelet gives up
                await self._queue.ping()
                depth = await self._queue.depth()
        except (StoreUnavailable, TimeoutError) as error:
            reason = f"queue unreachable: {error or 'no answer in time'}"
            return web.json_response({"ready": False, "reason": reason}, status=503)
        metrics.QUEUE_DEPTH.set(depth)
        if not self._readiness.ready:
            return web.json_response({"ready": False, "reason": "draining"}, status=503)
        return web.json_response({"ready": True, "queue_depth": depth})

    async def prometheus(self, request: web.Request) -> web.Response:
        await refresh_on_scrape(request.app, self._queue, ready=self._readiness.ready)
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def submit(self, request: web.Request) -> web.Response:
        """POST /batches: the CLI's `submit` rules; 202 queued, 200 already queued with the same content."""
        try:
            batch = self._request(await _json_object(request))
            accepted = await submit_batch(self._queue, batch, self._ledger)
        except SUBMISSION_ERRORS as error:
            return refusal(error)
        return _submitted(batch, accepted=accepted)

    def _request(self, data: dict[str, Any]) -> BatchRequest:
        """The body with the daemon's defaults (batch ID, project, chunk size) filled in, validated."""
        data.setdefault("batch_id", new_batch_id())
        if self._settings.project_id:
            data.setdefault("project_id", self._settings.project_id)
        data.setdefault("chunk_size", self._settings.chunk_size)
        return build_request(data, max_jobs=self._settings.max_jobs_per_batch)

    async def list_batches(self, _: web.Request) -> web.Response:
        batches = await self._ledger.list_batches()
        return web.json_response([b.model_dump(mode="json") for b in batches])

    async def get_batch(self, request: web.Request) -> web.Response:
        info = await self._ledger.get_batch(request.match_info["batch_id"])
        if info is None:
            return _error(404, "no such batch")
        return web.json_response(info.model_dump(mode="json"))


def create_http_app(
    queue: BatchQueue, ledger: Ledger, readiness: ReadinessSource, settings: Settings
) -> web.Application:
    """Routes: /healthz /readyz /metrics, POST /batches, GET /batches, GET /batches/{batch_id}."""
    endpoints = _Endpoints(queue, ledger, readiness, settings)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.add_routes(
        [
            web.get("/healthz", endpoints.healthz),
            web.get("/readyz", endpoints.readyz),
            web.get("/metrics", endpoints.prometheus),
            web.post("/batches", endpoints.submit),
            web.get("/batches", endpoints.list_batches),
            web.get("/batches/{batch_id}", endpoints.get_batch),
        ]
    )
    return app
