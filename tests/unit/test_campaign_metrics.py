"""Campaign progress gauges stay bounded and current; a scrape refreshes readiness and queue depth."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiohttp import web
from fakes import FakeLedger, ManualClock
from prometheus_client import Gauge

from exporter import metrics
from exporter.campaign.record import CampaignBatch, CampaignRecord
from exporter.campaign.views import CampaignView
from exporter.campaign_metrics import CampaignGauges, campaign_counts, shown_campaigns
from exporter.errors import StoreUnavailable
from exporter.models import BatchInfo, BatchState, ChunkState
from exporter.scrape import add_scrape_hook, refresh_on_scrape


class Campaigns:
    """A campaign store in memory, most recent first, counting the listings it answered."""

    def __init__(self) -> None:
        self.records: list[CampaignRecord] = []
        self.listed = 0

    async def list_campaigns(self, limit: int = 100) -> list[CampaignRecord]:
        self.listed += 1
        return sorted(self.records, key=lambda r: r.created_at, reverse=True)[:limit]


def record(campaign_id: str, created_at: float, *batch_ids: str) -> CampaignRecord:
    batches = [CampaignBatch(batch_id=b, project_id="p", obs_dir="bucket") for b in batch_ids]
    return CampaignRecord(campaign_id=campaign_id, identity="i", created_at=created_at, batches=batches)


def info(batch_id: str, state: BatchState = BatchState.RUNNING) -> BatchInfo:
    return BatchInfo(
        batch_id=batch_id,
        project_id="p",
        obs_dir="bucket",
        chunk_size=2,
        state=state,
        created_at=0,
        updated_at=0,
    )


async def add_batch(ledger: FakeLedger, batch_id: str, state: BatchState, done: int = 0) -> None:
    """A batch of three chunks of two jobs; the first `done` chunks verified."""
    await ledger.create_batch(info(batch_id, state), [[1, 2], [3, 4], [5, 6]])
    for index in range(done):
        chunk = await ledger.get_chunk(batch_id, index)
        assert chunk is not None
        await ledger.save_chunk(chunk.model_copy(update={"state": ChunkState.VERIFIED}), chunk)


def gauge_values() -> dict[tuple[str, str], float]:
    (family,) = metrics.CAMPAIGN_JOBS.collect()
    return {(s.labels["campaign"], s.labels["state"]): s.value for s in family.samples}


@pytest.fixture(autouse=True)
def _empty_gauge() -> Iterator[None]:
    metrics.CAMPAIGN_JOBS.clear()
    yield
    metrics.CAMPAIGN_JOBS.clear()


def view(campaign_id: str, *states: BatchState) -> CampaignView:
    rows = [
        (CampaignBatch(batch_id=f"b{i}", project_id="p", obs_dir="x"), info(f"b{i}", s))
        for i, s in enumerate(states)
    ]
    return CampaignView(record(campaign_id, 0), list(rows))


def test_unfinished_campaigns_all_stay_and_only_the_latest_finished_ones() -> None:
    """Every campaign still running is shown; of the finished ones, only the first `finished_kept`."""
    done, running = BatchState.COMPLETED, BatchState.RUNNING
    views = [
        view("new-done", done),
        view("running", running, done),
        view("old-done", done),
        view("older", done),
    ]
    assert list(shown_campaigns(views, finished_kept=1)) == ["new-done", "running"]
    assert list(shown_campaigns(views, finished_kept=0)) == ["running"]


async def test_counts_say_what_is_left() -> None:
    """pending is every job neither verified nor failed; a listing not planned yet counts nothing."""
    ledger = FakeLedger()
    await add_batch(ledger, "a", BatchState.RUNNING, done=2)
    rows = [(CampaignBatch(batch_id="a", project_id="p", obs_dir="x"), await ledger.get_batch("a"))]
    rows.append((CampaignBatch(batch_id="listing", project_id="q", obs_dir="x"), None))
    counts = campaign_counts(CampaignView(record("c", 0, "a", "listing"), rows))
    assert counts == {"total": 6, "verified": 4, "failed": 0, "pending": 2}


async def test_refresh_replaces_the_series_and_drops_campaigns_that_left() -> None:
    """A finished campaign pushed out by newer ones loses its series; reads happen at most every interval."""
    ledger, campaigns, clock = FakeLedger(), Campaigns(), ManualClock()
    await add_batch(ledger, "old", BatchState.COMPLETED, done=3)
    campaigns.records.append(record("old", 1, "old"))
    gauges = CampaignGauges(campaigns, ledger, finished_kept=1, min_interval=10, clock=clock)
    await gauges.refresh()
    assert gauge_values()[("old", "verified")] == 6
    await add_batch(ledger, "new", BatchState.COMPLETED, done=3)
    campaigns.records.append(record("new", 2, "new"))
    await gauges.refresh()
    assert campaigns.listed == 1 and ("new", "total") not in gauge_values()  # within the interval
    clock.now += 10
    await gauges.refresh()
    assert {campaign for campaign, _ in gauge_values()} == {"new"}
    assert gauge_values()[("new", "pending")] == 0


class Queue:
    def __init__(self, depth: int | None) -> None:
        self._depth = depth

    async def depth(self) -> int:
        if self._depth is None:
            raise StoreUnavailable("queue down")
        return self._depth


def value(gauge: Gauge) -> float:
    (family,) = gauge.collect()
    return float(family.samples[0].value)


async def test_scrape_sets_readiness_and_depth_and_survives_a_failing_hook() -> None:
    """Ready follows the worker and the queue's answer; a hook whose store is away leaves the rest alone."""
    app = web.Application()
    ran: list[str] = []

    async def failing() -> None:
        raise StoreUnavailable("ledger down")

    async def working() -> None:
        ran.append("ok")

    for hook in (failing, working):
        add_scrape_hook(app, hook)
    await refresh_on_scrape(app, Queue(4), ready=True)  # type: ignore[arg-type]
    assert (value(metrics.READY), value(metrics.QUEUE_DEPTH), ran) == (1, 4, ["ok"])
    await refresh_on_scrape(app, Queue(None), ready=True)  # type: ignore[arg-type]
    assert (value(metrics.READY), value(metrics.QUEUE_DEPTH)) == (0, 4)  # the last depth stays
    await refresh_on_scrape(app, Queue(0), ready=False)  # type: ignore[arg-type]
    assert (value(metrics.READY), value(metrics.QUEUE_DEPTH)) == (0, 0)
    assert metrics.REGISTRY.get_sample_value("exporter_dead_letters_total", {"kind": "failed"}) is not None


async def test_a_hook_that_hangs_does_not_hold_the_scrape(monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that never answers costs the scrape the refresh timeout, not the scrape itself."""
    monkeypatch.setattr("exporter.scrape.REFRESH_TIMEOUT_SECONDS", 0.01)
    app = web.Application()

    async def hangs() -> None:
        await asyncio.Event().wait()

    add_scrape_hook(app, hangs)
    await asyncio.wait_for(refresh_on_scrape(app, Queue(2), ready=True), 5)  # type: ignore[arg-type]
    assert value(metrics.READY) == 1
