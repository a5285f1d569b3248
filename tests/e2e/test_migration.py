"""Migration over real sockets: `migrate`, `work --until-empty`, then the job map checked against what the
simulator's target project really holds. Names that existed before the migration are conflicts; names
that appear because of us are ours, even when DLI's answer to the import that made them was lost."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import CLI, run_cli

from exporter.devstack import RegionSim, create_bucket, local_regions, local_stack, settings_env
from exporter.simulator.jobs import job_name

pytestmark = [pytest.mark.slow]

TARGET = "7a" * 16
EXISTING = (3, 4)  # the target holds jobs of these names before the migration
FAST = {
    "poll_interval": 0.05,
    "verify_grace_seconds": 5,
    "retry_initial_backoff": 0.02,
    "chunk_size": 5,
    "lease_seconds": 3,
}


@pytest.fixture
async def migration(s3_server: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    faults: dict[str, Any] = getattr(request, "param", {})
    names = {TARGET: [job_name(job_id) for job_id in EXISTING]}
    async with local_stack(
        workdir=tmp_path,
        jobs=100,
        s3_endpoint=s3_server,
        bucket=f"m-{uuid.uuid4().hex[:12]}",
        target_projects=(TARGET,),
        existing_names=names,
        faults={"seed": 11, **faults},
        **FAST,
    ) as stack:
        yield stack


async def target_jobs(stack: Any) -> dict[str, int]:
    url = f"{stack.simulator.url}/_sim/projects/{TARGET}/jobs"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        jobs: dict[str, int] = (await response.json())["jobs"]
    return jobs


async def migrate_and_work(stack: Any, batch_id: str, *extra: str, settings: Any = None) -> dict[str, Any]:
    env = settings_env(settings or stack.settings)
    submitted = await run_cli(
        env,
        "migrate",
        "--from-project",
        stack.settings.project_id,
        "--to-project",
        TARGET,
        "--obs-dir",
        f"{stack.bucket}/exports",
        "--job-ids",
        ",".join(map(str, range(1, 21))),
        "--batch-id",
        batch_id,
        "--json",
        *extra,
    )
    assert submitted.json()["to_project"] == TARGET
    worked = await run_cli(env, "work", "--until-empty", limit_s=120)
    assert worked.code == 0, worked.err[-2000:]
    report: dict[str, Any] = (await run_cli(env, "report", batch_id, "--json")).json()
    return report


def rows_by_old(report: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {row["old_job_id"]: row for row in report["job_map"]}


async def test_skip_imports_new_names_and_leaves_the_existing_ones(migration: Any) -> None:
    before = await target_jobs(migration)
    report = await migrate_and_work(migration, "m-skip")
    assert report["state"] == "completed" and report["migration"]["on_conflict"] == "skip"
    assert report["migration"]["to_project"] == TARGET
    rows, held = rows_by_old(report), await target_jobs(migration)
    assert report["totals"]["imported"] == 18 and report["totals"]["skipped"] == 2
    for old in EXISTING:  # a conflict: the existing job keeps its ID, nothing was overwritten
        assert rows[old]["state"] == "skipped" and rows[old]["new_job_id"] == before[job_name(old)]
    for old, row in rows.items():
        assert row["new_job_id"] == held[job_name(old)], old  # every new ID is what the target holds
    assert len(held) == 20
    env = settings_env(migration.settings)
    job_map = (await run_cli(env, "report", "m-skip", "--job-map")).out
    table = list(csv.DictReader(io.StringIO(job_map)))
    assert list(table[0]) == ["old_job_id", "new_job_id", "state", "remark"] and len(table) == 20
    assert {r["state"] for r in table} == {"imported", "skipped"}
    manifest = [
        json.loads(line) for line in (await run_cli(env, "report", "m-skip", "--jsonl")).out.splitlines()
    ]
    assert [m["new_job_id"] for row in manifest for m in row["job_map"]] == [
        rows[i]["new_job_id"] for i in range(1, 21)
    ]
    written = (migration.settings.report_dir / "m-skip.json").read_text()
    assert json.loads(written)["totals"]["imported"] == 18
    status = await run_cli(env, "status", "m-skip")
    assert "18 imported, 2 skipped, 0 failed; 0 chunks still to import" in status.out


async def test_overwrite_keeps_the_existing_ids_and_imports_the_rest(migration: Any) -> None:
    before = await target_jobs(migration)
    report = await migrate_and_work(migration, "m-over", "--on-conflict", "overwrite")
    rows = rows_by_old(report)
    assert report["totals"]["imported"] == 20 and report["totals"]["skipped"] == 0
    for old in EXISTING:
        assert rows[old]["state"] == "imported" and rows[old]["new_job_id"] == before[job_name(old)]


@pytest.mark.parametrize("migration", [{"p_import_lost": 0.5}], indirect=True)
async def test_lost_import_answers_never_turn_our_imports_into_conflicts(migration: Any) -> None:
    """Half the imports are applied and their answers lost: the repeat answers -1 for the jobs the first
    try made. Those rows still say imported, with the IDs the target holds; only the names that existed
    before are skipped, and no job is imported twice."""
    report = await migrate_and_work(migration, "m-lost")
    rows, held = rows_by_old(report), await target_jobs(migration)
    assert migration.simulator.stats()["imports_lost"] > 0
    assert report["totals"]["imported"] == 18 and report["totals"]["skipped"] == 2
    assert {old for old, row in rows.items() if row["state"] == "skipped"} == set(EXISTING)
    for old, row in rows.items():
        assert row["new_job_id"] == held[job_name(old)], old
    assert len(held) == 20  # 2 that were there and 18 of ours: none twice


@pytest.mark.parametrize("migration", [{"latency_ms": 40}], indirect=True)
async def test_kill_9_during_the_imports_costs_only_a_retry(migration: Any) -> None:
    """A worker killed mid-migration: the next one copies and imports what is left; no job is imported
    twice (the target holds each name once), and every row has the ID the target really holds."""
    env = settings_env(migration.settings)
    ids = ",".join(map(str, range(1, 61)))
    args = ("--from-project", migration.settings.project_id, "--to-project", TARGET, "--obs-dir")
    submitted = await run_cli(
        env, "migrate", *args, f"{migration.bucket}/e", "--job-ids", ids, "--batch-id", "m-kill"
    )
    assert submitted.code == 0, submitted.err
    first = await asyncio.create_subprocess_exec(
        *CLI,
        "work",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while migration.simulator.stats()["imports"] < 3:
        assert loop.time() < deadline, "the migration never got to its imports"
        await asyncio.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    worked = await run_cli(env, "work", "--until-empty", limit_s=120)
    assert worked.code == 0, worked.err[-2000:]
    report = (await run_cli(env, "report", "m-kill", "--json")).json()
    rows, held = rows_by_old(report), await target_jobs(migration)
    assert report["state"] == "completed" and len(rows) == 60
    assert {old for old, row in rows.items() if row["state"] == "skipped"} == set(EXISTING)
    assert all(row["new_job_id"] == held[job_name(old)] for old, row in rows.items())
    assert len(held) == 60 and migration.simulator.stats()["jobs_created"] == 58


@pytest.mark.redis
@pytest.mark.parametrize("migration", [{"p_import_lost": 0.5}], indirect=True)
async def test_lost_import_answers_on_redis(migration: Any) -> None:
    """The same on the distributed backend: steps and the snapshot in Redis, the batch run by `work`."""
    prefix = f"test-migration-{uuid.uuid4().hex[:8]}"
    settings = migration.settings.model_copy(
        update={"queue_url": "redis://127.0.0.1:6379/15", "redis_key_prefix": prefix}
    )
    try:
        report = await migrate_and_work(migration, "m-redis", settings=settings)
    finally:
        from exporter.adapters.redis import open_redis

        async with open_redis(settings.queue_url, key_prefix=prefix, consumer_group="exporters") as backend:
            await backend.purge()
    rows, held = rows_by_old(report), await target_jobs(migration)
    assert report["totals"]["imported"] == 18 and report["totals"]["skipped"] == 2
    assert all(row["new_job_id"] == held[job_name(old)] for old, row in rows.items())
    assert len(held) == 20


@dataclass
class CrossRegion:
    stack: Any
    campaign: Path
    target_bucket: str

    async def held(self) -> dict[str, int]:
        url = f"{self.stack.simulators['region-b'].url}/_sim/projects/{TARGET}/jobs"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            jobs: dict[str, int] = (await response.json())["jobs"]
        return jobs


@asynccontextmanager
async def cross_region(
    s3_server: str, tmp_path: Path, jobs: int, b_faults: dict[str, Any]
) -> AsyncIterator[CrossRegion]:
    """region-a exports; region-b imports and its DLI reads only its own bucket, behind another OBS
    endpoint (the same S3 server under another host name), so the ZIPs are streamed across."""
    source, target_bucket = "5a" * 16, f"b-{uuid.uuid4().hex[:12]}"
    sims = {
        "region-a": RegionSim(projects=(source,), rate_limit=50),
        "region-b": RegionSim(
            projects=("5b" * 16,),
            target_projects=(TARGET,),
            readable_buckets=(target_bucket,),
            faults=b_faults,
        ),
    }
    async with local_regions(
        workdir=tmp_path, regions=sims, s3_endpoint=s3_server, bucket=f"a-{uuid.uuid4().hex[:12]}", **FAST
    ) as stack:
        await create_bucket(s3_server, target_bucket)
        other_obs = s3_server.replace("127.0.0.1", "localhost")
        path = tmp_path / "move.toml"
        path.write_text(
            f'campaign_id = "move"\nobs_dir = "{stack.bucket}/{{campaign_id}}/{{region}}"\n'
            f'[regions.region-a]\ndli_endpoint = "{stack.simulators["region-a"].url}"\n'
            f'obs_endpoint = "{s3_server}"\n'
            f'[regions.region-b]\ndli_endpoint = "{stack.simulators["region-b"].url}"\n'
            f'obs_endpoint = "{other_obs}"\n'
            f'[[targets]]\nregion = "region-a"\nproject_id = "{source}"\n'
            f"job_ids = {list(range(1, jobs + 1))}\n"
            f'[targets.import_to]\nregion = "region-b"\nproject_id = "{TARGET}"\n'
            f'obs_dir = "{target_bucket}/imported"\n'
        )
        yield CrossRegion(stack, path, target_bucket)


async def test_cross_region_migration_from_a_campaign_copies_the_zips_first(
    s3_server: str, tmp_path: Path
) -> None:
    """A campaign target exported in region-a and imported into region-b: ZIPs copied, then imported."""
    async with cross_region(s3_server, tmp_path, 30, {}) as move:
        env = settings_env(move.stack.settings)
        batch_ids = (await run_cli(env, "campaign", "submit", str(move.campaign), "--json")).json()[
            "batch_ids"
        ]
        worked = await run_cli(env, "work", "--until-empty", limit_s=120)
        assert worked.code == 0, worked.err[-2000:]
        assert "chunk.copied" in worked.err + worked.out  # the copy stage ran before the imports
        report = (await run_cli(env, "report", batch_ids[0], "--json")).json()
        campaign = (await run_cli(env, "campaign", "report", "move", "--json")).json()
        held = await move.held()
    assert campaign["totals"]["imported"] == 30 and campaign["batches"][0]["import"]["imported"] == 30
    assert report["migration"] == {
        "to_project": TARGET,
        "to_region": "region-b",
        "to_obs_dir": f"{move.target_bucket}/imported",
        "on_conflict": "skip",
    }
    assert report["totals"]["imported"] == 30 and len(held) == 30
    assert all(row["new_job_id"] == held[job_name(row["old_job_id"])] for row in report["job_map"])


async def test_kill_9_during_the_copies_costs_only_a_retry(s3_server: str, tmp_path: Path) -> None:
    """The worker is killed once ZIPs are being copied and before any import (region-b's DLI answers
    slowly, so the snapshot listing holds the imports back): the next worker finishes the migration."""
    async with cross_region(s3_server, tmp_path, 60, {"latency_ms": 400}) as move:
        env = settings_env(move.stack.settings)
        batch_ids = (await run_cli(env, "campaign", "submit", str(move.campaign), "--json")).json()[
            "batch_ids"
        ]
        first = await asyncio.create_subprocess_exec(
            *CLI,
            "work",
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert first.stdout is not None
        while b"chunk.copied" not in await asyncio.wait_for(first.stdout.readline(), 60):
            pass
        assert move.stack.simulators["region-b"].stats()["imports"] == 0
        first.send_signal(signal.SIGKILL)
        await first.wait()
        worked = await run_cli(env, "work", "--until-empty", limit_s=120)
        assert worked.code == 0, worked.err[-2000:]
        report = (await run_cli(env, "report", batch_ids[0], "--json")).json()
        held = await move.held()
    assert report["totals"]["imported"] == 60 and len(held) == 60
    assert all(row["new_job_id"] == held[job_name(row["old_job_id"])] for row in report["job_map"])
