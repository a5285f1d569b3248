"""Progress of a batch for people: a rich progress bar with an ETA, fed from the ledger's totals."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from exporter.models import BatchInfo, Totals

__all__ = ["batches_table", "describe", "eta_seconds", "follow_progress", "sum_totals"]


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


def sum_totals(batches: Iterable[BatchInfo]) -> Totals:
    """The totals of several batches added up (a campaign)."""
    total = Totals()
    for info in batches:
        for name, value in info.totals.model_dump().items():
            setattr(total, name, getattr(total, name) + value)
    return total


def batches_table(batches: list[BatchInfo], now: float, title: str | None = None) -> Table:
    """One row per batch (state, jobs done, failures, ETA) and a total row: a campaign at a glance."""
    table = Table(title=title)
    for column in ("batch", "campaign", "state", "done", "verified", "failed", "chunks", "ETA"):
        table.add_column(column, justify="left" if column in {"batch", "campaign", "state"} else "right")
    for info in batches:
        totals = info.totals
        eta = eta_seconds(info, now)
        table.add_row(
            info.batch_id,
            info.campaign or "",
            info.state.value,
            _percent(totals),
            str(totals.verified),
            str(totals.failed),
            f"{totals.chunks_verified + totals.chunks_failed}/{totals.chunks}",
            "" if eta is None else f"{eta:.0f}s",
        )
    total = sum_totals(batches)
    table.add_row(
        "total",
        "",
        f"{len(batches)} batches",
        _percent(total),
        str(total.verified),
        str(total.failed),
        f"{total.chunks_verified + total.chunks_failed}/{total.chunks}",
        "",
        style="bold",
    )
    return table


def _percent(totals: Totals) -> str:
    done = totals.verified + totals.failed
    return f"{done}/{totals.jobs} ({100 * done / totals.jobs:.0f}%)" if totals.jobs else "0/0"


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
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
    info: BatchInfo | None = None
    with _bar(console) as bar:
        task = bar.add_task("waiting", total=None, detail="")
        while deadline is None or loop.time() < deadline:
            info = await fetch()
            if info is not None:
                totals = info.totals
                bar.update(
                    task,
                    description=info.batch_id,
                    total=max(totals.jobs, 1),
                    completed=totals.verified + totals.failed,
                    detail=f"verified {totals.verified} failed {totals.failed}",
                )
                if stop_when_finished and info.state.value.startswith("completed"):
                    break
            await asyncio.sleep(interval)
    return info
