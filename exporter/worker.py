"""The claim loop: take batch messages, run them through the pipeline, ack / nack / dead-letter.

A lease heartbeat keeps a claimed message ours while work goes on; final queue writes run under
`asyncio.shield` so a SIGTERM cancel cannot leave them half done. Draining: stop claiming, give running
batches `drain_seconds`, then cancel them (their chunks stay in the ledger; the message is handed back).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from exporter import metrics
from exporter.clock import SystemClock
from exporter.errors import StoreUnavailable
from exporter.handling import MessageHandler, WorkerOptions, log_bug
from exporter.models import BatchInfo
from exporter.outcomes import OutcomeKind, classify
from exporter.ports import BatchQueue, BatchRunner, Claim, Clock
from exporter.slots import RegionSlots

__all__ = ["Worker", "WorkerOptions"]

log = structlog.get_logger("exporter.worker")


class Worker:
    """Runs up to `max_batches` batches of each region at once until stopped (or the queue is empty)."""

    def __init__(
        self,
        queue: BatchQueue,
        pipeline: BatchRunner,
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
        self._slots = RegionSlots(options.max_batches)
        self._handler = MessageHandler(
            queue, pipeline, options, self._clock, self._local_batches, self._slots
        )
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
                if self._slots.handed_back() or len(self._active) >= self._slots.capacity():
                    # A batch that fills its region's slots raises the capacity without finishing, and
                    # one handed back says its region is full: look again after a poll interval.
                    await self._idle(self._options.poll_interval)
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
        handle = self._handler.handle(claim)
        self._track(asyncio.create_task(handle, name=f"batch-{claim.message_id}"))

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
        # Only batches still running and still cooling down are remembered: the map never outgrows them.
        running_ids = {info.batch_id for info in running}
        self._assist_after = {
            batch: until
            for batch, until in self._assist_after.items()
            if until > now and batch in running_ids
        }
        for info in running:
            if info.batch_id in self._local_batches or info.batch_id in self._assist_after:
                continue
            if not self._slots.take(info.region):  # an assist is a pass of its region like any other
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
        except Exception as error:  # noqa: BLE001 - assisting is optional help: every error ends it here
            outcome = classify(error)
            if outcome.kind is OutcomeKind.BUG:
                log_bug("batch.assist.bug", error)
            else:
                log.warning("batch.assist.stopped", error=outcome.error.message, kind=outcome.kind.value)
        finally:
            self._local_batches.discard(info.batch_id)
            await asyncio.shield(self._slots.give_back(info.region))

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
