"""The target's job names before a migration imported anything: taken once per batch, kept in the ledger.

Every import decision of the batch reads it (see `exporter.migration.jobmap`), so it must be taken before
the batch's first import and never again: one listing of the target project, saved first-write-wins,
then read back, so every chunk worker and every replica decides from the same names. The first import of
a batch waits until the snapshot is in the ledger.
"""

from __future__ import annotations

import asyncio

import structlog

from exporter.migration.ports import DliImporter, MigrationLedger

__all__ = ["SnapshotKeeper"]

log = structlog.get_logger("exporter.pipeline")


class SnapshotKeeper:
    """Per batch: the stored snapshot, or a new one listed from the target and stored."""

    __slots__ = ("_cache", "_locks", "_migrations")

    def __init__(self, migrations: MigrationLedger) -> None:
        self._migrations = migrations
        self._cache: dict[str, dict[str, int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def of(self, batch_id: str, project_id: str, importer: DliImporter) -> dict[str, int]:
        """Name -> job ID of what the target held before the batch imported anything."""
        cached = self._cache.get(batch_id)
        if cached is not None:
            return cached
        async with self._locks.setdefault(batch_id, asyncio.Lock()):
            if batch_id not in self._cache:
                self._cache[batch_id] = await self._stored_or_new(batch_id, project_id, importer)
        return self._cache[batch_id]

    async def _stored_or_new(self, batch_id: str, project_id: str, importer: DliImporter) -> dict[str, int]:
        stored = await self._migrations.get_snapshot(batch_id)
        if stored is not None:
            return stored
        names: dict[str, int] = {}
        async for job in importer.list_jobs(project_id):
            if job.name:
                names.setdefault(job.name, job.job_id)
        saved = await self._migrations.save_snapshot(batch_id, names)
        log.info("migration.snapshot", target=project_id, names=len(names), first=saved)
        final = await self._migrations.get_snapshot(batch_id)
        return names if final is None else final

    def forget(self, batch_id: str) -> None:
        """Drop the cached copy once the batch's pass is over (the ledger keeps it)."""
        self._cache.pop(batch_id, None)
        self._locks.pop(batch_id, None)
