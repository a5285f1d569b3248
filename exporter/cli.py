"""The `dli-exporter` command line (contract in DESIGN.md).

Each command builds settings (environment, optional TOML file, then flags), runs one coroutine and maps the
exporter's errors onto exit codes: 2 for bad input or settings, 3 when the queue/ledger is unreachable.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from exporter.app import Stores, open_stores, run_daemon
from exporter.errors import ConfigError, InvalidInput, StoreUnavailable
from exporter.intake import build_request, new_batch_id, parse_id_lines, parse_id_list, parse_tags
from exporter.logs import configure_logging
from exporter.models import ListFilters
from exporter.progress import batches_table, describe, eta_seconds, follow_progress
from exporter.report import report_rows, stream_report
from exporter.settings import CONFIG_FILE_VARIABLE, ENV_PREFIX, Settings, load_settings, mask_url_password
from exporter.submission import submit_batch

__all__ = ["main"]

T = TypeVar("T")
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, turning expected errors into a clear message and an exit code."""
    try:
        return asyncio.run(coroutine)
    except (ConfigError, InvalidInput) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_INVALID)
    except StoreUnavailable as error:
        click.echo(f"error: queue/ledger unreachable: {error}", err=True)
        sys.exit(EXIT_UNAVAILABLE)


def _settings(ctx: click.Context, *, daemon: bool = False, **overrides: Any) -> Settings:
    """Settings for this invocation, with global flags and the command's flags applied.

    One-shot commands (submit, status, report, ...) log only warnings unless a level was asked for, so
    their output is the answer, not the adapters' chatter; the daemon logs at EXPORTER_LOG_LEVEL.
    """
    base: dict[str, Any] = dict(ctx.obj or {})
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = load_settings(**base)
    except ConfigError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_INVALID)
    level_chosen = base.get("log_level") is not None or f"{ENV_PREFIX}LOG_LEVEL" in os.environ
    configure_logging(
        settings.log_format,
        settings.log_level if daemon or level_chosen else "warning",
        secrets=(
            settings.ak,
            settings.sk,
            settings.security_token,
            settings.auth_token,
            settings.redis_password,
        ),
    )
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), help="TOML settings file.")
@click.option("--queue-url", help="sqlite:///FILE or redis://HOST:PORT/DB (EXPORTER_QUEUE_URL).")
@click.option("--log-format", type=click.Choice(["json", "console"]), help="EXPORTER_LOG_FORMAT.")
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="EXPORTER_LOG_LEVEL."
)
@click.version_option(package_name="dli-exporter")
@click.pass_context
def main(
    ctx: click.Context,
    config: Path | None,
    queue_url: str | None,
    log_format: str | None,
    log_level: str | None,
) -> None:
    """Export Flink jobs out of Huawei Cloud DLI into OBS, and prove every ZIP landed.

    Settings come from EXPORTER_* environment variables, an optional TOML file (--config or
    EXPORTER_CONFIG_FILE), then flags.
    """
    if config is not None:
        os.environ[CONFIG_FILE_VARIABLE] = str(config)
    ctx.obj = {"queue_url": queue_url, "log_format": log_format, "log_level": log_level}


# --- submit -----------------------------------------------------------------------------------------------
@main.command()
@click.option("--project-id", help="DLI project (default EXPORTER_PROJECT_ID).")
@click.option("--obs-dir", required=True, help="BUCKET[/PREFIX] where DLI writes the ZIPs.")
@click.option("--job-ids", help="Comma-separated job IDs.")
@click.option("--job-ids-file", type=click.File("r"), help="One ID per line; blank lines and # comments ok.")
@click.option("--all", "select_all", is_flag=True, help="Every job of the project (with the filters below).")
@click.option("--status", help="With --all: only jobs in this status (e.g. job_running).")
@click.option("--job-type", help="With --all: flink_sql_job, flink_jar_job, ...")
@click.option("--queue-name", help="With --all: only jobs on this DLI queue.")
@click.option("--name", help="With --all: job name contains this.")
@click.option("--user-name", help="With --all: jobs of this user.")
@click.option("--tags", multiple=True, help="With --all: KEY=VALUE (repeatable).")
@click.option("--chunk-size", type=int, help="IDs per export call (default EXPORTER_CHUNK_SIZE).")
@click.option("--batch-id", help="Idempotency key: submitting the same ID twice queues it once.")
@click.option("--campaign", help="Free label grouping batches of one migration.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def submit(
    ctx: click.Context,
    project_id: str | None,
    obs_dir: str,
    job_ids: str | None,
    job_ids_file: Any,
    select_all: bool,
    status: str | None,
    job_type: str | None,
    queue_name: str | None,
    name: str | None,
    user_name: str | None,
    tags: tuple[str, ...],
    chunk_size: int | None,
    batch_id: str | None,
    campaign: str | None,
    as_json: bool,
) -> None:
    """Validate a batch and put it on the queue."""
    settings = _settings(ctx)
    if sum(bool(x) for x in (job_ids, job_ids_file, select_all)) != 1:
        raise click.UsageError("give exactly one of --job-ids, --job-ids-file or --all")
    filters = ListFilters(
        status=status, job_type=job_type, queue_name=queue_name, name=name, user_name=user_name, tags=None
    )

    async def go() -> dict[str, Any]:
        ids: list[int] | None = None
        if job_ids:
            ids = parse_id_list(job_ids)
        elif job_ids_file is not None:
            ids = list(parse_id_lines(job_ids_file, source=getattr(job_ids_file, "name", "IDs file")))
        tag_filter = parse_tags(tags)
        data: dict[str, Any] = {
            "batch_id": batch_id or new_batch_id(),
            "project_id": project_id or settings.project_id or "",
            "obs_dir": obs_dir,
            "job_ids": ids,
            "select_all": select_all,
            "filters": filters.model_copy(update={"tags": tag_filter}).model_dump() if select_all else None,
            "chunk_size": chunk_size or settings.chunk_size,
            "campaign": campaign,
        }
        request = build_request(data, max_jobs=settings.max_jobs_per_batch)
        async with open_stores(settings) as stores:
            accepted = await submit_batch(stores.queue, request, stores.ledger)
        return {
            "batch_id": request.batch_id,
            "accepted": accepted,
            "jobs": len(request.job_ids or ()),
            "select_all": request.select_all,
            "duplicates_dropped": request.duplicates_dropped,
        }

    result = _run(go())
    if as_json:
        click.echo(json.dumps(result))
    elif result["accepted"]:
        what = "all matching jobs" if result["select_all"] else f"{result['jobs']} jobs"
        dropped = (
            f" ({result['duplicates_dropped']} duplicate IDs dropped)" if result["duplicates_dropped"] else ""
        )
        click.echo(f"queued batch {result['batch_id']}: {what}{dropped}")
    else:
        click.echo(f"batch {result['batch_id']} was already submitted; nothing queued again")


# --- daemon -----------------------------------------------------------------------------------------------
@main.command()
@click.option("--http-port", type=int, help="EXPORTER_HTTP_PORT.")
@click.pass_context
def serve(ctx: click.Context, http_port: int | None) -> None:
    """Run the daemon: workers plus /healthz /readyz /metrics /batches. SIGTERM drains, then exits 0."""
    settings = _settings(ctx, daemon=True, http_port=http_port)
    _run(run_daemon(settings, until_empty=False, serve_http=True))


@main.command()
@click.option("--until-empty", is_flag=True, help="Exit 0 once the queue is empty (Kubernetes Jobs, tests).")
@click.pass_context
def work(ctx: click.Context, until_empty: bool) -> None:
    """Process the queue without the HTTP endpoints."""
    settings = _settings(ctx, daemon=True)
    _run(run_daemon(settings, until_empty=until_empty, serve_http=False))


# --- looking at batches -----------------------------------------------------------------------------------
@main.command()
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
    settings = _settings(ctx)

    async def one(stores: Stores, batch: str) -> None:
        info = await stores.ledger.get_batch(batch)
        if info is None:
            raise InvalidInput(f"no batch {batch!r} in {mask_url_password(settings.queue_url)}")
        if as_json:
            click.echo(info.model_dump_json())
            return
        if watch:
            info = await follow_progress(
                lambda: stores.ledger.get_batch(batch), console=Console(), deadline_seconds=timeout
            )
        if info is not None:
            click.echo(describe(info))
            eta = eta_seconds(info, time.time())
            if eta is not None:
                click.echo(f"ETA: {eta:.0f}s at the pace so far")

    async def overview(stores: Stores) -> None:
        batches = [b for b in await stores.ledger.list_batches() if campaign in (None, b.campaign)]
        if as_json:
            click.echo(json.dumps([b.model_dump(mode="json") for b in batches]))
            return
        Console().print(
            batches_table(batches, time.time(), title=f"campaign {campaign}" if campaign else None)
        )

    async def go() -> None:
        async with open_stores(settings) as stores:
            await (one(stores, batch_id) if batch_id else overview(stores))

    _run(go())


@main.command()
@click.argument("batch_id")
@click.option("--json", "fmt", flag_value="json", default=True, help="The whole report as JSON (default).")
@click.option("--jsonl", "fmt", flag_value="jsonl", help="The manifest: one JSON line per chunk.")
@click.pass_context
def report(ctx: click.Context, batch_id: str, fmt: str) -> None:
    """Print a batch's report (from the ledger, so it works while the batch runs)."""
    settings = _settings(ctx)

    async def go() -> None:
        async with open_stores(settings) as stores:
            info = await stores.ledger.get_batch(batch_id)
            if info is None:
                raise InvalidInput(f"no batch {batch_id!r} in {mask_url_password(settings.queue_url)}")
            chunks = stores.ledger.chunks(batch_id)
            if fmt == "jsonl":
                async for row in report_rows(chunks):
                    click.echo(row)
            else:
                async for piece in stream_report(info, chunks):
                    click.echo(piece, nl=False)

    _run(go())


@main.command("dead-letters")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def dead_letters(ctx: click.Context, as_json: bool) -> None:
    """List messages parked because they could never be processed, with the reason."""
    settings = _settings(ctx)

    async def go() -> None:
        async with open_stores(settings) as stores:
            parked = await stores.queue.dead_letters()
        if as_json:
            click.echo(
                json.dumps(
                    [
                        {
                            "id": p.dead_letter_id,
                            "reason": p.reason,
                            "deliveries": p.deliveries,
                            "created_at": p.created_at,
                            "body": p.body[:2000],
                        }
                        for p in parked
                    ]
                )
            )
            return
        if not parked:
            click.echo("no dead letters")
        for p in parked:
            click.echo(f"{p.dead_letter_id}\t{p.reason}\t(deliveries: {p.deliveries})")

    _run(go())


@main.command()
@click.argument("dead_letter_id")
@click.pass_context
def requeue(ctx: click.Context, dead_letter_id: str) -> None:
    """Put a dead-lettered message back on the queue (after fixing what was wrong)."""
    settings = _settings(ctx)

    async def go() -> bool:
        async with open_stores(settings) as stores:
            return await stores.queue.requeue(dead_letter_id)

    if not _run(go()):
        click.echo(f"error: no dead letter {dead_letter_id!r}", err=True)
        sys.exit(EXIT_INVALID)
    click.echo(f"requeued {dead_letter_id}")


# --- simulator and demo -----------------------------------------------------------------------------------
@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8780, show_default=True)
@click.option("--jobs", type=int, help="Jobs 1..N exist (EXPORTER_SIM_JOBS).")
def simulate(host: str, port: int, jobs: int | None) -> None:
    """Run the DLI simulator standalone (fault knobs: EXPORTER_SIM_* variables)."""
    from exporter.simulator import load_simulator_settings, serve_simulator

    try:
        settings = load_simulator_settings(sim_jobs=jobs)
    except ConfigError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_INVALID)
    configure_logging("console", "info")
    click.echo(f"DLI simulator on http://{host}:{port} with jobs 1..{settings.sim_jobs}")
    asyncio.run(serve_simulator(settings, host, port))


@main.command()
@click.option("--jobs", type=int, default=3000, show_default=True, help="Job IDs in the campaign.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-data"))
def demo(jobs: int, workdir: Path) -> None:
    """A whole campaign on this machine: simulator + local S3 + SQLite, then its report."""
    from exporter.demo import run_demo

    sys.exit(run_demo(jobs=jobs, workdir=workdir))


if __name__ == "__main__":
    main()
