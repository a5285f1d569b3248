"""EXPORTER_RATE_LIMIT=auto against the simulator's strict limit, over real sockets: the daemon learns
the gateway's limit from a 429 that states it, or searches for it when the 429 states nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import run_cli

from exporter.devstack import local_stack, settings_env

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
