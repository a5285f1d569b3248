"""The claim loop: take batch messages, run them through the pipeline, ack / nack / dead-letter.

A lease heartbeat keeps a claimed message ours while work goes on; final queue writes run under
`asyncio.shield` so a SIGTERM cancel cannot leave them half done. Draining: stop claiming, give running
batches `drain_seconds`, then cancel them (their chunks stay in the ledger; the message is handed back).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import structlog

from exporter import metrics
from exporter.clock import SystemClock
from exporter.errors import AuthError, InvalidInput, StoreUnavailable, Transient
from exporter.intake import parse_batch_message
from exporter.models import BatchInfo, BatchRequest
from exporter.pipeline import BatchResult, Pipeline
from exporter.ports import BatchQueue, Claim, Clock
from exporter.settings import Settings

__all__ = ["Worker", "WorkerOptions"]

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
    max_retry_delay: float = 300.0
    auth_retry_delay: float = 60.0
    assist: bool = False
    assist_cooldown: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerOptions:
        return cls(
            lease_seconds=settings.lease_seconds,
            max_batches=settings.max_batches,
            poll_interval=settings.poll_interval,
            drain_seconds=settings.drain_seconds,
            max_jobs_per_batch=settings.max_jobs_per_batch,
            max_deliveries=settings.max_deliveries,
            max_retry_delay=settings.retry_max_backoff,
            assist=settings.uses_redis,
            assist_cooldown=max(1.0, settings.poll_interval * 5),
        )


class Worker:
    """Runs up to `max_batches` batches at once until stopped (or until the queue is empty)."""

    def __init__(
        self,
        queue: BatchQueue,
        pipeline: Pipeline,
        *,
        consumer: str,
        options: WorkerOptions,
        clock: Clock | None = None,
    ) -> None:
        self._queue = queue
        self._pipeline = pipeline
        self._consumer = consumer
        self._options = options
        self._clock: Clock = clock or SystemClock()
        self._active: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._local_batches: set[str] = set()
        self._assist_after: dict[str, float] = {}
        self.queue_reachable = True

    @property
    def draining(self) -> bool:
        return self._stopping.is_set()

    @property
    def ready(self) -> bool:
        """For /readyz: the queue answers and we are not draining."""
        return self.queue_reachable and not self.draining

    def stop(self) -> None:
        """Begin a graceful drain (signal handlers call this)."""
        if not self._stopping.is_set():
            log.info("worker.draining", active=len(self._active), drain_seconds=self._options.drain_seconds)
        self._stopping.set()
        self._wakeup.set()

    async def run(self, *, until_empty: bool = False) -> None:
        """Claim and process batches until `stop()` (or, with until_empty, until nothing is left)."""
        log.info("worker.started", consumer=self._consumer, until_empty=until_empty)
        try:
            while not self._stopping.is_set():
                if len(self._active) >= self._options.max_batches:
                    await self._idle(None)
                    continue
                claim = await self._claim()
                if claim is not None:
                    self._start(claim)
                elif until_empty and not self._active and await self._queue_empty():
                    break
                elif not await self._start_assist():
                    await self._idle(self._options.poll_interval)
        finally:
            await self._drain()
            log.info("worker.stopped", consumer=self._consumer)

    # --- the loop's steps -----------------------------------------------------------------------------------
    async def _claim(self) -> Claim | None:
        try:
            claim = await self._queue.claim(self._consumer, self._options.lease_seconds)
        except StoreUnavailable as error:
            self._mark_unreachable(error)
            return None
        self.queue_reachable = True
        return claim

    async def _queue_empty(self) -> bool:
        try:
            depth = await self._queue.depth()
        except StoreUnavailable as error:
            self._mark_unreachable(error)
            return False
        metrics.QUEUE_DEPTH.set(depth)
        return depth == 0

    def _mark_unreachable(self, error: StoreUnavailable) -> None:
        if self.queue_reachable:
            log.warning("queue.unreachable", error=str(error))
        self.queue_reachable = False

    def _start(self, claim: Claim) -> None:
        self._track(asyncio.create_task(self._handle(claim), name=f"batch-{claim.message_id}"))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._active.add(task)
        task.add_done_callback(self._finished)

    async def _start_assist(self) -> bool:
        """With spare room and nothing to claim, help a batch another replica is running (Redis mode)."""
        if not self._options.assist:
            return False
        now = self._clock.monotonic()
        try:
            running = await self._pipeline.running_batches()
        except StoreUnavailable:
            return False
        for info in running:
            if info.batch_id in self._local_batches or self._assist_after.get(info.batch_id, 0.0) > now:
                continue
            self._assist_after[info.batch_id] = now + self._options.assist_cooldown
            self._track(asyncio.create_task(self._assist(info), name=f"assist-{info.batch_id}"))
            return True
        return False

    async def _assist(self, info: BatchInfo) -> None:
        structlog.contextvars.bind_contextvars(batch_id=info.batch_id, project_id=info.project_id)
        self._local_batches.add(info.batch_id)
        try:
            await self._pipeline.assist(info)
        except (Transient, StoreUnavailable, AuthError) as error:
            log.warning("batch.assist.stopped", error=str(error))
        finally:
            self._local_batches.discard(info.batch_id)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._wakeup.set()

    async def _idle(self, seconds: float | None) -> None:
        """Sleep (on the injected clock) until `seconds` pass, a batch finishes, or a stop is requested."""
        self._wakeup.clear()
        waiters: set[asyncio.Task[Any]] = {asyncio.create_task(self._wakeup.wait())}
        if seconds is not None:
            waiters.add(asyncio.create_task(self._clock.sleep(seconds)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _drain(self) -> None:
        """Give running batches the drain time, then cancel them (they hand their messages back)."""
        if not self._active:
            return
        _, pending = await asyncio.wait(set(self._active), timeout=self._options.drain_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # --- one message --------------------------------------------------------------------------------------
    async def _handle(self, claim: Claim) -> None:
        structlog.contextvars.bind_contextvars(message_id=claim.message_id, deliveries=claim.deliveries)
        work = asyncio.current_task()
        heartbeat = asyncio.create_task(self._heartbeat(claim, work))
        try:
            await self._process(claim)
        except asyncio.CancelledError:
            await self._settle(self._queue.nack(claim, 0), "batch.handed_back")
            raise
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _process(self, claim: Claim) -> None:
        try:
            request = parse_batch_message(claim.body, max_jobs=self._options.max_jobs_per_batch)
        except InvalidInput as error:
            await self._park(claim, f"invalid message: {error}", "invalid")
            return
        structlog.contextvars.bind_contextvars(batch_id=request.batch_id, project_id=request.project_id)
        self._local_batches.add(request.batch_id)
        try:
            await self._run(claim, request)
        finally:
            self._local_batches.discard(request.batch_id)

    async def _run(self, claim: Claim, request: BatchRequest) -> None:
        if claim.unfinished_deliveries > self._options.max_deliveries:
            reason = f"poison: delivered {claim.unfinished_deliveries} times without finishing"
            await self._park(claim, reason, "poison")
            return
        log.info("batch.claimed", jobs=len(request.job_ids or ()), select_all=request.select_all)
        try:
            result = await self._pipeline.run_batch(request)
        except InvalidInput as error:
            await self._park(claim, str(error), "invalid")
        except AuthError as error:
            log.error("dli.auth.failed", status=error.status, code=error.code, request_id=error.request_id)
            await self._retry_later(claim, self._options.auth_retry_delay, "auth")
        except (Transient, StoreUnavailable) as error:
            retry_after = getattr(error, "retry_after", None)
            await self._retry_later(claim, retry_after, type(error).__name__.lower())
        else:
            await self._conclude(claim, result)

    async def _conclude(self, claim: Claim, result: BatchResult) -> None:
        if result.done:
            await self._settle(self._queue.ack(claim), "batch.acked")
        else:
            await self._retry_later(claim, result.retry_after, result.reason)

    async def _retry_later(self, claim: Claim, retry_after: float | None, reason: str) -> None:
        delay = min(self._options.max_retry_delay, max(self._options.min_retry_delay, retry_after or 0.0))
        await self._settle(self._queue.nack(claim, delay), "batch.nacked", delay_s=delay, reason=reason)

    async def _park(self, claim: Claim, reason: str, kind: str) -> None:
        metrics.labelled(metrics.DEAD_LETTERS, kind).inc()
        await self._settle(self._queue.dead_letter(claim, reason), "message.dead_lettered", reason=reason)

    async def _settle(self, operation: Awaitable[None], event: str, **fields: object) -> None:
        """Run a final queue write under shield: a cancel now must not leave it half done."""
        try:
            await asyncio.shield(operation)
        except StoreUnavailable as error:
            log.warning("queue.write.failed", event_name=event, error=str(error))
            return
        log.info(event, **fields)

    async def _heartbeat(self, claim: Claim, work: asyncio.Task[None] | None) -> None:
        """Extend the lease every third of it; if another consumer took the message, stop our work."""
        interval = self._options.lease_seconds / 3
        while True:
            await self._clock.sleep(interval)
            try:
                still_ours = await self._queue.extend(claim, self._options.lease_seconds)
            except StoreUnavailable as error:
                log.warning("lease.extend.failed", error=str(error))
                continue
            if not still_ours:
                log.error("lease.lost", message_id=claim.message_id)
                if work is not None:
                    work.cancel()
                return
