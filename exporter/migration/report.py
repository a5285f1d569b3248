"""A migration batch's part of its report: where the jobs went, the job map, and its totals.

`report --json` gains `migration` and `job_map[]`, its totals `imported`, `skipped`, `import_failed`;
`report --job-map` prints the map as CSV (`old_job_id,new_job_id,state,remark`), the file a migration
team hands to application owners.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

from exporter.migration.ports import MigrationLedger
from exporter.models import BatchInfo

__all__ = ["CSV_HEADER", "JobMaps", "csv_line", "job_map_dicts", "migration_header", "migration_totals"]

CSV_HEADER = ("old_job_id", "new_job_id", "state", "remark")


def migration_header(info: BatchInfo) -> dict[str, Any] | None:
    destination = info.migration
    if destination is None:
        return None
    return {
        "to_project": destination.project_id,
        "to_region": destination.region.name if destination.region else None,
        "to_obs_dir": destination.obs_dir or info.obs_dir,
        "on_conflict": destination.on_conflict.value,
    }


async def job_map_dicts(migrations: MigrationLedger, batch_id: str) -> AsyncIterator[dict[str, Any]]:
    """Every job-map row of the batch, chunk by chunk: {old_job_id, new_job_id, state, remark, error}."""
    async for step in migrations.steps(batch_id):
        for row in step.rows:
            yield {
                "old_job_id": row.old_job_id,
                "new_job_id": row.new_job_id,
                "state": row.state,
                "remark": row.remark,
                "error": row.error.model_dump() if row.error else None,
            }


class JobMaps:
    """A migration batch's job map, read as often as a report needs it: flat, or chunk by chunk."""

    __slots__ = ("_batch_id", "_migrations")

    def __init__(self, migrations: MigrationLedger, batch_id: str) -> None:
        self._migrations = migrations
        self._batch_id = batch_id

    def rows(self) -> AsyncIterator[dict[str, Any]]:
        return job_map_dicts(self._migrations, self._batch_id)

    async def by_chunk(self) -> AsyncIterator[tuple[int, list[dict[str, Any]]]]:
        """(chunk index, its jobs' {old_job_id, new_job_id, state}), in chunk order: the manifest's."""
        async for step in self._migrations.steps(self._batch_id):
            yield (
                step.index,
                [
                    {"old_job_id": r.old_job_id, "new_job_id": r.new_job_id, "state": r.state}
                    for r in step.rows
                ],
            )


async def migration_totals(migrations: MigrationLedger, batch_id: str) -> dict[str, int]:
    tally = await migrations.tally(batch_id)
    return {"imported": tally.imported, "skipped": tally.skipped, "import_failed": tally.import_failed}


def csv_line(values: tuple[object, ...] | list[object]) -> str:
    """One CSV line (RFC 4180 quoting), without its line break."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(["" if v is None else v for v in values])
    return buffer.getvalue()
