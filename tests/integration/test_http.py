"""The daemon's HTTP endpoints on a real socket, over the SQLite backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from exporter import http
from exporter.adapters.sqlite import SqliteBackend, open_sqlite
from exporter.http import PROBE_PATHS, create_http_app
from exporter.settings import Settings


@dataclass
class Readiness:
    ready: bool = True


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[SqliteBackend]:
    async with open_sqlite(tmp_path / "x.db") as opened:
        yield opened


@pytest.fixture
async def client(backend: SqliteBackend) -> AsyncIterator[tuple[TestClient, Readiness]]:  # type: ignore[type-arg]
    readiness = Readiness()
    settings = Settings(project_id="p1", chunk_size=7, max_jobs_per_batch=100)
    app = create_http_app(backend.queue, backend.ledger, readiness, settings)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client, readiness


async def test_probes_and_metrics_answer(client: tuple[TestClient, Readiness]) -> None:  # type: ignore[type-arg]
    """Every probe path answers 200; /metrics speaks the Prometheus text format."""
    http, _ = client
    for path in PROBE_PATHS:
        response = await http.get(path)
        assert response.status == 200, path
    text = await (await http.get("/metrics")).text()
    assert "exporter_dli_requests_total" in text or "# TYPE exporter_dli_requests counter" in text


async def test_readyz_false_while_draining(client: tuple[TestClient, Readiness]) -> None:  # type: ignore[type-arg]
    """/readyz says 503 with the reason once the worker drains."""
    http, readiness = client
    readiness.ready = False
    response = await http.get("/readyz")
    assert response.status == 503 and (await response.json())["reason"] == "draining"


async def test_post_batches_queues_once_and_refuses_bad_input(
    client: tuple[TestClient, Readiness],  # type: ignore[type-arg]
    backend: SqliteBackend,
) -> None:
    """A valid batch is accepted (202) once, a repeat is not queued (200), bad input gets 400 with reason."""
    http, _ = client
    body = {"batch_id": "h1", "obs_dir": "bucket/x", "job_ids": [1, 2, 2, 3]}
    first = await http.post("/batches", json=body)
    assert first.status == 202
    assert (await first.json()) == {"batch_id": "h1", "accepted": True, "jobs": 3, "duplicates_dropped": 1}
    assert (await http.post("/batches", json=body)).status == 200
    assert await backend.queue.depth() == 1
    claim = await backend.queue.claim("t", 10)
    assert claim is not None and '"chunk_size":7' in claim.body and '"project_id":"p1"' in claim.body
    bad = await http.post("/batches", json={**body, "batch_id": "h2", "job_ids": [0]})
    assert bad.status == 400 and "job_ids" in (await bad.json())["error"]
    too_many = await http.post("/batches", json={**body, "batch_id": "h3", "job_ids": list(range(1, 200))})
    assert too_many.status == 400 and "EXPORTER_MAX_JOBS_PER_BATCH" in (await too_many.json())["error"]
    assert (await http.post("/batches", data=b"[1,2")).status == 400


async def test_get_unknown_batch_is_404(client: tuple[TestClient, Readiness]) -> None:  # type: ignore[type-arg]
    """Asking for a batch that does not exist answers 404, not 500."""
    http, _ = client
    assert (await http.get("/batches/nope")).status == 404


class HangingQueue:
    """A queue whose server accepted the connection but never answers."""

    async def ping(self) -> None:
        await asyncio.Event().wait()

    async def depth(self) -> int:
        await asyncio.Event().wait()
        return 0


async def test_readyz_answers_503_when_the_queue_hangs(
    backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue that does not answer makes /readyz say 503 within its own time limit, not hang the probe."""
    monkeypatch.setattr(http, "READY_TIMEOUT_SECONDS", 0.05)
    app = create_http_app(HangingQueue(), backend.ledger, Readiness(), Settings())  # type: ignore[arg-type]
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        response = await test_client.get("/readyz")
        assert response.status == 503 and "queue unreachable" in (await response.json())["reason"]
