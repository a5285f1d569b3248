"""The job map of one imported ZIP, decided from DLI's answer and what the target held before: pure.

Import is not idempotent and its answers get lost. Under `skip`, importing a ZIP again answers -1 for
every job the first, unanswered, try created. So -1 alone never says "conflict": a job whose name the
target held *before the migration* (the snapshot) is a conflict; a job whose name appeared since is
ours, and its new ID is what the target holds now under that name (looked up by the stage, `current`).
Under `overwrite` a repeat is safe: DLI answers the job's real ID every time.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence

from exporter.migration.models import JobMapRow
from exporter.migration.ports import ImportResult
from exporter.models import ErrorInfo
from exporter.routes import OnConflict

__all__ = ["NOT_IMPORTED", "ambiguous_names", "job_map_rows", "names_in_zip"]

NOT_IMPORTED = -1
_ENTRY = re.compile(r"(?:.*/)?flink_job_(\d+)\.json")


def names_in_zip(data: bytes) -> dict[int, str]:
    """Job ID -> name from an export ZIP's entries (one JSON document per job); ValueError if unreadable."""
    names: dict[int, str] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for entry in archive.infolist():
                found = _ENTRY.fullmatch(entry.filename)
                if found is None or entry.file_size > 16 * 1024 * 1024:
                    continue
                document = json.loads(archive.read(entry))
                name = document.get("name") if isinstance(document, dict) else None
                if isinstance(name, str) and name:
                    names[int(found.group(1))] = name
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
        raise ValueError(f"not a readable export ZIP: {error}") from None
    return names


def ambiguous_names(
    result: ImportResult, names: Mapping[int, str], snapshot: Mapping[str, int], on_conflict: OnConflict
) -> list[str]:
    """Names of the jobs DLI answered -1 for although the target did not hold them before: ours, from
    an earlier try whose answer was lost; the stage looks up the IDs they have now."""
    if on_conflict.is_cover:
        return []
    return sorted(
        {
            names[job.old_job_id]
            for job in result.job_mapping
            if job.new_job_id == NOT_IMPORTED
            and job.old_job_id in names
            and names[job.old_job_id] not in snapshot
        }
    )


def job_map_rows(
    job_ids: Sequence[int],
    result: ImportResult,
    *,
    names: Mapping[int, str],
    snapshot: Mapping[str, int],
    current: Mapping[str, int],
    on_conflict: OnConflict,
) -> list[JobMapRow]:
    """One row per job of the chunk, in its order: imported (with the ID the target has), skipped, failed."""
    answered = {job.old_job_id: job for job in result.job_mapping}
    rows = []
    for job_id in job_ids:
        job = answered.get(job_id)
        name = names.get(job_id)
        if job is None:
            rows.append(_failed(job_id, name, "NOT_IMPORTED", "DLI's answer does not name this job"))
        elif job.new_job_id != NOT_IMPORTED:
            rows.append(
                JobMapRow(
                    old_job_id=job_id,
                    new_job_id=job.new_job_id,
                    state="imported",
                    remark=job.remark,
                    name=name,
                )
            )
        else:
            rows.append(_conflict(job_id, name, job.remark, snapshot, current, on_conflict))
    return rows


def _conflict(
    job_id: int,
    name: str | None,
    remark: str | None,
    snapshot: Mapping[str, int],
    current: Mapping[str, int],
    on_conflict: OnConflict,
) -> JobMapRow:
    if name is not None and name not in snapshot:
        if name in current:  # created by an earlier try of ours whose answer was lost
            return JobMapRow(
                old_job_id=job_id,
                new_job_id=current[name],
                state="imported",
                remark="imported by an earlier try whose answer was lost",
                name=name,
            )
        return _failed(
            job_id, name, "IMPORT_UNKNOWN", "DLI answered -1 but the target holds no job of this name"
        )
    existing = snapshot.get(name) if name is not None else None
    if on_conflict is OnConflict.FAIL:
        message = f"the target already holds a job named {name!r}" + (f" (ID {existing})" if existing else "")
        return _failed(job_id, name, "NAME_EXISTS", message)
    return JobMapRow(
        old_job_id=job_id,
        new_job_id=existing if existing is not None else NOT_IMPORTED,
        state="skipped",
        remark=remark or "a job of this name already existed",
        name=name,
    )


def _failed(job_id: int, name: str | None, code: str, message: str) -> JobMapRow:
    return JobMapRow(
        old_job_id=job_id,
        new_job_id=None,
        state="failed",
        name=name,
        error=ErrorInfo(code=code, message=message),
    )


def failed_rows(job_ids: Iterable[int], names: Mapping[int, str], error: ErrorInfo) -> list[JobMapRow]:
    """Every job of a chunk whose import was refused as a whole, failed with that error."""
    return [
        JobMapRow(old_job_id=job_id, new_job_id=None, state="failed", name=names.get(job_id), error=error)
        for job_id in job_ids
    ]
