"""Copy stage: a migrated chunk's ZIPs, from the export bucket to where the target region reads them.

A destination without `obs_dir` (or the export's own) needs no copy. Otherwise each ZIP goes to
`<destination obs_dir>/<its file name>`: a server-side copy when both buckets are on one endpoint (one
client), else streamed GET → PUT in parts, never a whole ZIP in memory. Each copy is checked against
the source as verification recorded it: the same size, and the same MD5 where the source ETag is one
(a single-part upload). A mismatch is retried on a later pass, and fails the chunk after a few.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import structlog

from exporter.errors import Transient
from exporter.migration.models import MigrationStep, StepState
from exporter.migration.ports import ObjectCopier
from exporter.models import ErrorInfo, ObjectInfo, ZipRecord, split_obs_path

__all__ = ["PART_SIZE", "CopyStage", "destination_key"]

log = structlog.get_logger("exporter.pipeline")

PART_SIZE = 8 * 1024 * 1024
_MAX_COPY_ATTEMPTS = 5


def destination_key(source_path: str, obs_dir: str) -> str:
    """`bucket/key` of a ZIP's copy: the destination directory and the ZIP's file name."""
    name = source_path.rstrip("/").rsplit("/", 1)[-1]
    return f"{obs_dir.rstrip('/')}/{name}"


def _plain_md5(etag: str | None) -> str | None:
    """The MD5 an ETag carries, when it is one (not a multipart `...-N` ETag)."""
    value = (etag or "").strip('"').lower()
    return value if len(value) == 32 and "-" not in value else None


class CopyStage:
    """Copies each ZIP of a step from `source` to `target` (the same object: one endpoint)."""

    __slots__ = ("_source", "_target")

    def __init__(self, source: ObjectCopier, target: ObjectCopier) -> None:
        self._source = source
        self._target = target

    async def run(self, step: MigrationStep, zips: list[ZipRecord], obs_dir: str | None) -> MigrationStep:
        """The step with its ZIPs where the target reads them, or failed after repeated mismatches."""
        if obs_dir is None:
            return step.model_copy(update={"state": StepState.COPIED, "zip_files": [z.path for z in zips]})
        copied = []
        for record in zips:
            destination = destination_key(record.path, obs_dir)
            if destination != record.path:
                mismatch = await self._copy_checked(record, destination)
                if mismatch is not None:
                    return self._mismatched(step, mismatch)
            copied.append(destination)
        log.info("chunk.copied", chunk=step.index, zips=len(copied))
        return step.model_copy(update={"state": StepState.COPIED, "zip_files": copied, "error": None})

    def _mismatched(self, step: MigrationStep, problem: str) -> MigrationStep:
        attempts = step.attempts + 1
        log.warning("chunk.copy.mismatch", chunk=step.index, attempt=attempts, problem=problem)
        if attempts < _MAX_COPY_ATTEMPTS:
            raise Transient(f"copy does not match its source: {problem}", reason="copy_mismatch")
        error = ErrorInfo(code="COPY_MISMATCH", message=problem)
        return step.model_copy(update={"state": StepState.FAILED, "attempts": attempts, "error": error})

    async def _copy_checked(self, record: ZipRecord, destination: str) -> str | None:
        """Copy one ZIP; None when the copy matches the source, else what differs."""
        src_bucket, src_key = split_obs_path(record.path)
        dst_bucket, dst_key = split_obs_path(destination)
        digest: str | None = None
        if self._source is self._target:
            info = await self._source.copy_within(src_bucket, src_key, dst_bucket, dst_key)
        else:
            hasher = hashlib.md5(usedforsecurity=False)
            parts = _hashed(self._source.read_parts(src_bucket, src_key, PART_SIZE), hasher)
            info = await self._target.write_parts(dst_bucket, dst_key, parts, "application/zip")
            digest = hasher.hexdigest()
        return _difference(record, info, digest)


async def _hashed(parts: AsyncIterator[bytes], hasher: hashlib._Hash) -> AsyncIterator[bytes]:
    async for part in parts:
        hasher.update(part)
        yield part


def _difference(source: ZipRecord, copy: ObjectInfo, streamed_md5: str | None) -> str | None:
    """What differs between a ZIP and its copy (size; MD5 where both sides know it), or None."""
    if source.size is not None and copy.size != source.size:
        return f"{source.path}: {copy.size} bytes copied, the source has {source.size}"
    expected = _plain_md5(source.etag)
    if expected is None:
        return None
    actual = streamed_md5 or _plain_md5(copy.etag)
    if actual is not None and actual != expected:
        return f"{source.path}: MD5 {actual} of the copy, {expected} of the source"
    return None
