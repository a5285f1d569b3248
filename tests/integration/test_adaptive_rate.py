"""EXPORTER_RATE_LIMIT=auto against the simulator's strict limit, over real sockets: the daemon learns
the gateway's limit from a 429 that states it, or searches for it when the 429 states nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import run_cli

from exporter.app import open_stores
from exporter.devstack import DEV_AK, DEV_PROJECT, DEV_SK, local_stack, settings_env
from exporter.dli.client import DliClient
from exporter.dli.retry import RetryPolicy
from exporter.dli.session import create_session
from exporter.dli.signer import Credentials
from exporter.errors import Transient
from exporter.regions import limiter_scope
from exporter.wiring import session_options

pytestmark = [pytest.mark.slow]

LIMIT = 40
FAST = {"poll_interval": 0.05, "verify_grace_seconds": 5, "retry_initial_backoff": 0.02, "chunk_size": 1}


async def run_auto(
    s3_server: str, tmp_path: Path, faults: dict[str, Any], exports: int
) -> tuple[list[dict[str, Any]], Any]:
    async with local_stack(
        workdir=tmp_path,
        jobs=exports,
        s3_endpoint=s3_server,
        bucket="auto-rate",
        faults={"rate_limit": LIMIT, **faults},
        rate_limit="auto",
        rate_start=10,
        **FAST,
    ) as stack:
        env = settings_env(stack.settings, log_format="json")
        ids = ",".join(map(str, range(1, exports + 1)))
        assert (
            await run_cli(env, "submit", "--obs-dir", "auto-rate/x", "--job-ids", ids, "--batch-id", "a")
        ).code == 0
        worked = await run_cli(env, "work", "--until-empty", limit_s=120)
        assert worked.code == 0, worked.err[-2000:]
        lines = [json.loads(line) for line in (worked.err + worked.out).splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("event") == "rate.adjusted"], stack.simulator.stats()


async def test_a_stated_limit_is_read_from_the_429_and_paced_under(s3_server: str, tmp_path: Path) -> None:
    adjusted, stats = await run_auto(s3_server, tmp_path, {}, 400)
    stated = [line for line in adjusted if line["reason"] == "stated_limit"]
    assert stated, adjusted[-5:]
    assert abs(stated[-1]["new"] - LIMIT * 0.97) < 0.01  # limit:40,time:1 second, less 3% headroom
    assert stats["jobs_exported"] == 400
    assert stats["throttled"] <= 3  # the 429 that told the limit, and at most a couple in flight with it


async def test_without_numbers_the_limit_is_searched_for(s3_server: str, tmp_path: Path) -> None:
    adjusted, stats = await run_auto(s3_server, tmp_path, {"throttle_states_limit": False}, 400)
    assert not [line for line in adjusted if line["reason"] == "stated_limit"]
    assert any(line["reason"] == "throttled" for line in adjusted)  # it went past the limit and backed off
    final = adjusted[-1]["new"]
    assert LIMIT * 0.4 <= final <= LIMIT * 1.2, adjusted[-5:]
    assert stats["jobs_exported"] == 400 and stats["throttled"] < 0.05 * stats["exports"]


async def test_a_one_minute_window_is_read_as_per_minute_and_kept_for_the_next_run(
    s3_server: str, tmp_path: Path
) -> None:
    """`limit:30,time:1 minute` paces at 0.5/s less the headroom; the limiter of a new run (the same
    SQLite file) starts there, without a 429 of its own. The 429's Retry-After is most of a minute, so
    the requests stop at the first 429 (one attempt each) rather than wait it out."""
    async with local_stack(
        workdir=tmp_path,
        jobs=200,
        s3_endpoint=s3_server,
        bucket="auto-minute",
        faults={"rate_limit": 0.5, "rate_window_seconds": 60.0},  # limit:30,time:1 minute
        rate_limit="auto",
        rate_start=5,
        rate_min=0.1,
    ) as stack:
        settings = stack.settings
        assert settings.dli_endpoint is not None
        scope = limiter_scope(settings.dli_endpoint)
        auth = Credentials(ak=DEV_AK, sk=DEV_SK, project_id=settings.project_id)
        async with open_stores(settings) as stores, create_session(session_options(settings)) as session:
            limiter = stores.limiter_for(None, scope)
            dli = DliClient(session, settings.dli_endpoint, auth, limiter, RetryPolicy(max_attempts=1))
            with pytest.raises(Transient, match="limit:30,time:1 minute"):
                await export_one_by_one(dli, 200)  # 30 pass in the window; the 31st is told the policy
            assert limiter.rate == pytest.approx(30 / 60 * 0.97)
            record = await stores.rates.load(scope)
        assert record is not None and record.stated_limit == pytest.approx(0.5)
        async with open_stores(settings) as stores:
            again = stores.limiter_for(None, scope)
            await again.acquire()  # the first request adopts what the last run learned
            assert again.rate == pytest.approx(30 / 60 * 0.97)
        assert stack.simulator.stats()["throttled"] == 1


async def export_one_by_one(dli: DliClient, count: int) -> None:
    for job_id in range(1, count + 1):
        await dli.export_jobs(DEV_PROJECT, "auto-minute/x", [job_id])
