"""The worker loop over fakes: ack on success, nack on deferral, dead letters for bad input, drain."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fakes import FakeDli, FakeLedger, FakeQueue, FakeStore, ManualClock

from exporter.errors import Transient
from exporter.models import BatchInfo, BatchRequest, BatchState
from exporter.pipeline import Pipeline, PipelineOptions
from exporter.submission import submit_batch
from exporter.worker import Worker, WorkerOptions


def make(
    tmp_path: Path, chunk_ownership: bool = False, **worker_options: object
) -> tuple[Worker, FakeQueue, FakeDli, FakeLedger]:
    clock = ManualClock()
    store = FakeStore()
    dli = FakeDli(store=store)
    ledger = FakeLedger()
    options = PipelineOptions(
        concurrency=2, verify_concurrency=2, report_dir=tmp_path, chunk_ownership=chunk_ownership
    )
    pipeline = Pipeline(dli, store, ledger, options, owner="w1", clock=clock)
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


async def test_poison_message_is_parked(tmp_path: Path) -> None:
    """A message already delivered more than max_deliveries times is parked, not run again."""
    worker, queue, dli, _ = make(tmp_path, max_deliveries=2)
    message_id = await queue.put_raw(message("p", [1]))
    queue.messages[message_id]["deliveries"] = 2
    await asyncio.wait_for(worker.run(until_empty=True), 10)
    assert queue.parked[0].reason.startswith("poison: delivered 3 times")
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
