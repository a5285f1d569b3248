"""Progress of batches for people: one batch's lines, a table of many, a live bar with an ETA.

Identifiers (batch IDs, campaigns, project IDs) are what people copy into the next command, so they are
never cut or folded into an ellipsis: off a terminal (pipes, `kubectl logs`) the table is plain aligned
text at its natural width, and on a terminal too narrow for the rich table, too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table

from exporter.models import BatchInfo, Totals
from exporter.tables import plain_text, print_table, rich_table

__all__ = [
    "batch_lines",
    "batches_table",
    "describe",
    "eta_seconds",
    "follow_progress",
    "plain_table",
    "print_batches",
    "sum_totals",
]

_HEADER = ("batch", "campaign", "state", "done", "verified", "failed", "chunks", "ETA")
_TEXT_COLUMNS = 3  # batch, campaign, state: left-aligned; the numbers are right-aligned


def eta_seconds(info: BatchInfo, now: float) -> float | None:
    """Remaining time at the average pace so far; None before anything finished or after the end."""
    done = info.totals.verified + info.totals.failed
    remaining = info.totals.jobs - done
    elapsed = now - info.created_at
    if done <= 0 or remaining <= 0 or elapsed <= 0:
        return None
    return remaining * elapsed / done


def describe(info: BatchInfo) -> str:
    """One line: `b-1: running, 1200/3000 jobs done (1190 verified, 10 failed), 24/60 chunks`."""
    totals = info.totals
    done_chunks = totals.chunks_verified + totals.chunks_failed
    return (
        f"{info.batch_id}: {info.state.value}, {totals.verified + totals.failed}/{totals.jobs} jobs done "
        f"({totals.verified} verified, {totals.failed} failed), {done_chunks}/{totals.chunks} chunks"
    )


def batch_lines(info: BatchInfo, now: float) -> list[str]:
    """`status BATCH` for people: the one-line summary, where the batch goes, why it failed, its ETA."""
    lines = [describe(info), f"  project: {info.project_id}", f"  obs_dir: {info.obs_dir}"]
    if info.campaign:
        lines.append(f"  campaign: {info.campaign}")
    if info.region:
        lines.append(f"  region: {info.region}")
    if info.duplicates_dropped:
        lines.append(f"  duplicate IDs dropped: {info.duplicates_dropped}")
    if info.error is not None:
        lines.append(f"  error: {info.error.code}: {info.error.message}")
    eta = eta_seconds(info, now)
    if eta is not None:
        lines.append(f"ETA: {eta:.0f}s at the pace so far")
    return lines


def sum_totals(batches: Iterable[BatchInfo]) -> Totals:
    """The totals of several batches added up (a campaign)."""
    total = Totals()
    for info in batches:
        for name, value in info.totals.model_dump().items():
            setattr(total, name, getattr(total, name) + value)
    return total


def _percent(totals: Totals) -> str:
    done = totals.verified + totals.failed
    return f"{done}/{totals.jobs} ({100 * done / totals.jobs:.0f}%)" if totals.jobs else "0/0"


def _numbers(totals: Totals) -> list[str]:
    done_chunks = totals.chunks_verified + totals.chunks_failed
    return [_percent(totals), str(totals.verified), str(totals.failed), f"{done_chunks}/{totals.chunks}"]


def _rows(batches: Sequence[BatchInfo], now: float) -> list[list[str]]:
    """One row per batch and a total row, as plain strings (both renderings share them)."""
    rows = []
    for info in batches:
        eta = eta_seconds(info, now)
        eta_text = "" if eta is None else f"{eta:.0f}s"
        rows.append([info.batch_id, info.campaign or "", info.state.value, *_numbers(info.totals), eta_text])
    rows.append(["total", "", f"{len(batches)} batches", *_numbers(sum_totals(batches)), ""])
    return rows


def batches_table(batches: Sequence[BatchInfo], now: float, title: str | None = None) -> Table:
    """A rich table of the batches: identifiers never wrap, and cells are text, never markup."""
    return rich_table(_HEADER, _rows(batches, now), _TEXT_COLUMNS, title)


def plain_table(batches: Sequence[BatchInfo], now: float, title: str | None = None) -> str:
    """The same table as aligned plain text at its natural width (for pipes, files and logs)."""
    return plain_text(_HEADER, _rows(batches, now), _TEXT_COLUMNS, title)


def print_batches(
    console: Console, batches: Sequence[BatchInfo], now: float, title: str | None = None
) -> None:
    """The rich table on a terminal wide enough for it, the plain table everywhere else."""
    print_table(console, _HEADER, _rows(batches, now), _TEXT_COLUMNS, title)


def _bar(console: Console, label_width: int) -> Progress:
    """The live bar; its first column is at least as wide as the batch ID, so the ID is never cut."""
    return Progress(
        TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True, min_width=label_width)),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}", table_column=Column(no_wrap=True)),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _show(bar: Progress, task: TaskID, info: BatchInfo) -> None:
    totals = info.totals
    bar.update(
        task,
        description=info.batch_id,
        total=max(totals.jobs, 1),
        completed=totals.verified + totals.failed,
        detail=f"verified {totals.verified} failed {totals.failed}",
    )


async def follow_progress(
    fetch: Callable[[], Awaitable[BatchInfo | None]],
    *,
    console: Console,
    interval: float = 0.5,
    stop_when_finished: bool = True,
    deadline_seconds: float | None = None,
) -> BatchInfo | None:
    """Redraw the bar from `fetch()` every `interval` until the batch ends (or the deadline passes)."""
    loop = asyncio.get_running_loop()
    deadline = None if deadline_seconds is None else loop.time() + deadline_seconds
    info = await fetch()
    with _bar(console, len(info.batch_id) if info else 0) as bar:
        task = bar.add_task("waiting", total=None, detail="")
        while True:
            if info is not None:
                _show(bar, task, info)
                if stop_when_finished and info.state.finished:
                    break
            if deadline is not None and loop.time() >= deadline:
                break
            await asyncio.sleep(interval)
            info = await fetch()
    return info
