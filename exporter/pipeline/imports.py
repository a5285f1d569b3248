"""Import and confirm stages: each copied ZIP imported into the target project, then each new job checked.

Import: the job names come from the ZIPs' entries (read from where the target reads them); the job map
follows `exporter.migration.jobmap` from DLI's answer, the batch's snapshot and, for jobs answered -1
whose names the target did not hold before, the IDs those names have now. A refusal (403 bucket not
readable, 400) fails the chunk's jobs with DLI's code; a transient error or a lost answer leaves the
step `copied` to be imported again on a later pass, which the job map makes safe.

Confirm: every job the map says was imported must be in the target's listing, read once for the whole
batch when its imports are done (one page per 100 jobs, not one call per job, several pages requested at
once); a job the listing did not show is asked for by ID (a listing paging ahead can miss a job created
meanwhile), and one DLI does not know fails with IMPORT_NOT_FOUND.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import structlog

from exporter.errors import Permanent
from exporter.migration.jobmap import ambiguous_names, failed_rows, job_map_rows, names_in_zip
from exporter.migration.models import JobMapRow, MigrationStep, StepState
from exporter.migration.ports import DliImporter, ImportedJob, ImportResult, ObjectCopier
from exporter.models import ErrorInfo, ListFilters, split_obs_path
from exporter.pipeline.copy import PART_SIZE
from exporter.routes import Destination

__all__ = ["ImportStage", "confirm_step", "unlisted_ids"]

log = structlog.get_logger("exporter.pipeline")


class ImportStage:
    """Imports a step's ZIPs into the destination project through the target region's clients."""

    __slots__ = ("_copier", "_destination", "_importer")

    def __init__(self, importer: DliImporter, copier: ObjectCopier, destination: Destination) -> None:
        self._importer = importer
        self._copier = copier
        self._destination = destination

    async def run(
        self, step: MigrationStep, job_ids: Sequence[int], snapshot: dict[str, int]
    ) -> MigrationStep:
        names = step.names or await self._names(step.zip_files)
        try:
            result = await self._import_all(step.zip_files)
        except Permanent as refused:
            error = ErrorInfo(code=refused.code, message=str(refused))
            log.error("chunk.import.refused", chunk=step.index, code=refused.code)
            rows = failed_rows(job_ids, names, error)
            return step.model_copy(
                update={"state": StepState.FAILED, "rows": rows, "names": names, "error": error}
            )
        on_conflict = self._destination.on_conflict
        current = await self._current_ids(ambiguous_names(result, names, snapshot, on_conflict))
        rows = job_map_rows(
            job_ids, result, names=names, snapshot=snapshot, current=current, on_conflict=on_conflict
        )
        log.info("chunk.imported", chunk=step.index, **_counts(rows))
        return step.model_copy(
            update={"state": StepState.IMPORTED, "rows": rows, "names": names, "error": None}
        )

    async def _import_all(self, zip_files: Sequence[str]) -> ImportResult:
        mapping: list[ImportedJob] = []
        request_id = None
        for zip_file in zip_files:
            result = await self._importer.import_jobs(
                self._destination.project_id, zip_file, is_cover=self._destination.on_conflict.is_cover
            )
            mapping.extend(result.job_mapping)
            request_id = result.request_id or request_id
        return ImportResult(job_mapping=mapping, request_id=request_id)

    async def _names(self, zip_files: Sequence[str]) -> dict[int, str]:
        """Job ID -> name, from the entries of the ZIPs (small: one JSON document per job)."""
        names: dict[int, str] = {}
        for path in zip_files:
            bucket, key = split_obs_path(path)
            data = b"".join([part async for part in self._copier.read_parts(bucket, key, PART_SIZE)])
            try:
                names.update(names_in_zip(data))
            except ValueError as error:
                log.warning("zip.names.unreadable", zip=path, error=str(error))
        return names

    async def _current_ids(self, names: Sequence[str]) -> dict[str, int]:
        """What the target holds now under each name (the listing's `name` filter matches parts of names)."""
        current: dict[str, int] = {}
        for name in names:
            async for job in self._importer.list_jobs(self._destination.project_id, ListFilters(name=name)):
                if job.name == name:
                    current[name] = job.job_id
        return current


def _imported_id(row: JobMapRow) -> int | None:
    """The new job ID of a row the import says it made (or found), else None."""
    imported = row.state == "imported" and row.new_job_id is not None and row.new_job_id > 0
    return row.new_job_id if imported else None


def unlisted_ids(step: MigrationStep, held: Collection[int]) -> list[int]:
    """The new job IDs of the step's imported rows that are not among `held`."""
    return [job_id for row in step.rows if (job_id := _imported_id(row)) is not None and job_id not in held]


def confirm_step(step: MigrationStep, held: Collection[int], project_id: str) -> MigrationStep:
    """The step confirmed against the job IDs the target holds: an imported job not among them fails
    with IMPORT_NOT_FOUND."""
    rows: list[JobMapRow] = []
    for row in step.rows:
        if _imported_id(row) is not None and row.new_job_id not in held:
            message = f"job {row.new_job_id} is not in project {project_id} after the import"
            error = ErrorInfo(code="IMPORT_NOT_FOUND", message=message)
            rows.append(row.model_copy(update={"state": "failed", "error": error}))
        else:
            rows.append(row)
    log.info("chunk.confirmed", chunk=step.index, **_counts(rows))
    return step.model_copy(update={"state": StepState.CONFIRMED, "rows": rows})


def _counts(rows: Sequence[JobMapRow]) -> dict[str, int]:
    return {state: sum(1 for r in rows if r.state == state) for state in ("imported", "skipped", "failed")}
