"""The worker loop over fakes: ack on success, nack on deferral, dead letters for bad input, drain."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

from fakes import FakeDli, FakeLedger, FakeQueue, FakeStore, ManualClock
from structlog.testing import capture_logs

from exporter import metrics
from exporter.errors import Permanent, StoreUnavailable, Transient
from exporter.models import BatchInfo, BatchRequest, BatchState, JobSummary, ListFilters
from exporter.pipeline import Pipeline, PipelineOptions, SingleRegion
from exporter.report import LocalReportWriter
from exporter.submission import submit_batch
from exporter.worker import Worker, WorkerOptions


def make(
    tmp_path: Path, chunk_ownership: bool = False, **worker_options: object
) -> tuple[Worker, FakeQueue, FakeDli, FakeLedger]:
    clock = ManualClock()
    store = FakeStore()
    dli = FakeDli(store=store)
    ledger = FakeLedger(clock)
    options = PipelineOptions(concurrency=2, verify_concurrency=2, chunk_ownership=chunk_ownership)
    pipeline = Pipeline(
        SingleRegion(dli, store), ledger, LocalReportWriter(tmp_path), options, owner="w1", clock=clock
    )
    queue = FakeQueue(clock)
    defaults: dict[str, object] = {"poll_interval": 0.01, "drain_seconds": 1}
    worker = WorkerOptions(**{**defaults, **worker_options})  # type: ignore[arg-type]
    return Worker(queue, pipeline, consumer="w1", options=worker, clock=clock), queue, dli, ledger


def message(batch_id: str, job_ids: list[int]) -> str:
    return json.dumps({"batch_id": batch_id, "project_id": "p1", "obs_dir": "bucket", "job_ids": job_ids})


async def test_until_empty_processes_and_acks_every_batch(tmp_path: Path) -> None:
    """Two good batches are finished and acked; the loop then exits because the queue is empty."""
    worker, queue, _, ledger = make(tmp_path)
    await queue.put("a", message("a", [1, 2, 3]))
    await queue.put("b", message("b", [4, 5]))
    await asyncio.wait_for(worker.run(until_empty=True), 10)
    assert sorted(queue.acked) == ["1", "2"]
    assert (await ledger.get_batch("a")).totals.verified == 3  # type: ignore[union-attr]


async def test_malformed_message_is_dead_lettered_and_next_batch_completes(tmp_path: Path) -> None:
    """Bad JSON and an invalid request are parked with their reasons; the good batch still completes."""
    worker, queue, _, ledger = make(tmp_path)
    await queue.put_raw("{not json")
    await queue.put_raw(
        json.dumps({"batch_id": "x", "project_id": "bad project!", "obs_dir": "b", "job_ids": [1]})
    )
    await queue.put("good", message("good", [1]))
    await asyncio.wait_for(worker.run(until_empty=True), 10)
    reasons = [p.reason for p in queue.parked]
    assert len(reasons) == 2
    assert "not valid JSON" in reasons[0]
    assert "project_id" in reasons[1] and "letters and digits" in reasons[1]
    assert (await ledger.get_batch("good")).totals.verified == 1  # type: ignore[union-attr]


async def test_deferred_batch_is_nacked_with_retry_after(tmp_path: Path) -> None:
    """A pass that could not finish hands the message back with the server's Retry-After as delay."""
    worker, queue, dli, _ = make(tmp_path, max_batches=1)
    dli.fail_next = [Transient("slow down", reason="throttled", retry_after=9)]
    await queue.put("a", message("a", [1]))
    await asyncio.wait_for(worker.run(until_empty=True), 10)
    assert queue.nacked[0] == ("1", 9)
    assert queue.acked == ["1"]


async def test_message_that_never_finished_is_parked_saying_so(tmp_path: Path) -> None:
    """A message delivered more than max_deliveries times without an answer is parked with what happened."""
    worker, queue, dli, _ = make(tmp_path, max_deliveries=2)
    message_id = await queue.put_raw(message("p", [1]))
    queue.messages[message_id]["deliveries"] = 2
    await asyncio.wait_for(worker.run(until_empty=True), 10)
    assert queue.parked[0].reason.startswith("delivered 3 times without finishing: each delivery ended")
    assert "poison" not in queue.parked[0].reason
    assert dli.calls == []


async def test_stop_drains_and_hands_back_unfinished_work(tmp_path: Path) -> None:
    """On stop, a batch still running after the drain time is cancelled and its message nacked."""
    worker, queue, dli, _ = make(tmp_path, drain_seconds=0.05)
    gate = asyncio.Event()
    started = asyncio.Event()

    async def never(*_: object) -> None:
        started.set()
        await gate.wait()

    dli.export_jobs = never  # type: ignore[assignment, method-assign]
    await queue.put("a", message("a", [1]))
    runner = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    worker.stop()
    await asyncio.wait_for(runner, 5)
    assert queue.nacked == [("1", 0)] and queue.acked == []


async def test_idle_worker_assists_a_running_batch(tmp_path: Path) -> None:
    """With assist on and nothing to claim, the worker helps a batch another replica is running."""
    worker, queue, _, ledger = make(tmp_path, chunk_ownership=True, assist=True)
    info = BatchInfo(
        batch_id="x", project_id="p1", obs_dir="bucket", chunk_size=5, created_at=0, updated_at=0
    )
    await ledger.create_batch(info, [[1, 2, 3, 4, 5], [6, 7]])
    await ledger.set_batch_state("x", BatchState.RUNNING)
    runner = asyncio.create_task(worker.run())
    for _ in range(1000):
        if (await ledger.get_batch("x")).totals.verified == 7:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0)
    worker.stop()
    await asyncio.wait_for(runner, 5)
    assert (await ledger.get_batch("x")).totals.verified == 7  # type: ignore[union-attr]
    assert (await ledger.get_batch("x")).state is BatchState.RUNNING  # type: ignore[union-attr]
    assert queue.acked == []


async def test_assisted_batches_are_forgotten_once_they_end(tmp_path: Path) -> None:
    """A daemon that runs for months assists batch after batch: it remembers only the batches still
    running (cooling down before the next assist), not every batch it ever helped."""
    worker, _, _, ledger = make(tmp_path, chunk_ownership=True, assist=True, assist_cooldown=3600)
    ids = [f"x{n}" for n in range(30)]
    for batch_id in ids:
        info = BatchInfo(
            batch_id=batch_id, project_id="p1", obs_dir="bucket", chunk_size=5, created_at=0, updated_at=0
        )
        await ledger.create_batch(info, [[1, 2]])
        await ledger.set_batch_state(batch_id, BatchState.RUNNING)
    runner = asyncio.create_task(worker.run())

    async def verified() -> int:
        return sum([(await ledger.get_batch(b)).totals.verified for b in ids])  # type: ignore[union-attr]

    for _ in range(5000):
        if await verified() == 60:
            break
        await asyncio.sleep(0)
    remembered_while_running = len(worker._assist_after)
    for batch_id in ids:  # their owners finish them
        await ledger.set_batch_state(batch_id, BatchState.COMPLETED)
    for _ in range(1000):
        if not worker._assist_after:
            break
        await asyncio.sleep(0)
    worker.stop()
    await asyncio.wait_for(runner, 5)
    assert await verified() == 60 and remembered_while_running == 30
    assert worker._assist_after == {}


async def test_submit_plans_in_the_ledger_and_the_message_carries_no_ids(tmp_path: Path) -> None:
    """Submitted IDs go to the ledger at once; the queued message is small and the worker finishes it."""
    worker, queue, _, ledger = make(tmp_path)
    request = BatchRequest(batch_id="big", project_id="p1", obs_dir="bucket", job_ids=list(range(1, 251)))
    assert await submit_batch(queue, request, ledger)
    body = str(next(iter(queue.messages.values()))["body"])
    assert '"planned":true' in body and "job_ids" not in body and '"jobs":250' in body
    assert (await ledger.get_batch("big")).totals.chunks == 3  # type: ignore[union-attr]
    await asyncio.wait_for(worker.run(until_empty=True), 10)
    assert (await ledger.get_batch("big")).totals.verified == 250  # type: ignore[union-attr]


async def test_planned_message_without_its_plan_is_dead_lettered(tmp_path: Path) -> None:
    """A planned message whose batch is missing from the ledger is parked with a reason naming the setting."""
    worker, queue, _, _ = make(tmp_path)
    await queue.put_raw(
        json.dumps({"batch_id": "ghost", "project_id": "p1", "obs_dir": "bucket", "planned": True})
    )
    await asyncio.wait_for(worker.run(until_empty=True), 10)
    assert "EXPORTER_QUEUE_URL" in queue.parked[0].reason


async def test_listing_refused_for_good_ends_the_batch_in_one_pass(tmp_path: Path) -> None:
    """A listing answered 403 DLI.0003 fails the batch with that error in the ledger, the report and the
    dead letter, in the first pass, and `--until-empty` returns."""
    worker, queue, dli, ledger = make(tmp_path)

    async def refused(project_id: str, filters: ListFilters | None = None) -> AsyncIterator[JobSummary]:
        raise Permanent("no permission to list jobs", code="DLI.0003", status=403)
        yield JobSummary(job_id=1)  # pragma: no cover - makes this an async generator

    dli.list_jobs = refused  # type: ignore[method-assign]
    body = json.dumps({"batch_id": "all", "project_id": "p1", "obs_dir": "bucket", "select_all": True})
    await queue.put("all", body)
    await asyncio.wait_for(worker.run(until_empty=True), 10)
    assert [p.reason for p in queue.parked] == ["DLI.0003: no permission to list jobs"]
    assert queue.nacked == [] and queue.acked == []
    info = await ledger.get_batch("all")
    assert info is not None and info.state is BatchState.FAILED
    assert info.error is not None and info.error.code == "DLI.0003"
    report = json.loads((tmp_path / "all.json").read_text())
    assert report["state"] == "failed" and report["error"]["code"] == "DLI.0003"


async def test_unexpected_error_is_logged_retried_then_parked_with_its_text(tmp_path: Path) -> None:
    """A bug is logged with its traceback and counted each time, nacked with growing backoff, and parked
    after max_deliveries with the last error's text, never the bare word poison."""
    worker, queue, dli, _ = make(tmp_path, max_deliveries=3)
    dli.fail_next = [RuntimeError("bug in a stage") for _ in range(3)]
    await queue.put("a", message("a", [1]))
    before = metrics.labelled(metrics.BUGS, "batch")._value.get()  # type: ignore[attr-defined]
    with capture_logs() as logs:
        await asyncio.wait_for(worker.run(until_empty=True), 10)
    assert (
        queue.parked[0].reason == "failed 3 times; last error: INTERNAL_ERROR: RuntimeError: bug in a stage"
    )
    assert [delay for _, delay in queue.nacked] == [1.0, 2.0]
    bugs = [line for line in logs if line["event"] == "batch.bug"]
    assert len(bugs) == 3 and all(isinstance(line["exc_info"], RuntimeError) for line in bugs)
    assert metrics.labelled(metrics.BUGS, "batch")._value.get() == before + 3  # type: ignore[attr-defined]


async def test_retry_after_longer_than_the_dli_backoff_is_honoured(tmp_path: Path) -> None:
    """A 120 s Retry-After defers the batch 120 s: the DLI retry backoff cap is not the batch's cap."""
    worker, queue, dli, _ = make(tmp_path, max_batches=1)
    dli.fail_next = [Transient("slow down", reason="throttled", retry_after=120)]
    await queue.put("a", message("a", [1]))
    await asyncio.wait_for(worker.run(until_empty=True), 10)
    assert queue.nacked[0] == ("1", 120)


async def test_lease_that_cannot_be_confirmed_stops_the_work(tmp_path: Path) -> None:
    """When every extend fails for a whole lease (SQLite unreachable), the batch's work is stopped and
    the message handed back, so a second worker that takes it never runs beside us."""
    worker, queue, dli, _ = make(tmp_path, lease_seconds=3)
    gate = asyncio.Event()

    async def hangs(*_: object) -> None:
        await gate.wait()

    async def unreachable(claim: object, lease_seconds: float) -> bool:
        raise StoreUnavailable("database is locked")

    dli.export_jobs = hangs  # type: ignore[assignment, method-assign]
    queue.extend = unreachable  # type: ignore[method-assign, assignment]
    await queue.put("a", message("a", [1]))
    lost = metrics.labelled(metrics.LEASES_LOST, "message")
    before = lost._value.get()  # type: ignore[attr-defined]
    runner = asyncio.create_task(worker.run())
    for _ in range(10_000):
        if queue.nacked:
            break
        await asyncio.sleep(0)
    worker.stop()
    await asyncio.wait_for(runner, 5)
    assert queue.nacked[0] == ("1", 0)
    assert lost._value.get() >= before + 1  # type: ignore[attr-defined]
