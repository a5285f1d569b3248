"""Batch slots per region: a region whose batches all wait on its limiter never keeps the worker from
another region's batch; its extra batches are handed back (not failed) and run once a slot frees."""

from __future__ import annotations

import asyncio
import json

import pytest
from fakes import FakeQueue, ManualClock

from exporter.clock import SystemClock
from exporter.models import BatchInfo, BatchRequest, ErrorInfo
from exporter.ports import BatchResult
from exporter.slots import RegionSlots
from exporter.worker import Worker, WorkerOptions


async def test_slots_count_per_region_and_capacity_grows_with_regions() -> None:
    slots = RegionSlots(2)
    assert slots.capacity() == 2
    assert slots.take("a") and slots.take("a") and not slots.take("a")
    assert slots.capacity() == 4  # region a's two, and room for another region's
    assert slots.take("b") and slots.take(None)
    assert slots.capacity() == 8  # three regions running here, and room for a fourth
    await slots.give_back("b")
    assert slots.capacity() == 6 and slots.take("a") is False
    with pytest.raises(ValueError, match="at least 1"):
        RegionSlots(0)


async def test_a_full_region_lets_as_many_wait_as_run_then_hands_back() -> None:
    slots = RegionSlots(1)
    assert await slots.wait_for("a")
    waiting = asyncio.create_task(slots.wait_for("a"))
    await asyncio.sleep(0)
    assert not waiting.done() and slots.capacity() == 3  # one running, room for another region, one waiting
    assert await slots.wait_for("a") is False  # the waiting room is full too: hand it back
    assert slots.handed_back() is True and slots.handed_back() is False  # said once
    await slots.give_back("a")
    assert await asyncio.wait_for(waiting, 1) is True  # starts the moment the slot frees
    assert slots.capacity() == 2


@pytest.mark.parametrize(("deliveries", "expected"), [(1, 1.0), (2, 2.0), (4, 8.0), (30, 64.0)])
def test_deferral_doubles_per_offer_up_to_a_minute(deliveries: int, expected: float) -> None:
    assert RegionSlots.deferral(1.0, deliveries) == expected


class RealClock(ManualClock):
    """The system's time, with the `now` the fake queue reads its visibility from."""

    def __init__(self) -> None:
        super().__init__()
        self._system = SystemClock()

    @property  # type: ignore[override]
    def now(self) -> float:
        return self._system.monotonic()

    @now.setter
    def now(self, value: float) -> None:
        pass

    def monotonic(self) -> float:
        return self._system.monotonic()

    def time(self) -> float:
        return self._system.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class HeldRegion:
    """A BatchRunner whose region-a batches wait until released (all stuck on region a's limiter)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.other_region_started = asyncio.Event()
        self.started: list[str] = []

    async def run_batch(self, request: BatchRequest) -> BatchResult:
        self.started.append(request.batch_id)
        if request.region is not None and request.region.name == "region-a":
            await self.release.wait()
        else:
            self.other_region_started.set()
        return BatchResult(request.batch_id, True, None)

    async def fail_batch(self, request: BatchRequest, error: ErrorInfo) -> BatchResult:
        return BatchResult(request.batch_id, True, None)

    async def assist(self, info: BatchInfo) -> int:
        return 0

    async def running_batches(self) -> list[BatchInfo]:
        return []


def message(batch_id: str, region: str) -> str:
    route = {
        "name": region,
        "dli_endpoint": f"http://{region}.test",
        "obs_endpoint": f"http://obs.{region}.test",
    }
    body = {"batch_id": batch_id, "project_id": "p1", "obs_dir": "bucket", "job_ids": [1], "region": route}
    return json.dumps(body)


async def test_a_full_region_never_keeps_the_worker_from_another_regions_batch() -> None:
    # Real time (a manual clock would jump by every heartbeat's sleep): the run takes milliseconds.
    clock = RealClock()
    queue, runner = FakeQueue(clock), HeldRegion()
    for batch_id, region in (("a1", "region-a"), ("a2", "region-a"), ("a3", "region-a"), ("b1", "region-b")):
        await queue.put(batch_id, message(batch_id, region))
    options = WorkerOptions(max_batches=1, poll_interval=0.01, drain_seconds=1)
    worker = Worker(queue, runner, consumer="w1", options=options, clock=clock)
    task = asyncio.create_task(worker.run(until_empty=True))

    await asyncio.wait_for(runner.other_region_started.wait(), 5)
    assert runner.started[:2] == ["a1", "b1"]  # b1 ran while a1 held region a's only slot
    assert "a2" not in runner.started  # a2 waits here for region a's slot
    assert ("3", 0.01) in queue.nacked  # a3 found the waiting room full: handed back, not failed
    assert queue.failed_nacks == [] and queue.parked == []
    runner.release.set()
    await asyncio.wait_for(task, 10)
    assert sorted(queue.acked) == ["1", "2", "3", "4"]
