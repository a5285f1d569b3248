"""Data that crosses module boundaries: batch requests, chunks, ZIP records, reports, DLI results.

Validation lives here so the CLI, the HTTP intake and the worker all refuse the same bad input with the
same words.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Annotated, Any, overload

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "MAX_JOB_ID",
    "BatchInfo",
    "BatchRequest",
    "BatchState",
    "ChunkPlan",
    "ChunkRecord",
    "ChunkState",
    "ErrorInfo",
    "ExportResult",
    "JobSummary",
    "ListFilters",
    "ObjectInfo",
    "Segment",
    "Totals",
    "ZipRecord",
    "check_bucket",
    "check_obs_dir",
    "check_project_id",
    "dedupe_job_ids",
    "plan_chunks",
    "split_obs_path",
]

MAX_JOB_ID = 2**63 - 1
_PROJECT_ID = re.compile(r"[A-Za-z0-9]{1,64}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_FORBIDDEN = re.compile(r"[\x00-\x1f\\]")


def check_project_id(value: str) -> str:
    """Return the project ID if it is 1-64 letters and digits (DLI's rule), else raise ValueError."""
    if not _PROJECT_ID.fullmatch(value):
        raise ValueError(f"project ID {value!r} must be 1 to 64 letters and digits")
    return value


def check_bucket(bucket: str) -> str:
    """Return the bucket name if it follows OBS naming rules, else raise ValueError saying which."""
    if not 3 <= len(bucket) <= 63:
        raise ValueError(f"bucket {bucket!r} must be 3 to 63 characters long")
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(
            f"bucket {bucket!r} may hold only lowercase letters, digits, '-' and '.', "
            "and must start and end with a letter or digit"
        )
    if ".." in bucket or ".-" in bucket or "-." in bucket:
        raise ValueError(f"bucket {bucket!r} must not contain '..', '.-' or '-.'")
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        return bucket
    raise ValueError(f"bucket {bucket!r} must not be an IP address")


def split_obs_path(path: str) -> tuple[str, str]:
    """Split `bucket/key/parts` into (bucket, key); DLI returns ZIP paths in this form."""
    bucket, _, key = path.strip().lstrip("/").partition("/")
    return bucket, key


def check_obs_dir(obs_dir: str) -> str:
    """Normalise `BUCKET[/PREFIX]` (no scheme, no trailing slash) and validate bucket and prefix."""
    value = obs_dir.strip()
    if value.lower().startswith("obs://"):
        value = value[len("obs://") :]
    value = value.strip("/")
    bucket, prefix = split_obs_path(value)
    check_bucket(bucket)
    if prefix:
        if len(prefix.encode()) > 900:
            raise ValueError("OBS prefix must be at most 900 bytes")
        if _PREFIX_FORBIDDEN.search(prefix) or "//" in prefix:
            raise ValueError(f"OBS prefix {prefix!r} must not contain control characters, '\\' or '//'")
        if any(part in {".", ".."} for part in prefix.split("/")):
            raise ValueError(f"OBS prefix {prefix!r} must not contain '.' or '..' segments")
    return f"{bucket}/{prefix}" if prefix else bucket


def dedupe_job_ids(job_ids: Iterable[int]) -> tuple[list[int], int]:
    """Return the IDs in first-seen order without repeats, and how many repeats were dropped."""
    seen: set[int] = set()
    unique: list[int] = []
    total = 0
    for job_id in job_ids:
        total += 1
        if job_id not in seen:
            seen.add(job_id)
            unique.append(job_id)
    return unique, total - len(unique)


class ChunkPlan(Sequence[Sequence[int]]):
    """Consecutive chunks of a sequence of IDs, cut on demand (chunk i always holds the same IDs).

    Slicing lazily means a plan of a million IDs costs no second copy of them.
    """

    __slots__ = ("_job_ids", "_size")

    def __init__(self, job_ids: Sequence[int], chunk_size: int) -> None:
        if chunk_size < 1:
            raise ValueError("chunk size must be at least 1")
        self._job_ids = job_ids
        self._size = chunk_size

    def __len__(self) -> int:
        return (len(self._job_ids) + self._size - 1) // self._size

    @overload
    def __getitem__(self, index: int) -> Sequence[int]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Sequence[int]]: ...

    def __getitem__(self, index: int | slice) -> Sequence[int] | Sequence[Sequence[int]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("chunk index out of range")
        start = index * self._size
        return self._job_ids[start : start + self._size]


def plan_chunks(job_ids: Sequence[int], chunk_size: int) -> ChunkPlan:
    """Cut the IDs into consecutive chunks of `chunk_size` (the last may be shorter)."""
    return ChunkPlan(job_ids, chunk_size)


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
            raise ValueError("the selection is empty: give at least one job ID, or select_all")
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


class BatchState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_FAILURES = "completed_with_failures"


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

    def report_rows(self) -> list[dict[str, Any]]:
        """Rows of the report: the chunk itself, or one row per segment when it was split."""
        if len(self.segments) <= 1:
            segment = self.segments[0] if self.segments else Segment(job_ids=self.job_ids)
            return [self._row(None, segment, self.state, self.error or segment.error)]
        return [
            self._row(part, segment, segment.state, segment.error)
            for part, segment in enumerate(self.segments)
        ]

    def _row(
        self, part: int | None, segment: Segment, state: ChunkState, error: ErrorInfo | None
    ) -> dict[str, Any]:
        return {
            "index": self.index,
            "part": part,
            "job_ids": segment.job_ids,
            "state": state.value,
            "zip_files": [z.model_dump(exclude={"error"}) for z in segment.zip_files],
            "attempts": self.attempts,
            "error": error.model_dump() if error else None,
            "request_id": segment.request_id,
        }


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
    chunk_size: int
    state: BatchState = BatchState.PENDING
    totals: Totals = Field(default_factory=Totals)
    duplicates_dropped: int = 0
    created_at: float
    updated_at: float
    finished_at: float | None = None


class ExportResult(BaseModel):
    """DLI's answer to an export call."""

    is_success: bool
    message: str = ""
    zip_files: list[str] = Field(default_factory=list)
    request_id: str | None = None


class JobSummary(BaseModel):
    """One job of DLI's listing: what expansion of `--all` needs."""

    model_config = ConfigDict(extra="ignore")

    job_id: int
    name: str | None = None
    status: str | None = None
    job_type: str | None = None
    queue_name: str | None = None


class ObjectInfo(BaseModel):
    """What OBS says about an object (HEAD)."""

    size: int
    etag: str | None = None
