"""What the pipeline stages need to know, and nothing else: the composition root fills it from settings."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PipelineOptions"]


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """Concurrency, verification and ownership knobs of one process's pipeline."""

    concurrency: int = 16
    verify_concurrency: int = 32
    verify_grace_seconds: float = 120.0
    verify_zip: bool = False
    max_jobs_per_batch: int = 1_000_000
    chunk_ownership: bool = False
    chunk_lease_seconds: float = 120.0
    upload_manifest: bool = False
