"""`dli-exporter demo`: a whole campaign over two regions on this machine, faults included, then its report.

Two DLI simulators (ap-southeast-1 with one project, cn-north-4 with two, each with its own gateway
limit, some throttling, 5xx, resets, malformed answers and late ZIPs) + a local S3 server + the embedded
SQLite queue and ledger. The campaign is a file in the workdir, planned and submitted the way
`dli-exporter campaign submit` does, so what the demo shows is what a user runs. A few unknown job IDs,
repeated ones and one malformed queue message show how failures, duplicates and dead letters look.
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

from exporter.app import Runtime, open_runtime
from exporter.campaign import CampaignPlan, campaign_from_toml, plan_campaign
from exporter.campaign.submission import submit_campaign
from exporter.campaign.views import CampaignView, campaign_totals, load_view
from exporter.campaign_progress import follow_campaign, print_campaign
from exporter.devstack import RegionSim, RegionsStack, local_regions
from exporter.logs import configure_logging
from exporter.settings import Settings
from exporter.wiring import plan_defaults

__all__ = ["DEMO_FAULTS", "DEMO_REGIONS", "run_demo"]

CAMPAIGN_ID = "demo"
ASIA, CHINA = "ap-southeast-1", "cn-north-4"
_COMMON = {"latency_ms": 20, "latency_jitter_ms": 15, "p_late": 0.05, "late_seconds": 1.5, "seed": 7}
DEMO_FAULTS: dict[str, dict[str, Any]] = {
    ASIA: {**_COMMON, "p_503": 0.03, "p_reset": 0.01},
    CHINA: {**_COMMON, "p_500": 0.01, "p_503": 0.02, "p_malformed": 0.01, "p_not_success": 0.01},
}
# Each region's gateway limit (requests/s); the campaign file tells the exporter the same. The region
# with two targets comes first: once its two batches fill its slots (EXPORTER_MAX_BATCHES = 2), the
# worker claims the other region's batch at once (listed first, a one-target region would hold a slot
# that leaves the second batch of the other region waiting).
DEMO_REGIONS = {
    CHINA: RegionSim(
        projects=("c4e10000000000000000000000000001", "c4e10000000000000000000000000002"),
        rate_limit=30,
        faults=DEMO_FAULTS[CHINA],
    ),
    ASIA: RegionSim(projects=("a5e10000000000000000000000000001",), rate_limit=20, faults=DEMO_FAULTS[ASIA]),
}
UNKNOWN_IDS = 12  # half in a target of each region
REPEATED = (1, 2, 3)
_DEADLINE_SECONDS = 900.0

_STACK_SETTINGS: dict[str, Any] = {
    # The first region's DLI endpoint is also EXPORTER_DLI_ENDPOINT, and a route naming the default
    # endpoint shares the default limiter: it must pace at that region's limit.
    "rate_limit": DEMO_REGIONS[CHINA].rate_limit,
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


def run_demo(*, jobs: int, workdir: Path) -> int:
    """Run the campaign in a fresh workdir; 0 when all good IDs verified and all unknown ones failed alone."""
    if jobs < len(_targets()):
        Console(stderr=True).print(f"--jobs must be at least {len(_targets())} (one per target)")
        return 2
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    configure_logging("console", "error")
    return asyncio.run(_campaign(Console(), jobs, workdir))


def _targets() -> list[tuple[str, str]]:
    return [(region, project) for region, sim in DEMO_REGIONS.items() for project in sim.projects]


def _selections(jobs: int) -> list[tuple[str, str, list[int]]]:
    """(region, project, job IDs) per target: the `jobs` good IDs shared out (the first target gets half),
    unknown IDs (beyond the simulators' 1..jobs) in each region's first target, the repeats in the first."""
    targets = _targets()
    shares = [jobs // 2] + [jobs // (2 * (len(targets) - 1))] * (len(targets) - 1)
    shares[-1] += jobs - sum(shares)
    unknown = iter(range(jobs + 1001, jobs + 1001 + UNKNOWN_IDS))
    seen: set[str] = set()
    selections: list[tuple[str, str, list[int]]] = []
    for (region, project), share in zip(targets, shares, strict=True):
        ids = list(range(1, share + 1))
        if region not in seen:
            seen.add(region)
            ids += [next(unknown) for _ in range(UNKNOWN_IDS // len(DEMO_REGIONS))]
        if not selections:
            ids += REPEATED
        selections.append((region, project, ids))
    return selections


def _write_campaign(workdir: Path, stack: RegionsStack, jobs: int) -> Path:
    """The campaign file a user would write, each target's IDs in a file beside it."""
    lines = [
        f'campaign_id = "{CAMPAIGN_ID}"',
        f'obs_dir = "{stack.bucket}/campaign-2026/{{region}}/{{project_id}}"',
    ]
    for region, sim in DEMO_REGIONS.items():
        lines += ["", f"[regions.{region}]", f'dli_endpoint = "{stack.simulators[region].url}"']
        lines += [f'obs_endpoint = "{stack.s3_endpoint}"', f"rate_limit = {sim.rate_limit:g}"]
    for region, project, ids in _selections(jobs):
        ids_file = workdir / f"ids-{region}-{project[-4:]}.txt"
        ids_file.write_text("".join(f"{job_id}\n" for job_id in ids), encoding="utf-8")
        lines += ["", "[[targets]]", f'region = "{region}"', f'project_id = "{project}"']
        lines.append(f'job_ids_file = "{ids_file.name}"')
    path = workdir / "campaign.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _plan(path: Path, settings: Settings) -> CampaignPlan:
    spec = campaign_from_toml(path.read_bytes(), str(path))
    return plan_campaign(spec, source=str(path), base_dir=path.parent, defaults=plan_defaults(settings))


async def _campaign(console: Console, jobs: int, workdir: Path) -> int:
    async with local_regions(workdir=workdir, regions=DEMO_REGIONS, jobs=jobs, **_STACK_SETTINGS) as stack:
        for region, simulator in stack.simulators.items():
            limit = DEMO_REGIONS[region].rate_limit
            console.print(f"[bold]DLI {region}[/] {simulator.url} ({limit:g} req/s)")
        console.print(f"[bold]S3[/] {stack.s3_endpoint}")
        plan = _plan(_write_campaign(workdir, stack, jobs), stack.settings)
        started = time.monotonic()
        view, parked = await _run(console, stack.settings, plan)
        elapsed = time.monotonic() - started
        stats = {region: simulator.stats() for region, simulator in stack.simulators.items()}
    _print_summary(console, view, elapsed, stats, parked, workdir)
    totals = campaign_totals(view.infos)
    return 0 if totals["failed"] == UNKNOWN_IDS and totals["verified"] == jobs else 1


async def _run(console: Console, settings: Settings, plan: CampaignPlan) -> tuple[CampaignView, list[str]]:
    """Submit the campaign and one malformed message, work the queue with live bars per region; the
    campaign at the end and the dead letters' reasons."""
    async with open_runtime(settings, consumer="demo") as runtime:
        stores = runtime.stores
        await submit_campaign(plan, stores.campaigns, stores.queue, stores.ledger)
        # An older producer's message, queued as it is: the worker parks it with its reason.
        await stores.queue.put("broken", '{"batch_id": "broken", "job_ids": "not a list"}')
        ids = sum(len(r.job_ids or ()) for r in plan.requests)
        _say(
            console,
            f"submitted campaign {plan.campaign_id}: {len(plan.requests)} batches, {ids} IDs "
            f"({UNKNOWN_IDS} unknown to DLI, {len(REPEATED)} repeated) and one malformed message",
        )
        worker = asyncio.create_task(runtime.worker.run(until_empty=True))
        followed = await follow_campaign(
            lambda: _view(runtime, plan.campaign_id), console=console, deadline_seconds=_DEADLINE_SECONDS
        )
        await worker
        view = await _view(runtime, plan.campaign_id) or followed
        parked = await stores.queue.dead_letters()
    assert view is not None  # noqa: S101 - the campaign was just submitted
    return view, [p.reason for p in parked]


async def _view(runtime: Runtime, campaign_id: str) -> CampaignView | None:
    record = await runtime.stores.campaigns.get_campaign(campaign_id)
    return None if record is None else await load_view(record, runtime.stores.ledger)


def _print_summary(
    console: Console,
    view: CampaignView,
    elapsed: float,
    stats: dict[str, dict[str, Any]],
    parked: list[str],
    workdir: Path,
) -> None:
    print_campaign(console, view, time.time())
    table = Table(title="what happened", show_header=False)
    table.add_row("wall time", f"{elapsed:.1f}s")
    dropped = sum(info.duplicates_dropped for info in view.infos if info is not None)
    table.add_row("duplicate IDs dropped", str(dropped))
    for region, stat in stats.items():
        faults = ", ".join(
            f"{kind} x{count}" for kind, count in sorted(dict(stat.get("faults") or {}).items())
        )
        table.add_row(
            f"DLI {region}",
            f"{stat.get('requests_total', '?')} requests, {stat.get('throttled', '?')} 429s (honoured), "
            f"faults: {faults or 'none'}",
        )
    table.add_row("dead letters", "; ".join(parked) or "none")
    console.print(table)
    _print_where(console, workdir)


def _say(console: Console, text: str) -> None:
    """One line as it is: paths and commands are copied from here, so never wrapped or marked up."""
    console.print(text, markup=False, highlight=False, crop=False, soft_wrap=True)


def _print_where(console: Console, workdir: Path) -> None:
    reports = workdir / "reports"
    base = f".venv/bin/dli-exporter --queue-url sqlite:///{workdir}/exporter.db campaign"
    _say(console, f"campaign file:   {workdir / 'campaign.toml'}")
    _say(console, f"campaign report: {reports / f'campaign-{CAMPAIGN_ID}.json'}")
    _say(console, f"per-job lines:   {reports / f'campaign-{CAMPAIGN_ID}.jsonl'}")
    _say(console, f"batch reports:   {reports}/{CAMPAIGN_ID}.<region>.<project>.json (and .jsonl)")
    _say(console, f"status:          {base} status {CAMPAIGN_ID}")
    _say(console, f"full report:     {base} report {CAMPAIGN_ID} --json")
    _print_failures(console, reports / f"campaign-{CAMPAIGN_ID}.jsonl")


def _print_failures(console: Console, lines: Path, most: int = 3) -> None:
    """A few failed jobs of each region: each rejected ID stands alone with DLI's error code."""
    if not lines.is_file():
        _say(console, f"no campaign report lines at {lines}")
        return
    failed: dict[str, list[dict[str, Any]]] = {}
    for row in map(json.loads, lines.read_text(encoding="utf-8").splitlines()):
        if row["state"] == "failed":
            failed.setdefault(row["region"], []).append(row)
    for region, rows in failed.items():
        for row in rows[:most]:
            _say(
                console, f"  failed: {region} {row['project_id']} job {row['job_id']} -> {row['error_code']}"
            )
        if len(rows) > most:
            _say(console, f"  ... and {len(rows) - most} more failed jobs in {region}")
