"""One batch pass: plan (once) → every open chunk through its stages → finish when none is left open.

Pure orchestration over the ports: it knows no HTTP, S3, SQLite or Redis. A pool of chunk workers takes
open chunks as the ledger streams them; each worker holds the chunk's lease for the chunk's whole life in
this pass (export, then verification), so one replica works a chunk from start to end. Every state change
is saved in the ledger before the next step depends on it, so a crash costs at most the chunks in flight.
"""

from __future__ import annotations

import asyncio

import structlog

from exporter.clock import SystemClock
from exporter.migration.ports import MigrationLedger
from exporter.models import BatchInfo, BatchRequest, BatchState, ChunkRecord, ChunkState, ErrorInfo
from exporter.pipeline.campaigns import CampaignCloser
from exporter.pipeline.lanes import Lane, Lanes
from exporter.pipeline.migrate import MigrateStage
from exporter.pipeline.options import PipelineOptions
from exporter.pipeline.ownership import ChunkOwnership, LeaseLost
from exporter.pipeline.passes import PassLog
from exporter.pipeline.planning import require_batch
from exporter.ports import BatchResult, Clock, Ledger, Regions, ReportWriter

__all__ = ["Pipeline"]

log = structlog.get_logger("exporter.pipeline")


class Pipeline:
    """Runs batches against the ports; one instance serves every batch of a worker (`BatchRunner`)."""

    def __init__(
        self,
        regions: Regions,
        ledger: Ledger,
        reports: ReportWriter,
        options: PipelineOptions,
        *,
        owner: str,
        clock: Clock | None = None,
        campaigns: CampaignCloser | None = None,
        migrations: MigrationLedger | None = None,
    ) -> None:
        clock = clock or SystemClock()
        self._campaigns = campaigns
        self._migrations = migrations
        self._migrate = MigrateStage(migrations) if migrations is not None else None
        self._ledger = ledger
        self._options = options
        self._lanes = Lanes(regions, ledger, reports, options, clock, migrations)
        self._ownership = ChunkOwnership(
            ledger, clock, owner=owner, ttl=options.chunk_lease_seconds, enabled=options.chunk_ownership
        )

    async def run_batch(self, request: BatchRequest) -> BatchResult:
        """Plan (once), work every open chunk, and finish the batch if nothing is left open."""
        try:
            return await self._run_pass(request)
        finally:
            self._forget(request.batch_id)

    def _forget(self, batch_id: str) -> None:
        """A pass is over: its migration snapshot leaves memory (the ledger keeps it for the next)."""
        if self._migrate is not None:
            self._migrate.forget(batch_id)

    async def _run_pass(self, request: BatchRequest) -> BatchResult:
        lane = await self._lanes.lane(request.region)
        info = await lane.planner.ensure_planned(request)
        if info.state is BatchState.FAILED:
            return BatchResult(info.batch_id, True, info)
        if info.state is BatchState.PENDING:
            await self._ledger.set_batch_state(info.batch_id, BatchState.RUNNING)
        this_pass = PassLog()
        await self._process(lane, info, this_pass)
        info = await require_batch(self._ledger, request.batch_id)
        migrating = await self._migrating(info, lane)
        if info.totals.pending or info.totals.exported or migrating:
            reason = ",".join(sorted(this_pass.reasons)) or "chunks owned elsewhere"
            opened = info.totals.pending + info.totals.exported + migrating
            log.info("batch.deferred", open_chunks=opened, reason=reason)
            return BatchResult(info.batch_id, False, info, retry_after=this_pass.retry_after, reason=reason)
        return await self._ended(lane, await lane.finisher.finish(info))

    async def fail_batch(self, request: BatchRequest, error: ErrorInfo) -> BatchResult:
        """End the batch for good with `error` (a permanent refusal or invalid input)."""
        lane = await self._lanes.lane(request.region)
        return await self._ended(lane, await lane.finisher.fail(request, error))

    async def _migrating(self, info: BatchInfo, lane: Lane) -> int:
        """Verified chunks of a migration batch whose step is not over yet. Once every one of them is
        imported (or failed) and nothing is left to export, they are confirmed in one go."""
        if info.migration is None or self._migrations is None or self._migrate is None:
            return 0
        tally = await self._migrations.tally(info.batch_id)
        unimported = info.totals.chunks_verified - tally.steps + tally.open - tally.imported_steps
        if not (info.totals.pending or info.totals.exported) and unimported == 0 and tally.imported_steps:
            target = await self._lanes.lane(info.migration.region)
            await self._migrate.confirm(info, target.clients)
            tally = await self._migrations.tally(info.batch_id)
        return max(0, info.totals.chunks_verified - tally.confirmed - tally.failed)

    async def _ended(self, lane: Lane, result: BatchResult) -> BatchResult:
        """A batch ended: if it was its campaign's last, the campaign's report is written now."""
        if self._campaigns is not None and result.info is not None:
            await self._campaigns.after_batch(result.info, lane.store)
        return result

    async def assist(self, info: BatchInfo) -> int:
        """Help with another replica's batch: work the open chunks we can own; never finish or report.

        Only meaningful with chunk ownership (Redis): the batch's message stays with its owner, which
        finishes the batch once every chunk, whoever worked it, is terminal. Returns chunks worked.
        """
        if not self._ownership.enabled or not self._lanes.known(info.region):
            return 0  # a region no batch of ours ran in: its route (endpoints) travels only on the queue
        this_pass = PassLog()
        try:
            await self._process(await self._lanes.lane_of(info.region), info, this_pass)
        finally:
            self._forget(info.batch_id)
        if this_pass.owned:
            log.info("batch.assisted", batch_id=info.batch_id, chunks=this_pass.owned)
        return this_pass.owned

    async def running_batches(self) -> list[BatchInfo]:
        """Batches some replica is working on (candidates for `assist`)."""
        return [b for b in await self._ledger.list_batches() if b.state is BatchState.RUNNING]

    async def _process(self, lane: Lane, batch: BatchInfo, this_pass: PassLog) -> None:
        """Stream the open chunks to the chunk workers; return when every one of them is idle."""
        workers = self._options.concurrency + self._options.verify_concurrency
        feed: asyncio.Queue[ChunkRecord | None] = asyncio.Queue(maxsize=workers * 2)
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(self._chunk_worker(lane, batch, feed, this_pass))
                try:
                    async for chunk in self._ledger.chunks(batch.batch_id):
                        if await self._is_open(batch, chunk):
                            await feed.put(chunk)
                    for _ in range(workers):
                        await feed.put(None)
                except BaseException:
                    _close(feed, workers)
                    raise
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    async def _is_open(self, batch: BatchInfo, chunk: ChunkRecord) -> bool:
        """Open for this pass: not terminal, or verified with migration work left."""
        if not chunk.state.terminal:
            return True
        migrating = self._migrate is not None and batch.migration is not None
        if not migrating or chunk.state is not ChunkState.VERIFIED:
            return False
        assert self._migrate is not None  # noqa: S101 - `migrating` says so
        return await self._migrate.is_open(chunk)

    async def _chunk_worker(
        self, lane: Lane, batch: BatchInfo, feed: asyncio.Queue[ChunkRecord | None], this_pass: PassLog
    ) -> None:
        while (queued := await feed.get()) is not None:
            try:
                await self._work(lane, batch, queued, this_pass)
            except LeaseLost as lost:
                this_pass.note("lease_lost")
                log.warning("chunk.abandoned", chunk=queued.index, reason=str(lost))

    async def _work(self, lane: Lane, batch: BatchInfo, queued: ChunkRecord, this_pass: PassLog) -> None:
        """Take one chunk as far as it goes in this pass, under its lease."""
        migrating = self._migrate is not None and batch.migration is not None
        async with self._ownership.hold(queued, keep_verified=migrating) as held:
            if held is None:  # another replica holds it, or finished it meanwhile
                return
            this_pass.owned += 1
            chunk: ChunkRecord | None = held
            if held.state is ChunkState.PENDING:
                chunk = await lane.export.run(batch, held, this_pass)
            if chunk is not None and chunk.state is ChunkState.EXPORTED:
                await lane.verify.run(chunk, this_pass)
                chunk = await self._ledger.get_chunk(chunk.batch_id, chunk.index) if migrating else None
            if migrating and chunk is not None and chunk.state is ChunkState.VERIFIED:
                await self._migrate_chunk(lane, batch, chunk, this_pass)

    async def _migrate_chunk(
        self, lane: Lane, batch: BatchInfo, chunk: ChunkRecord, this_pass: PassLog
    ) -> None:
        """Copy, import and confirm a verified chunk through its source and destination regions."""
        assert self._migrate is not None  # noqa: S101 - checked by _work
        assert batch.migration is not None  # noqa: S101 - checked by _work
        target = await self._lanes.lane(batch.migration.region)
        await self._migrate.run(batch, chunk, lane.clients, target.clients, this_pass)


def _close(feed: asyncio.Queue[ChunkRecord | None], workers: int) -> None:
    """One end mark per chunk worker when the pass is cancelled or fails: a worker whose cancel a store
    client swallowed (redis-py does, redis/redis-py#2028) goes back to the feed, finds the mark and ends,
    instead of waiting for ever for a chunk that no feeder will put. Unworked chunks are dropped first
    so the marks fit (the feed holds twice as many items as there are workers)."""
    while not feed.empty():
        feed.get_nowait()
    for _ in range(workers):
        feed.put_nowait(None)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that stopped a stage (not the cancellations it caused), unwrapped from nested groups."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_error(error)
        if not isinstance(error, asyncio.CancelledError):
            return error
    return group.exceptions[0]
