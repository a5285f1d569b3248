"""Per-campaign progress for Prometheus: `exporter_campaign_jobs{campaign,state}`, read on each scrape.

`state` is `total`, `verified`, `failed` or `pending` (not yet verified or failed), from the campaign
store and the ledger as `GET /campaigns/{id}` answers. Label sets stay bounded: every campaign that is
not finished (among the `scanned` most recent), plus the `finished_kept` most recent finished ones; a
campaign that drops out of that set loses its series at the next scrape. Several replicas report the
same numbers (they read the same stores): dashboards take `max by (campaign, state)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from exporter import metrics
from exporter.campaign.record import CampaignStore
from exporter.campaign.views import CampaignView, campaign_state, campaign_totals, load_view
from exporter.clock import SystemClock
from exporter.ports import Clock, Ledger

__all__ = ["STATES", "CampaignGauges", "campaign_counts", "shown_campaigns"]

STATES = ("total", "verified", "failed", "pending")
_FINISHED = frozenset({"completed", "completed_with_failures"})

Counts = dict[str, int]


def campaign_counts(view: CampaignView) -> Counts:
    """Jobs of the campaign by state; a listing batch not planned yet adds nothing until it is."""
    totals = campaign_totals(view.infos)
    done = totals["verified"] + totals["failed"]
    return {
        "total": totals["jobs"],
        "verified": totals["verified"],
        "failed": totals["failed"],
        "pending": max(0, totals["jobs"] - done),
    }


def shown_campaigns(views: Iterable[CampaignView], finished_kept: int) -> dict[str, Counts]:
    """The campaigns to show, from views most recent first: all unfinished, the first finished few."""
    shown: dict[str, Counts] = {}
    finished = 0
    for view in views:
        if campaign_state(view.infos) in _FINISHED:
            if finished >= finished_kept:
                continue
            finished += 1
        shown[view.record.campaign_id] = campaign_counts(view)
    return shown


class CampaignGauges:
    """Refreshes `exporter_campaign_jobs` from the stores, at most once per `min_interval` seconds."""

    __slots__ = (
        "_campaigns",
        "_clock",
        "_finished_kept",
        "_last",
        "_ledger",
        "_lock",
        "_min_interval",
        "_scanned",
    )

    def __init__(
        self,
        campaigns: CampaignStore,
        ledger: Ledger,
        *,
        scanned: int = 100,
        finished_kept: int = 5,
        min_interval: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        self._campaigns = campaigns
        self._ledger = ledger
        self._scanned = scanned
        self._finished_kept = finished_kept
        self._min_interval = min_interval
        self._clock: Clock = clock or SystemClock()
        self._last: float | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<CampaignGauges scanned={self._scanned} finished_kept={self._finished_kept}>"

    async def refresh(self) -> None:
        """Read the recent campaigns and replace every series of the gauge with what they say now.

        Two scrapes at once (an HA pair of Prometheus servers) read the stores once: the second waits
        for the first and finds the values fresh.
        """
        async with self._lock:
            now = self._clock.monotonic()
            if self._last is not None and now - self._last < self._min_interval:
                return
            records = await self._campaigns.list_campaigns(self._scanned)
            views = [await load_view(record, self._ledger) for record in records]
            _publish(shown_campaigns(views, self._finished_kept))
            self._last = now


def _publish(shown: dict[str, Counts]) -> None:
    """Replace the gauge's series at once (no await in between, so no scrape sees half of them)."""
    metrics.CAMPAIGN_JOBS.clear()
    for campaign_id, counts in shown.items():
        for state in STATES:
            metrics.CAMPAIGN_JOBS.labels(campaign_id, state).set(counts[state])
