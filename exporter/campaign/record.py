"""A campaign as the stores keep it: its ID, the identity it was accepted with, and its batches.

The record is written once, before any of its batches is queued, with insert-if-absent semantics: a
second submit of the same content finds the same identity and re-queues nothing new (each batch ID is an
idempotency key of its own); other content under the same campaign ID is refused with `Conflict`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from exporter.ports import ReportFile
from exporter.routes import RateLimit

__all__ = ["CampaignBatch", "CampaignRecord", "CampaignReportWriter", "CampaignStore"]


class CampaignBatch(BaseModel):
    """One target of a campaign: the batch that exports it and where it runs."""

    model_config = ConfigDict(frozen=True)

    batch_id: str
    region: str | None = None
    project_id: str
    obs_dir: str
    dli_endpoint: str | None = None  # None: EXPORTER_DLI_ENDPOINT (and records from before it was kept)
    rate_limit: RateLimit | None = None  # the region's gateway limit; None: EXPORTER_RATE_LIMIT


class CampaignRecord(BaseModel):
    campaign_id: str
    identity: str
    created_at: float
    batches: list[CampaignBatch]


class CampaignStore(Protocol):
    """Where campaign records live: the same backend as the queue and the ledger."""

    async def save_campaign(self, record: CampaignRecord) -> CampaignRecord | None:
        """Store the record unless its ID exists; None when stored, else the record stored before."""
        ...

    async def get_campaign(self, campaign_id: str) -> CampaignRecord | None:
        """The record, or None."""
        ...

    async def list_campaigns(self, limit: int = 100) -> list[CampaignRecord]:
        """The most recent records first."""
        ...


class CampaignReportWriter(Protocol):
    """Where a completed campaign's report goes (beside the batch reports)."""

    async def write_campaign(
        self, campaign_id: str, report: dict[str, Any], lines: AsyncIterator[str]
    ) -> list[ReportFile]:
        """Write `campaign-<id>.json` (the report) and `campaign-<id>.jsonl` (one line per job)."""
        ...
