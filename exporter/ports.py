"""The seams of the exporter: the only things the pipeline stages and the worker know about I/O.

Each Protocol has one real implementation per backend (SQLite, Redis, aiohttp, aioboto3) and fakes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from exporter.migration.ports import DliImporter, ObjectCopier
from exporter.models import (
    BatchInfo,
    BatchRequest,
    BatchState,
    ChunkRecord,
    ErrorInfo,
    ExportResult,
    JobSummary,
    ListFilters,
    ObjectInfo,
    RegionRoute,
)

__all__ = [
    "BatchQueue",
    "BatchResult",
    "BatchRunner",
    "Claim",
    "Clock",
    "DeadLetter",
    "DliApi",
    "Ledger",
    "ObjectStore",
    "PutResult",
    "RateLimiter",
    "RegionClients",
    "Regions",
    "ReportFile",
    "ReportWriter",
]


@dataclass(frozen=True, slots=True)
class Claim:
    """A message handed to one consumer until its lease ends, unless extended, acked or handed back.

    `deliveries` counts every hand-out; `handbacks` counts clean nacks (work deferred on purpose, e.g. a DLI
    outage). Only the difference, hand-outs that ended in a crash or a lost lease, marks a poison message.
    """

    message_id: str
    body: str
    deliveries: int
    consumer: str
    handbacks: int = 0

    @property
    def unfinished_deliveries(self) -> int:
        return self.deliveries - self.handbacks


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message parked because it can never be processed, with the reason."""

    dead_letter_id: str
    body: str
    reason: str
    deliveries: int
    created_at: float


@dataclass(frozen=True, slots=True)
class PutResult:
    """The answer to `put`: accepted now, or accepted before under `identity` (what that put carried)."""

    accepted: bool
    identity: str | None = None


class BatchQueue(Protocol):
    """Durable queue of batch messages with leases (at-least-once delivery)."""

    async def put(self, batch_id: str, body: str, identity: str = "") -> PutResult:
        """Enqueue, remembering `identity` (what makes the batch this batch) with the batch ID. When a
        message for `batch_id` was accepted before, nothing is enqueued and the result carries the
        identity recorded then (empty for records older than identities), so the caller can tell a
        harmless repeat from a reused ID with other content."""
        ...

    async def claim(self, consumer: str, lease_seconds: float) -> Claim | None:
        """Take the next visible message (new, nacked past its delay, or whose lease expired)."""
        ...

    async def extend(self, claim: Claim, lease_seconds: float) -> bool:
        """Push the lease forward; False when the claim was lost to another consumer."""
        ...

    async def ack(self, claim: Claim) -> None:
        """Done: remove the message for good."""
        ...

    async def nack(self, claim: Claim, delay_seconds: float, *, handback: bool = True) -> None:
        """Hand the message back, visible again after `delay_seconds`.

        `handback=True` is a deliberate deferral (DLI outage, chunks owned elsewhere) and is counted in
        `Claim.handbacks`; `handback=False` is a failed attempt (a bug), which counts toward
        `unfinished_deliveries` like a crash does, so a message that always fails is parked in the end.
        """
        ...

    async def dead_letter(self, claim: Claim, reason: str) -> None:
        """Remove the message from the queue and park it with the reason."""
        ...

    async def dead_letters(self, newest: int | None = None) -> list[DeadLetter]:
        """Parked messages, oldest first: every one, or only the `newest` most recently parked."""
        ...

    async def requeue(self, dead_letter_id: str) -> bool:
        """Put a parked message back on the queue; False when there is no such dead letter."""
        ...

    async def depth(self) -> int:
        """Messages waiting or in flight (not dead letters)."""
        ...

    async def ping(self) -> None:
        """Raise `StoreUnavailable` if the backend cannot be reached."""
        ...


class Ledger(Protocol):
    """Per-chunk state of every batch: what was exported, verified, failed, and why."""

    async def create_batch(self, info: BatchInfo, chunks: Sequence[Sequence[int]]) -> bool:
        """Record a batch and its planned chunks; False (nothing changed) if the batch exists already."""
        ...

    async def get_batch(self, batch_id: str) -> BatchInfo | None:
        """The batch with up-to-date totals, or None."""
        ...

    async def save_chunk(self, chunk: ChunkRecord, expected: ChunkRecord) -> bool:
        """Compare-and-set: persist `chunk` (state, segments, attempts, error) durably, only if the stored
        chunk still has `expected`'s state and attempts; False, with nothing changed, when another writer
        moved it meanwhile (a stale owner's late save). Saving what is stored already is a success (a retried
        call whose first answer was lost). `NotFound` when there is no such chunk;
        ValueError when `chunk.state` would move backwards from `expected.state`.
        """
        ...

    async def get_chunk(self, batch_id: str, index: int) -> ChunkRecord | None:
        """One chunk as stored now (a replica re-reads it after taking its lease), or None."""
        ...

    def chunks(self, batch_id: str) -> AsyncIterator[ChunkRecord]:
        """Every chunk of a batch in index order, streamed (a batch may hold a million IDs)."""
        ...

    async def set_batch_state(self, batch_id: str, state: BatchState, error: ErrorInfo | None = None) -> None:
        """Mark the batch running / completed / completed_with_failures / failed (with `error`, kept in
        `BatchInfo.error`); finished states stamp `finished_at`. `NotFound` for an unknown batch."""
        ...

    async def claim_chunk(self, batch_id: str, index: int, owner: str, ttl_seconds: float) -> bool:
        """Own a chunk for `ttl_seconds` so no other replica works it at the same time; the owner claims
        again to renew."""
        ...

    async def release_chunk(self, batch_id: str, index: int, owner: str) -> None:
        """Give up ownership early (chunk done or handed back)."""
        ...

    async def list_batches(self, limit: int = 100) -> list[BatchInfo]:
        """The most recent batches, newest first."""
        ...


class RateLimiter(Protocol):
    """Admits requests to DLI at the configured rate, shared by every task (and replica)."""

    async def acquire(self) -> float:
        """Wait for one request slot; return the seconds waited."""
        ...

    async def pause(self, seconds: float, message: str = "") -> None:
        """DLI said 429 (`message`, which may state the gateway's policy): no slot for `seconds`."""
        ...


class DliApi(Protocol):
    """The DLI calls the exporter needs."""

    async def export_jobs(self, project_id: str, obs_dir: str, job_ids: Sequence[int]) -> ExportResult:
        """Export the selected jobs; raises Transient / Permanent / AuthError."""
        ...

    def list_jobs(
        self, project_id: str, filters: ListFilters | None = None, *, ahead: int = 0
    ) -> AsyncIterator[JobSummary]:
        """Every job matching the filters, page after page (`ahead`: later pages requested meanwhile)."""
        ...


class ObjectStore(Protocol):
    """The OBS operations verification and report upload need."""

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """Size and ETag, or None when the object does not exist (404)."""
        ...

    async def read_range(self, bucket: str, key: str, start: int, end: int) -> bytes:
        """Bytes `start..end` inclusive (HTTP Range semantics)."""
        ...

    async def put(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        """Write an object (the batch report and manifest)."""
        ...


@dataclass(frozen=True, slots=True)
class RegionClients:
    """A region's DLI and OBS; `key` names its gateway (the DLI endpoint): one in-flight budget each."""

    key: str
    dli: DliApi
    store: ObjectStore
    importer: DliImporter | None = None  # the same clients' import side (migration)
    copier: ObjectCopier | None = None


class Regions(Protocol):
    """Hands the pipeline the clients of a batch's region (None: the default endpoints)."""

    async def clients(self, route: RegionRoute | None) -> RegionClients:
        """Open (once) and return the region's clients."""
        ...


class Clock(Protocol):
    """Time, injectable so unit tests move it by hand."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class ReportFile:
    """One file of a written report: where it is and how to upload it."""

    path: Path
    content_type: str


class ReportWriter(Protocol):
    """Writes a finished batch's report files (JSON report, JSON Lines manifest) locally."""

    async def write(
        self, info: BatchInfo, chunks: AsyncIterator[ChunkRecord], job_map: Any = None, totals: Any = None
    ) -> list[ReportFile]:
        """Atomically (a migration's job map and totals too); OSError if the directory is unwritable."""
        ...


@dataclass(slots=True)
class BatchResult:
    """What one pass over a batch achieved: finished (ack) or to be retried later (nack with delay)."""

    batch_id: str
    done: bool
    info: BatchInfo | None = None
    retry_after: float | None = None
    reason: str = ""


class BatchRunner(Protocol):
    """What the worker needs of the pipeline."""

    async def run_batch(self, request: BatchRequest) -> BatchResult:
        """Plan (once), work every open chunk, finish the batch when nothing is left open."""
        ...

    async def fail_batch(self, request: BatchRequest, error: ErrorInfo) -> BatchResult:
        """End the batch for good with `error` (a permanent refusal): ledger state failed, report written."""
        ...

    async def assist(self, info: BatchInfo) -> int:
        """Work open chunks of another replica's batch; return how many were worked."""
        ...

    async def running_batches(self) -> list[BatchInfo]:
        """Batches some replica is working on (candidates for `assist`)."""
        ...
