"""Whole campaigns over real sockets: simulator + S3 server + SQLite, through the real runtime."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

from exporter.app import open_runtime
from exporter.logs import configure_logging
from exporter.models import BatchRequest, ListFilters
from exporter.simulator.jobs import job_status, job_type
from exporter.submission import submit_batch

ALL_FAULTS = {
    "latency_ms": 2,
    "latency_jitter_ms": 2,
    "rate_limit": 400,
    "p_500": 0.03,
    "p_503": 0.05,
    "p_reset": 0.03,
    "p_malformed": 0.03,
    "p_html": 0.02,
    "p_not_success": 0.03,
    "p_timeout": 0.01,
    "timeout_seconds": 1.5,
    "p_late": 0.1,
    "late_seconds": 0.5,
    "seed": 11,
}
FAST_RETRIES = {
    "retry_initial_backoff": 0.02,
    "retry_max_backoff": 0.5,
    "retry_max_attempts": 12,
    "read_timeout": 0.5,
    "verify_grace_seconds": 10,
    "poll_interval": 0.05,
}


async def run_campaign(settings: Any, request: BatchRequest) -> dict[str, Any]:
    """Submit one batch, work the queue until it is empty, return the report file's content."""
    async with open_runtime(settings, consumer="test") as runtime:
        await submit_batch(runtime.stores.queue, request, runtime.stores.ledger)
        await asyncio.wait_for(runtime.worker.run(until_empty=True), 300)
    report: dict[str, Any] = json.loads((Path(settings.report_dir) / f"{request.batch_id}.json").read_text())
    return report


def batch(stack: Any, job_ids: list[int], chunk_size: int = 20, batch_id: str = "campaign") -> BatchRequest:
    return BatchRequest(
        batch_id=batch_id,
        project_id=stack.settings.project_id,
        obs_dir=f"{stack.bucket}/exports",
        job_ids=job_ids,
        chunk_size=chunk_size,
    )


async def test_faulty_campaign_loses_nothing(stack: Any) -> None:
    """With every fault on, each good ID is verified, each unknown ID fails alone with DLI.0002, once each."""
    unknown = [5001, 5002, 5003, 5004, 5005, 5006, 5007]
    missing_inside = frozenset({100, 1777})
    good = [i for i in range(1, 2501) if i not in missing_inside]
    submitted = [*range(1, 2501), *unknown]
    async with stack(
        jobs=2500,
        missing_ids=missing_inside,
        faults=ALL_FAULTS,
        rate_limit=300,
        concurrency=16,
        **FAST_RETRIES,
    ) as s:
        report = await run_campaign(s.settings, batch(s, submitted))
        stats = s.simulator.stats()
    rows = report["chunks"]
    seen = [job_id for row in rows for job_id in row["job_ids"]]
    assert sorted(seen) == sorted(submitted), "every submitted ID exactly once"
    verified = {j for row in rows if row["state"] == "verified" for j in row["job_ids"]}
    assert verified == set(good)
    failed = [row for row in rows if row["state"] == "failed"]
    assert sorted(j for row in failed for j in row["job_ids"]) == sorted([*unknown, *missing_inside])
    assert all(len(row["job_ids"]) == 1 and row["error"]["code"] == "DLI.0002" for row in failed)
    assert all(
        z["verified"] and z["size"] > 0
        for row in rows
        if row["state"] == "verified"
        for z in row["zip_files"]
    )
    assert all(row["request_id"] for row in rows), "each row names DLI's request ID for support"
    assert report["state"] == "completed_with_failures"
    assert report["totals"]["verified"] == len(good) and report["totals"]["failed"] == len(failed)
    assert sum(stats["faults"].values()) > 20, "the faults really were injected"


async def test_zip_that_never_appears_is_reported_missing(stack: Any) -> None:
    """ZIPs DLI claims but never writes end failed with ZIP_MISSING after the grace period, not verified."""
    async with stack(jobs=50, faults={"p_never": 1.0}, verify_grace_seconds=0.3, poll_interval=0.05) as s:
        report = await run_campaign(s.settings, batch(s, list(range(1, 11)), chunk_size=5))
    assert {row["error"]["code"] for row in report["chunks"]} == {"ZIP_MISSING"}
    assert report["totals"]["verified"] == 0 and report["totals"]["failed"] == 10


async def test_client_rate_never_exceeds_limit_and_burst(stack: Any) -> None:
    """Sending 150 requests at 40/s (burst 2), no 1-second window ever sees more than 40 + 2 of them."""
    async with stack(
        jobs=150, faults={"rate_window_seconds": 1.0}, rate_limit=40, rate_burst=2, concurrency=32
    ) as s:
        await run_campaign(s.settings, batch(s, list(range(1, 151)), chunk_size=1))
        stats = s.simulator.stats()
    assert stats["exports"] == 150
    # rate x window + burst, plus one request of jitter (the simulator counts arrivals, not departures);
    # a limiter that released a period's quota at once would show up to twice the rate here.
    assert stats["max_in_window"] <= 40 * 1 + 2 + 1


async def test_429_slows_every_task_down(stack: Any) -> None:
    """When DLI throttles, every task waits out Retry-After: 429s stay a small share of requests."""
    async with stack(
        jobs=80,
        faults={"rate_limit": 10},
        rate_limit=30,
        concurrency=16,
        retry_max_attempts=50,
        retry_deadline=120,
    ) as s:
        report = await run_campaign(s.settings, batch(s, list(range(1, 81)), chunk_size=1))
        stats = s.simulator.stats()
    assert report["totals"]["verified"] == 80
    # Without a shared pause the limiter would keep sending 30/s into a 10/s gate: two 429s per success.
    assert stats["throttled"] <= stats["exports"] / 2


async def test_redelivered_finished_batch_makes_no_export_calls(stack: Any) -> None:
    """Submitting a finished batch again under a new message exports nothing and reports the same."""
    async with stack(jobs=40) as s:
        first = await run_campaign(s.settings, batch(s, list(range(1, 41)), chunk_size=10))
        exports = s.simulator.stats()["exports"]
        async with open_runtime(s.settings, consumer="again") as runtime:
            await runtime.stores.queue.put_raw(batch(s, list(range(1, 41)), chunk_size=10).model_dump_json())
            await asyncio.wait_for(runtime.worker.run(until_empty=True), 60)
        assert s.simulator.stats()["exports"] == exports
    assert first["totals"]["verified"] == 40


async def test_select_all_with_filters_expands_through_listing(stack: Any) -> None:
    """`select_all` with filters pages through DLI's listing (230 jobs, more than two pages) and exports
    exactly the jobs matching them; without filters, every job."""
    filters = ListFilters(status="job_running", job_type="flink_sql_job")
    wanted = [j for j in range(1, 231) if job_status(j) == "job_running" and job_type(j) == "flink_sql_job"]
    assert 0 < len(wanted) < 115, "the filters select a proper subset"
    async with stack(jobs=230) as s:
        selected = BatchRequest(
            batch_id="some",
            project_id=s.settings.project_id,
            obs_dir=s.bucket,
            select_all=True,
            filters=filters,
            chunk_size=50,
        )
        report = await run_campaign(s.settings, selected)
        every = await run_campaign(
            s.settings, selected.model_copy(update={"batch_id": "all", "filters": None})
        )
    assert sorted(j for row in report["chunks"] for j in row["job_ids"]) == wanted
    assert report["totals"]["verified"] == len(wanted)
    assert every["totals"]["jobs"] == 230 and every["totals"]["verified"] == 230


async def test_every_step_is_one_json_line_at_the_default_level(stack: Any) -> None:
    """At `info` each chunk logs sent, exported, zip verified, verified, with batch, project and chunk."""
    lines = io.StringIO()
    configure_logging("json", "info", stream=lines)
    async with stack(jobs=50) as s:
        await run_campaign(s.settings, batch(s, list(range(1, 11)), chunk_size=5))
    events = [json.loads(line) for line in lines.getvalue().splitlines()]
    names = [e["event"] for e in events]
    for name in ("batch.submitted", "batch.claimed", "batch.completed"):
        assert name in names, name
    for chunk in (0, 1):
        steps = [e for e in events if e.get("chunk") == chunk]
        assert [e["event"] for e in steps] == [
            "chunk.export.sent",
            "chunk.exported",
            "zip.verified",
            "chunk.verified",
        ]
        for step in steps:
            assert step["batch_id"] == "campaign" and step["project_id"] == s.settings.project_id
            assert step["attempt"] == 1 and step["level"] == "info" and step["timestamp"]
        exported = steps[1]
        assert exported["latency_ms"] >= 0 and exported["request_id"]
