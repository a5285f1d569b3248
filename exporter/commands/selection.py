"""The job selection flags `submit` and `migrate` share: IDs, an IDs file, or `--all` with filters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["require_one_selection", "selection_options"]

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = (
    click.option("--job-ids", help="Comma-separated job IDs."),
    click.option(
        "--job-ids-file", type=click.File("r"), help="One ID per line; blank lines and # comments ok."
    ),
    click.option(
        "--all", "select_all", is_flag=True, help="Every job of the project (with the filters below)."
    ),
    click.option("--status", help="With --all: only jobs in this status (e.g. job_running)."),
    click.option("--job-type", help="With --all: flink_sql_job, flink_jar_job, ..."),
    click.option("--queue-name", help="With --all: only jobs on this DLI queue."),
    click.option("--name", help="With --all: job name contains this."),
    click.option("--user-name", help="With --all: jobs of this user."),
    click.option("--tags", multiple=True, help="With --all: KEY=VALUE (repeatable)."),
)


def selection_options(command: F) -> F:
    """Add the selection flags to a click command, in the order `--help` shows them."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def require_one_selection(flags: dict[str, Any]) -> None:
    """Exactly one of --job-ids, --job-ids-file or --all; a usage error otherwise."""
    chosen = (flags["job_ids"] is not None, flags["job_ids_file"] is not None, flags["select_all"])
    if sum(chosen) != 1:
        raise click.UsageError("give exactly one of --job-ids, --job-ids-file or --all")
