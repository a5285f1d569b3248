"""The `dli-exporter` command line (contract in DESIGN.md).

Each command builds settings (environment, optional TOML file, then flags), runs one coroutine and maps the
exporter's errors onto exit codes: 2 for bad input or settings, 3 when the queue/ledger is unreachable.
The commands that read and write batches live in `exporter.commands`; this module is the group, the global
flags and the long-running commands.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click

from exporter.app import run_daemon
from exporter.commands.batches import report, status
from exporter.commands.campaign import campaign
from exporter.commands.common import command_settings, fail, run_command
from exporter.commands.letters import dead_letters, requeue
from exporter.commands.migrate import migrate
from exporter.commands.submit import submit
from exporter.errors import ConfigError
from exporter.logs import configure_logging
from exporter.settings import CONFIG_FILE_VARIABLE

__all__ = ["main"]


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


for _command in (submit, status, report, dead_letters, requeue, campaign, migrate):
    main.add_command(_command)


# --- daemon -----------------------------------------------------------------------------------------------
@main.command()
@click.option("--http-port", type=int, help="EXPORTER_HTTP_PORT.")
@click.pass_context
def serve(ctx: click.Context, http_port: int | None) -> None:
    """Run the daemon: workers plus /healthz /readyz /metrics /batches. SIGTERM drains, then exits 0."""
    settings = command_settings(ctx, daemon=True, http_port=http_port)
    run_command(run_daemon(settings, until_empty=False, serve_http=True))


@main.command()
@click.option("--until-empty", is_flag=True, help="Exit 0 once the queue is empty (Kubernetes Jobs, tests).")
@click.pass_context
def work(ctx: click.Context, until_empty: bool) -> None:
    """Process the queue without the HTTP endpoints."""
    settings = command_settings(ctx, daemon=True)
    run_command(run_daemon(settings, until_empty=until_empty, serve_http=False))


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
        fail(str(error))
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
