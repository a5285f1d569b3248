"""One batch from request to report: expand → plan chunks → export stage → verify stage → finish.

Pure orchestration over the ports: it knows no HTTP, S3, SQLite or Redis. Every state change is saved in
the ledger before the next step depends on it, so a crash at any point costs at most the chunks in flight.
The two stages run at once: export workers hand exported chunks to verify workers through a bounded queue.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from exporter import metrics
from exporter.clock import SystemClock
from exporter.errors import InvalidInput, Permanent, Transient
from exporter.models import (
    BatchInfo,
    BatchRequest,
    BatchState,
    ChunkRecord,
    ChunkState,
    ErrorInfo,
    ObjectInfo,
    Segment,
    ZipRecord,
    plan_chunks,
    split_obs_path,
)
from exporter.ports import Clock, DliApi, Ledger, ObjectStore
from exporter.report import ReportPaths, write_report_files
from exporter.settings import Settings
from exporter.submission import new_batch_info
from exporter.zipcheck import EOCD_MAX_SIZE, check_zip_tail

__all__ = ["BatchResult", "Pipeline", "PipelineOptions"]

log = structlog.get_logger("exporter.pipeline")

_FIRST_VERIFY_DELAY = 0.2
_MAX_VERIFY_DELAY = 5.0


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """The settings the pipeline needs, nothing else."""

    concurrency: int = 16
    verify_concurrency: int = 32
    verify_grace_seconds: float = 120.0
    verify_zip: bool = False
    max_jobs_per_batch: int = 1_000_000
    chunk_ownership: bool = False
    chunk_lease_seconds: float = 120.0
    report_dir: Path = Path("./reports")
    upload_manifest: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineOptions:
        return cls(
            concurrency=settings.concurrency,
            verify_concurrency=settings.verify_concurrency,
            verify_grace_seconds=settings.verify_grace_seconds,
            verify_zip=settings.verify_zip,
            max_jobs_per_batch=settings.max_jobs_per_batch,
            chunk_ownership=settings.uses_redis,
            chunk_lease_seconds=max(settings.lease_seconds, settings.read_timeout * 2),
            report_dir=settings.report_dir,
            upload_manifest=settings.upload_manifest,
        )


@dataclass(slots=True)
class BatchResult:
    """What one pass over a batch achieved: finished (ack) or to be retried later (nack with delay)."""

    batch_id: str
    done: bool
    info: BatchInfo | None = None
    report: ReportPaths | None = None
    retry_after: float | None = None
    reason: str = ""


@dataclass(slots=True)
class _Pass:
    """Counters of one pass, to explain why a batch is not finished yet."""

    deferred: int = 0
    skipped: int = 0
    owned: int = 0
    retry_after: float | None = None
    reasons: set[str] = field(default_factory=set)

    def defer(self, error: Transient) -> None:
        self.deferred += 1
        self.reasons.add(error.reason)
        if error.retry_after is not None:
            self.retry_after = max(self.retry_after or 0.0, error.retry_after)


class _VerifyDeferred(Exception):
    """OBS kept failing transiently for the whole grace period; verify again on a later pass."""

    def __init__(self, error: Transient) -> None:
        super().__init__(str(error))
        self.error = error


class Pipeline:
    """Runs batches against the ports; one instance serves every batch of a worker."""

    def __init__(
        self,
        dli: DliApi,
        store: ObjectStore,
        ledger: Ledger,
        options: PipelineOptions,
        *,
        owner: str,
        clock: Clock | None = None,
    ) -> None:
        self._dli = dli
        self._store = store
        self._ledger = ledger
        self._options = options
        self._owner = owner
        self._clock: Clock = clock or SystemClock()
        # One budget of in-flight export calls for the whole process, however many batches run at once:
        # it is what bounds the exports repeated after a crash.
        self._in_flight = asyncio.Semaphore(options.concurrency)

    # --- the whole batch --------------------------------------------------------------------------------
    async def run_batch(self, request: BatchRequest) -> BatchResult:
        """Plan (once), export and verify every open chunk, and finish the batch if nothing is left."""
        info = await self._ensure_planned(request)
        if info.state is BatchState.PENDING:
            await self._ledger.set_batch_state(info.batch_id, BatchState.RUNNING)
        this_pass = _Pass()
        await self._process(info, this_pass)
        info = await self._require_batch(request.batch_id)
        if info.totals.pending or info.totals.exported:
            reason = ",".join(sorted(this_pass.reasons)) or "chunks owned elsewhere"
            log.info("batch.deferred", open_chunks=info.totals.pending + info.totals.exported, reason=reason)
            return BatchResult(info.batch_id, False, info, retry_after=this_pass.retry_after, reason=reason)
        return await self.finish(info)

    async def assist(self, info: BatchInfo) -> int:
        """Help with another replica's batch: work the open chunks we can own; never finish or report.

        Only meaningful with chunk ownership (Redis): the batch's message stays with its owner, which
        finishes the batch once every chunk, whoever worked it, is terminal. Returns chunks worked.
        """
        if not self._options.chunk_ownership:
            return 0
        this_pass = _Pass()
        await self._process(info, this_pass)
        if this_pass.owned:
            log.info("batch.assisted", batch_id=info.batch_id, chunks=this_pass.owned)
        return this_pass.owned

    async def running_batches(self) -> list[BatchInfo]:
        """Batches some replica is working on (candidates for `assist`)."""
        return [b for b in await self._ledger.list_batches() if b.state is BatchState.RUNNING]

    async def finish(self, info: BatchInfo) -> BatchResult:
        """Mark the batch completed and write its report (again, if it was redelivered)."""
        state = BatchState.COMPLETED_WITH_FAILURES if info.totals.failed else BatchState.COMPLETED
        if info.state is not state:
            await self._ledger.set_batch_state(info.batch_id, state)
            info = await self._require_batch(info.batch_id)
        paths = await write_report_files(self._options.report_dir, info, self._ledger.chunks(info.batch_id))
        if self._options.upload_manifest:
            await self._upload_report(info, paths)
        log.info(
            "batch.completed",
            state=state.value,
            jobs=info.totals.jobs,
            verified=info.totals.verified,
            failed=info.totals.failed,
            report=str(paths.report),
        )
        return BatchResult(info.batch_id, True, info, report=paths)

    async def _require_batch(self, batch_id: str) -> BatchInfo:
        info = await self._ledger.get_batch(batch_id)
        if info is None:
            raise RuntimeError(f"batch {batch_id} vanished from the ledger")
        return info

    # --- expand and plan ------------------------------------------------------------------------------------
    async def _ensure_planned(self, request: BatchRequest) -> BatchInfo:
        """Create the batch and its chunks in the ledger unless a previous delivery already did."""
        existing = await self._ledger.get_batch(request.batch_id)
        if existing is not None:
            return existing
        if request.planned:
            raise InvalidInput(
                f"batch {request.batch_id} was planned at submit time but is not in the ledger "
                "(was it submitted against another EXPORTER_QUEUE_URL?)"
            )
        job_ids = request.job_ids if request.job_ids is not None else await self._list_job_ids(request)
        chunks = plan_chunks(job_ids, request.chunk_size)
        await self._ledger.create_batch(new_batch_info(request, self._clock.time()), chunks)
        log.info("batch.planned", jobs=len(job_ids), chunks=len(chunks), chunk_size=request.chunk_size)
        return await self._require_batch(request.batch_id)

    async def _list_job_ids(self, request: BatchRequest) -> array[int]:
        """Expand `select_all` through DLI's paged listing, refusing selections over the batch limit.

        IDs are kept in a packed array (8 bytes each), so a listing of a million jobs stays small.
        """
        job_ids = array("q")
        async for job in self._dli.list_jobs(request.project_id, request.filters):
            job_ids.append(job.job_id)
            if len(job_ids) > self._options.max_jobs_per_batch:
                raise InvalidInput(
                    f"the listing matches more than {self._options.max_jobs_per_batch} jobs "
                    "(EXPORTER_MAX_JOBS_PER_BATCH); narrow the filters or raise the limit"
                )
        log.info("batch.expanded", jobs=len(job_ids))
        return job_ids

    # --- the two stages -----------------------------------------------------------------------------------
    async def _process(self, batch: BatchInfo, this_pass: _Pass) -> None:
        """Feed open chunks to export workers, which feed verify workers; return when all are idle."""
        options = self._options
        to_export: asyncio.Queue[ChunkRecord | None] = asyncio.Queue(maxsize=options.concurrency * 2)
        to_verify: asyncio.Queue[ChunkRecord | None] = asyncio.Queue(maxsize=options.verify_concurrency * 2)
        try:
            await self._run_stages(batch, this_pass, to_export, to_verify)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    async def _run_stages(
        self,
        batch: BatchInfo,
        this_pass: _Pass,
        to_export: asyncio.Queue[ChunkRecord | None],
        to_verify: asyncio.Queue[ChunkRecord | None],
    ) -> None:
        options = self._options
        async with asyncio.TaskGroup() as verifiers:
            for _ in range(options.verify_concurrency):
                verifiers.create_task(self._verify_worker(to_verify, this_pass))
            async with asyncio.TaskGroup() as exporters:
                for _ in range(options.concurrency):
                    exporters.create_task(self._export_worker(batch, to_export, to_verify, this_pass))
                await self._feed(batch.batch_id, to_export, to_verify)
                for _ in range(options.concurrency):
                    await to_export.put(None)
            for _ in range(options.verify_concurrency):
                await to_verify.put(None)

    async def _feed(
        self,
        batch_id: str,
        to_export: asyncio.Queue[ChunkRecord | None],
        to_verify: asyncio.Queue[ChunkRecord | None],
    ) -> None:
        """Stream the ledger's open chunks into the stage each one is at."""
        async for chunk in self._ledger.chunks(batch_id):
            if chunk.state is ChunkState.PENDING:
                await to_export.put(chunk)
            elif chunk.state is ChunkState.EXPORTED:
                await to_verify.put(chunk)

    async def _export_worker(
        self,
        batch: BatchInfo,
        to_export: asyncio.Queue[ChunkRecord | None],
        to_verify: asyncio.Queue[ChunkRecord | None],
        this_pass: _Pass,
    ) -> None:
        while (queued := await to_export.get()) is not None:
            chunk = await self._own(queued, this_pass)
            if chunk is None:
                continue
            try:
                exported = await self._export_chunk(batch, chunk, this_pass)
            except asyncio.CancelledError:
                await self._release(chunk)
                raise
            if exported is not None and exported.state is ChunkState.EXPORTED:
                await to_verify.put(exported)
            else:
                await self._release(chunk)

    async def _verify_worker(self, to_verify: asyncio.Queue[ChunkRecord | None], this_pass: _Pass) -> None:
        while (chunk := await to_verify.get()) is not None:
            try:
                await self._verify_chunk(chunk, this_pass)
            finally:
                await self._release(chunk)

    async def _release(self, chunk: ChunkRecord) -> None:
        """Give a chunk's lease back at once (done, deferred or cancelled), shielded from cancellation."""
        if self._options.chunk_ownership:
            await asyncio.shield(self._ledger.release_chunk(chunk.batch_id, chunk.index, self._owner))

    async def _own(self, chunk: ChunkRecord, this_pass: _Pass) -> ChunkRecord | None:
        """With several replicas, only the holder of a chunk's lease exports it; None when not ours.

        The chunk is read again once the lease is ours: the copy fed to us may be stale, because another
        replica can have finished the chunk (and let its lease go) since the feed read it.
        """
        if not self._options.chunk_ownership:
            return chunk
        owned = await self._ledger.claim_chunk(
            chunk.batch_id, chunk.index, self._owner, self._options.chunk_lease_seconds
        )
        if not owned:
            this_pass.skipped += 1
            return None
        current = await self._ledger.get_chunk(chunk.batch_id, chunk.index)
        if current is None or current.state is not ChunkState.PENDING:
            await self._release(chunk)
            this_pass.skipped += 1
            return None
        this_pass.owned += 1
        return current

    # --- export ---------------------------------------------------------------------------------------------
    async def _export_chunk(
        self, batch: BatchInfo, chunk: ChunkRecord, this_pass: _Pass
    ) -> ChunkRecord | None:
        """Export one chunk (bisecting on rejection) and save the outcome; None when deferred."""
        attempt = chunk.attempts + 1
        bound = log.bind(chunk=chunk.index, attempt=attempt)
        started = self._clock.monotonic()
        bound.info("chunk.export.sent", jobs=len(chunk.job_ids))
        try:
            segments = await self._export_ids(batch, chunk.job_ids)
        except Transient as error:
            this_pass.defer(error)
            failed = chunk.model_copy(
                update={
                    "attempts": attempt,
                    "error": ErrorInfo(code=error.code or error.reason, message=str(error)),
                }
            )
            await self._ledger.save_chunk(failed)
            bound.warning(
                "chunk.export.retry", reason=error.reason, status=error.status, request_id=error.request_id
            )
            return None
        exported = _chunk_after_export(chunk, segments, attempt)
        await self._ledger.save_chunk(exported)
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
                return [
                    Segment(
                        job_ids=list(job_ids),
                        state=ChunkState.FAILED,
                        error=info,
                        request_id=error.request_id,
                    )
                ]
            middle = len(job_ids) // 2
            log.info("chunk.bisect", jobs=len(job_ids), code=error.code)
            left, right = await asyncio.gather(
                self._export_ids(batch, job_ids[:middle]), self._export_ids(batch, job_ids[middle:])
            )
            return left + right
        request_id = result.request_id
        if not result.zip_files:
            message = f"DLI reported success without a ZIP: {result.message}"
            info = ErrorInfo(code="DLI_NO_ZIP", message=message)
            return [
                Segment(job_ids=list(job_ids), state=ChunkState.FAILED, error=info, request_id=request_id)
            ]
        zips = [ZipRecord(path=path) for path in result.zip_files]
        return [
            Segment(job_ids=list(job_ids), state=ChunkState.EXPORTED, zip_files=zips, request_id=request_id)
        ]

    # --- verify ---------------------------------------------------------------------------------------------
    async def _verify_chunk(self, chunk: ChunkRecord, this_pass: _Pass) -> None:
        """Check every ZIP of the chunk's exported segments; save verified/failed, or defer."""
        with structlog.contextvars.bound_contextvars(chunk=chunk.index, attempt=chunk.attempts):
            try:
                segments = [await self._verify_segment(segment) for segment in chunk.segments]
            except _VerifyDeferred as deferred:
                this_pass.defer(deferred.error)
                log.warning("chunk.verify.deferred", reason=deferred.error.reason)
                return
            verified = _chunk_after_verify(chunk, segments)
            await self._ledger.save_chunk(verified)
            metrics.labelled(metrics.CHUNKS, verified.state.value).inc()
            log.info(f"chunk.{verified.state.value}")

    async def _verify_segment(self, segment: Segment) -> Segment:
        if segment.state is not ChunkState.EXPORTED:
            return segment
        zips = [await self._verify_zip(record) for record in segment.zip_files]
        failure = next((z.error for z in zips if z.error is not None), None)
        state = ChunkState.FAILED if failure else ChunkState.VERIFIED
        return segment.model_copy(update={"zip_files": zips, "state": state, "error": failure})

    async def _verify_zip(self, record: ZipRecord) -> ZipRecord:
        """HEAD the object until it shows up or the grace period ends; then size (and ZIP) checks."""
        started = self._clock.monotonic()
        bucket, key = split_obs_path(record.path)
        try:
            found = await self._head_within_grace(bucket, key)
        except Permanent as error:
            return self._zip_outcome(
                record, started, "error", ErrorInfo(code=error.code, message=error.message)
            )
        if found is None:
            message = f"{record.path} not found in OBS after {self._options.verify_grace_seconds:g}s"
            return self._zip_outcome(
                record, started, "missing", ErrorInfo(code="ZIP_MISSING", message=message)
            )
        measured = {"size": found.size, "etag": found.etag}
        if found.size <= 0:
            empty = ErrorInfo(code="ZIP_EMPTY", message=f"{record.path} is empty (0 bytes)")
            return self._zip_outcome(record.model_copy(update=measured), started, "empty", empty)
        if self._options.verify_zip:
            problem = await self._deep_check(bucket, key, found.size)
            if problem is not None:
                invalid = ErrorInfo(code="ZIP_INVALID", message=f"{record.path}: {problem}")
                return self._zip_outcome(record.model_copy(update=measured), started, "invalid", invalid)
        verified = record.model_copy(update={**measured, "verified": True})
        return self._zip_outcome(verified, started, "verified", None)

    def _zip_outcome(
        self, record: ZipRecord, started: float, outcome: str, error: ErrorInfo | None
    ) -> ZipRecord:
        metrics.labelled(metrics.VERIFY_RESULTS, outcome).inc()
        metrics.VERIFY_LATENCY.observe(self._clock.monotonic() - started)
        if error is None:
            log.info("zip.verified", path=record.path, size=record.size)
            return record
        log.warning(f"zip.{outcome}", path=record.path, code=error.code, reason=error.message)
        return record.model_copy(update={"error": error, "verified": False})

    async def _head_within_grace(self, bucket: str, key: str) -> ObjectInfo | None:
        """Objects can appear late: retry 404s and transient OBS errors with backoff until the grace ends."""
        deadline = self._clock.monotonic() + self._options.verify_grace_seconds
        delay = _FIRST_VERIFY_DELAY
        last_error: Transient | None = None
        while True:
            try:
                found = await self._store.head(bucket, key)
                last_error = None
            except Transient as error:
                found, last_error = None, error
            if found is not None:
                return found
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                if last_error is not None:
                    raise _VerifyDeferred(last_error)
                return None
            await self._clock.sleep(min(delay, remaining))
            delay = min(delay * 2, _MAX_VERIFY_DELAY)

    async def _deep_check(self, bucket: str, key: str, size: int) -> str | None:
        """Read the tail with one ranged GET and look for a valid end-of-central-directory record."""
        start = max(0, size - EOCD_MAX_SIZE)
        try:
            tail = await self._store.read_range(bucket, key, start, size - 1)
        except Transient as error:
            raise _VerifyDeferred(error) from None
        check = check_zip_tail(tail)
        return None if check.ok else check.reason

    # --- report upload -------------------------------------------------------------------------------------
    async def _upload_report(self, info: BatchInfo, paths: ReportPaths) -> None:
        """Put the report and manifest next to the exports: `<obs_dir>/_reports/<batch>.json[l]`."""
        bucket, prefix = split_obs_path(info.obs_dir)
        base = f"{prefix}/_reports" if prefix else "_reports"
        for path, content_type in (
            (paths.report, "application/json"),
            (paths.manifest, "application/x-ndjson"),
        ):
            body = await asyncio.to_thread(path.read_bytes)
            await self._store.put(bucket, f"{base}/{path.name}", body, content_type)
        log.info("batch.report.uploaded", bucket=bucket, prefix=base)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that stopped a stage (not the cancellations it caused), unwrapped from nested groups."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_error(error)
        if not isinstance(error, asyncio.CancelledError):
            return error
    return group.exceptions[0]


def _chunk_after_export(chunk: ChunkRecord, segments: list[Segment], attempt: int) -> ChunkRecord:
    """EXPORTED if any segment awaits verification, else FAILED (every ID rejected)."""
    exported = any(s.state is ChunkState.EXPORTED for s in segments)
    error = None if exported else segments[0].error
    return chunk.model_copy(
        update={
            "state": ChunkState.EXPORTED if exported else ChunkState.FAILED,
            "segments": segments,
            "attempts": attempt,
            "error": error,
        }
    )


def _chunk_after_verify(chunk: ChunkRecord, segments: list[Segment]) -> ChunkRecord:
    """VERIFIED when every segment is; FAILED (with the first reason) when any segment failed."""
    failure = next((s.error for s in segments if s.state is ChunkState.FAILED), None)
    return chunk.model_copy(
        update={
            "state": ChunkState.FAILED if failure else ChunkState.VERIFIED,
            "segments": segments,
            "error": failure,
        }
    )
