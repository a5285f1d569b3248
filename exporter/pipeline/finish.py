"""Finishing: a batch with no open chunk is marked completed, its report written and (optionally)
uploaded next to the exports; a batch refused for good is marked failed with its error and reported too.
"""

from __future__ import annotations

import asyncio

import structlog

from exporter.errors import DliError
from exporter.migration.ports import MigrationLedger
from exporter.migration.report import JobMaps, migration_totals
from exporter.models import BatchInfo, BatchRequest, BatchState, ErrorInfo, split_obs_path
from exporter.pipeline.planning import new_batch_info, require_batch
from exporter.ports import BatchResult, Clock, Ledger, ObjectStore, ReportFile, ReportWriter

__all__ = ["Finisher"]

log = structlog.get_logger("exporter.pipeline")


class Finisher:
    """Ends batches: state in the ledger first, then the report files, then their upload."""

    __slots__ = ("_clock", "_ledger", "_migrations", "_reports", "_store", "_upload")

    def __init__(
        self,
        ledger: Ledger,
        store: ObjectStore,
        reports: ReportWriter,
        *,
        upload: bool,
        clock: Clock,
        migrations: MigrationLedger | None = None,
    ) -> None:
        self._migrations = migrations
        self._ledger = ledger
        self._store = store
        self._reports = reports
        self._upload = upload
        self._clock = clock

    async def finish(self, info: BatchInfo) -> BatchResult:
        """Mark the batch completed and write its report (again, if it was redelivered)."""
        state = BatchState.COMPLETED_WITH_FAILURES if info.totals.failed else BatchState.COMPLETED
        if info.state is not state:
            await self._ledger.set_batch_state(info.batch_id, state)
            info = await require_batch(self._ledger, info.batch_id)
        files = await self._publish(info)
        log.info(
            "batch.completed",
            state=state.value,
            jobs=info.totals.jobs,
            verified=info.totals.verified,
            failed=info.totals.failed,
            report=str(files[0].path) if files else None,
        )
        return BatchResult(info.batch_id, True, info)

    async def fail(self, request: BatchRequest, error: ErrorInfo) -> BatchResult:
        """End the batch for good with `error`: recorded (planned or not), reported as far as possible."""
        info = await self._ledger.get_batch(request.batch_id)
        if info is None:
            await self._ledger.create_batch(new_batch_info(request, self._clock.time()), [])
        if info is None or info.state is not BatchState.FAILED:
            await self._ledger.set_batch_state(request.batch_id, BatchState.FAILED, error)
        info = await require_batch(self._ledger, request.batch_id)
        try:
            await self._publish(info)
        except (OSError, DliError) as problem:  # the failure itself is recorded; its report is a bonus
            log.warning("batch.report.failed", error=str(problem))
        log.error("batch.failed", code=error.code, message=error.message)
        return BatchResult(info.batch_id, True, info)

    async def _publish(self, info: BatchInfo) -> list[ReportFile]:
        chunks = self._ledger.chunks(info.batch_id)
        if info.migration is not None and self._migrations is not None:
            job_map = JobMaps(self._migrations, info.batch_id)
            totals = await migration_totals(self._migrations, info.batch_id)
            files = await self._reports.write(info, chunks, job_map, totals)
        else:
            files = await self._reports.write(info, chunks)
        if self._upload:
            await self._upload_files(info, files)
        return files

    async def _upload_files(self, info: BatchInfo, files: list[ReportFile]) -> None:
        """Put the report and manifest next to the exports: `<obs_dir>/_reports/<batch>.json[l]`."""
        bucket, prefix = split_obs_path(info.obs_dir)
        base = f"{prefix}/_reports" if prefix else "_reports"
        for file in files:
            body = await asyncio.to_thread(file.path.read_bytes)
            await self._store.put(bucket, f"{base}/{file.path.name}", body, file.content_type)
        log.info("batch.report.uploaded", bucket=bucket, prefix=base)
