"""`dli-exporter campaign submit | status | report | list`: many batches described by one file.

`submit` validates the whole file (and the projects IAM lists, with --all-projects) before anything is
queued: every problem names the file, the target's index and the field, and exits 2 with nothing queued.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from exporter.app import discover_projects, open_stores
from exporter.campaign import CampaignPlan, campaign_from_toml, plan_campaign
from exporter.campaign.spec import CampaignError, describe_os_error, problem
from exporter.campaign.submission import CampaignSubmitted, submit_campaign
from exporter.campaign.views import campaign_report, load_view
from exporter.commands.campaign_views import campaign_report_command, campaign_status
from exporter.commands.common import command_settings, run_command
from exporter.routes import check_region_name
from exporter.settings import Settings
from exporter.wiring import plan_defaults

__all__ = ["campaign"]


@click.group()
def campaign() -> None:
    """Campaigns: one batch per region and project, from a TOML file (see config/campaign.toml)."""


def _regions(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    try:
        return [check_region_name(name) for name in names]
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--regions") from None


@campaign.command("submit")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--campaign-id", help="Overrides the file's campaign_id (the idempotency key).")
@click.option("--all-projects", is_flag=True, help="Add every project of the account (IAM GET /v3/projects).")
@click.option("--regions", help="With --all-projects: only these regions (comma-separated).")
@click.option("--json", "as_json", is_flag=True, help="Print the campaign ID and its batch IDs as JSON.")
@click.pass_context
def submit(
    ctx: click.Context,
    file: Path,
    campaign_id: str | None,
    all_projects: bool,
    regions: str | None,
    as_json: bool,
) -> None:
    """Validate a campaign file and queue one batch per target (again: nothing new is queued)."""
    if regions is not None and not all_projects:
        raise click.UsageError("--regions filters the projects --all-projects discovers; add --all-projects")
    wanted = _regions(regions)
    settings = command_settings(ctx)

    async def go() -> CampaignSubmitted:
        plan = await _plan(settings, file, campaign_id, all_projects=all_projects, regions=wanted)
        async with open_stores(settings) as stores:
            return await submit_campaign(plan, stores.campaigns, stores.queue, stores.ledger)

    result = run_command(go())
    answer = {"campaign_id": result.campaign_id, "batch_ids": result.batch_ids, "queued": result.queued}
    click.echo(json.dumps(answer) if as_json else _sentence(result))


async def _plan(
    settings: Settings,
    file: Path,
    campaign_id: str | None,
    *,
    all_projects: bool,
    regions: list[str] | None,
) -> CampaignPlan:
    """Read, discover (with --all-projects), and plan; CampaignError lists every problem."""
    try:
        content = await asyncio.to_thread(file.read_bytes)
    except OSError as error:
        raise CampaignError([problem(str(file), "", f"cannot read: {describe_os_error(error)}")]) from None
    spec = campaign_from_toml(content, str(file))
    discovered = await discover_projects(settings, regions) if all_projects else []
    return plan_campaign(
        spec,
        source=str(file),
        base_dir=file.parent,
        defaults=plan_defaults(settings),
        campaign_id=campaign_id,
        discovered=discovered,
        digest_of=hashlib.sha256(content).hexdigest(),
    )


def _sentence(result: CampaignSubmitted) -> str:
    if not result.queued:
        return f"campaign {result.campaign_id} was already submitted; nothing queued again"
    return f"queued campaign {result.campaign_id}: {len(result.queued)} of {len(result.batch_ids)} batches"


@campaign.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the campaigns as JSON.")
@click.pass_context
def list_campaigns(ctx: click.Context, as_json: bool) -> None:
    """Recent campaigns with their state and progress."""
    settings = command_settings(ctx)

    async def go() -> list[dict[str, Any]]:
        async with open_stores(settings) as stores:
            records = await stores.campaigns.list_campaigns()
            return [campaign_report(await load_view(r, stores.ledger, stores.migrations)) for r in records]

    reports = run_command(go())
    if as_json:
        click.echo(json.dumps([{k: v for k, v in r.items() if k != "batches"} for r in reports]))
        return
    console = Console()
    for report in reports:
        totals = report["totals"]
        done = totals["verified"] + totals["failed"]
        console.print(
            f"{report['campaign_id']}: {report['state']}, {done}/{totals['jobs']} jobs done "
            f"({totals['verified']} verified, {totals['failed']} failed), {totals['batches']} batches, "
            f"created {time.strftime('%Y-%m-%d %H:%M', time.gmtime(report['created_at']))} UTC",
            markup=False,
            highlight=False,
        )


campaign.add_command(campaign_status)
campaign.add_command(campaign_report_command)
