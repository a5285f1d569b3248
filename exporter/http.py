"""The daemon's HTTP face: probes, Prometheus metrics, batch intake and progress."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from exporter import metrics
from exporter.errors import InvalidInput, StoreUnavailable
from exporter.intake import build_request, new_batch_id
from exporter.ports import BatchQueue, Ledger
from exporter.settings import Settings
from exporter.submission import submit_batch

__all__ = ["PROBE_PATHS", "ReadinessSource", "create_http_app"]

PROBE_PATHS = ("/healthz", "/readyz", "/metrics")
READY_TIMEOUT_SECONDS = 2.0


class ReadinessSource(Protocol):
    """What /readyz asks: is the worker taking work (not draining, queue reachable)?"""

    @property
    def ready(self) -> bool: ...


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def create_http_app(
    queue: BatchQueue, ledger: Ledger, readiness: ReadinessSource, settings: Settings
) -> web.Application:
    """Routes: /healthz /readyz /metrics, POST /batches, GET /batches, GET /batches/{batch_id}."""

    async def healthz(_: web.Request) -> web.Response:
        # Answering at all proves the event loop is alive: that is what liveness is for.
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):  # a probe must answer before kubelet gives up
                await queue.ping()
                depth = await queue.depth()
        except (StoreUnavailable, TimeoutError) as error:
            reason = f"queue unreachable: {error or 'no answer in time'}"
            return web.json_response({"ready": False, "reason": reason}, status=503)
        metrics.QUEUE_DEPTH.set(depth)
        if not readiness.ready:
            return web.json_response({"ready": False, "reason": "draining"}, status=503)
        return web.json_response({"ready": True, "queue_depth": depth})

    async def metrics_endpoint(_: web.Request) -> web.Response:
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def submit(request: web.Request) -> web.Response:
        try:
            data: Any = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "body must be a JSON object")
        if not isinstance(data, dict):
            return _error(400, "body must be a JSON object")
        data.setdefault("batch_id", new_batch_id())
        if settings.project_id:
            data.setdefault("project_id", settings.project_id)
        data.setdefault("chunk_size", settings.chunk_size)
        try:
            batch = build_request(data, max_jobs=settings.max_jobs_per_batch)
        except InvalidInput as error:
            return _error(400, str(error))
        accepted = await submit_batch(queue, batch, ledger)
        body = {
            "batch_id": batch.batch_id,
            "accepted": accepted,
            "jobs": len(batch.job_ids or ()),
            "duplicates_dropped": batch.duplicates_dropped,
        }
        return web.json_response(body, status=202 if accepted else 200)

    async def list_batches(_: web.Request) -> web.Response:
        batches = await ledger.list_batches()
        return web.json_response([b.model_dump(mode="json") for b in batches])

    async def get_batch(request: web.Request) -> web.Response:
        info = await ledger.get_batch(request.match_info["batch_id"])
        if info is None:
            return _error(404, "no such batch")
        return web.json_response(info.model_dump(mode="json"))

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics_endpoint),
            web.post("/batches", submit),
            web.get("/batches", list_batches),
            web.get("/batches/{batch_id}", get_batch),
        ]
    )
    return app
