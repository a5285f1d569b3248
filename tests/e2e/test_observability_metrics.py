"""The dashboard and the alert rules ask only for metrics a running daemon serves, campaign progress too.

`serve` runs as a process against the simulator and the S3 server; a small campaign with one job DLI
does not know runs to its end; then `/metrics` must hold every metric name that deploy/observability/
uses (read from the files, so they cannot drift), and the campaign's gauges must add up.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from observability_files import missing_metrics, used_metric_names
from prometheus_client.parser import text_string_to_metric_families
from support import free_port, start_cli

from exporter.devstack import settings_env

pytestmark = pytest.mark.slow

JOBS = 30
UNKNOWN_JOB = 7  # DLI answers that it has no such job: its chunk is bisected, the job fails


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    try:
        async with session.get(url) as response:
            return response.status, await response.text()
    except aiohttp.ClientError:
        return 0, ""


async def _until(session: aiohttp.ClientSession, url: str, done: Any, limit_s: float = 60) -> str:
    """GET `url` until `done(status, text)` holds (bounded); the last answer's text."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while loop.time() < deadline:
        status, text = await _get(session, url)
        if done(status, text):
            return text
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"{url} never answered as expected within {limit_s:g}s (last: {status} {text[:300]})"
    )


def _campaign_jobs(exposition: str, campaign: str) -> dict[str, float]:
    return {
        sample.labels["state"]: sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "exporter_campaign_jobs"
        for sample in family.samples
        if sample.labels.get("campaign") == campaign
    }


def _ready(exposition: str) -> float | None:
    for family in text_string_to_metric_families(exposition):
        if family.name == "exporter_ready":
            return family.samples[0].value
    return None


@pytest.fixture
async def daemon(stack: Any) -> AsyncIterator[tuple[str, Any]]:
    """`serve` on a free port over a fresh stack; SIGTERM at the end, which it must answer with exit 0."""
    async with stack(jobs=JOBS, missing_ids=frozenset({UNKNOWN_JOB})) as s:
        port = free_port()
        env = settings_env(
            s.settings, http_port=port, chunk_size=5, poll_interval=0.05, verify_grace_seconds=5
        )
        process = await start_cli(env, "serve")
        try:
            yield f"http://127.0.0.1:{port}", s
        finally:
            process.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()[-2000:]


async def test_every_metric_of_the_dashboard_and_rules_is_served(daemon: tuple[str, Any]) -> None:
    """After a campaign ran, /metrics has every name the files use, and its campaign's jobs by state."""
    base, s = daemon
    campaign = {
        "campaign_id": "watched",
        "obs_dir": f"{s.bucket}/{{campaign_id}}/{{project_id}}",
        "targets": [{"project_id": s.settings.project_id, "job_ids": list(range(1, JOBS + 1))}],
    }
    async with aiohttp.ClientSession() as session:
        await _until(session, f"{base}/readyz", lambda status, _: status == 200)
        async with session.post(f"{base}/campaigns", json=campaign) as response:
            assert response.status == 202, await response.text()
        await _until(
            session, f"{base}/campaigns/watched", lambda _, text: '"completed_with_failures"' in text
        )
        # The campaign gauges are refreshed at most every few seconds: wait for the finished numbers.
        exposition = await _until(
            session,
            f"{base}/metrics",
            lambda _, text: _campaign_jobs(text, "watched").get("verified") == JOBS - 1,
        )
    assert missing_metrics(used_metric_names(), exposition) == []
    assert _campaign_jobs(exposition, "watched") == {
        "total": JOBS,
        "verified": JOBS - 1,
        "failed": 1,
        "pending": 0,
    }
    assert _ready(exposition) == 1
    assert 'exporter_dead_letters_total{kind="failed"} 0.0' in exposition  # alerted before its first event


def test_missing_metrics_notices_a_name_nobody_serves() -> None:
    """The comparison can fail: a misspelt name, or a suffix the family's type does not have, is missing."""
    exposition = (
        "# HELP exporter_chunks_total Chunk transitions\n# TYPE exporter_chunks_total counter\n"
        "# HELP exporter_verify_seconds Time\n# TYPE exporter_verify_seconds histogram\n"
        "# HELP exporter_ready Ready\n# TYPE exporter_ready gauge\nexporter_ready 1.0\n"
    )
    used = {
        "exporter_chunks_total",
        "exporter_verify_seconds_bucket",
        "exporter_ready",
        "exporter_chunk_total",
        "exporter_ready_total",
        "exporter_verify_seconds",
    }
    assert missing_metrics(used, exposition) == [
        "exporter_chunk_total",
        "exporter_ready_total",
        "exporter_verify_seconds",
    ]
