"""What DLI and OBS answer, as the ports return it (`exporter.models` re-exports these)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ExportResult", "JobSummary", "ObjectInfo"]


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
