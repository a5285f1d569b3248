"""The pipeline over in-memory fakes: chunking, bisection, verification outcomes, redelivery."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from fakes import FakeDli, FakeLedger, FakeStore, ManualClock

from exporter.errors import AuthError, InvalidInput, Permanent, Transient
from exporter.models import BatchInfo, BatchRequest, BatchState, ChunkState
from exporter.pipeline import Pipeline, PipelineOptions, SingleRegion
from exporter.report import LocalReportWriter


def make(
    tmp_path: Path, **option_overrides: object
) -> tuple[Pipeline, FakeDli, FakeStore, FakeLedger, ManualClock]:
    clock = ManualClock()
    store = FakeStore()
    dli = FakeDli(store=store)
    ledger = FakeLedger()
    defaults: dict[str, object] = {"concurrency": 4, "verify_concurrency": 4, "verify_grace_seconds": 10}
    options = PipelineOptions(**{**defaults, **option_overrides})  # type: ignore[arg-type]
    return (
        Pipeline(
            SingleRegion(dli, store), ledger, LocalReportWriter(tmp_path), options, owner="w1", clock=clock
        ),
        dli,
        store,
        ledger,
        clock,
    )


def request(job_ids: list[int] | None = None, chunk_size: int = 10, **extra: object) -> BatchRequest:
    return BatchRequest(
        batch_id="b1",
        project_id="p1",
        obs_dir="bucket/prefix",
        job_ids=job_ids,
        chunk_size=chunk_size,
        **extra,  # type: ignore[arg-type]
    )


async def test_every_id_verified_and_report_written(tmp_path: Path) -> None:
    """A clean batch ends completed, every ID verified once, with report and manifest on disk."""
    pipeline, dli, _, _, _ = make(tmp_path)
    result = await pipeline.run_batch(request(list(range(1, 96))))
    assert result.done and result.info is not None
    assert result.info.state is BatchState.COMPLETED
    assert result.info.totals.verified == 95 and result.info.totals.chunks == 10
    report = json.loads((tmp_path / "b1.json").read_text())
    reported = [j for row in report["chunks"] for j in row["job_ids"]]
    assert sorted(reported) == list(range(1, 96))
    assert all(row["state"] == "verified" and row["zip_files"][0]["verified"] for row in report["chunks"])
    assert len((tmp_path / "b1.jsonl").read_text().splitlines()) == 10
    assert sum(len(call) for call in dli.calls) == 95


async def test_unknown_id_is_bisected_out_and_fails_alone(tmp_path: Path) -> None:
    """One unknown ID in a chunk of 16 fails alone with DLI.0002; the other 15 are verified."""
    pipeline, dli, _, _, _ = make(tmp_path)
    dli.missing = {7}
    result = await pipeline.run_batch(request(list(range(1, 17)), chunk_size=16))
    assert result.info is not None and result.info.state is BatchState.COMPLETED_WITH_FAILURES
    assert result.info.totals.verified == 15 and result.info.totals.failed == 1
    rows = json.loads((tmp_path / "b1.json").read_text())["chunks"]
    failed = [row for row in rows if row["state"] == "failed"]
    assert failed == [
        {
            "index": 0,
            "part": failed[0]["part"],
            "job_ids": [7],
            "state": "failed",
            "zip_files": [],
            "attempts": 1,
            "error": {"code": "DLI.0002", "message": failed[0]["error"]["message"]},
            "request_id": None,
        }
    ]
    assert sorted(j for row in rows for j in row["job_ids"]) == list(range(1, 17))


async def test_transient_failure_defers_and_next_pass_finishes(tmp_path: Path) -> None:
    """A chunk whose export keeps failing transiently stays pending; a later pass completes the batch."""
    pipeline, dli, _, ledger, _ = make(tmp_path, concurrency=1)
    dli.fail_next = [Transient("busy", reason="throttled", retry_after=7)]
    first = await pipeline.run_batch(request(list(range(1, 31))))
    assert not first.done and first.retry_after == 7 and "throttled" in first.reason
    assert (await ledger.get_batch("b1")).totals.pending == 1  # type: ignore[union-attr]
    second = await pipeline.run_batch(request(list(range(1, 31))))
    assert second.done and second.info is not None and second.info.totals.verified == 30


async def test_redelivered_finished_batch_makes_no_export_calls(tmp_path: Path) -> None:
    """A batch whose chunks are all verified, delivered again, exports nothing and re-reports."""
    pipeline, dli, _, _, _ = make(tmp_path)
    await pipeline.run_batch(request(list(range(1, 51))))
    calls = len(dli.calls)
    again = await pipeline.run_batch(request(list(range(1, 51))))
    assert again.done and len(dli.calls) == calls


async def test_late_zip_is_found_within_grace(tmp_path: Path) -> None:
    """A ZIP that appears after a few HEADs is verified, not reported missing."""
    pipeline, dli, store, _, _ = make(tmp_path)
    dli.late = True
    seen: dict[str, int] = {}

    def appear_on_third_head(path: str) -> None:
        seen[path] = seen.get(path, 0) + 1
        if seen[path] == 3:
            store.objects[path] = 10

    store.on_head = appear_on_third_head
    result = await pipeline.run_batch(request([1, 2, 3]))
    assert result.info is not None and result.info.totals.verified == 3


async def test_zip_never_appearing_is_failed_as_missing(tmp_path: Path) -> None:
    """A ZIP still absent after the grace period fails its chunk with ZIP_MISSING."""
    pipeline, dli, _, _, clock = make(tmp_path)
    dli.late = True
    started = clock.now
    result = await pipeline.run_batch(request([1, 2, 3]))
    assert result.info is not None and result.info.totals.failed == 3
    rows = json.loads((tmp_path / "b1.json").read_text())["chunks"]
    assert rows[0]["error"]["code"] == "ZIP_MISSING"
    assert clock.now - started >= 10


async def test_obs_failing_once_then_answering_is_verified_after_one_backoff(tmp_path: Path) -> None:
    """A transient OBS error on the first HEAD is retried after the first backoff (0.2 s), not failed."""
    pipeline, _, store, _, clock = make(tmp_path)
    failed: set[str] = set()

    def fail_first_head(path: str) -> None:
        if path not in failed:
            failed.add(path)
            raise Transient("OBS 503", reason="obs_unavailable")

    store.on_head = fail_first_head
    started = clock.now
    result = await pipeline.run_batch(request([1]))
    assert result.info is not None and result.info.totals.verified == 1
    assert store.heads == 2 and clock.now - started == pytest.approx(0.2)


async def test_obs_failing_for_the_whole_grace_defers_the_chunk(tmp_path: Path) -> None:
    """OBS failing on every HEAD of the grace leaves the chunk exported for a later pass, not failed."""
    pipeline, _, store, ledger, clock = make(tmp_path)

    def always_fail(_path: str) -> None:
        raise Transient("OBS 503", reason="obs_unavailable")

    store.on_head = always_fail
    started = clock.now
    result = await pipeline.run_batch(request([1]))
    assert not result.done and "obs_unavailable" in result.reason
    assert clock.now - started == pytest.approx(10)
    assert 2 < store.heads < 10, "backed off, bounded by the grace"
    assert [c.state for c in ledger.chunk_rows["b1"]] == [ChunkState.EXPORTED]


async def test_empty_zip_fails_with_reason(tmp_path: Path) -> None:
    """A zero-byte object is not a verified export."""
    pipeline, _, store, _, _ = make(tmp_path)
    store.on_head = lambda path: store.objects.__setitem__(path, 0)
    await pipeline.run_batch(request([5]))
    rows = json.loads((tmp_path / "b1.json").read_text())["chunks"]
    assert rows[0]["error"]["code"] == "ZIP_EMPTY"


async def test_auth_error_stops_the_pass(tmp_path: Path) -> None:
    """Refused credentials abort the pass with AuthError; no chunk is marked failed for it."""
    pipeline, dli, _, ledger, _ = make(tmp_path, concurrency=1)
    dli.fail_next = [AuthError("denied", status=401, code="DLI.0013")]
    with pytest.raises(AuthError):
        await pipeline.run_batch(request(list(range(1, 21))))
    info = await ledger.get_batch("b1")
    assert info is not None and info.totals.failed == 0


async def test_forbidden_is_not_bisected(tmp_path: Path) -> None:
    """A 403 on a chunk fails the chunk as a whole instead of splitting it ID by ID."""
    pipeline, dli, _, _, _ = make(tmp_path)
    dli.fail_next = [Permanent("no rights", code="DLI.0003", status=403)]
    await pipeline.run_batch(request(list(range(1, 9)), chunk_size=8))
    assert len(dli.calls) == 1


async def test_select_all_expands_through_listing(tmp_path: Path) -> None:
    """`select_all` lists the project's jobs and exports them all."""
    pipeline, dli, _, _, _ = make(tmp_path)
    dli.known = 25
    result = await pipeline.run_batch(request(None, select_all=True))
    assert result.info is not None and result.info.totals.jobs == 25 and result.info.totals.verified == 25


async def test_report_uploaded_next_to_exports(tmp_path: Path) -> None:
    """With upload_manifest, report and manifest land under <obs_dir>/_reports/."""
    pipeline, _, store, _, _ = make(tmp_path, upload_manifest=True)
    await pipeline.run_batch(request([1, 2]))
    assert set(store.uploads) == {"bucket/prefix/_reports/b1.json", "bucket/prefix/_reports/b1.jsonl"}


async def test_chunk_owned_elsewhere_is_skipped(tmp_path: Path) -> None:
    """With chunk ownership on, a chunk leased by another replica is left to it."""
    pipeline, dli, _, ledger, _ = make(tmp_path, chunk_ownership=True)
    ledger.owners[("b1", 1)] = "other"
    result = await pipeline.run_batch(request(list(range(1, 21))))
    assert not result.done
    assert [c.state for c in ledger.chunk_rows["b1"]] == [ChunkState.VERIFIED, ChunkState.PENDING]
    assert dli.calls == [list(range(1, 11))]


async def test_assistant_works_chunks_and_leaves_finishing_to_the_owner(tmp_path: Path) -> None:
    """An assisting replica exports and verifies open chunks but never completes or reports the batch."""
    helper, dli, store, ledger, _ = make(tmp_path, chunk_ownership=True)
    owner = Pipeline(
        SingleRegion(dli, store),
        ledger,
        LocalReportWriter(tmp_path),
        PipelineOptions(chunk_ownership=True),
        owner="w2",
    )
    info = BatchInfo(
        batch_id="b1", project_id="p1", obs_dir="bucket", chunk_size=10, created_at=0, updated_at=0
    )
    await ledger.create_batch(info, [list(range(1, 11)), list(range(11, 21)), list(range(21, 31))])
    await ledger.set_batch_state("b1", BatchState.RUNNING)
    ledger.owners[("b1", 0)] = "w2"  # the owner is busy with chunk 0
    assert [b.batch_id for b in await helper.running_batches()] == ["b1"]
    assert await helper.assist(info) == 2
    assisted = await ledger.get_batch("b1")
    assert assisted is not None and assisted.state is BatchState.RUNNING and assisted.totals.verified == 20
    assert not (tmp_path / "b1.json").exists()
    del ledger.owners[("b1", 0)]
    result = await owner.run_batch(request(list(range(1, 31))))
    assert result.done and result.info is not None and result.info.totals.verified == 30
    assert sorted(len(c) for c in dli.calls) == [10, 10, 10]


async def test_concurrency_is_one_budget_for_all_batches(tmp_path: Path) -> None:
    """Two batches running at once never have more export calls in flight than EXPORTER_CONCURRENCY."""
    pipeline, dli, _, _, _ = make(tmp_path, concurrency=3)
    in_flight = peak = 0
    original = dli.export_jobs

    async def counting(project_id: str, obs_dir: str, job_ids: list[int]) -> object:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            for _ in range(5):
                await asyncio.sleep(0)
            return await original(project_id, obs_dir, job_ids)
        finally:
            in_flight -= 1

    dli.export_jobs = counting  # type: ignore[method-assign,assignment]
    first = BatchRequest(
        batch_id="a", project_id="p1", obs_dir="bucket", job_ids=list(range(1, 41)), chunk_size=2
    )
    second = first.model_copy(update={"batch_id": "b"})
    await asyncio.gather(pipeline.run_batch(first), pipeline.run_batch(second))
    assert peak == 3


async def test_listing_over_the_batch_limit_is_refused(tmp_path: Path) -> None:
    """An --all listing that matches more jobs than EXPORTER_MAX_JOBS_PER_BATCH is refused by name."""
    pipeline, dli, _, ledger, _ = make(tmp_path, max_jobs_per_batch=50)
    dli.known = 51
    with pytest.raises(InvalidInput, match="EXPORTER_MAX_JOBS_PER_BATCH"):
        await pipeline.run_batch(request(None, select_all=True))
    assert await ledger.get_batch("b1") is None


class FinishedElsewhereLedger(FakeLedger):
    """A ledger where another replica finishes every chunk between our feed reading it and our lease."""

    async def claim_chunk(self, batch_id: str, index: int, owner: str, ttl_seconds: float) -> bool:
        chunk = self.chunk_rows[batch_id][index]
        await self.save_chunk(chunk.model_copy(update={"state": ChunkState.VERIFIED}), chunk)
        return await super().claim_chunk(batch_id, index, owner, ttl_seconds)


async def test_stale_copy_of_a_chunk_finished_elsewhere_is_not_exported_again(tmp_path: Path) -> None:
    """A queued copy of a chunk that another replica finished since the feed read it is skipped."""
    store = FakeStore()
    dli = FakeDli(store=store)
    ledger = FinishedElsewhereLedger()
    options = PipelineOptions(chunk_ownership=True)
    pipeline = Pipeline(
        SingleRegion(dli, store),
        ledger,
        LocalReportWriter(tmp_path),
        options,
        owner="w1",
        clock=ManualClock(),
    )
    info = BatchInfo(
        batch_id="b1", project_id="p1", obs_dir="bucket", chunk_size=10, created_at=0, updated_at=0
    )
    await ledger.create_batch(info, [list(range(1, 11)), list(range(11, 21))])
    assert await pipeline.assist(info) == 0
    assert dli.calls == [] and ledger.owners == {}
