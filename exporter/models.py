"""Data that crosses module boundaries: batch requests, chunks, ZIP records, reports, DLI results.

Validation lives here so the CLI, the HTTP intake and the worker all refuse the same bad input with the
same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from exporter.results import ExportResult, JobSummary, ObjectInfo
from exporter.routes import Destination, OnConflict, RegionRoute
from exporter.rules import (
    MAX_JOB_ID,
    ChunkPlan,
    check_bucket,
    check_obs_dir,
    check_project_id,
    dedupe_job_ids,
    plan_chunks,
    split_obs_path,
)

__all__ = [
    "MAX_JOB_ID",
    "BatchInfo",
    "BatchRequest",
    "BatchState",
    "ChunkPlan",
    "ChunkRecord",
    "ChunkState",
    "ChunkTally",
    "Destination",
    "ErrorInfo",
    "ExportResult",
    "JobSummary",
    "ListFilters",
    "ObjectInfo",
    "OnConflict",
    "RegionRoute",
    "Segment",
    "Totals",
    "ZipRecord",
    "check_bucket",
    "check_obs_dir",
    "check_project_id",
    "check_transition",
    "dedupe_job_ids",
    "plan_chunks",
    "split_obs_path",
]

JobId = Annotated[int, Field(ge=1, le=MAX_JOB_ID)]


class ListFilters(BaseModel):
    """Filters of DLI's job listing, used to expand `--all` selections."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_type: str | None = None
    status: str | None = None
    queue_name: str | None = None
    name: str | None = None
    tags: str | None = None
    user_name: str | None = None
    order: str | None = None

    def query(self) -> list[tuple[str, str]]:
        """The filters as query pairs, only those that are set."""
        return [(key, value) for key, value in self.model_dump().items() if value is not None]


class BatchRequest(BaseModel):
    """What `submit` and `POST /batches` accept and what travels on the queue."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    batch_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    project_id: str
    obs_dir: str
    job_ids: list[JobId] | None = None
    select_all: bool = False
    filters: ListFilters | None = None
    chunk_size: int = Field(default=100, ge=1, le=1000)
    campaign: str | None = Field(default=None, max_length=128)
    region: RegionRoute | None = Field(default=None, description="None: the default endpoints")
    migration: Destination | None = Field(default=None, description="import the jobs there once verified")
    duplicates_dropped: int = Field(default=0, ge=0)
    planned: bool = Field(default=False, description="the chunks are in the ledger already (submit did it)")
    jobs: int | None = Field(default=None, ge=0, description="how many IDs a planned batch holds")

    @field_validator("project_id")
    @classmethod
    def _project(cls, value: str) -> str:
        return check_project_id(value)

    @field_validator("obs_dir")
    @classmethod
    def _obs_dir(cls, value: str) -> str:
        return check_obs_dir(value)

    @model_validator(mode="after")
    def _selection(self) -> BatchRequest:
        if self.planned:
            if self.job_ids or self.select_all:
                raise ValueError("a planned batch carries neither job_ids nor select_all")
            return self
        if self.select_all and self.job_ids:
            raise ValueError("give either job_ids or select_all, not both")
        if not self.select_all and not self.job_ids:
            raise ValueError("the selection is empty: give at least one ID in job_ids, or select_all")
        if self.filters is not None and not self.select_all:
            raise ValueError("filters apply only with select_all")
        if self.job_ids:
            unique, dropped = dedupe_job_ids(self.job_ids)
            self.duplicates_dropped += dropped
            self.job_ids = unique
        return self


class ChunkState(StrEnum):
    PENDING = "pending"
    EXPORTED = "exported"
    VERIFIED = "verified"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in {ChunkState.VERIFIED, ChunkState.FAILED}

    @property
    def rank(self) -> int:
        """Position on the one way a chunk moves: pending 0, exported 1, verified or failed 2."""
        return _RANK[self]

    def may_move_to(self, new: ChunkState) -> bool:
        """A chunk only moves forward; an open state may be saved again (a retry's attempt count)."""
        if self.terminal:
            return False
        return new.rank > self.rank or new is self


_RANK = {ChunkState.PENDING: 0, ChunkState.EXPORTED: 1, ChunkState.VERIFIED: 2, ChunkState.FAILED: 2}


def check_transition(old: ChunkState, new: ChunkState) -> None:
    """Raise ValueError for a move backwards (or out of a terminal state): that is a bug in the caller."""
    if not old.may_move_to(new):
        raise ValueError(f"a chunk never moves from {old.value} to {new.value}")


class BatchState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        """Completed, with or without failures, or failed as a whole (its `error` says why)."""
        return self in {BatchState.COMPLETED, BatchState.COMPLETED_WITH_FAILURES, BatchState.FAILED}


class ErrorInfo(BaseModel):
    """Why something failed: a DLI error code (`DLI.0002`) or one of ours (`ZIP_MISSING`, ...)."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str


class ZipRecord(BaseModel):
    """One ZIP that DLI said it wrote, and what OBS said about it."""

    path: str
    size: int | None = None
    etag: str | None = None
    verified: bool = False
    error: ErrorInfo | None = None


class Segment(BaseModel):
    """Part of a chunk with one outcome; bisection of a rejected chunk yields several."""

    job_ids: list[int]
    state: ChunkState = ChunkState.PENDING
    zip_files: list[ZipRecord] = Field(default_factory=list)
    error: ErrorInfo | None = None
    request_id: str | None = Field(default=None, description="DLI's X-Request-Id, for support tickets")


class ChunkRecord(BaseModel):
    """The ledger's view of one planned chunk."""

    batch_id: str
    index: int
    job_ids: list[int]
    state: ChunkState = ChunkState.PENDING
    segments: list[Segment] = Field(default_factory=list)
    attempts: int = 0
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class ChunkTally:
    """What one chunk adds to its batch's totals; both ledgers keep the totals as a sum of these."""

    verified: int = 0
    failed: int = 0
    pending: int = 0
    exported: int = 0
    chunks_verified: int = 0
    chunks_failed: int = 0

    FIELDS: ClassVar[tuple[str, ...]] = (
        "verified",
        "failed",
        "pending",
        "exported",
        "chunks_verified",
        "chunks_failed",
    )

    @classmethod
    def of(cls, state: ChunkState, job_count: int, segments: Sequence[Segment]) -> ChunkTally:
        """Job counts follow the segments when the chunk was split, else the chunk's own state (as the
        report's rows do); chunk counts always follow the chunk's state."""
        if len(segments) > 1:
            verified = sum(len(s.job_ids) for s in segments if s.state is ChunkState.VERIFIED)
            failed = sum(len(s.job_ids) for s in segments if s.state is ChunkState.FAILED)
        else:
            verified = job_count if state is ChunkState.VERIFIED else 0
            failed = job_count if state is ChunkState.FAILED else 0
        return cls(
            verified=verified,
            failed=failed,
            pending=int(state is ChunkState.PENDING),
            exported=int(state is ChunkState.EXPORTED),
            chunks_verified=int(state is ChunkState.VERIFIED),
            chunks_failed=int(state is ChunkState.FAILED),
        )

    @classmethod
    def of_chunk(cls, chunk: ChunkRecord) -> ChunkTally:
        return cls.of(chunk.state, len(chunk.job_ids), chunk.segments)

    def minus(self, other: ChunkTally) -> ChunkTally:
        """The change in the batch's totals when a chunk goes from `other` to `self`."""
        return ChunkTally(*(getattr(self, name) - getattr(other, name) for name in self.FIELDS))

    def values(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in self.FIELDS)


class Totals(BaseModel):
    jobs: int = 0
    chunks: int = 0
    verified: int = 0
    failed: int = 0
    pending: int = 0
    exported: int = 0
    chunks_verified: int = 0
    chunks_failed: int = 0


class BatchInfo(BaseModel):
    """A batch as the ledger knows it, without its chunks."""

    batch_id: str
    project_id: str
    obs_dir: str
    campaign: str | None = None
    region: str | None = None
    migration: Destination | None = None
    chunk_size: int
    state: BatchState = BatchState.PENDING
    totals: Totals = Field(default_factory=Totals)
    duplicates_dropped: int = 0
    created_at: float
    updated_at: float
    finished_at: float | None = None
    error: ErrorInfo | None = Field(default=None, description="why the whole batch failed (state failed)")
