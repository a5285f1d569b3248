"""What one load of the status page reads: recent campaigns, batches, failures, dead letters, rates.

Bounded, so a page stays cheap after months of history: the most recent `PageLimits` of each, and a
budget of chunks read per load while looking for failures (a failed job's chunk can be anywhere in a
million-ID batch). A finished batch never changes, so its failures are remembered once found. A part
that cannot be read (the store is down, or slow) is named on the page; the rest still shows.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import Gauge

from exporter import metrics
from exporter.campaign.record import CampaignRecord, CampaignStore
from exporter.campaign.views import load_view
from exporter.errors import StoreUnavailable
from exporter.models import BatchInfo
from exporter.ports import BatchQueue, Clock, DeadLetter, Ledger
from exporter.regions import limiter_scope
from exporter.status_model import (
    CampaignRow,
    EndpointRate,
    FailureRow,
    StatusSnapshot,
    batch_row,
    campaign_row,
    chunk_failures,
)

__all__ = ["PageLimits", "StatusSource", "endpoint_rates"]

_T = TypeVar("_T")
_REMEMBERED_BATCHES = 256  # finished batches whose failures are kept between page loads


@dataclass(frozen=True, slots=True)
class PageLimits:
    """How much one page load shows and reads at most."""

    batches: int = 25
    campaigns: int = 10
    failures: int = 25
    dead_letters: int = 25
    chunks_read: int = 5000  # chunks read per load while looking for failures
    read_seconds: float = 5.0  # each part of the page; a slow store must not hang the page


def _gauge_values(gauge: Gauge) -> dict[str, float]:
    """The gauge's current value per `endpoint` label, read as /metrics would."""
    return {
        sample.labels.get("endpoint", ""): sample.value
        for family in gauge.collect()
        for sample in family.samples
    }


def endpoint_rates(regions: Mapping[str, tuple[str, ...]] | None = None) -> list[EndpointRate]:
    """Each DLI endpoint this process paces: its pace, the limit a 429 stated (0 means none), and the
    campaign regions that run on it (`regions`: limiter scope -> names)."""
    paces = _gauge_values(metrics.RATE)
    stated = _gauge_values(metrics.STATED_LIMIT)
    named = regions or {}
    return [
        EndpointRate(endpoint, paces.get(endpoint), stated.get(endpoint) or None, named.get(endpoint, ()))
        for endpoint in sorted(paces.keys() | stated.keys())
    ]


def endpoint_regions(records: Iterable[CampaignRecord]) -> dict[str, tuple[str, ...]]:
    """Limiter scope (`host:port`, as the gauges label it) -> the region names campaigns route there."""
    found: dict[str, set[str]] = {}
    for record in records:
        for batch in record.batches:
            if batch.dli_endpoint and batch.region:
                found.setdefault(limiter_scope(batch.dli_endpoint), set()).add(batch.region)
    return {scope: tuple(sorted(names)) for scope, names in found.items()}


@dataclass(slots=True)
class _Search:
    """Failures found so far in one page load, and the chunk reads left."""

    limit: int
    budget: int
    rows: list[FailureRow]
    cut: bool = False

    @property
    def full(self) -> bool:
        return len(self.rows) >= self.limit


class StatusSource:
    """Reads a `StatusSnapshot` from the stores."""

    __slots__ = ("_campaigns", "_clock", "_known", "_ledger", "_limits", "_queue")

    def __init__(
        self,
        queue: BatchQueue,
        ledger: Ledger,
        campaigns: CampaignStore,
        clock: Clock,
        limits: PageLimits | None = None,
    ) -> None:
        self._queue = queue
        self._ledger = ledger
        self._campaigns = campaigns
        self._clock = clock
        self._limits = limits or PageLimits()
        self._known: OrderedDict[str, list[FailureRow]] = OrderedDict()

    async def snapshot(self) -> StatusSnapshot:
        now = self._clock.time()
        problems: list[str] = []
        batches = await self._read("batches", self._ledger.list_batches(self._limits.batches), [], problems)
        records = await self._read(
            "campaigns", self._campaigns.list_campaigns(self._limits.campaigns), [], problems
        )
        search = _Search(self._limits.failures, self._limits.chunks_read, [])
        await self._read("failures", self._failures(batches, search), None, problems)
        shown = self._limits.dead_letters
        letters = await self._read("dead letters", self._queue.dead_letters(newest=shown + 1), [], problems)
        shown_letters: list[DeadLetter] = letters[::-1][:shown]  # newest first; one more says "more"
        return StatusSnapshot(
            now=now,
            queue_depth=await self._read("queue depth", self._queue.depth(), None, problems),
            campaigns=await self._read("campaigns", self._campaign_rows(records, now), [], problems),
            batches=[batch_row(info, now) for info in batches],
            rates=endpoint_rates(endpoint_regions(records)),
            failures=search.rows,
            failures_cut=search.cut,
            dead_letters=shown_letters,
            dead_letters_more=len(letters) > shown,
            problems=problems,
        )

    async def _read(self, part: str, work: Awaitable[_T], fallback: _T, problems: list[str]) -> _T:
        """`work`'s answer, or `fallback` with the reason in `problems` when the store failed or hung."""
        try:
            async with asyncio.timeout(self._limits.read_seconds):
                return await work
        except StoreUnavailable as error:
            problems.append(f"{part}: the queue/ledger cannot be reached ({error})")
        except TimeoutError:
            problems.append(f"{part}: no answer from the queue/ledger within {self._limits.read_seconds:g} s")
        return fallback

    async def _campaign_rows(self, records: list[CampaignRecord], now: float) -> list[CampaignRow]:
        return [campaign_row(await load_view(record, self._ledger), now) for record in records]

    async def _failures(self, batches: list[BatchInfo], search: _Search) -> None:
        """Failures of the batches, newest batch first, until the limit or the chunk budget is reached."""
        for info in batches:
            if search.full or search.cut:
                return
            if info.error is not None:
                search.rows.append(FailureRow(info.batch_id, None, [], info.error.code, info.error.message))
            if info.totals.failed > 0:
                await self._batch_failures(info, search)
        del search.rows[search.limit :]

    async def _batch_failures(self, info: BatchInfo, search: _Search) -> None:
        known = self._known.get(info.batch_id)
        if known is not None:
            self._known.move_to_end(info.batch_id)
            search.rows.extend(known)
            return
        found: list[FailureRow] = []
        failed_jobs = 0
        async for chunk in self._ledger.chunks(info.batch_id):
            if search.budget <= 0:
                search.cut = True
                break
            search.budget -= 1
            rows = chunk_failures(chunk)
            found.extend(rows)
            failed_jobs += sum(len(row.job_ids) for row in rows)
            if failed_jobs >= info.totals.failed or len(search.rows) + len(found) >= search.limit:
                break
        search.rows.extend(found)
        if info.state.finished and not search.cut:
            self._remember(info.batch_id, found)

    def _remember(self, batch_id: str, rows: list[FailureRow]) -> None:
        self._known[batch_id] = rows
        while len(self._known) > _REMEMBERED_BATCHES:
            self._known.popitem(last=False)
