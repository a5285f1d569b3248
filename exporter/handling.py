"""One claimed message, start to end: parse, run the batch pass, end it by the one rule, settle the queue.

A lease heartbeat keeps the message ours while work goes on; final queue writes run under
`asyncio.shield` so a SIGTERM cancel cannot leave them half done. How a pass ends is decided by
`exporter.outcomes.classify`, by the exception's class alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass

import structlog

from exporter import metrics
from exporter.clock import sleep_unless, stop_loop
from exporter.errors import InvalidInput, StoreUnavailable
from exporter.intake import parse_batch_message
from exporter.models import BatchRequest, BatchState, ErrorInfo
from exporter.outcomes import Outcome, OutcomeKind, bug_backoff, classify
from exporter.ports import BatchQueue, BatchResult, BatchRunner, Claim, Clock
from exporter.slots import RegionSlots

__all__ = ["MessageHandler", "WorkerOptions", "log_bug"]

log = structlog.get_logger("exporter.worker")


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    lease_seconds: float = 60.0
    max_batches: int = 2
    poll_interval: float = 1.0
    drain_seconds: float = 30.0
    max_jobs_per_batch: int = 1_000_000
    max_deliveries: int = 5
    min_retry_delay: float = 1.0
    max_retry_delay: float = 900.0
    auth_retry_delay: float = 60.0
    assist: bool = False
    assist_cooldown: float = 5.0


class MessageHandler:
    """Handles claimed messages for a worker; `local_batches` tells the worker which batches run here."""

    def __init__(
        self,
        queue: BatchQueue,
        pipeline: BatchRunner,
        options: WorkerOptions,
        clock: Clock,
        local_batches: set[str],
        slots: RegionSlots,
    ) -> None:
        self._queue = queue
        self._slots = slots
        self._pipeline = pipeline
        self._options = options
        self._clock = clock
        self._local_batches = local_batches
        self._heartbeats: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}

    async def handle(self, claim: Claim) -> None:
        structlog.contextvars.bind_contextvars(message_id=claim.message_id, deliveries=claim.deliveries)
        work = asyncio.current_task()
        stop = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(claim, work, stop))
        self._heartbeats[claim.message_id] = (heartbeat, stop)
        try:
            await self._process(claim)
        except asyncio.CancelledError:
            await self._settle(claim, self._queue.nack(claim, 0), "batch.handed_back")
            raise
        except Exception as error:  # noqa: BLE001 - a bug in handling itself: logged, the lease hands it back
            log_bug("message.bug", error)
        finally:
            await self._stop_heartbeat(claim)

    async def _process(self, claim: Claim) -> None:
        try:
            request = parse_batch_message(claim.body, max_jobs=self._options.max_jobs_per_batch)
        except InvalidInput as error:
            await self._park(claim, f"invalid message: {error}", "invalid")
            return
        structlog.contextvars.bind_contextvars(batch_id=request.batch_id, project_id=request.project_id)
        region = request.region.name if request.region else None
        if not await self._slots.wait_for(region):
            await self._defer_for_region(claim, region)
            return
        self._local_batches.add(request.batch_id)
        try:
            await self._run(claim, request)
        finally:
            self._local_batches.discard(request.batch_id)
            await asyncio.shield(self._slots.give_back(region))

    async def _defer_for_region(self, claim: Claim, region: str | None) -> None:
        """This worker runs as many batches of the region as it may: offer the batch again later."""
        delay = RegionSlots.deferral(self._options.poll_interval, claim.deliveries)
        await self._settle(
            claim, self._queue.nack(claim, delay), "batch.region_full", region=region, delay_s=delay
        )

    async def _run(self, claim: Claim, request: BatchRequest) -> None:
        if claim.unfinished_deliveries > self._options.max_deliveries:
            reason = (
                f"delivered {claim.unfinished_deliveries} times without finishing: each delivery ended "
                "without an answer (the process died, or lost its lease)"
            )
            await self._park(claim, reason, "unfinished")
            return
        log.info(
            "batch.claimed", jobs=request.jobs or len(request.job_ids or ()), select_all=request.select_all
        )
        try:
            result = await self._pipeline.run_batch(request)
        except Exception as error:  # noqa: BLE001 - the one place a pass ends: classified below
            await self._after_error(claim, request, error)
        else:
            await self._conclude(claim, result)

    async def _after_error(self, claim: Claim, request: BatchRequest, error: Exception) -> None:
        outcome = classify(error)
        if outcome.kind is OutcomeKind.FAIL:
            await self._end_failed(claim, request, outcome.error)
        elif outcome.kind is OutcomeKind.AUTH:
            log.error("dli.auth.failed", code=outcome.error.code, error=outcome.error.message)
            await self._retry_later(claim, self._options.auth_retry_delay, outcome.label)
        elif outcome.kind is OutcomeKind.RETRY:
            await self._retry_later(claim, outcome.retry_after, outcome.label)
        else:
            await self._bug(claim, error, outcome)

    async def _end_failed(self, claim: Claim, request: BatchRequest, error: ErrorInfo) -> None:
        """Record the batch as failed with its error, then park the message with the same text."""
        try:
            await self._pipeline.fail_batch(request, error)
        except StoreUnavailable as problem:
            await self._retry_later(claim, None, "store")
            log.warning("batch.fail.deferred", error=str(problem))
            return
        await self._park(claim, _reason(error), "failed")

    async def _bug(self, claim: Claim, error: Exception, outcome: Outcome) -> None:
        """Log with traceback and count; nack as a failed attempt, or park once the attempts are used up."""
        log_bug("batch.bug", error)
        failures = claim.unfinished_deliveries
        if failures >= self._options.max_deliveries:
            reason = f"failed {failures} times; last error: {_reason(outcome.error)}"
            await self._park(claim, reason, "failed_repeatedly")
            return
        delay = bug_backoff(failures, self._options.min_retry_delay, self._options.max_retry_delay)
        await self._settle(
            claim, self._queue.nack(claim, delay, handback=False), "batch.nacked", delay_s=delay, reason="bug"
        )

    async def _conclude(self, claim: Claim, result: BatchResult) -> None:
        if result.done and result.info is not None and result.info.state is BatchState.FAILED:
            error = result.info.error or ErrorInfo(code="FAILED", message="the batch failed earlier")
            await self._park(claim, _reason(error), "failed")
        elif result.done:
            await self._settle(claim, self._queue.ack(claim), "batch.acked")
        else:
            await self._retry_later(claim, result.retry_after, result.reason)

    async def _retry_later(self, claim: Claim, retry_after: float | None, reason: str) -> None:
        delay = min(self._options.max_retry_delay, max(self._options.min_retry_delay, retry_after or 0.0))
        await self._settle(
            claim, self._queue.nack(claim, delay), "batch.nacked", delay_s=delay, reason=reason
        )

    async def _park(self, claim: Claim, reason: str, kind: str) -> None:
        metrics.labelled(metrics.DEAD_LETTERS, kind).inc()
        await self._settle(
            claim, self._queue.dead_letter(claim, reason), "message.dead_lettered", reason=reason
        )

    async def _settle(self, claim: Claim, operation: Awaitable[None], event: str, **fields: object) -> None:
        """Run a final queue write under shield: a cancel now must not leave it half done. The heartbeat
        stops first: once the message is settled, an extend would find it gone and call the lease lost."""
        await self._stop_heartbeat(claim)
        try:
            await asyncio.shield(operation)
        except StoreUnavailable as error:
            log.warning("queue.write.failed", event_name=event, error=str(error))
            return
        log.info(event, **fields)

    async def _stop_heartbeat(self, claim: Claim) -> None:
        running = self._heartbeats.pop(claim.message_id, None)
        if running is not None and running[0] is not asyncio.current_task():
            await stop_loop(*running)

    async def _heartbeat(self, claim: Claim, work: asyncio.Task[None] | None, stop: asyncio.Event) -> None:
        """Extend the lease every third of it; stop our work once it is lost, or cannot be confirmed for
        a whole lease (then another consumer may have it: with SQLite nothing else would stop us)."""
        lease = self._options.lease_seconds
        interval = lease / 3
        confirmed = self._clock.monotonic()
        while not await sleep_unless(self._clock, interval, stop):
            try:
                still_ours = await self._queue.extend(claim, lease)
            except StoreUnavailable as error:
                log.warning("lease.extend.failed", error=str(error))
                still_ours = self._clock.monotonic() + interval < confirmed + lease
                if still_ours:
                    continue
            if stop.is_set():
                return
            if not still_ours:
                metrics.labelled(metrics.LEASES_LOST, "message").inc()
                log.error("lease.lost", message_id=claim.message_id)
                if work is not None:
                    work.cancel()
                return
            confirmed = self._clock.monotonic()


def _reason(error: ErrorInfo) -> str:
    return f"{error.code}: {error.message}"


def log_bug(event: str, error: Exception) -> None:
    """Once, through structlog (so redacted), with the traceback; counted by where it ended."""
    metrics.labelled(metrics.BUGS, event.split(".", maxsplit=1)[0]).inc()
    log.error(event, error=f"{type(error).__name__}: {error}", exc_info=error)
