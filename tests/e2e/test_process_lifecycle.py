"""The daemon as a process: kill -9 mid-campaign, SIGTERM drain, restart; nothing lost, little repeated."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import free_port, start_cli

from exporter.devstack import settings_env

pytestmark = pytest.mark.slow

JOBS = 1500
CHUNK = 10
CONCURRENCY = 8


def _cli() -> list[str]:
    return [sys.executable, "-m", "exporter.cli"]


async def _submit(env: dict[str, str], batch_id: str, bucket: str, job_ids: range) -> None:
    ids = ",".join(map(str, job_ids))
    process = await asyncio.create_subprocess_exec(
        *_cli(),
        "submit",
        "--obs-dir",
        f"{bucket}/exports",
        "--job-ids",
        ids,
        "--batch-id",
        batch_id,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert batch_id in out.decode()


async def _progress(port: int, batch_id: str) -> dict[str, Any] | None:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/batches/{batch_id}") as r,
        ):
            return await r.json() if r.status == 200 else None  # type: ignore[no-any-return]
    except aiohttp.ClientError:
        return None


async def _wait_for_progress(port: int, batch_id: str, done_fraction: float, limit_s: float = 60) -> None:
    """Poll the daemon's own /batches endpoint (bounded) until this share of jobs is done."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while loop.time() < deadline:
        info = await _progress(port, batch_id)
        if info and (info["totals"]["verified"] + info["totals"]["failed"]) >= done_fraction * JOBS:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch never reached {done_fraction:.0%} within {limit_s}s")


async def _finish_with_worker(env: dict[str, str]) -> None:
    worker = await start_cli(env, "work", "--until-empty")
    _, err = await asyncio.wait_for(worker.communicate(), 120)
    assert worker.returncode == 0, err.decode()[-2000:]


def _report(report_dir: Path, batch_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((report_dir / f"{batch_id}.json").read_text())
    return data


def _env(s: Any, port: int) -> dict[str, str]:
    return settings_env(
        s.settings,
        http_port=port,
        concurrency=CONCURRENCY,
        chunk_size=CHUNK,
        rate_limit=400,
        rate_burst=4,
        poll_interval=0.05,
        drain_seconds=2,
        log_format="json",
        lease_seconds=5,
    )


async def test_kill9_mid_campaign_loses_nothing_and_repeats_at_most_concurrency(stack: Any) -> None:
    """serve SIGKILLed at ~30%; a restart finishes: every ID verified, re-exported chunks <= concurrency."""
    async with stack(jobs=JOBS, faults={"latency_ms": 15, "latency_jitter_ms": 10}) as s:
        port = free_port()
        env = _env(s, port)
        await _submit(env, "crash", s.bucket, range(1, JOBS + 1))
        daemon = await start_cli(env, "serve")
        try:
            await _wait_for_progress(port, "crash", 0.3)
        finally:
            daemon.send_signal(signal.SIGKILL)
            await daemon.wait()
        assert daemon.returncode == -signal.SIGKILL
        before = s.simulator.stats()
        assert before["jobs_exported"] < JOBS, "killed before the end, really mid-campaign"
        await _finish_with_worker({**env, "EXPORTER_LEASE_SECONDS": "1"})
        stats = s.simulator.stats()
    report = _report(Path(s.settings.report_dir), "crash")
    assert report["totals"]["verified"] == JOBS
    assert sorted(j for row in report["chunks"] for j in row["job_ids"]) == list(range(1, JOBS + 1))
    repeated_chunks = -(-stats["job_ids_exported_more_than_once"] // CHUNK)
    assert repeated_chunks <= CONCURRENCY


async def test_sigterm_drains_exits_zero_and_another_instance_finishes(stack: Any) -> None:
    """SIGTERM mid-campaign: serve exits 0 within the drain time; a second instance completes the batch."""
    async with stack(jobs=JOBS, faults={"latency_ms": 15, "latency_jitter_ms": 10}) as s:
        port = free_port()
        env = _env(s, port)
        await _submit(env, "drain", s.bucket, range(1, JOBS + 1))
        daemon = await start_cli(env, "serve")
        await _wait_for_progress(port, "drain", 0.2)
        daemon.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(daemon.communicate(), 2 + 8)
        assert daemon.returncode == 0, err.decode()[-2000:]
        events = [json.loads(line)["event"] for line in err.decode().splitlines() if line.startswith("{")]
        assert "worker.draining" in events and "worker.stopped" in events
        await _finish_with_worker(env)
        stats = s.simulator.stats()
    report = _report(Path(s.settings.report_dir), "drain")
    assert report["state"] == "completed" and report["totals"]["verified"] == JOBS
    assert -(-stats["job_ids_exported_more_than_once"] // CHUNK) <= CONCURRENCY


async def test_cli_dead_letters_malformed_message_and_completes_next_batch(
    stack: Any, tmp_path: Path
) -> None:
    """A hand-written bad message is parked with its reason by `work`; the good batch after it completes."""
    from exporter.adapters.sqlite import open_sqlite, sqlite_path_from_url

    async with stack(jobs=30) as s:
        env = _env(s, free_port())
        async with open_sqlite(sqlite_path_from_url(s.settings.queue_url)) as backend:
            await backend.queue.put_raw('{"batch_id": "oops", "project_id": "p1", "obs_dir": "bucket-ok"}')
        await _submit(env, "good", s.bucket, range(1, 31))
        await _finish_with_worker(env)
        listing = await asyncio.create_subprocess_exec(
            *_cli(), "dead-letters", "--json", env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await listing.communicate()
    parked = json.loads(out)
    assert len(parked) == 1 and "selection is empty" in parked[0]["reason"]
    assert _report(Path(s.settings.report_dir), "good")["totals"]["verified"] == 30
