"""Three `serve` processes on one Redis: a shared rate limit, shared work, a replica killed mid-campaign."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import free_port, start_cli

from exporter.app import open_stores
from exporter.devstack import settings_env
from exporter.models import BatchRequest, BatchState
from exporter.regions import limiter_scope
from exporter.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.redis]

RATE = 40
CONCURRENCY = 8
CHUNK = 10
BATCHES = 8
PER_BATCH = 500


@asynccontextmanager
async def replicas(
    env: dict[str, str], count: int, logdir: Path | None = None
) -> AsyncIterator[list[tuple[asyncio.subprocess.Process, int]]]:
    """Start `count` daemons sharing the same settings; SIGTERM and reap whatever is left at the end.
    With `logdir`, each daemon's log lines go to `logdir/replica-N.log`."""
    started: list[tuple[asyncio.subprocess.Process, int]] = []
    try:
        for number in range(count):
            port = free_port()
            env_port = {**env, "EXPORTER_HTTP_PORT": str(port)}
            if logdir is None:
                process = await start_cli(env_port, "serve", stderr=asyncio.subprocess.DEVNULL)
            else:
                with (logdir / f"replica-{number}.log").open("wb") as log_file:
                    process = await start_cli(env_port, "serve", stderr=log_file.fileno())
            started.append((process, port))
        yield started
    finally:
        for process, _ in started:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        stuck = []
        for process, _ in started:
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                stuck.append(process.pid)
                process.kill()
                await process.wait()
    # SIGTERM drains and exits 0 (a replica once hung: a chunk worker whose cancel redis-py swallowed
    # waited for ever on the pass's feed). A replica killed on purpose has -9.
    assert not stuck, f"replicas {stuck} did not exit within 20 s of SIGTERM"


async def submit_campaign(
    settings: Settings, bucket: str, batches: int = BATCHES, per_batch: int = PER_BATCH, prefix: str = "r"
) -> list[str]:
    ids = []
    async with open_stores(settings) as stores:
        from exporter.submission import submit_batch

        for number in range(batches):
            batch_id = f"{prefix}{number}"
            first = number * per_batch + 1
            request = BatchRequest(
                batch_id=batch_id,
                project_id=settings.project_id or "",
                obs_dir=f"{bucket}/replicas",
                job_ids=list(range(first, first + per_batch)),
                chunk_size=CHUNK,
                campaign="replicas",
            )
            assert await submit_batch(stores.queue, request, stores.ledger)
            ids.append(batch_id)
    return ids


async def wait_until(
    settings: Settings,
    batch_ids: list[str],
    done_share: float,
    limit_s: float = 180,
    total: int = BATCHES * PER_BATCH,
) -> int:
    """Poll the ledger (bounded) until this share of all jobs is done; return the jobs done."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    async with open_stores(settings) as stores:
        while loop.time() < deadline:
            infos = [await stores.ledger.get_batch(b) for b in batch_ids]
            done = sum(i.totals.verified + i.totals.failed for i in infos if i is not None)
            finished = all(i is not None and i.state is BatchState.COMPLETED for i in infos)
            if done >= done_share * total and (done_share < 1 or finished):
                return done
            await asyncio.sleep(0.1)
    raise AssertionError(f"campaign never reached {done_share:.0%} in {limit_s}s")


async def exports_by(port: int) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('exporter_dli_requests_total{operation="export",outcome="ok"}')
    )


@asynccontextmanager
async def on_redis(
    stack: Any, faults: dict[str, Any], jobs: int, **overrides: Any
) -> AsyncIterator[tuple[Any, Settings, dict[str, str]]]:
    """A simulator with these faults and settings for three daemons on Redis (own prefix, purged after)."""
    prefix = f"test-replicas-{uuid.uuid4().hex[:8]}"
    async with stack(jobs=jobs, faults=faults) as s:
        settings = s.settings.model_copy(
            update={
                "queue_url": "redis://127.0.0.1:6379/15",
                "redis_key_prefix": prefix,
                "rate_limit": RATE,
                # The simulator shares this test process's event loop, whose stalls on a busy 2-core
                # machine bunch arrivals that left evenly spaced: 10% (100 ms of jitter in the 1-s window)
                # instead of the default 3%. Unshared limits would still send 3 x 36/s against 40/s.
                "rate_headroom": 0.1,
                "concurrency": CONCURRENCY,
                "poll_interval": 0.1,
                "lease_seconds": 3,
                "max_batches": 2,
                **overrides,
            }
        )
        env = settings_env(settings, log_format="json", drain_seconds=2, **{"read_timeout": 5, **overrides})
        try:
            yield s, settings, env
        finally:
            from exporter.adapters.redis import open_redis

            async with open_redis(
                settings.queue_url, key_prefix=prefix, consumer_group="exporters"
            ) as backend:
                await backend.purge()


@pytest.fixture
async def redis_settings(stack: Any) -> AsyncIterator[tuple[Any, Settings, dict[str, str]]]:
    faults = {"rate_limit": RATE, "latency_ms": 30, "latency_jitter_ms": 20}
    async with on_redis(stack, faults, BATCHES * PER_BATCH) as prepared:
        yield prepared


async def test_three_replicas_share_the_rate_limit_and_the_work(redis_settings: Any) -> None:
    """Three daemons against a strict limit of their shared one: <1% 429s, every ID verified, all worked."""
    s, settings, env = redis_settings
    batch_ids = await submit_campaign(settings, s.bucket)
    async with replicas(env, 3) as daemons:
        await wait_until(settings, batch_ids, 1.0)
        per_replica = [await exports_by(port) for _, port in daemons]
    stats = s.simulator.stats()
    assert stats["jobs_exported"] == BATCHES * PER_BATCH
    assert stats["throttled"] < 0.01 * (stats["exports"] + stats["throttled"])
    assert all(count > 0 for count in per_replica), per_replica


async def test_replica_killed_mid_campaign_is_taken_over(redis_settings: Any) -> None:
    """kill -9 on one of three daemons: its batches and chunks are taken over; repeats <= its concurrency."""
    s, settings, env = redis_settings
    batch_ids = await submit_campaign(settings, s.bucket)
    async with replicas(env, 3) as daemons:
        await wait_until(settings, batch_ids, 0.3)
        victim, _ = daemons[0]
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        await wait_until(settings, batch_ids, 1.0)
    stats = s.simulator.stats()
    assert stats["jobs_exported"] == BATCHES * PER_BATCH
    assert -(-stats["job_ids_exported_more_than_once"] // CHUNK) <= CONCURRENCY


def log_events(logdir: Path) -> list[dict[str, Any]]:
    """Every JSON log line the replicas wrote into `logdir`."""
    return [json.loads(line) for log in logdir.glob("replica-*.log") for line in log.read_text().splitlines()]


async def test_replicas_under_503s_never_share_a_chunk_nor_lose_a_row(stack: Any, tmp_path: Path) -> None:
    """The race seen under load: 3 daemons, 3 batches of 1,000 IDs, 45% 503s and 5% resets, 4-second leases,
    2-second read timeout. No chunk is ever exported by two replicas at once, and every batch ends
    completed with each of its IDs verified and none left pending."""
    faults = {"p_503": 0.45, "p_reset": 0.05, "latency_ms": 20, "latency_jitter_ms": 30, "seed": 7}
    overrides = {
        "rate_limit": 150,
        "lease_seconds": 4,
        "read_timeout": 2,
        "retry_initial_backoff": 0.05,
        "retry_max_backoff": 0.5,
        "retry_max_attempts": 30,
    }
    async with on_redis(stack, faults, 3000, **overrides) as (s, settings, env):
        batch_ids = await submit_campaign(settings, s.bucket, batches=3, per_batch=1000)
        async with replicas(env, 3, logdir=tmp_path):
            await wait_until(settings, batch_ids, 1.0, limit_s=240, total=3000)
        stats = s.simulator.stats()
        async with open_stores(settings) as stores:
            infos = [await stores.ledger.get_batch(batch_id) for batch_id in batch_ids]
    assert stats["overlapping_exports"] == 0
    assert stats["requests"]["export_jobs"].get("503", 0) > 100, "the 503s really happened"
    for info in infos:
        assert info is not None and info.state is BatchState.COMPLETED
        assert (info.totals.verified, info.totals.pending, info.totals.exported) == (1000, 0, 0)
    reports = [json.loads((settings.report_dir / f"{b}.json").read_text()) for b in batch_ids]
    assert all(r["state"] == "completed" and r["totals"]["pending"] == 0 for r in reports)
    assert all(row["state"] == "verified" for r in reports for row in r["chunks"])
    events = log_events(tmp_path)
    assert sum(e["event"] == "chunk.exported" for e in events) >= 300, "the logs are the replicas' own"
    assert not [e for e in events if e["event"] == "batch.bug"], "no save moved a chunk backwards, no bug"


async def test_three_replicas_learn_one_rate_and_a_new_replica_starts_from_it(stack: Any) -> None:
    """EXPORTER_RATE_LIMIT=auto on Redis: the replicas climb one shared rate from 5/s, the first 429
    states the limit, and all of them pace under it (a handful of 429s in all, not a handful each); a
    replica started afterwards paces at the learned rate before any 429 of its own."""
    faults = {"rate_limit": RATE, "latency_ms": 30, "latency_jitter_ms": 20}
    async with on_redis(stack, faults, 5 * PER_BATCH, rate_limit="auto", rate_start=5) as prepared:
        s, settings, env = prepared
        batch_ids = await submit_campaign(settings, s.bucket, batches=4)
        async with replicas(env, 3):
            await wait_until(settings, batch_ids, 1.0, total=4 * PER_BATCH)
        throttled = s.simulator.stats()["throttled"]
        assert throttled <= 6, throttled  # the crossing of the limit, seen by requests already in flight
        scope = limiter_scope(s.settings.dli_endpoint or "")
        async with open_stores(settings) as stores:
            record = await stores.rates.load(scope)
        assert record is not None and record.stated_limit == RATE
        # at the stated limit less the test's 10% headroom: the 429s of requests sent before the cut,
        # restating the limit while the window still held them, do not make it a shared budget
        assert record.rate == pytest.approx(RATE * 0.9) and record.state.get("trusted") is True
        (late,) = await submit_campaign(
            settings, s.bucket, batches=1, per_batch=PER_BATCH // 5, prefix="late"
        )
        async with replicas(env, 1) as ((_, port),):
            await wait_until(settings, [late], 1.0, total=PER_BATCH // 5)
            pace = await gauge(port, "exporter_rate_limit_per_second", scope)
        assert pace == pytest.approx(RATE * 0.9)  # the shared rate, not EXPORTER_RATE_START
        assert s.simulator.stats()["throttled"] == throttled  # it knew the limit without a 429


async def gauge(port: int, name: str, endpoint: str) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    prefix = f'{name}{{endpoint="{endpoint}"}} '
    (value,) = [line.removeprefix(prefix) for line in text.splitlines() if line.startswith(prefix)]
    return float(value)
