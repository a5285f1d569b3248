"""Verify stage: every ZIP of an exported chunk exists in OBS, is not empty and (optionally) is a ZIP.

Objects can appear late, so a 404 or a transient OBS error is retried with backoff until the grace
period ends (tenacity, on the injected clock). A ZIP still missing then fails its segment with
`ZIP_MISSING`; OBS failing transiently for the whole grace defers the chunk to a later pass instead.
"""

from __future__ import annotations

import asyncio

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, retry_if_result

from exporter import metrics
from exporter.attempts import ReplayFirst
from exporter.errors import Permanent, Transient
from exporter.models import ChunkRecord, ChunkState, ErrorInfo, ObjectInfo, Segment, ZipRecord, split_obs_path
from exporter.pipeline.passes import PassLog, save_forward
from exporter.ports import Clock, Ledger, ObjectStore
from exporter.zipcheck import EOCD_MAX_SIZE, check_zip_tail

__all__ = ["VerifyStage", "chunk_after_verify"]

log = structlog.get_logger("exporter.pipeline")

_FIRST_DELAY = 0.2
_MAX_DELAY = 5.0


class _Deferred(Exception):
    """OBS kept failing transiently for the whole grace period; verify again on a later pass."""

    def __init__(self, error: Transient) -> None:
        super().__init__(str(error))
        self.error = error


class VerifyStage:
    """HEADs (and optionally range-reads) ZIPs, at most `concurrency` chunks at once."""

    __slots__ = ("_clock", "_deep", "_grace", "_ledger", "_slots", "_store")

    def __init__(
        self, store: ObjectStore, ledger: Ledger, clock: Clock, *, grace: float, deep: bool, concurrency: int
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._clock = clock
        self._grace = grace
        self._deep = deep
        self._slots = asyncio.Semaphore(concurrency)

    async def run(self, chunk: ChunkRecord, this_pass: PassLog) -> None:
        """Check every ZIP of the chunk's exported segments; save verified/failed, or defer."""
        with structlog.contextvars.bound_contextvars(chunk=chunk.index, attempt=chunk.attempts):
            try:
                async with self._slots:
                    segments = [await self._verify_segment(segment) for segment in chunk.segments]
            except _Deferred as deferred:
                this_pass.defer(deferred.error)
                log.warning("chunk.verify.deferred", reason=deferred.error.reason)
                return
            verified = chunk_after_verify(chunk, segments)
            if await save_forward(self._ledger, verified, chunk, this_pass):
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
            refused = ErrorInfo(code=error.code, message=error.message)
            return self._outcome(record, started, "error", refused)
        if found is None:
            message = f"{record.path} not found in OBS after {self._grace:g}s"
            return self._outcome(record, started, "missing", ErrorInfo(code="ZIP_MISSING", message=message))
        measured = record.model_copy(update={"size": found.size, "etag": found.etag})
        problem = await self._content_problem(record.path, bucket, key, found.size)
        if problem is not None:
            return self._outcome(measured, started, *problem)
        return self._outcome(measured.model_copy(update={"verified": True}), started, "verified", None)

    async def _content_problem(
        self, path: str, bucket: str, key: str, size: int
    ) -> tuple[str, ErrorInfo] | None:
        if size <= 0:
            return "empty", ErrorInfo(code="ZIP_EMPTY", message=f"{path} is empty (0 bytes)")
        if self._deep:
            problem = await self._deep_check(bucket, key, size)
            if problem is not None:
                return "invalid", ErrorInfo(code="ZIP_INVALID", message=f"{path}: {problem}")
        return None

    def _outcome(self, record: ZipRecord, started: float, outcome: str, error: ErrorInfo | None) -> ZipRecord:
        metrics.labelled(metrics.VERIFY_RESULTS, outcome).inc()
        metrics.VERIFY_LATENCY.observe(self._clock.monotonic() - started)
        if error is None:
            log.info("zip.verified", path=record.path, size=record.size)
            return record
        log.warning(f"zip.{outcome}", path=record.path, code=error.code, reason=error.message)
        return record.model_copy(update={"error": error, "verified": False})

    async def _head_within_grace(self, bucket: str, key: str) -> ObjectInfo | None:
        """None when the object is still missing at the end of the grace; _Deferred when OBS kept failing.

        The first HEAD runs outside tenacity (`exporter.attempts`): only a miss or a transient error
        starts the loop, which takes it as its own first attempt.
        """
        deadline = self._clock.monotonic() + self._grace
        first: ObjectInfo | Transient | None
        try:
            first = await self._store.head(bucket, key)
        except Transient as error:
            first = error
        if isinstance(first, ObjectInfo):
            return first
        return await self._retry_head(ReplayFirst(self._store.head, first), bucket, key, deadline)

    async def _retry_head(
        self, head: ReplayFirst[ObjectInfo | None], bucket: str, key: str, deadline: float
    ) -> ObjectInfo | None:
        """The grace loop, after a first HEAD that missed or failed (`head` replays it)."""

        def wait(state: RetryCallState) -> float:
            backoff = min(_FIRST_DELAY * 2.0 ** (state.attempt_number - 1), _MAX_DELAY)
            return max(0.0, min(backoff, deadline - self._clock.monotonic()))

        retrying = AsyncRetrying(
            retry=retry_if_result(lambda found: found is None) | retry_if_exception_type(Transient),
            stop=lambda _state: self._clock.monotonic() >= deadline,
            wait=wait,
            sleep=self._clock.sleep,
            retry_error_callback=_last_outcome,
        )
        found: ObjectInfo | None = await retrying(head, bucket, key)
        return found

    async def _deep_check(self, bucket: str, key: str, size: int) -> str | None:
        """Read the tail with one ranged GET and look for a valid end-of-central-directory record."""
        start = max(0, size - EOCD_MAX_SIZE)
        try:
            tail = await self._store.read_range(bucket, key, start, size - 1)
        except Transient as error:
            raise _Deferred(error) from None
        check = check_zip_tail(tail)
        return None if check.ok else check.reason


def _last_outcome(state: RetryCallState) -> ObjectInfo | None:
    """After the grace: the last answer (None: still missing), or defer when the last try failed."""
    outcome = state.outcome
    if outcome is None:
        return None
    error = outcome.exception()
    if isinstance(error, Transient):
        raise _Deferred(error)
    if error is not None:
        raise error
    result: ObjectInfo | None = outcome.result()
    return result


def chunk_after_verify(chunk: ChunkRecord, segments: list[Segment]) -> ChunkRecord:
    """VERIFIED when every segment is; FAILED (with the first reason) when any segment failed."""
    failure = next((s.error for s in segments if s.state is ChunkState.FAILED), None)
    return chunk.model_copy(
        update={
            "state": ChunkState.FAILED if failure else ChunkState.VERIFIED,
            "segments": segments,
            "error": failure,
        }
    )
