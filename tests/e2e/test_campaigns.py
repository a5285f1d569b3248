"""Campaigns over real sockets: three projects in two simulated regions, each held to its own limit.

Every command runs as `python -m exporter.cli` against simulators (one per region, own port and strict
limit) and the S3 server; the ledger is SQLite or the real Redis. What a user checks: each region's
gateway saw (almost) no 429 while the faster region ran above the slower one's limit, the campaign
report adds up, its files are written, a second submit queues nothing, and a `kill -9` costs a retry.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import CLI, Ran, run_cli

from exporter.devstack import RegionSim, RegionsStack, local_regions, settings_env

pytestmark = [pytest.mark.slow]

P1, P2, P3 = "a1" * 16, "a2" * 16, "b1" * 16
LIMITS = {"region-a": 20.0, "region-b": 40.0}
FAST = {
    "poll_interval": 0.05,
    "verify_grace_seconds": 5,
    "retry_initial_backoff": 0.02,
    "rate_headroom": 0.1,
    "concurrency": 8,
    "lease_seconds": 3,
    # region-a's gateway is EXPORTER_DLI_ENDPOINT's: one gateway, one limiter, at EXPORTER_RATE_LIMIT
    "rate_limit": LIMITS["region-a"],
}
JOBS = 1000  # region-b's target is `all = true`: every job of its project


async def cli(env: dict[str, str], *args: str) -> Ran:
    return await run_cli(env, *args, limit_s=120)


def campaign_file(stack: RegionsStack, workdir: Path, campaign_id: str = "tenant-1") -> Path:
    """Three targets: P1 by IDs, P2 by an IDs file (both region-a), P3 whole (region-b)."""
    (workdir / "p2-ids.txt").write_text("# P2's jobs\n" + "\n".join(map(str, range(1, 201))) + "\n")
    regions = "".join(
        f'[regions.{name}]\ndli_endpoint = "{sim.url}"\nobs_endpoint = "{stack.s3_endpoint}"\n'
        f"rate_limit = {LIMITS[name]}\n\n"
        for name, sim in stack.simulators.items()
    )
    text = (
        f'campaign_id = "{campaign_id}"\n'
        f'obs_dir = "{stack.bucket}/{{campaign_id}}/{{region}}/{{project_id}}"\n'
        f"chunk_size = 10\n\n{regions}"
        f'[[targets]]\nregion = "region-a"\nproject_id = "{P1}"\njob_ids = {list(range(1, 401))}\n\n'
        f'[[targets]]\nregion = "region-a"\nproject_id = "{P2}"\njob_ids_file = "p2-ids.txt"\n\n'
        f'[[targets]]\nregion = "region-b"\nproject_id = "{P3}"\nall = true\n'
    )
    path = workdir / "campaign.toml"
    path.write_text(text)
    return path


@dataclass
class RateWatch:
    """Each simulator's export count sampled over time (the simulators live in this process)."""

    stack: RegionsStack
    samples: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event, limit_s: float = 120) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while not stop.is_set() and loop.time() < deadline:
            for name, sim in self.stack.simulators.items():
                self.samples.setdefault(name, []).append((loop.time(), sim.stats()["exports"]))
            await asyncio.sleep(0.1)

    def busy_rate(self, name: str) -> float:
        """Exports per second between the first and the last export this region saw."""
        points = self.samples[name]
        first = next(t for t, n in points if n > 0)
        total = points[-1][1]
        last = next(t for t, n in points if n == total)
        return (total - 1) / max(last - first, 1e-6)


@pytest.fixture
async def regions(s3_server: str, tmp_path: Path) -> AsyncIterator[RegionsStack]:
    sims = {
        "region-a": RegionSim(projects=(P1, P2), rate_limit=LIMITS["region-a"], faults={"latency_ms": 20}),
        "region-b": RegionSim(projects=(P3,), rate_limit=LIMITS["region-b"], faults={"latency_ms": 20}),
    }
    async with local_regions(
        workdir=tmp_path,
        regions=sims,
        s3_endpoint=s3_server,
        bucket=f"c-{uuid.uuid4().hex[:12]}",
        jobs=JOBS,
        **FAST,
    ) as stack:
        yield stack


def check_campaign(report: dict[str, Any], stack: RegionsStack) -> None:
    """The report adds up: 400 + 200 + 1000 jobs, all verified, three completed batches."""
    assert report["campaign_id"] == "tenant-1" and report["state"] == "completed"
    totals = report["totals"]
    assert totals["jobs"] == totals["verified"] == 1600 and totals["failed"] == 0
    assert totals["batches"] == totals["batches_finished"] == 3
    by_project = {b["project_id"]: b for b in report["batches"]}
    assert [by_project[p]["totals"]["verified"] for p in (P1, P2, P3)] == [400, 200, 1000]
    assert {b["region"] for b in report["batches"]} == {"region-a", "region-b"}
    assert by_project[P3]["obs_dir"] == f"{stack.bucket}/tenant-1/region-b/{P3}"
    for name, sim in stack.simulators.items():
        stats = sim.stats()
        assert stats["throttled"] <= 0.01 * stats["exports"], (name, stats["throttled"])


async def test_campaign_over_two_regions_holds_each_to_its_own_limit(
    regions: RegionsStack, tmp_path: Path
) -> None:
    env = settings_env(regions.settings)
    path = campaign_file(regions, tmp_path)
    submitted = (await cli(env, "campaign", "submit", str(path), "--json")).json()
    assert submitted["campaign_id"] == "tenant-1"
    assert submitted["batch_ids"] == [
        f"tenant-1.region-a.{P1}",
        f"tenant-1.region-a.{P2}",
        f"tenant-1.region-b.{P3}",
    ]
    assert submitted["queued"] == submitted["batch_ids"]
    watch, stop = RateWatch(regions), asyncio.Event()
    sampler = asyncio.create_task(watch.run(stop))
    worked = await cli(env, "work", "--until-empty")
    stop.set()
    await sampler
    assert worked.code == 0, worked.err[-2000:]
    report = (await cli(env, "campaign", "report", "tenant-1", "--json")).json()
    check_campaign(report, regions)
    # region-b ran above region-a's limit: each region had its own limiter, not one shared pace
    assert watch.busy_rate("region-b") > LIMITS["region-a"] * 1.2, watch.busy_rate("region-b")
    lines = (await cli(env, "campaign", "report", "tenant-1", "--jsonl")).out.splitlines()
    assert len(lines) == 1600 and {json.loads(line)["state"] for line in lines} == {"verified"}
    written = json.loads((regions.settings.report_dir / "campaign-tenant-1.json").read_text())
    assert written["totals"] == report["totals"]
    again = (await cli(env, "campaign", "submit", str(path), "--json")).json()
    assert again["queued"] == [] and again["batch_ids"] == submitted["batch_ids"]
    status = await cli(env, "campaign", "status", "tenant-1")
    assert status.code == 0 and "region-b" in status.out and "completed" in status.out


async def test_kill_9_mid_campaign_on_redis_costs_only_a_retry(regions: RegionsStack, tmp_path: Path) -> None:
    prefix = f"test-campaigns-{uuid.uuid4().hex[:8]}"
    settings = regions.settings.model_copy(
        update={"queue_url": "redis://127.0.0.1:6379/15", "redis_key_prefix": prefix}
    )
    env = settings_env(settings)
    try:
        assert (await cli(env, "campaign", "submit", str(campaign_file(regions, tmp_path)))).code == 0
        first = await asyncio.create_subprocess_exec(
            *CLI,
            "work",
            env={**os.environ, **env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await until_exported(regions, 400)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        worked = await cli(env, "work", "--until-empty")
        assert worked.code == 0, worked.err[-2000:]
        check_campaign((await cli(env, "campaign", "report", "tenant-1", "--json")).json(), regions)
        for sim in regions.simulators.values():  # at most the in-flight chunks were exported twice
            stats = sim.stats()
            assert stats["job_ids_exported_more_than_once"] <= FAST["concurrency"] * 10, (
                stats["repeated_job_ids_by_project"],
                stats["exports"],
                stats["jobs_exported"],
                stats["throttled"],
            )
    finally:
        from exporter.adapters.redis import open_redis

        async with open_redis(settings.queue_url, key_prefix=prefix, consumer_group="exporters") as backend:
            await backend.purge()


async def until_exported(stack: RegionsStack, jobs: int, limit_s: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while sum(s.stats()["jobs_exported"] for s in stack.simulators.values()) < jobs:
        assert loop.time() < deadline, "the campaign never got going"
        await asyncio.sleep(0.05)


async def test_all_projects_discovers_the_account_through_iam(regions: RegionsStack, tmp_path: Path) -> None:
    env = settings_env(regions.settings)
    endpoints = "".join(
        f'[regions.{name}]\ndli_endpoint = "{sim.url}"\nobs_endpoint = "{regions.s3_endpoint}"\n'
        for name, sim in regions.simulators.items()
    )
    path = tmp_path / "tenant.toml"
    path.write_text(f'obs_dir = "{regions.bucket}/{{region}}/{{project_id}}"\n{endpoints}')
    only_b = (
        await cli(env, "campaign", "submit", str(path), "--all-projects", "--regions", "region-b", "--json")
    ).json()
    assert [b.split(".", 1)[1] for b in only_b["batch_ids"]] == [f"region-b.{P3}"]
    every = await cli(
        env, "campaign", "submit", str(path), "--all-projects", "--campaign-id", "all", "--json"
    )
    assert sorted(every.json()["batch_ids"]) == sorted(
        f"all.{r}.{p}" for r, p in [("region-a", P1), ("region-a", P2), ("region-b", P3)]
    )
