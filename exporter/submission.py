"""Accepting a validated batch onto the queue: shared by `submit` and `POST /batches`."""

from __future__ import annotations

import structlog

from exporter import metrics
from exporter.models import BatchRequest
from exporter.ports import BatchQueue

__all__ = ["submit_batch"]

log = structlog.get_logger("exporter.submission")


async def submit_batch(queue: BatchQueue, request: BatchRequest) -> bool:
    """Queue a validated request; False when this batch ID was accepted before (nothing is duplicated)."""
    accepted = await queue.put(request.batch_id, request.model_dump_json(exclude_none=True))
    if accepted and request.duplicates_dropped:
        metrics.DUPLICATE_IDS.inc(request.duplicates_dropped)
    log.info(
        "batch.submitted" if accepted else "batch.submit.duplicate",
        batch_id=request.batch_id,
        jobs=len(request.job_ids or ()),
        duplicates_dropped=request.duplicates_dropped,
    )
    return accepted
