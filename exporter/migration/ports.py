"""The seams migration stages know: the import side of DLI, copying objects, and the migration ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from exporter.migration.models import MigrationStep, MigrationTally
from exporter.models import JobSummary, ListFilters, ObjectInfo

__all__ = ["DliImporter", "ImportResult", "ImportedJob", "JobDetail", "MigrationLedger", "ObjectCopier"]


class ImportedJob(BaseModel):
    """One `job_mapping` entry; DLI sends the IDs as numbers or strings (both parsed to int)."""

    model_config = ConfigDict(frozen=True)

    old_job_id: int
    new_job_id: int
    remark: str | None = None


class ImportResult(BaseModel):
    job_mapping: list[ImportedJob]
    message: str | None = None
    request_id: str | None = None


class JobDetail(BaseModel):
    job_id: int
    name: str | None = None
    status: str | None = None


class DliImporter(Protocol):
    """DLI's import side: import a ZIP, read a job, find jobs by name."""

    async def import_jobs(self, project_id: str, zip_file: str, *, is_cover: bool) -> ImportResult:
        """POST /v1.0/{project_id}/streaming/jobs/import; `zip_file` is `bucket/key`."""
        ...

    async def get_job(self, project_id: str, job_id: int) -> JobDetail | None:
        """GET /v1.0/{project_id}/streaming/jobs/{job_id}; None when DLI says it does not exist."""
        ...

    def list_jobs(
        self, project_id: str, filters: ListFilters | None = None, *, ahead: int = 0
    ) -> AsyncIterator[JobSummary]:
        """Every job of the project (the same listing as exports use); with `ahead` > 0, that many later
        pages requested while one is read (faster, but it may miss a job created meanwhile)."""
        ...


class ObjectCopier(Protocol):
    """Copying an object between buckets, on one endpoint or across two."""

    async def copy_within(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> ObjectInfo:
        """Server-side copy on this endpoint; the copy's size and ETag."""
        ...

    def read_parts(self, bucket: str, key: str, part_size: int) -> AsyncIterator[bytes]:
        """The object's bytes, `part_size` at a time (never the whole object in memory)."""
        ...

    async def write_parts(
        self, bucket: str, key: str, parts: AsyncIterator[bytes], content_type: str
    ) -> ObjectInfo:
        """Upload from an iterator of parts (multipart when more than one); the new object's size and ETag."""
        ...


class MigrationLedger(Protocol):
    """Per-chunk migration steps and the target's names before the migration, beside the `Ledger`."""

    async def save_snapshot(self, batch_id: str, names: Mapping[str, int]) -> bool:
        """Record the target's job names (name -> ID) before anything was imported; the first write wins
        (False when a snapshot exists already)."""
        ...

    async def get_snapshot(self, batch_id: str) -> dict[str, int] | None: ...

    async def get_step(self, batch_id: str, index: int) -> MigrationStep | None: ...

    async def save_step(self, step: MigrationStep, expected: MigrationStep | None) -> bool:
        """Compare-and-set on (state, attempts) of `expected`; `expected` None inserts if absent.
        False when the stored step is not the expected one. A move backwards raises ValueError."""
        ...

    def steps(self, batch_id: str) -> AsyncIterator[MigrationStep]:
        """The batch's steps in chunk order."""
        ...

    async def tally(self, batch_id: str) -> MigrationTally: ...
