"""`dli-exporter demo`: a whole campaign on this machine, faults included, ending with its report.

Simulator (jobs 1..N, some throttling, 5xx, resets, malformed answers and late ZIPs) + a local S3 server
+ the embedded SQLite queue and ledger. A few unknown job IDs and one malformed queue message show how
failures and dead letters look.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from exporter.app import open_runtime
from exporter.devstack import local_stack
from exporter.logs import configure_logging
from exporter.models import BatchInfo, BatchRequest
from exporter.progress import follow_progress
from exporter.settings import Settings
from exporter.submission import submit_batch

__all__ = ["DEMO_FAULTS", "run_demo"]

DEMO_FAULTS = {
    "latency_ms": 20,
    "latency_jitter_ms": 15,
    "rate_limit": 45,
    "p_503": 0.03,
    "p_500": 0.01,
    "p_reset": 0.01,
    "p_malformed": 0.01,
    "p_not_success": 0.01,
    "p_late": 0.05,
    "late_seconds": 1.5,
    "seed": 7,
}
UNKNOWN_IDS = 12


def run_demo(*, jobs: int, workdir: Path) -> int:
    """Run the campaign in a fresh workdir; 0 when all good IDs verified and all unknown ones failed alone."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    configure_logging("console", "error")
    return asyncio.run(_campaign(Console(), jobs, workdir))


_STACK_SETTINGS: dict[str, Any] = {
    "rate_limit": 50,
    "concurrency": 16,
    "chunk_size": 25,
    "verify_zip": True,
    "verify_grace_seconds": 15,
    "retry_initial_backoff": 0.2,
    "retry_max_backoff": 5,
    "upload_manifest": True,
    "http_port": 0,
    "poll_interval": 0.2,
}


async def _campaign(console: Console, jobs: int, workdir: Path) -> int:
    async with local_stack(workdir=workdir, jobs=jobs, faults=DEMO_FAULTS, **_STACK_SETTINGS) as stack:
        console.print(f"[bold]DLI simulator[/] {stack.simulator.url}  [bold]S3[/] {stack.s3_endpoint}")
        job_ids = [*range(1, jobs + 1), *range(jobs + 1001, jobs + 1001 + UNKNOWN_IDS), 1, 2, 3]
        request = BatchRequest(
            batch_id="demo-campaign",
            project_id=stack.settings.project_id or "",
            obs_dir=f"{stack.bucket}/campaign-2026",
            job_ids=job_ids,
            chunk_size=stack.settings.chunk_size,
            campaign="demo",
        )
        started = time.monotonic()
        info, parked = await _run(console, stack.settings, request)
        elapsed = time.monotonic() - started
        stats = stack.simulator.stats()
    _print_summary(console, info, elapsed, stats, parked, workdir)
    return 0 if info.totals.failed == UNKNOWN_IDS and info.totals.verified == jobs else 1


async def _run(console: Console, settings: Settings, request: BatchRequest) -> tuple[BatchInfo, list[str]]:
    """Submit the batch and one malformed message, work the queue with a live bar; the batch at the end
    and the dead letters' reasons."""
    async with open_runtime(settings, consumer="demo") as runtime:
        await submit_batch(runtime.stores.queue, request, runtime.stores.ledger)
        # An older producer's message, queued as it is: the worker parks it with its reason.
        await runtime.stores.queue.put("broken", '{"batch_id": "broken", "job_ids": "not a list"}')
        console.print(
            f"submitted {len(request.job_ids or ())} IDs ({UNKNOWN_IDS} unknown to DLI, 3 repeated) "
            "and one malformed message"
        )
        worker = asyncio.create_task(runtime.worker.run(until_empty=True))
        info = await follow_progress(
            lambda: runtime.stores.ledger.get_batch(request.batch_id), console=console, interval=0.25
        )
        await worker
        parked = await runtime.stores.queue.dead_letters()
    assert info is not None  # noqa: S101 - the batch was just submitted
    return info, [p.reason for p in parked]


def _print_summary(
    console: Console,
    info: BatchInfo,
    elapsed: float,
    stats: dict[str, object],
    parked: list[str],
    workdir: Path,
) -> None:
    table = Table(title=f"batch {info.batch_id}: {info.state.value}", show_header=False)
    totals = info.totals
    table.add_row("jobs", str(totals.jobs))
    table.add_row("verified in OBS", str(totals.verified))
    table.add_row("failed (with reason)", str(totals.failed))
    table.add_row("chunks", f"{totals.chunks} ({totals.chunks_failed} with failures)")
    table.add_row("duplicate IDs dropped", str(info.duplicates_dropped))
    table.add_row("wall time", f"{elapsed:.1f}s")
    table.add_row("DLI requests served", str(stats.get("requests_total", "?")))
    faults = stats.get("faults") or {}
    injected = ", ".join(f"{kind} x{count}" for kind, count in sorted(dict(faults).items()))  # type: ignore[call-overload]
    table.add_row("429s served (and honoured)", str(stats.get("throttled", "?")))
    table.add_row("faults injected", injected or "none")
    table.add_row("dead letters", "; ".join(parked) or "none")
    console.print(table)
    console.print(f"report:   {workdir / 'reports' / (info.batch_id + '.json')}")
    console.print(f"manifest: {workdir / 'reports' / (info.batch_id + '.jsonl')}")
    console.print(
        f"full report: .venv/bin/dli-exporter --queue-url sqlite:///{workdir}/exporter.db "
        f"report {info.batch_id}"
    )
    _print_failures(console, workdir / "reports" / f"{info.batch_id}.jsonl")


def _print_failures(console: Console, manifest: Path, most: int = 5) -> None:
    """The failed rows of the manifest: each rejected ID stands alone with DLI's error code."""
    failed = [row for row in map(json.loads, manifest.read_text().splitlines()) if row["state"] == "failed"]
    for row in failed[:most]:
        error = row["error"] or {}
        console.print(f"  failed: jobs {row['job_ids']} -> {error.get('code')}: {error.get('message')}")
    if len(failed) > most:
        console.print(f"  ... and {len(failed) - most} more failed rows")
