"""What a campaign looks like from the ledger: its state, its totals, its report and its per-job lines.

Pure over the records (plus one streaming read of chunks for `--jsonl`), so `campaign status`,
`campaign report`, `GET /campaigns/{id}` and the report written when a campaign completes agree.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.campaign.record import CampaignBatch, CampaignRecord
from exporter.migration.models import MigrationTally
from exporter.migration.ports import MigrationLedger
from exporter.models import BatchInfo, BatchState, ChunkRecord, ChunkState, Segment
from exporter.ports import Ledger

__all__ = [
    "CampaignView",
    "campaign_job_lines",
    "campaign_report",
    "campaign_state",
    "campaign_totals",
    "load_view",
]

_TOTAL_FIELDS = ("jobs", "verified", "failed", "pending", "exported", "chunks")
_IMPORT_FIELDS = ("imported", "skipped", "import_failed")


@dataclass(frozen=True, slots=True)
class CampaignView:
    """A campaign's record with each batch's ledger entry (None while a listing batch is unplanned)."""

    record: CampaignRecord
    rows: list[tuple[CampaignBatch, BatchInfo | None]]
    imports: dict[str, MigrationTally] = field(default_factory=dict)
    """A migrating batch's import counts, by batch ID."""

    @property
    def infos(self) -> list[BatchInfo | None]:
        return [info for _, info in self.rows]


async def load_view(
    record: CampaignRecord, ledger: Ledger, migrations: MigrationLedger | None = None
) -> CampaignView:
    rows = [(batch, await ledger.get_batch(batch.batch_id)) for batch in record.batches]
    imports = {}
    if migrations is not None:
        for _, info in rows:
            if info is not None and info.migration is not None:
                imports[info.batch_id] = await migrations.tally(info.batch_id)
    return CampaignView(record, rows, imports)


def _failed(info: BatchInfo) -> bool:
    return info.state in {BatchState.FAILED, BatchState.COMPLETED_WITH_FAILURES}


def campaign_state(infos: Sequence[BatchInfo | None]) -> str:
    """As for batches: completed | completed_with_failures once every batch finished, running once any
    batch started, else pending."""
    if infos and all(info is not None and info.state.finished for info in infos):
        return "completed_with_failures" if any(_failed(i) for i in infos if i) else "completed"
    if any(info is not None and info.state is not BatchState.PENDING for info in infos):
        return "running"
    return "pending"


def campaign_totals(infos: Sequence[BatchInfo | None]) -> dict[str, int]:
    """The batches' totals added up, with how many batches there are, have finished and failed whole."""
    totals = dict.fromkeys(_TOTAL_FIELDS, 0)
    for info in infos:
        if info is not None:
            for name in _TOTAL_FIELDS:
                totals[name] += getattr(info.totals, name)
    totals["batches"] = len(infos)
    totals["batches_finished"] = sum(1 for i in infos if i is not None and i.state.finished)
    totals["batches_failed"] = sum(1 for i in infos if i is not None and i.state is BatchState.FAILED)
    return totals


def _batch_entry(batch: CampaignBatch, info: BatchInfo | None, report_dir: str | None) -> dict[str, Any]:
    finished = info is not None and info.state.finished
    return {
        "batch_id": batch.batch_id,
        "region": batch.region,
        "project_id": batch.project_id,
        "obs_dir": batch.obs_dir,
        "state": info.state.value if info else BatchState.PENDING.value,
        "totals": info.totals.model_dump() if info else None,
        "error": info.error.model_dump() if info and info.error else None,
        "report": f"{report_dir}/{batch.batch_id}.json" if finished and report_dir else None,
    }


def campaign_report(view: CampaignView, report_dir: str | None = None) -> dict[str, Any]:
    """`campaign report --json` (its keys are a contract): the campaign, its totals, one entry per batch;
    with migrating batches, their import counts too (`imported`, `skipped`, `import_failed`)."""
    infos = view.infos
    totals = campaign_totals(infos)
    batches = [_batch_entry(batch, info, report_dir) for batch, info in view.rows]
    if view.imports:
        for name in _IMPORT_FIELDS:
            totals[name] = sum(getattr(tally, name) for tally in view.imports.values())
        for entry in batches:
            tally = view.imports.get(entry["batch_id"])
            entry["import"] = {name: getattr(tally, name) for name in _IMPORT_FIELDS} if tally else None
    return {
        "campaign_id": view.record.campaign_id,
        "state": campaign_state(infos),
        "created_at": view.record.created_at,
        "totals": totals,
        "batches": batches,
    }


def _job_rows(batch: CampaignBatch, chunk: ChunkRecord) -> list[dict[str, Any]]:
    segments = chunk.segments if len(chunk.segments) > 1 else [_whole(chunk)]
    rows = []
    for segment in segments:
        state = segment.state if len(chunk.segments) > 1 else chunk.state
        error = segment.error or (chunk.error if len(chunk.segments) <= 1 else None)
        zip_path = segment.zip_files[0].path if segment.zip_files else None
        for job_id in segment.job_ids:
            rows.append(_job_row(batch, job_id, state, zip_path, error.code if error else None))
    return rows


def _whole(chunk: ChunkRecord) -> Segment:
    return chunk.segments[0] if chunk.segments else Segment(job_ids=chunk.job_ids)


def _job_row(
    batch: CampaignBatch, job_id: int, state: ChunkState, zip_path: str | None, code: str | None
) -> dict[str, Any]:
    return {
        "batch_id": batch.batch_id,
        "region": batch.region,
        "project_id": batch.project_id,
        "job_id": job_id,
        "state": state.value,
        "zip_file": zip_path,
        "error_code": code,
    }


async def campaign_job_lines(view: CampaignView, ledger: Ledger) -> AsyncIterator[str]:
    """`campaign report --jsonl`: one compact JSON line per job of the whole campaign, batch by batch."""
    campaign_id = view.record.campaign_id
    for batch, info in view.rows:
        if info is None:
            continue
        async for chunk in ledger.chunks(batch.batch_id):
            for row in _job_rows(batch, chunk):
                yield json.dumps({"campaign_id": campaign_id, **row}, separators=(",", ":"))
