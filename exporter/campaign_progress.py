"""Progress of a campaign for people: a row per target, a total row, and live bars per region.

A campaign runs many batches across regions, so `campaign status` answers "which target is behind,
and when will it all be done" at a glance. Like `exporter.progress`, identifiers (project IDs, regions,
the campaign ID) are never cut: off a terminal, or on one too narrow for the rich table, the table is
plain aligned text at its natural width, with control characters shown escaped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

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
from rich.table import Column

from exporter.campaign.record import CampaignBatch
from exporter.campaign.views import CampaignView, campaign_state, campaign_totals
from exporter.models import BatchInfo, BatchState
from exporter.paces import Pace, pace_json, pace_line
from exporter.progress import eta_seconds
from exporter.tables import print_table, printable

__all__ = ["campaign_status_json", "follow_campaign", "print_campaign", "rate_per_second", "target_rows"]

_HEADER = ("region", "project", "state", "done", "verified", "failed", "rate", "ETA")
_TEXT_COLUMNS = 3  # region, project, state: left-aligned; the numbers are right-aligned
_UNBOUNDED = 10_000  # columns: wider than any table of targets
_QUEUED = "queued"  # a listing batch whose chunks are not planned yet: no ledger entry
_DEFAULT_REGION = "default"  # a target without a region runs against the default endpoints
_FINISHED = frozenset({"completed", "completed_with_failures"})


def rate_per_second(info: BatchInfo, now: float) -> float | None:
    """Jobs done per second since the batch was created (until it finished, so a finished rate holds).

    None before anything is done: a rate of zero would read as "stuck" for a batch that just started.
    """
    done = info.totals.verified + info.totals.failed
    end = (info.finished_at or info.updated_at) if info.state.finished else now
    elapsed = end - info.created_at
    if done <= 0 or elapsed <= 0:
        return None
    return done / elapsed


def _campaign_rate(infos: Sequence[BatchInfo | None], now: float) -> float | None:
    """The current pace is that of the batches still running; finished ones add nothing any more."""
    rates = [rate_per_second(i, now) for i in infos if i is not None and i.state is BatchState.RUNNING]
    known = [rate for rate in rates if rate is not None]
    return sum(known) if known else None


def _campaign_eta(infos: Sequence[BatchInfo | None], now: float) -> float | None:
    """The campaign ends when its slowest target does."""
    etas = [eta_seconds(info, now) for info in infos if info is not None]
    known = [eta for eta in etas if eta is not None]
    return max(known) if known else None


def _region(batch: CampaignBatch) -> str:
    return batch.region or _DEFAULT_REGION


def _done(jobs: int, done: int) -> str:
    """`done/total (pct%)`, the percentage rounded down so 100% means every job is done."""
    return f"{done}/{jobs} ({100 * done // jobs}%)" if jobs else f"{done}/0"


def _rate_text(rate: float | None) -> str:
    return "" if rate is None else f"{rate:.1f}/s"


def _eta_text(eta: float | None) -> str:
    return "" if eta is None else f"{eta:.0f}s"


def _target_row(batch: CampaignBatch, info: BatchInfo | None, now: float) -> list[str]:
    if info is None:
        return [_region(batch), batch.project_id, _QUEUED, *["-"] * 5]
    totals = info.totals
    return [
        _region(batch),
        batch.project_id,
        info.state.value,
        _done(totals.jobs, totals.verified + totals.failed),
        str(totals.verified),
        str(totals.failed),
        _rate_text(rate_per_second(info, now)),
        _eta_text(eta_seconds(info, now)),
    ]


def target_rows(view: CampaignView, now: float) -> list[list[str]]:
    """One row per target and a total row, as plain strings (both renderings share them)."""
    rows = [_target_row(batch, info, now) for batch, info in view.rows]
    infos = view.infos
    totals = campaign_totals(infos)
    rows.append(
        [
            "total",
            f"{len(view.rows)} targets",
            campaign_state(infos),
            _done(totals["jobs"], totals["verified"] + totals["failed"]),
            str(totals["verified"]),
            str(totals["failed"]),
            _rate_text(_campaign_rate(infos, now)),
            _eta_text(_campaign_eta(infos, now)),
        ]
    )
    return rows


def _title(view: CampaignView) -> str:
    return f"campaign {view.record.campaign_id}: {campaign_state(view.infos)}"


def print_campaign(
    console: Console, view: CampaignView, now: float, paces: Mapping[str, Pace] | None = None
) -> None:
    """The rich table on a terminal wide enough for it, the plain table everywhere else; then each
    region's DLI pace (fixed, learned, or stated by its gateway)."""
    print_table(console, _HEADER, target_rows(view, now), _TEXT_COLUMNS, _title(view))
    for region, pace in (paces or {}).items():
        console.print(pace_line(region, pace), markup=False, highlight=False)


def _target_entry(batch: CampaignBatch, info: BatchInfo | None, now: float) -> dict[str, Any]:
    totals = info.totals if info else None
    return {
        "batch_id": batch.batch_id,
        "region": batch.region,
        "project_id": batch.project_id,
        "state": info.state.value if info else _QUEUED,
        "jobs": totals.jobs if totals else None,
        "done": totals.verified + totals.failed if totals else None,
        "verified": totals.verified if totals else None,
        "failed": totals.failed if totals else None,
        "rate_per_second": rate_per_second(info, now) if info else None,
        "eta_seconds": eta_seconds(info, now) if info else None,
    }


def campaign_status_json(
    view: CampaignView, now: float, paces: Mapping[str, Pace] | None = None
) -> dict[str, Any]:
    """`campaign status --json`: the same numbers as the table, unformatted, one entry per target, and
    each region's DLI pace."""
    infos = view.infos
    return {
        "paces": {region: pace_json(pace) for region, pace in (paces or {}).items()},
        "campaign_id": view.record.campaign_id,
        "state": campaign_state(infos),
        "totals": campaign_totals(infos),
        "rate_per_second": _campaign_rate(infos, now),
        "eta_seconds": _campaign_eta(infos, now),
        "targets": [_target_entry(batch, info, now) for batch, info in view.rows],
    }


def _bars(console: Console, label_width: int) -> Progress:
    """The live bars; the label column is as wide as the longest region, so no region is cut."""
    return Progress(
        TextColumn(
            "{task.description}",
            markup=False,
            style="bold",
            table_column=Column(no_wrap=True, min_width=label_width),
        ),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}", markup=False, table_column=Column(no_wrap=True)),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _sums(rows: Sequence[tuple[CampaignBatch, BatchInfo | None]]) -> tuple[int, int, int, int]:
    """Jobs, done, verified and failed of some targets added up (queued targets count nothing yet)."""
    infos = [info for _, info in rows if info is not None]
    verified = sum(info.totals.verified for info in infos)
    failed = sum(info.totals.failed for info in infos)
    return sum(info.totals.jobs for info in infos), verified + failed, verified, failed


def _groups(view: CampaignView) -> dict[str, list[tuple[CampaignBatch, BatchInfo | None]]]:
    """The targets by region in the campaign's order, then the whole campaign under "campaign"."""
    groups: dict[str, list[tuple[CampaignBatch, BatchInfo | None]]] = {}
    for batch, info in view.rows:
        groups.setdefault(printable(_region(batch)), []).append((batch, info))
    return {**groups, "campaign": list(view.rows)}


def _show(bar: Progress, tasks: dict[str, TaskID], view: CampaignView) -> None:
    """Redraw every bar; a region seen for the first time gets a bar of its own."""
    for label, rows in _groups(view).items():
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=None, detail="")
        jobs, done, verified, failed = _sums(rows)
        bar.update(
            tasks[label], total=max(jobs, 1), completed=done, detail=f"verified {verified} failed {failed}"
        )


async def follow_campaign(
    fetch: Callable[[], Awaitable[CampaignView | None]],
    *,
    console: Console,
    interval: float = 0.5,
    deadline_seconds: float | None = None,
) -> CampaignView | None:
    """Redraw the bars from `fetch()` every `interval` until the campaign ends (or the deadline passes).

    `fetch()` may return None (the campaign is not visible yet); the bars then wait for the next view.
    """
    loop = asyncio.get_running_loop()
    deadline = None if deadline_seconds is None else loop.time() + deadline_seconds
    view = await fetch()
    labels = _groups(view) if view else {"campaign": []}
    tasks: dict[str, TaskID] = {}
    with _bars(console, max(len(label) for label in labels)) as bar:
        while True:
            if view is not None:
                _show(bar, tasks, view)
                if campaign_state(view.infos) in _FINISHED:
                    break
            if deadline is not None and loop.time() >= deadline:
                break
            await asyncio.sleep(interval)
            view = await fetch()
    return view
