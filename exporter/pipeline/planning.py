"""Planning: a batch request becomes a batch record and its chunks in the ledger, once.

The one place a plan is made. Explicit IDs are planned by the submitting process (`submit_batch` calls
`record_plan` before the message is queued, so a million-ID batch never crosses the daemon's memory as
one message); `select_all` is planned here by the worker, which pages through DLI's listing. Both end in
`record_plan`, which is idempotent: a batch already in the ledger is never planned again.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import structlog

from exporter.errors import InvalidInput, NotFound
from exporter.models import BatchInfo, BatchRequest, plan_chunks
from exporter.ports import Clock, DliApi, Ledger

__all__ = ["Planner", "new_batch_info", "record_plan", "require_batch"]

log = structlog.get_logger("exporter.pipeline")


def new_batch_info(request: BatchRequest, now: float) -> BatchInfo:
    """The ledger's record of a batch that is about to be planned."""
    return BatchInfo(
        batch_id=request.batch_id,
        project_id=request.project_id,
        obs_dir=request.obs_dir,
        campaign=request.campaign,
        region=request.region.name if request.region else None,
        migration=request.migration,
        chunk_size=request.chunk_size,
        duplicates_dropped=request.duplicates_dropped,
        created_at=now,
        updated_at=now,
    )


async def record_plan(ledger: Ledger, request: BatchRequest, job_ids: Sequence[int], now: float) -> bool:
    """Write the batch and its chunks; False (nothing changed) when the batch was planned before."""
    chunks = plan_chunks(job_ids, request.chunk_size)
    created = await ledger.create_batch(new_batch_info(request, now), chunks)
    if created:
        log.info("batch.planned", jobs=len(job_ids), chunks=len(chunks), chunk_size=request.chunk_size)
    return created


class Planner:
    """Makes sure a claimed batch is planned, expanding `select_all` through the listing."""

    __slots__ = ("_clock", "_dli", "_ledger", "_max_jobs")

    def __init__(self, dli: DliApi, ledger: Ledger, clock: Clock, *, max_jobs: int) -> None:
        self._dli = dli
        self._ledger = ledger
        self._clock = clock
        self._max_jobs = max_jobs

    async def ensure_planned(self, request: BatchRequest) -> BatchInfo:
        """The batch as the ledger has it, planning it first unless a previous delivery already did."""
        existing = await self._ledger.get_batch(request.batch_id)
        if existing is not None:
            return existing
        if request.planned:
            raise InvalidInput(
                f"batch {request.batch_id} was planned at submit time but is not in the ledger "
                "(was it submitted against another EXPORTER_QUEUE_URL?)"
            )
        job_ids = request.job_ids if request.job_ids is not None else await self._list_job_ids(request)
        await record_plan(self._ledger, request, job_ids, self._clock.time())
        return await require_batch(self._ledger, request.batch_id)

    async def _list_job_ids(self, request: BatchRequest) -> array[int]:
        """Expand `select_all` through DLI's paged listing, refusing selections over the batch limit.

        IDs are kept in a packed array (8 bytes each), so a listing of a million jobs stays small.
        """
        job_ids = array("q")
        async for job in self._dli.list_jobs(request.project_id, request.filters):
            job_ids.append(job.job_id)
            if len(job_ids) > self._max_jobs:
                raise InvalidInput(
                    f"the listing matches more than {self._max_jobs} jobs "
                    "(EXPORTER_MAX_JOBS_PER_BATCH); narrow the filters or raise the limit"
                )
        log.info("batch.expanded", jobs=len(job_ids))
        return job_ids


async def require_batch(ledger: Ledger, batch_id: str) -> BatchInfo:
    """The batch, or NotFound: a batch we planned or claimed does not vanish unless someone deleted it."""
    info = await ledger.get_batch(batch_id)
    if info is None:
        raise NotFound(f"batch {batch_id} vanished from the ledger")
    return info
