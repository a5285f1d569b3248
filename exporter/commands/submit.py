"""`dli-exporter submit`: validate a batch from flags and put it on the queue."""

from __future__ import annotations

import json
from typing import Any

import click

from exporter.app import open_stores
from exporter.commands.common import command_settings, run_command
from exporter.commands.selection import require_one_selection, selection_options
from exporter.intake import request_from_flags
from exporter.models import BatchRequest
from exporter.settings import Settings
from exporter.submission import submit_batch

__all__ = ["submit"]


@click.command()
@click.option("--project-id", help="DLI project (default EXPORTER_PROJECT_ID).")
@click.option("--obs-dir", required=True, help="BUCKET[/PREFIX] where DLI writes the ZIPs.")
@selection_options
@click.option("--chunk-size", type=int, help="IDs per export call (default EXPORTER_CHUNK_SIZE).")
@click.option("--batch-id", help="Idempotency key: submitting the same ID twice queues it once.")
@click.option("--campaign", help="Free label grouping batches of one migration.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def submit(ctx: click.Context, /, as_json: bool, **flags: Any) -> None:
    """Validate a batch and put it on the queue."""
    require_one_selection(flags)
    settings = command_settings(ctx)
    result = run_command(_submit(settings, flags))
    click.echo(json.dumps(result) if as_json else _sentence(result))


async def _submit(settings: Settings, flags: dict[str, Any]) -> dict[str, Any]:
    """Validate everything before the queue is opened; then plan and queue (Conflict if the ID is reused)."""
    request = request_from_flags(
        flags,
        project_id=settings.project_id,
        chunk_size=settings.chunk_size,
        max_jobs=settings.max_jobs_per_batch,
    )
    async with open_stores(settings) as stores:
        accepted = await submit_batch(stores.queue, request, stores.ledger)
    return _result(request, accepted=accepted)


def _result(request: BatchRequest, *, accepted: bool) -> dict[str, Any]:
    """The `--json` answer (its keys are a contract)."""
    return {
        "batch_id": request.batch_id,
        "accepted": accepted,
        "jobs": len(request.job_ids or ()),
        "select_all": request.select_all,
        "duplicates_dropped": request.duplicates_dropped,
    }


def _sentence(result: dict[str, Any]) -> str:
    """The answer for people: what was queued, or that nothing was because it had been before."""
    if not result["accepted"]:
        return f"batch {result['batch_id']} was already submitted; nothing queued again"
    what = "all matching jobs" if result["select_all"] else f"{result['jobs']} jobs"
    dropped = result["duplicates_dropped"]
    return f"queued batch {result['batch_id']}: {what}" + (
        f" ({dropped} duplicate IDs dropped)" if dropped else ""
    )
