"""A campaign's state, totals, report and per-job lines, from its record and its batches' ledger rows."""

from __future__ import annotations

import json

from fakes import FakeLedger

from exporter.campaign.record import CampaignBatch, CampaignRecord
from exporter.campaign.views import (
    campaign_job_lines,
    campaign_report,
    campaign_state,
    campaign_totals,
    load_view,
)
from exporter.models import (
    BatchInfo,
    BatchState,
    ChunkState,
    ErrorInfo,
    Segment,
    Totals,
    ZipRecord,
)


def info(batch_id: str, state: BatchState, **totals: int) -> BatchInfo:
    return BatchInfo(
        batch_id=batch_id,
        project_id="p",
        obs_dir="b",
        chunk_size=2,
        state=state,
        totals=Totals(**totals),
        created_at=0,
        updated_at=0,
    )


def test_state_follows_the_batches() -> None:
    done, failed = info("a", BatchState.COMPLETED), info("b", BatchState.COMPLETED_WITH_FAILURES)
    assert campaign_state([done, done]) == "completed"
    assert campaign_state([done, failed]) == "completed_with_failures"
    assert campaign_state([done, info("c", BatchState.FAILED)]) == "completed_with_failures"
    assert campaign_state([done, info("c", BatchState.RUNNING)]) == "running"
    assert campaign_state([done, None]) == "running"  # one finished, one listing not planned yet
    assert campaign_state([None, info("c", BatchState.PENDING)]) == "pending"
    assert campaign_state([]) == "pending"


def test_totals_add_up_and_count_batches() -> None:
    infos = [info("a", BatchState.COMPLETED, jobs=4, verified=4), info("b", BatchState.FAILED), None]
    totals = campaign_totals(infos)
    assert totals["jobs"] == 4 and totals["verified"] == 4
    assert (totals["batches"], totals["batches_finished"], totals["batches_failed"]) == (3, 2, 1)


async def test_report_and_job_lines_follow_split_chunks() -> None:
    ledger = FakeLedger()
    batch = info("c.r.p", BatchState.RUNNING)
    await ledger.create_batch(batch, [[1, 2], [3, 4]])
    first = await ledger.get_chunk("c.r.p", 0)
    assert first is not None
    whole = first.model_copy(
        update={
            "state": ChunkState.VERIFIED,
            "segments": [
                Segment(
                    job_ids=[1, 2],
                    state=ChunkState.VERIFIED,
                    zip_files=[ZipRecord(path="b/x.zip", verified=True)],
                )
            ],
        }
    )
    await ledger.save_chunk(whole, first)
    second = await ledger.get_chunk("c.r.p", 1)
    assert second is not None
    bad = ErrorInfo(code="DLI.0002", message="no such job")
    split = second.model_copy(
        update={
            "state": ChunkState.VERIFIED,
            "segments": [
                Segment(
                    job_ids=[3],
                    state=ChunkState.VERIFIED,
                    zip_files=[ZipRecord(path="b/y.zip", verified=True)],
                ),
                Segment(job_ids=[4], state=ChunkState.FAILED, error=bad),
            ],
        }
    )
    await ledger.save_chunk(split, second)
    record = CampaignRecord(
        campaign_id="c",
        identity="d",
        created_at=0,
        batches=[
            CampaignBatch(batch_id="c.r.p", region="r", project_id="p", obs_dir="b"),
            CampaignBatch(batch_id="c.r.q", region="r", project_id="q", obs_dir="b"),
        ],
    )
    view = await load_view(record, ledger)
    report = campaign_report(view, "reports")
    assert report["state"] == "running" and report["batches"][1]["state"] == "pending"
    assert report["batches"][0]["report"] is None  # not finished: no report file yet
    lines = [json.loads(line) async for line in campaign_job_lines(view, ledger)]
    assert [(r["job_id"], r["state"], r["zip_file"], r["error_code"]) for r in lines] == [
        (1, "verified", "b/x.zip", None),
        (2, "verified", "b/x.zip", None),
        (3, "verified", "b/y.zip", None),
        (4, "failed", None, "DLI.0002"),
    ]
    assert {r["campaign_id"] for r in lines} == {"c"} and {r["region"] for r in lines} == {"r"}
