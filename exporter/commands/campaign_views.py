"""`campaign status` and `campaign report`: a campaign as the ledger sees it, from any machine."""

from __future__ import annotations

import json
import time

import click
from rich.console import Console

from exporter.app import Stores, open_stores
from exporter.campaign.views import CampaignView, campaign_job_lines, campaign_report, load_view
from exporter.campaign_progress import campaign_status_json, follow_campaign, print_campaign
from exporter.commands.common import command_settings, run_command
from exporter.errors import InvalidInput
from exporter.paces import Pace, campaign_paces
from exporter.settings import Settings, mask_url_password

__all__ = ["campaign_report_command", "campaign_status", "require_view"]


async def require_view(stores: Stores, campaign_id: str, settings: Settings) -> CampaignView:
    """The campaign with its batches; InvalidInput naming the (masked) queue URL when there is none."""
    record = await stores.campaigns.get_campaign(campaign_id)
    if record is None:
        raise InvalidInput(f"no campaign {campaign_id!r} in {mask_url_password(settings.queue_url)}")
    return await load_view(record, stores.ledger, stores.migrations)


async def _paces(stores: Stores, settings: Settings, view: CampaignView) -> dict[str, Pace]:
    return await campaign_paces(stores.rates, settings, view.record)


@click.command("status")
@click.argument("campaign_id")
@click.option("--json", "as_json", is_flag=True, help="Print the campaign's progress as JSON.")
@click.option("--watch", is_flag=True, help="Live bars per region and for the campaign, until it ends.")
@click.option("--timeout", type=float, default=None, help="With --watch: give up after this many seconds.")
@click.pass_context
def campaign_status(
    ctx: click.Context, campaign_id: str, as_json: bool, watch: bool, timeout: float | None
) -> None:
    """One row per target (region, project, state, done/total, verified, failed, rate, ETA) and a total."""
    settings = command_settings(ctx)

    async def go() -> None:
        async with open_stores(settings) as stores:
            view = await require_view(stores, campaign_id, settings)
            paces = await _paces(stores, settings, view)
            if as_json:
                click.echo(json.dumps(campaign_status_json(view, time.time(), paces)))
                return
            console = Console()
            if watch:

                async def fetch() -> CampaignView:
                    return await require_view(stores, campaign_id, settings)

                view = await follow_campaign(fetch, console=console, deadline_seconds=timeout) or view
                paces = await _paces(stores, settings, view)
            print_campaign(console, view, time.time(), paces)

    run_command(go())


@click.command("report")
@click.argument("campaign_id")
@click.option("--json", "fmt", flag_value="json", default=True, help="The campaign report as JSON (default).")
@click.option("--jsonl", "fmt", flag_value="jsonl", help="One JSON line per job of the whole campaign.")
@click.pass_context
def campaign_report_command(ctx: click.Context, campaign_id: str, fmt: str) -> None:
    """The campaign's report: its state, totals and batches (or every job, with --jsonl)."""
    settings = command_settings(ctx)

    async def go() -> None:
        async with open_stores(settings) as stores:
            view = await require_view(stores, campaign_id, settings)
            if fmt == "jsonl":
                async for line in campaign_job_lines(view, stores.ledger):
                    click.echo(line)
            else:
                click.echo(json.dumps(campaign_report(view, str(settings.report_dir))))

    run_command(go())
