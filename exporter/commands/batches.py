"""`status` and `report`: what the ledger says about batches, so they work from any machine, at any time."""

from __future__ import annotations

import json
import time

import click
from rich.console import Console

from exporter.app import Stores, open_stores
from exporter.commands.common import command_settings, require_batch, run_command
from exporter.errors import InvalidInput
from exporter.migration.report import (
    CSV_HEADER,
    JobMaps,
    csv_line,
    job_map_dicts,
    migration_header,
    migration_totals,
)
from exporter.models import BatchInfo
from exporter.paces import endpoint_paces, pace_line
from exporter.progress import batch_lines, follow_progress, print_batches
from exporter.report import report_rows, stream_report
from exporter.settings import Settings

__all__ = ["report", "status"]


@click.command()
@click.argument("batch_id", required=False)
@click.option("--campaign", help="Without BATCH_ID: only the batches of this campaign, with their sum.")
@click.option("--json", "as_json", is_flag=True, help="Print the batch (or the list) as JSON.")
@click.option("--watch", is_flag=True, help="Follow with a live progress bar until the batch ends.")
@click.option("--timeout", type=float, default=None, help="With --watch: give up after this many seconds.")
@click.pass_context
def status(
    ctx: click.Context,
    batch_id: str | None,
    campaign: str | None,
    as_json: bool,
    watch: bool,
    timeout: float | None,
) -> None:
    """How far a batch is (jobs verified and failed, chunks done, ETA), or every recent batch at a glance."""
    settings = command_settings(ctx)

    async def go() -> None:
        async with open_stores(settings) as stores:
            if batch_id is None:
                await _overview(stores, settings, campaign, as_json=as_json)
            elif as_json:
                click.echo((await require_batch(stores.ledger, batch_id, settings)).model_dump_json())
            else:
                await _one(stores, settings, batch_id, watch=watch, deadline_seconds=timeout)

    run_command(go())


async def _one(
    stores: Stores, settings: Settings, batch_id: str, *, watch: bool, deadline_seconds: float | None
) -> None:
    """One batch for people; with `watch`, a live bar first, until the batch ends or the deadline passes."""
    info = await require_batch(stores.ledger, batch_id, settings)
    if watch:
        followed = await follow_progress(
            lambda: stores.ledger.get_batch(batch_id), console=Console(), deadline_seconds=deadline_seconds
        )
        info = followed or info
    lines = batch_lines(info, time.time())
    if info.migration is not None:
        lines.append(await _migration_line(stores, info))
    click.echo("\n".join(lines))


async def _migration_line(stores: Stores, info: BatchInfo) -> str:
    """Import progress: where to, how many jobs imported, skipped, failed, and the chunks still open."""
    header = migration_header(info) or {}
    tally = await stores.migrations.tally(info.batch_id)
    left = max(0, info.totals.chunks_verified - tally.confirmed - tally.failed)
    where = f"{header.get('to_project')}" + (f" in {header['to_region']}" if header.get("to_region") else "")
    return (
        f"  migration to {where} ({header.get('on_conflict')}): {tally.imported} imported, "
        f"{tally.skipped} skipped, {tally.import_failed} failed; {left} chunks still to import"
    )


async def _overview(stores: Stores, settings: Settings, campaign: str | None, *, as_json: bool) -> None:
    """Every recent batch (or a campaign's), as a table with a total row or as a JSON list; then the
    pace of each DLI endpoint (fixed, or what the replicas learned)."""
    batches = [b for b in await stores.ledger.list_batches() if campaign in (None, b.campaign)]
    if as_json:
        click.echo(json.dumps([b.model_dump(mode="json") for b in batches]))
        return
    title = f"campaign {campaign}" if campaign else None
    console = Console()
    print_batches(console, batches, time.time(), title)
    for pace in endpoint_paces(settings, await stores.rates.all()):
        console.print(pace_line(pace.endpoint, pace), markup=False, highlight=False)


@click.command()
@click.argument("batch_id")
@click.option("--json", "fmt", flag_value="json", default=True, help="The whole report as JSON (default).")
@click.option("--jsonl", "fmt", flag_value="jsonl", help="The manifest: one JSON line per chunk.")
@click.option(
    "--job-map",
    "fmt",
    flag_value="job-map",
    help="A migration's map: CSV old_job_id,new_job_id,state,remark.",
)
@click.pass_context
def report(ctx: click.Context, batch_id: str, fmt: str) -> None:
    """Print a batch's report (from the ledger, so it works while the batch runs)."""
    settings = command_settings(ctx)

    async def go() -> None:
        async with open_stores(settings) as stores:
            info = await require_batch(stores.ledger, batch_id, settings)
            chunks = stores.ledger.chunks(batch_id)
            if fmt == "jsonl":
                maps = JobMaps(stores.migrations, batch_id) if info.migration is not None else None
                async for row in report_rows(chunks, maps):
                    click.echo(row)
            elif fmt == "job-map":
                await _print_job_map(stores, info)
            else:
                await _print_report(stores, info)

    run_command(go())


async def _print_report(stores: Stores, info: BatchInfo) -> None:
    chunks = stores.ledger.chunks(info.batch_id)
    job_map = totals = None
    if info.migration is not None:
        job_map = JobMaps(stores.migrations, info.batch_id)
        totals = await migration_totals(stores.migrations, info.batch_id)
    async for piece in stream_report(info, chunks, job_map, totals):
        click.echo(piece, nl=False)


async def _print_job_map(stores: Stores, info: BatchInfo) -> None:
    """CSV `old_job_id,new_job_id,state,remark`: the file a migration team hands to application owners."""
    if info.migration is None:
        raise InvalidInput(f"batch {info.batch_id!r} is not a migration: it has no job map")
    click.echo(csv_line(CSV_HEADER))
    async for row in job_map_dicts(stores.migrations, info.batch_id):
        click.echo(csv_line([row[name] for name in CSV_HEADER]))
