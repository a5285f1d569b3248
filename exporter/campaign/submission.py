"""Accepting a planned campaign: its record first, then one batch per target (each idempotent).

The record's identity is a digest of every batch's identity (project, obs_dir, chunk size, selection,
region), so the same campaign submitted again finds its record, queues nothing new and answers the same
batch IDs; other content under the same campaign ID is refused with `Conflict` before anything is queued.
A submitter that dies after the record is written is simply run again: each batch ID is an idempotency key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import structlog

from exporter.campaign.plan import CampaignPlan
from exporter.campaign.record import CampaignBatch, CampaignRecord, CampaignStore
from exporter.clock import SystemClock
from exporter.errors import Conflict
from exporter.models import BatchRequest
from exporter.ports import BatchQueue, Clock, Ledger
from exporter.submission import request_identity, submit_batch

__all__ = ["CampaignSubmitted", "campaign_identity", "submit_campaign"]

log = structlog.get_logger("exporter.campaign")


@dataclass(frozen=True, slots=True)
class CampaignSubmitted:
    campaign_id: str
    batch_ids: list[str]
    queued: list[str]
    """The batch IDs queued by this call (empty when the campaign had been submitted before)."""


def _batch_identity(request: BatchRequest) -> dict[str, object]:
    return {"batch_id": request.batch_id, **request_identity(request)}


def campaign_identity(plan: CampaignPlan) -> str:
    """sha256 over the identities of the campaign's batches, in batch-ID order."""
    identities = sorted((_batch_identity(r) for r in plan.requests), key=lambda i: str(i["batch_id"]))
    text = json.dumps(identities, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _record(plan: CampaignPlan, now: float) -> CampaignRecord:
    batches = [
        CampaignBatch(
            batch_id=r.batch_id,
            region=r.region.name if r.region else None,
            project_id=r.project_id,
            obs_dir=r.obs_dir,
            dli_endpoint=r.region.dli_endpoint if r.region else None,
            rate_limit=r.region.rate_limit if r.region else None,
        )
        for r in plan.requests
    ]
    return CampaignRecord(
        campaign_id=plan.campaign_id, identity=campaign_identity(plan), created_at=now, batches=batches
    )


async def submit_campaign(
    plan: CampaignPlan,
    campaigns: CampaignStore,
    queue: BatchQueue,
    ledger: Ledger,
    clock: Clock | None = None,
) -> CampaignSubmitted:
    """Record the campaign (Conflict when its ID holds other content), then queue every batch."""
    record = _record(plan, (clock or SystemClock()).time())
    earlier = await campaigns.save_campaign(record)
    if earlier is not None and earlier.identity != record.identity:
        raise Conflict(_conflict_text(earlier, record))
    queued = [r.batch_id for r in plan.requests if await submit_batch(queue, r, ledger, clock)]
    log.info(
        "campaign.submitted" if earlier is None else "campaign.submit.again",
        campaign_id=plan.campaign_id,
        batches=len(plan.requests),
        queued=len(queued),
    )
    return CampaignSubmitted(plan.campaign_id, [r.batch_id for r in plan.requests], queued)


def _conflict_text(earlier: CampaignRecord, now: CampaignRecord) -> str:
    before = {b.batch_id for b in earlier.batches}
    after = {b.batch_id for b in now.batches}
    parts = []
    if after - before:
        parts.append(f"new targets {sorted(after - before)[:5]}")
    if before - after:
        parts.append(f"targets no longer there {sorted(before - after)[:5]}")
    if not parts:
        parts.append("the same targets with other selections, OBS directories, chunk sizes or endpoints")
    return (
        f"campaign ID {now.campaign_id!r} was accepted before with other content ({'; '.join(parts)}); "
        "submit the same content again, or choose a new --campaign-id"
    )
