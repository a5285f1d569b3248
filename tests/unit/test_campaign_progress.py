"""`campaign status` for people: rows per target, the total row, rate and ETA, rendering and `--watch`.

Views are built by hand so every number below can be checked with a pencil.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable

import pytest
from rich.console import Console

from exporter.campaign.record import CampaignBatch, CampaignRecord
from exporter.campaign.views import CampaignView
from exporter.campaign_progress import (
    campaign_status_json,
    follow_campaign,
    print_campaign,
    rate_per_second,
    target_rows,
)
from exporter.models import BatchInfo, BatchState, Totals

NOW = 100.0
LONG_PROJECT = "0123456789abcdef" * 6


def batch(batch_id: str, project_id: str, region: str | None = None) -> CampaignBatch:
    return CampaignBatch(batch_id=batch_id, region=region, project_id=project_id, obs_dir="bucket/dir")


def info(
    target: CampaignBatch,
    state: BatchState,
    *,
    jobs: int,
    verified: int = 0,
    failed: int = 0,
    created_at: float = 0.0,
    finished_at: float | None = None,
) -> BatchInfo:
    pending = jobs - verified - failed
    return BatchInfo(
        batch_id=target.batch_id,
        project_id=target.project_id,
        obs_dir=target.obs_dir,
        region=target.region,
        chunk_size=100,
        state=state,
        totals=Totals(jobs=jobs, verified=verified, failed=failed, pending=pending),
        created_at=created_at,
        updated_at=finished_at if finished_at is not None else created_at,
        finished_at=finished_at,
    )


def view_of(*rows: tuple[CampaignBatch, BatchInfo | None], campaign_id: str = "tenant-1") -> CampaignView:
    record = CampaignRecord(
        campaign_id=campaign_id, identity="x", created_at=0.0, batches=[target for target, _ in rows]
    )
    return CampaignView(record, list(rows))


A = batch("c-a", "p1", "ap-southeast-1")
B = batch("c-b", "p2")
C = batch("c-c", LONG_PROJECT, "ap-southeast-1")
D = batch("c-d", "p4", "cn-north-4")


def mixed() -> CampaignView:
    """A running (25% in 100s), a completed (80 jobs in 40s), a queued and a late-started running target."""
    return view_of(
        (A, info(A, BatchState.RUNNING, jobs=200, verified=45, failed=5)),
        (B, info(B, BatchState.COMPLETED, jobs=80, verified=80, finished_at=40.0)),
        (C, None),
        (D, info(D, BatchState.RUNNING, jobs=100, verified=20, failed=5, created_at=50.0)),
    )


def test_one_row_per_target_and_a_total_row() -> None:
    rows = target_rows(mixed(), NOW)
    assert rows == [
        ["ap-southeast-1", "p1", "running", "50/200 (25%)", "45", "5", "0.5/s", "300s"],
        ["default", "p2", "completed", "80/80 (100%)", "80", "0", "2.0/s", ""],
        ["ap-southeast-1", LONG_PROJECT, "queued", "-", "-", "-", "-", "-"],
        ["cn-north-4", "p4", "running", "25/100 (25%)", "20", "5", "0.5/s", "150s"],
        ["total", "4 targets", "running", "155/380 (40%)", "145", "10", "1.0/s", "300s"],
    ]


def test_a_campaign_of_queued_targets_is_pending_with_nothing_to_show() -> None:
    rows = target_rows(view_of((A, None), (B, None)), NOW)
    assert rows[-1] == ["total", "2 targets", "pending", "0/0", "0", "0", "", ""]
    assert all(row[2] == "queued" for row in rows[:-1])


def test_the_percentage_reaches_100_only_when_every_job_is_done() -> None:
    almost = view_of((A, info(A, BatchState.RUNNING, jobs=1000, verified=999)))
    assert target_rows(almost, NOW)[0][3] == "999/1000 (99%)"


def test_rate_is_empty_before_anything_is_done() -> None:
    started = info(A, BatchState.RUNNING, jobs=10)
    assert rate_per_second(started, NOW) is None
    assert target_rows(view_of((A, started)), NOW)[0][6:] == ["", ""]


def test_a_finished_rate_holds_after_the_end() -> None:
    done = info(B, BatchState.COMPLETED, jobs=80, verified=80, finished_at=40.0)
    assert rate_per_second(done, 40.0) == rate_per_second(done, 10_000.0) == 2.0


def test_a_batch_created_now_has_no_rate_yet() -> None:
    fresh = info(A, BatchState.RUNNING, jobs=10, verified=1, created_at=NOW)
    assert rate_per_second(fresh, NOW) is None


def test_campaign_rate_counts_running_targets_and_eta_is_the_slowest() -> None:
    rows = target_rows(mixed(), NOW)
    assert rows[-1][6:] == ["1.0/s", "300s"]  # 0.5 + 0.5; the completed target's 2.0/s is past


def test_a_finished_campaign_shows_its_state_and_no_eta() -> None:
    view = view_of(
        (A, info(A, BatchState.COMPLETED_WITH_FAILURES, jobs=10, verified=9, failed=1, finished_at=5.0)),
        (B, info(B, BatchState.COMPLETED, jobs=10, verified=10, finished_at=5.0)),
    )
    assert target_rows(view, NOW)[-1] == [
        "total", "2 targets", "completed_with_failures", "20/20 (100%)", "19", "1", "", ""
    ]  # fmt: skip


def test_status_json_has_every_target_with_raw_numbers() -> None:
    status = campaign_status_json(mixed(), NOW)
    assert status["campaign_id"] == "tenant-1"
    assert status["state"] == "running"
    assert status["totals"]["jobs"] == 380
    assert status["totals"]["batches"] == 4
    assert status["rate_per_second"] == pytest.approx(1.0)
    assert status["eta_seconds"] == pytest.approx(300.0)
    first, _, queued, _ = status["targets"]
    assert first == {
        "batch_id": "c-a",
        "region": "ap-southeast-1",
        "project_id": "p1",
        "state": "running",
        "jobs": 200,
        "done": 50,
        "verified": 45,
        "failed": 5,
        "rate_per_second": pytest.approx(0.5),
        "eta_seconds": pytest.approx(300.0),
    }
    assert queued["state"] == "queued"
    assert queued["jobs"] is queued["rate_per_second"] is queued["eta_seconds"] is None


def render(view: CampaignView, *, terminal: bool, width: int) -> str:
    out = io.StringIO()
    print_campaign(Console(file=out, force_terminal=terminal, width=width, color_system=None), view, NOW)
    return out.getvalue()


def test_plain_text_off_a_terminal_keeps_long_ids_whole() -> None:
    text = render(mixed(), terminal=False, width=40)
    lines = text.splitlines()
    assert lines[0] == "campaign tenant-1: running"
    assert lines[1].split() == ["region", "project", "state", "done", "verified", "failed", "rate", "ETA"]
    assert any(LONG_PROJECT in line for line in lines)
    assert "…" not in text
    assert len(lines) == 7  # title, header, four targets, total


def test_plain_text_escapes_control_characters() -> None:
    odd = batch("c-x", "p\nsecond-line", "ap\tsouth")
    text = render(view_of((odd, None), campaign_id="tenant\n2"), terminal=False, width=200)
    assert "campaign tenant\\n2: pending" in text
    assert "ap\\tsouth  p\\nsecond-line  queued" in text
    assert len(text.splitlines()) == 4


def test_plain_columns_are_aligned() -> None:
    lines = render(mixed(), terminal=False, width=200).splitlines()[1:]
    starts = {line.index("p1") for line in lines if " p1 " in line}
    assert starts == {lines[0].index("project")}
    with_eta = [line for line in lines if " completed " not in line]  # the completed target has no ETA
    assert len({len(line) for line in with_eta}) == 1  # the numbers are right-aligned


def test_rich_table_on_a_wide_terminal_plain_on_a_narrow_one() -> None:
    wide = render(mixed(), terminal=True, width=250)
    assert "┃" in wide or "│" in wide
    assert LONG_PROJECT in wide
    narrow = render(mixed(), terminal=True, width=60)
    assert "│" not in narrow
    assert LONG_PROJECT in narrow


Fetch = Callable[[], Awaitable[CampaignView | None]]


def fetcher(views: list[CampaignView | None]) -> tuple[Fetch, list[int]]:
    """Successive views, the last one repeated; the list counts the calls."""
    calls = [0]

    async def fetch() -> CampaignView | None:
        calls[0] += 1
        return views[min(calls[0], len(views)) - 1]

    return fetch, calls


def running(done: int) -> CampaignView:
    return view_of(
        (A, info(A, BatchState.RUNNING, jobs=10, verified=done)),
        (D, info(D, BatchState.RUNNING, jobs=10, verified=done, created_at=50.0)),
    )


def completed() -> CampaignView:
    return view_of(
        (A, info(A, BatchState.COMPLETED, jobs=10, verified=10, finished_at=90.0)),
        (D, info(D, BatchState.COMPLETED_WITH_FAILURES, jobs=10, verified=9, failed=1, finished_at=95.0)),
    )


def quiet_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=120), out


async def test_follow_stops_when_the_campaign_completes() -> None:
    fetch, calls = fetcher([None, running(2), running(6), completed()])
    console, out = quiet_console()
    final = await follow_campaign(fetch, console=console, interval=0.001)
    assert final is not None
    assert calls[0] == 4
    text = out.getvalue()
    for label in ("ap-southeast-1", "cn-north-4", "campaign"):
        assert label in text
    assert "20/20" in text  # the campaign bar: both regions' jobs summed
    assert "verified 19 failed 1" in text


async def test_follow_returns_at_once_for_a_finished_campaign() -> None:
    fetch, calls = fetcher([completed()])
    console, _ = quiet_console()
    assert await follow_campaign(fetch, console=console, interval=0.001) is not None
    assert calls[0] == 1


async def test_follow_gives_up_at_the_deadline() -> None:
    fetch, calls = fetcher([running(3)])
    console, out = quiet_console()
    final = await follow_campaign(fetch, console=console, interval=0.001, deadline_seconds=0.02)
    assert final is not None
    assert 1 < calls[0] < 1_000
    assert "3/10" in out.getvalue()


async def test_follow_waits_for_a_campaign_that_never_shows_until_the_deadline() -> None:
    fetch, calls = fetcher([None])
    console, _ = quiet_console()
    assert await follow_campaign(fetch, console=console, interval=0.001, deadline_seconds=0.01) is None
    assert calls[0] > 1
