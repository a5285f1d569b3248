"""Export stage: one pending chunk → DLI's export call → exported (ZIPs to verify) or failed.

A permanent 400 for several IDs bisects the chunk until each bad ID stands alone with its DLI code, so
one unknown job never fails its neighbours. A transient failure records the attempt and defers the
chunk to a later pass. Every save is a compare-and-set on the chunk as we read it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from exporter import metrics
from exporter.errors import Permanent, Transient
from exporter.models import BatchInfo, ChunkRecord, ChunkState, ErrorInfo, Segment, ZipRecord
from exporter.pipeline.passes import PassLog, save_forward
from exporter.ports import Clock, DliApi, Ledger

__all__ = ["ExportStage", "chunk_after_export"]

log = structlog.get_logger("exporter.pipeline")


class ExportStage:
    """Exports chunks through one process-wide budget of in-flight calls."""

    __slots__ = ("_clock", "_dli", "_in_flight", "_ledger")

    def __init__(self, dli: DliApi, ledger: Ledger, clock: Clock, in_flight: asyncio.Semaphore) -> None:
        self._dli = dli
        self._ledger = ledger
        self._clock = clock
        # However many batches run at once, this bounds the exports repeated after a crash.
        self._in_flight = in_flight

    async def run(self, batch: BatchInfo, chunk: ChunkRecord, this_pass: PassLog) -> ChunkRecord | None:
        """Export one chunk and save the outcome; the saved chunk, or None when deferred or stale."""
        attempt = chunk.attempts + 1
        bound = log.bind(chunk=chunk.index, attempt=attempt)
        started = self._clock.monotonic()
        bound.info("chunk.export.sent", jobs=len(chunk.job_ids))
        try:
            segments = await self._export_ids(batch, chunk.job_ids)
        except Transient as error:
            this_pass.defer(error)
            info = ErrorInfo(code=error.code or error.reason, message=str(error))
            retried = chunk.model_copy(update={"attempts": attempt, "error": info})
            await save_forward(self._ledger, retried, chunk, this_pass)
            bound.warning(
                "chunk.export.retry", reason=error.reason, status=error.status, request_id=error.request_id
            )
            return None
        exported = chunk_after_export(chunk, segments, attempt)
        if not await save_forward(self._ledger, exported, chunk, this_pass):
            return None
        metrics.labelled(metrics.CHUNKS, exported.state.value).inc()
        bound.info(
            "chunk.exported" if exported.state is ChunkState.EXPORTED else "chunk.failed",
            latency_ms=round((self._clock.monotonic() - started) * 1000, 1),
            zips=sum(len(s.zip_files) for s in segments),
            rejected=sum(len(s.job_ids) for s in segments if s.state is ChunkState.FAILED),
            request_id=segments[0].request_id if len(segments) == 1 else [s.request_id for s in segments],
        )
        return exported

    async def _export_ids(self, batch: BatchInfo, job_ids: Sequence[int]) -> list[Segment]:
        """Export IDs; when DLI rejects several at once, split in halves until each bad ID stands alone."""
        try:
            async with self._in_flight:
                result = await self._dli.export_jobs(batch.project_id, batch.obs_dir, job_ids)
        except Permanent as error:
            if len(job_ids) == 1 or error.status not in (None, 400):
                info = ErrorInfo(code=error.code, message=error.message)
                return [_segment(job_ids, ChunkState.FAILED, error.request_id, error=info)]
            middle = len(job_ids) // 2
            log.info("chunk.bisect", jobs=len(job_ids), code=error.code)
            left, right = await asyncio.gather(
                self._export_ids(batch, job_ids[:middle]), self._export_ids(batch, job_ids[middle:])
            )
            return left + right
        if not result.zip_files:
            message = f"DLI reported success without a ZIP: {result.message}"
            info = ErrorInfo(code="DLI_NO_ZIP", message=message)
            return [_segment(job_ids, ChunkState.FAILED, result.request_id, error=info)]
        zips = [ZipRecord(path=path) for path in result.zip_files]
        return [_segment(job_ids, ChunkState.EXPORTED, result.request_id, zips=zips)]


def _segment(
    job_ids: Sequence[int],
    state: ChunkState,
    request_id: str | None,
    *,
    error: ErrorInfo | None = None,
    zips: list[ZipRecord] | None = None,
) -> Segment:
    return Segment(
        job_ids=list(job_ids), state=state, error=error, zip_files=zips or [], request_id=request_id
    )


def chunk_after_export(chunk: ChunkRecord, segments: list[Segment], attempt: int) -> ChunkRecord:
    """EXPORTED if any segment awaits verification, else FAILED (every ID rejected)."""
    exported = any(s.state is ChunkState.EXPORTED for s in segments)
    return chunk.model_copy(
        update={
            "state": ChunkState.EXPORTED if exported else ChunkState.FAILED,
            "segments": segments,
            "attempts": attempt,
            "error": None if exported else segments[0].error,
        }
    )
