"""Migration of one verified chunk, under its lease: copy → import → confirm, each step saved first.

The chunk's step lives in the `MigrationLedger` (compare-and-set on state and attempts, like chunks):
`pending → copied → imported → confirmed`, or `failed`. The attempt count is saved *before* every
import call, so a crash between the call and its answer shows as an attempt, and the next pass imports
again (safe: see `exporter.migration.jobmap`). A transient error leaves the step where it is and defers
the batch; a refused save (another owner moved the step) stops this chunk's work.
"""

from __future__ import annotations

import structlog

from exporter import metrics
from exporter.errors import Transient
from exporter.migration.models import MigrationStep, StepState
from exporter.migration.ports import DliImporter, MigrationLedger, ObjectCopier
from exporter.models import BatchInfo, ChunkRecord, ChunkState, ZipRecord
from exporter.pipeline.copy import CopyStage
from exporter.pipeline.imports import ImportStage, confirm_step, unlisted_ids
from exporter.pipeline.passes import PassLog
from exporter.pipeline.snapshots import SnapshotKeeper
from exporter.ports import RegionClients
from exporter.routes import Destination

__all__ = ["MigrateStage", "verified_part"]

log = structlog.get_logger("exporter.pipeline")

# Pages of the target's listing the confirm requests while it reads one: the listing takes its pages'
# latency once per this many pages instead of once per page.
CONFIRM_PAGES_AHEAD = 8


class _Stale(Exception):
    """Another owner saved this step since we read it: its work stands, ours stops."""


def verified_part(chunk: ChunkRecord) -> tuple[list[int], list[ZipRecord]]:
    """The job IDs and ZIPs of a chunk's verified segments: what a migration imports."""
    if len(chunk.segments) <= 1:
        segments = chunk.segments if chunk.state is ChunkState.VERIFIED else []
    else:
        segments = [s for s in chunk.segments if s.state is ChunkState.VERIFIED]
    job_ids = [job_id for segment in segments for job_id in segment.job_ids]
    return job_ids, [z for segment in segments for z in segment.zip_files if z.verified]


def _sides(source: RegionClients, target: RegionClients) -> tuple[ObjectCopier, ObjectCopier, DliImporter]:
    if source.copier is None or target.copier is None or target.importer is None:
        raise RuntimeError("these region clients cannot migrate (no copier or importer wired)")
    return source.copier, target.copier, target.importer


class MigrateStage:
    """Takes a verified chunk of a migration batch as far as it goes in this pass."""

    __slots__ = ("_migrations", "_snapshots")

    def __init__(self, migrations: MigrationLedger) -> None:
        self._migrations = migrations
        self._snapshots = SnapshotKeeper(migrations)

    async def is_open(self, chunk: ChunkRecord) -> bool:
        """Whether a verified chunk still has migration work (no step yet, or one not terminal)."""
        step = await self._migrations.get_step(chunk.batch_id, chunk.index)
        return step is None or not step.state.terminal

    async def run(
        self,
        batch: BatchInfo,
        chunk: ChunkRecord,
        source: RegionClients,
        target: RegionClients,
        this_pass: PassLog,
    ) -> None:
        destination = batch.migration
        if destination is None or chunk.state is not ChunkState.VERIFIED:
            return
        with structlog.contextvars.bound_contextvars(chunk=chunk.index):
            try:
                await self._advance(batch, chunk, destination, source, target)
            except Transient as error:
                log.warning("chunk.migrate.deferred", reason=error.reason, error=str(error))
                this_pass.defer(error)
            except _Stale:
                this_pass.note("stale_step")

    async def _advance(
        self,
        batch: BatchInfo,
        chunk: ChunkRecord,
        destination: Destination,
        source: RegionClients,
        target: RegionClients,
    ) -> None:
        source_copier, target_copier, importer = _sides(source, target)
        job_ids, zips = verified_part(chunk)
        step = await self._first_step(chunk, zips)
        if step.state is StepState.PENDING:
            copying = CopyStage(source_copier, target_copier)
            step = await self._save(step, await copying.run(step, zips, destination.obs_dir))
        if step.state is StepState.COPIED:
            snapshot = await self._snapshots.of(batch.batch_id, destination.project_id, importer)
            step = await self._save(step, step.model_copy(update={"attempts": step.attempts + 1}))
            importing = ImportStage(importer, target_copier, destination)
            step = await self._save(step, await importing.run(step, job_ids, snapshot))
        if step.state is StepState.FAILED:
            metrics.labelled(metrics.CHUNKS, "migration_failed").inc()

    async def confirm(self, batch: BatchInfo, target: RegionClients) -> int:
        """Confirm every imported step of the batch against one listing of the target; steps confirmed.
        Run by the batch's owner once no step is left to copy or import. The target's job IDs are held
        as a set of ints; the steps are streamed and saved one at a time (their job maps are the bulk)."""
        destination = batch.migration
        if destination is None or target.importer is None:
            return 0
        importer, project_id = target.importer, destination.project_id
        held = {job.job_id async for job in importer.list_jobs(project_id, ahead=CONFIRM_PAGES_AHEAD)}
        confirmed = 0
        async for step in self._migrations.steps(batch.batch_id):
            if step.state is not StepState.IMPORTED:
                continue
            for job_id in unlisted_ids(step, held):  # rare: looked up one by one before it is failed
                if await importer.get_job(project_id, job_id) is not None:
                    held.add(job_id)
            if await self._migrations.save_step(confirm_step(step, held, project_id), step):
                metrics.labelled(metrics.CHUNKS, "migration_confirmed").inc()
                confirmed += 1
        return confirmed

    async def _first_step(self, chunk: ChunkRecord, zips: list[ZipRecord]) -> MigrationStep:
        stored = await self._migrations.get_step(chunk.batch_id, chunk.index)
        if stored is not None:
            return stored
        step = MigrationStep(batch_id=chunk.batch_id, index=chunk.index, source_zips=[z.path for z in zips])
        if not await self._migrations.save_step(step, None):
            raise _Stale
        return step

    async def _save(self, expected: MigrationStep, step: MigrationStep) -> MigrationStep:
        if not await self._migrations.save_step(step, expected):
            log.warning("migration.step.stale", state=step.state.value, expected=expected.state.value)
            raise _Stale
        return step

    def forget(self, batch_id: str) -> None:
        self._snapshots.forget(batch_id)
