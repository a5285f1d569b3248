"""The daemon's HTTP endpoints on a real socket, over the SQLite backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from exporter import http
from exporter.adapters.sqlite import SqliteBackend, open_sqlite
from exporter.app import open_runtime
from exporter.errors import Conflict
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


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text answer (0 when it has not been observed yet)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return 0.0


async def metrics_text(http: TestClient) -> str:  # type: ignore[type-arg]
    response = await http.get("/metrics")
    assert response.status == 200 and response.content_type == "text/plain"
    return await response.text()


async def test_probes_answer_and_metrics_follow_the_queue(
    client: tuple[TestClient, Readiness],  # type: ignore[type-arg]
) -> None:
    """Every probe answers 200; after two submissions /metrics shows queue depth 2 and the dropped repeats."""
    http, _ = client
    for path in PROBE_PATHS:
        response = await http.get(path)
        assert response.status == 200, path
    before = await metrics_text(http)
    assert sample(before, "exporter_queue_depth") == 0
    await http.post("/batches", json={"batch_id": "m1", "obs_dir": "bucket", "job_ids": [1, 1, 2, 2, 3]})
    await http.post("/batches", json={"batch_id": "m2", "obs_dir": "bucket", "job_ids": [4, 4]})
    assert (await (await http.get("/readyz")).json())["queue_depth"] == 2
    after = await metrics_text(http)
    assert sample(after, "exporter_queue_depth") == 2
    dropped = "exporter_duplicate_job_ids_total"
    assert sample(after, dropped) - sample(before, dropped) == 3


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


async def test_get_batches_lists_and_shows_submitted_batches(
    client: tuple[TestClient, Readiness],  # type: ignore[type-arg]
) -> None:
    """GET /batches lists each submitted batch with its ledger fields; GET /batches/{id} shows one."""
    http, _ = client
    await http.post("/batches", json={"batch_id": "g1", "obs_dir": "bucket/a", "job_ids": list(range(1, 16))})
    body = {"batch_id": "g2", "obs_dir": "obs://bucket/b/", "job_ids": [5, 6], "campaign": "wave-1"}
    await http.post("/batches", json=body)
    listing = await http.get("/batches")
    assert listing.status == 200
    batches = {b["batch_id"]: b for b in await listing.json()}
    assert sorted(batches) == ["g1", "g2"]
    g1, g2 = batches["g1"], batches["g2"]
    assert (g1["project_id"], g1["obs_dir"], g1["chunk_size"], g1["state"]) == (
        "p1",
        "bucket/a",
        7,
        "pending",
    )
    assert g1["totals"]["jobs"] == 15 and g1["totals"]["chunks"] == 3 and g1["campaign"] is None
    assert (g2["obs_dir"], g2["campaign"], g2["totals"]["jobs"]) == ("bucket/b", "wave-1", 2)
    one = await http.get("/batches/g2")
    assert one.status == 200 and await one.json() == g2


async def test_conflict_is_409_with_the_message(
    client: tuple[TestClient, Readiness],  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever Conflict the submission raises, POST /batches answers 409 with it as `error`."""

    async def conflicting(*_: object, **__: object) -> bool:
        raise Conflict("batch ID 'c1' was accepted before with other content (chunk_size: 7 before, 9 now)")

    monkeypatch.setattr(http, "submit_batch", conflicting)
    test_client, _ = client
    response = await test_client.post(
        "/batches", json={"batch_id": "c1", "obs_dir": "bucket", "job_ids": [1]}
    )
    assert response.status == 409
    assert await response.json() == {
        "error": "batch ID 'c1' was accepted before with other content (chunk_size: 7 before, 9 now)"
    }


async def test_reused_batch_id_with_other_content_is_409(
    client: tuple[TestClient, Readiness],  # type: ignore[type-arg]
    backend: SqliteBackend,
) -> None:
    """A batch ID reused with other IDs or another obs_dir is 409 naming what differs; nothing is queued."""
    http, _ = client
    body = {"batch_id": "r1", "obs_dir": "bucket/x", "job_ids": [1, 2, 3]}
    assert (await http.post("/batches", json=body)).status == 202
    other_ids = await http.post("/batches", json={**body, "job_ids": [1, 2, 4]})
    assert other_ids.status == 409 and "differ" in (await other_ids.json())["error"]
    other_dir = await http.post("/batches", json={**body, "obs_dir": "bucket/y"})
    assert other_dir.status == 409 and "obs_dir" in (await other_dir.json())["error"]
    again = await http.post("/batches", json=body)
    assert again.status == 200 and (await again.json())["accepted"] is False
    assert await backend.queue.depth() == 1


async def test_metrics_count_what_a_batch_did(stack: Any) -> None:
    """After a batch of 3 chunks ran, /metrics counts 3 more verified chunks and ZIPs; the queue is empty."""
    async with (
        stack(jobs=30, poll_interval=0.05) as s,
        open_runtime(s.settings, consumer="metrics") as runtime,
    ):
        app = create_http_app(runtime.stores.queue, runtime.stores.ledger, Readiness(), s.settings)
        async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
            before = await metrics_text(test_client)
            body = {
                "batch_id": "m",
                "obs_dir": f"{s.bucket}/x",
                "job_ids": list(range(1, 13)),
                "chunk_size": 4,
            }
            assert (await test_client.post("/batches", json=body)).status == 202
            await test_client.get("/readyz")
            assert sample(await metrics_text(test_client), "exporter_queue_depth") == 1
            await asyncio.wait_for(runtime.worker.run(until_empty=True), 60)
            await test_client.get("/readyz")
            after = await metrics_text(test_client)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("exporter_chunks_total", state="verified") == 3
    assert moved("exporter_verify_results_total", outcome="verified") >= 3
    assert moved("exporter_dli_requests_total", operation="export", outcome="ok") >= 3
    assert sample(after, "exporter_queue_depth") == 0
