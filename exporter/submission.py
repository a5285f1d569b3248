"""Accepting a validated batch: shared by `submit`, `POST /batches`, the demo and the tests.

Explicit job IDs are planned into chunks here, in the submitting process, and written to the ledger
before the message is queued; the message then carries no IDs (`planned: true`). A million-ID batch
therefore never passes through the daemon's memory as one list, and the plan cannot drift between
deliveries. `--all` selections are expanded by the worker, which can page through DLI's listing.
"""

from __future__ import annotations

import structlog

from exporter import metrics
from exporter.clock import SystemClock
from exporter.models import BatchInfo, BatchRequest, plan_chunks
from exporter.ports import BatchQueue, Clock, Ledger

__all__ = ["new_batch_info", "submit_batch"]

log = structlog.get_logger("exporter.submission")


def new_batch_info(request: BatchRequest, now: float) -> BatchInfo:
    """The ledger's record of a batch that is about to be planned."""
    return BatchInfo(
        batch_id=request.batch_id,
        project_id=request.project_id,
        obs_dir=request.obs_dir,
        campaign=request.campaign,
        chunk_size=request.chunk_size,
        duplicates_dropped=request.duplicates_dropped,
        created_at=now,
        updated_at=now,
    )


async def submit_batch(
    queue: BatchQueue, request: BatchRequest, ledger: Ledger | None = None, clock: Clock | None = None
) -> bool:
    """Plan (when given a ledger and explicit IDs) and queue a request; False when already accepted.

    The plan is written first and is idempotent, so a submitter that dies between the two steps is
    simply run again with the same batch ID.
    """
    message = request
    if ledger is not None and request.job_ids:
        now = (clock or SystemClock()).time()
        await ledger.create_batch(
            new_batch_info(request, now), plan_chunks(request.job_ids, request.chunk_size)
        )
        message = request.model_copy(update={"job_ids": None, "planned": True, "jobs": len(request.job_ids)})
    accepted = await queue.put(request.batch_id, message.model_dump_json(exclude_none=True))
    if accepted and request.duplicates_dropped:
        metrics.DUPLICATE_IDS.inc(request.duplicates_dropped)
    log.info(
        "batch.submitted" if accepted else "batch.submit.duplicate",
        batch_id=request.batch_id,
        jobs=len(request.job_ids or ()),
        duplicates_dropped=request.duplicates_dropped,
        planned=message.planned,
    )
    return accepted
