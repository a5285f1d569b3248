"""Progress of a batch for people: a rich progress bar with an ETA, fed from the ledger's totals."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

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

from exporter.models import BatchInfo

__all__ = ["describe", "eta_seconds", "follow_progress"]


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
