"""`dli-exporter migrate`: one batch that exports jobs and imports them into another project.

The export side takes `submit`'s selection flags; the destination is `--to-project` (in `--to-region`,
reading the ZIPs from `--to-obs-dir`, which the copy stage fills when it is not the export's own
directory). Regions resolve to endpoints through EXPORTER_DLI_ENDPOINT_TEMPLATE and
EXPORTER_OBS_ENDPOINT_TEMPLATE; without them the default endpoints are used.
"""

from __future__ import annotations

import json
from typing import Any

import click
from pydantic import ValidationError

from exporter.app import open_stores
from exporter.campaign.profiles import profile_problem, with_profile
from exporter.campaign.spec import Problems, RegionSpec, region_route
from exporter.commands.common import command_settings, run_command
from exporter.commands.selection import require_one_selection, selection_options
from exporter.errors import InvalidInput
from exporter.intake import describe_validation_error, request_from_flags
from exporter.models import BatchRequest
from exporter.routes import Destination, OnConflict, RegionRoute
from exporter.settings import Settings
from exporter.submission import submit_batch
from exporter.wiring import known_profiles

__all__ = ["migrate"]


def route_of(region: str | None, settings: Settings, flag: str) -> RegionRoute | None:
    """A region name's endpoints from the templates; None for no region; InvalidInput naming the flag."""
    if region is None:
        return None
    problems = Problems(flag)
    templates = {
        "dli_endpoint": settings.dli_endpoint_template,
        "obs_endpoint": settings.obs_endpoint_template,
    }
    try:
        route = region_route(region, RegionSpec(), templates, problems)
    except ValueError as error:
        raise InvalidInput(f"{flag}: {error}", field=flag.lstrip("-").replace("-", "_")) from None
    if route is None or problems.items:
        raise InvalidInput("; ".join(problems.items) or f"{flag}: cannot derive endpoints for {region!r}")
    return route


@click.command()
@click.option("--from-project", "project_id", required=True, help="The project the jobs are exported from.")
@click.option("--to-project", required=True, help="The project the jobs are imported into.")
@click.option("--obs-dir", required=True, help="BUCKET[/PREFIX] where DLI writes the ZIPs.")
@selection_options
@click.option("--from-region", help="The source project's region (endpoints from the templates).")
@click.option("--to-region", help="The target project's region.")
@click.option("--to-obs-dir", help="Where the target reads the ZIPs (copied there); default: --obs-dir.")
@click.option("--from-credentials", help="Credential profile signing the export side (needs --from-region).")
@click.option("--to-credentials", help="Credential profile signing the import side (needs --to-region).")
@click.option(
    "--on-conflict",
    type=click.Choice([choice.value for choice in OnConflict]),
    default=OnConflict.SKIP.value,
    show_default=True,
    help="A job of the same name in the target: skip it, overwrite it, or fail the row.",
)
@click.option("--chunk-size", type=int, help="IDs per export call (default EXPORTER_CHUNK_SIZE).")
@click.option("--batch-id", help="Idempotency key: submitting the same migration twice queues it once.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def migrate(ctx: click.Context, /, as_json: bool, **flags: Any) -> None:
    """Queue one migration batch: export, verify, copy (when needed), import, confirm."""
    require_one_selection(flags)
    settings = command_settings(ctx)

    async def go() -> dict[str, Any]:
        request = _request(settings, flags)
        async with open_stores(settings) as stores:
            accepted = await submit_batch(stores.queue, request, stores.ledger)
        return _result(request, accepted=accepted)

    result = run_command(go())
    click.echo(json.dumps(result) if as_json else _sentence(result))


def _request(settings: Settings, flags: dict[str, Any]) -> BatchRequest:
    request = request_from_flags(
        flags,
        project_id=settings.project_id,
        chunk_size=settings.chunk_size,
        max_jobs=settings.max_jobs_per_batch,
    )
    known = known_profiles(settings)
    target = route_of(flags["to_region"], settings, "--to-region")
    try:
        destination = Destination(
            project_id=flags["to_project"],
            region=signed_by(target, flags["to_credentials"], "--to-credentials", "--to-region", known),
            obs_dir=flags["to_obs_dir"],
            on_conflict=OnConflict(flags["on_conflict"]),
        )
    except ValidationError as error:
        raise InvalidInput(f"destination: {describe_validation_error(error)}", field="to_project") from None
    source = route_of(flags["from_region"], settings, "--from-region")
    region = signed_by(source, flags["from_credentials"], "--from-credentials", "--from-region", known)
    return request.model_copy(update={"migration": destination, "region": region})


def signed_by(
    route: RegionRoute | None, name: str | None, flag: str, region_flag: str, known: frozenset[str] | None
) -> RegionRoute | None:
    """The route signed with profile `name`; InvalidInput naming `flag` for a profile without a region
    (the default endpoints always sign with the default profile), or an invalid or unknown name."""
    if name is None:
        return route
    field = flag.lstrip("-").replace("-", "_")
    if route is None:
        raise InvalidInput(
            f"{flag} needs {region_flag}: without a region the default profile signs", field=field
        )
    problem = profile_problem(name, known)
    if problem is not None:
        raise InvalidInput(f"{flag}: {problem}", field=field)
    return with_profile(route, name)


def _result(request: BatchRequest, *, accepted: bool) -> dict[str, Any]:
    """The `--json` answer (its keys are a contract)."""
    destination = request.migration
    assert destination is not None  # noqa: S101 - _request sets it
    return {
        "batch_id": request.batch_id,
        "accepted": accepted,
        "jobs": len(request.job_ids or ()),
        "select_all": request.select_all,
        "to_project": destination.project_id,
        "to_region": destination.region.name if destination.region else None,
        "on_conflict": destination.on_conflict.value,
    }


def _sentence(result: dict[str, Any]) -> str:
    if not result["accepted"]:
        return f"migration {result['batch_id']} was already submitted; nothing queued again"
    what = "all matching jobs" if result["select_all"] else f"{result['jobs']} jobs"
    return f"queued migration {result['batch_id']}: {what} into project {result['to_project']}"
