"""Chunk ownership across replicas, on fakes and virtual time: leases renewed, lost, given back, and the
compare-and-set save that keeps a stale owner from moving a chunk backwards."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from fakes import FakeDli, FakeLedger, FakeStore, VirtualClock

from exporter import metrics
from exporter.errors import AuthError, Transient
from exporter.models import BatchInfo, BatchRequest, ChunkState, ExportResult, Segment, ZipRecord
from exporter.pipeline import Pipeline, PipelineOptions, SingleRegion
from exporter.report import LocalReportWriter

TTL = 3.0


class SlowDli(FakeDli):
    """Each export takes `seconds` of virtual time; `gate`, when set, holds the first call until opened."""

    seconds: float = 0.0
    clock: VirtualClock | None = None
    gate: asyncio.Event | None = None
    after_gate: BaseException | None = None

    async def export_jobs(self, project_id: str, obs_dir: str, job_ids: Sequence[int]) -> ExportResult:
        if self.gate is not None:
            gate, self.gate = self.gate, None
            self.calls.append(list(job_ids))
            await gate.wait()
            if self.after_gate is not None:
                raise self.after_gate
        if self.clock is not None and self.seconds:
            await self.clock.sleep(self.seconds)
        return await super().export_jobs(project_id, obs_dir, job_ids)


def replica(
    tmp_path: Path, ledger: FakeLedger, store: FakeStore, dli: FakeDli, owner: str, clock: VirtualClock
) -> Pipeline:
    options = PipelineOptions(
        concurrency=2, verify_concurrency=2, chunk_ownership=True, chunk_lease_seconds=TTL
    )
    return Pipeline(
        SingleRegion(dli, store), ledger, LocalReportWriter(tmp_path), options, owner=owner, clock=clock
    )


def one_chunk_batch() -> BatchRequest:
    return BatchRequest(batch_id="b1", project_id="p1", obs_dir="bucket", job_ids=list(range(1, 11)))


async def plan(ledger: FakeLedger, request: BatchRequest) -> BatchInfo:
    info = BatchInfo(
        batch_id="b1", project_id="p1", obs_dir="bucket", chunk_size=10, created_at=0, updated_at=0
    )
    await ledger.create_batch(info, [request.job_ids or []])
    return info


async def test_lease_is_renewed_while_a_slow_export_runs(tmp_path: Path) -> None:
    """An export lasting three leases keeps its chunk: another replica's claims are refused throughout."""
    clock = VirtualClock()
    ledger, store = FakeLedger(clock), FakeStore()
    dli = SlowDli(store=store)
    dli.clock, dli.seconds = clock, 3 * TTL
    pipeline = replica(tmp_path, ledger, store, dli, "w1", clock)
    refused: list[bool] = []

    async def rival() -> None:
        for _ in range(4):
            await clock.sleep(TTL * 0.9)
            refused.append(not await ledger.claim_chunk("b1", 0, "w2", TTL))

    async with clock.running():
        result, _ = await asyncio.gather(pipeline.run_batch(one_chunk_batch()), rival())
    assert result.done and result.info is not None and result.info.totals.verified == 10
    assert refused[:3] == [True, True, True]
    assert dli.calls == [list(range(1, 11))]
    assert ("b1", 0) not in ledger.owners or ledger.owners[("b1", 0)] == "w2"


async def test_lost_lease_stops_the_work_at_once(tmp_path: Path) -> None:
    """When another replica takes the chunk, our export is cancelled and nothing of ours is saved."""
    clock = VirtualClock()
    ledger, store = FakeLedger(clock), FakeStore()
    dli = SlowDli(store=store)
    dli.gate = asyncio.Event()  # our export never returns by itself
    pipeline = replica(tmp_path, ledger, store, dli, "w1", clock)

    async def steal() -> None:
        await clock.sleep(TTL / 2)
        ledger.lease_ends[("b1", 0)] = clock.now  # our lease lapsed (a stalled replica, say)
        assert await ledger.claim_chunk("b1", 0, "w2", 100)

    lost_before = metrics.labelled(metrics.LEASES_LOST, "chunk")._value.get()  # type: ignore[attr-defined]
    async with clock.running():
        result, _ = await asyncio.gather(pipeline.run_batch(one_chunk_batch()), steal())
    assert not result.done and "lease_lost" in result.reason
    assert ledger.saves == [] and ledger.owners[("b1", 0)] == "w2"
    assert metrics.labelled(metrics.LEASES_LOST, "chunk")._value.get() == lost_before + 1  # type: ignore[attr-defined]


async def test_stale_owner_cannot_move_a_verified_chunk_back(tmp_path: Path) -> None:
    """The interleaving seen under load: A's lease lapses mid-call, B exports and verifies the chunk, then
    A's call fails and A saves `pending` (attempt 1): the save is refused, the chunk stays verified."""
    clock = VirtualClock()
    ledger, store = FakeLedger(clock), FakeStore()
    slow = SlowDli(store=store)
    slow.gate = gate = asyncio.Event()
    slow.after_gate = Transient("reset by peer", reason="connection")
    a = replica(tmp_path, ledger, store, slow, "A", clock)
    b = replica(tmp_path, ledger, store, FakeDli(store=store), "B", clock)
    info = await plan(ledger, one_chunk_batch())
    stale_before = metrics.STALE_SAVES._value.get()  # type: ignore[attr-defined]
    # A's renewals are what would notice; make them blind, as a lapse in a stalled process would be.
    real_claim = ledger.claim_chunk

    async def blind_claim(batch_id: str, index: int, owner: str, ttl: float) -> bool:
        return (
            True
            if owner == "A" and ledger.owners.get((batch_id, index)) == "B"
            else await real_claim(batch_id, index, owner, ttl)
        )

    ledger.claim_chunk = blind_claim  # type: ignore[method-assign]

    async def b_takes_over() -> None:
        while not slow.calls:
            await clock.sleep(0.1)
        ledger.lease_ends[("b1", 0)] = clock.now  # A's lease lapses while its call hangs
        assert await b.assist(info) == 1
        gate.set()  # only now does A's call come back, failed

    async with clock.running():
        await asyncio.gather(a.assist(info), b_takes_over())
    chunk = await ledger.get_chunk("b1", 0)
    assert chunk is not None and chunk.state is ChunkState.VERIFIED and chunk.attempts == 1
    assert [saved.state for saved in ledger.saves] == [ChunkState.EXPORTED, ChunkState.VERIFIED]
    assert metrics.STALE_SAVES._value.get() == stale_before + 1  # type: ignore[attr-defined]
    totals = (await ledger.get_batch("b1")).totals  # type: ignore[union-attr]
    assert totals.verified == 10 and totals.pending == 0


async def test_lease_is_given_back_when_the_pass_fails(tmp_path: Path) -> None:
    """Refused credentials end the pass; the chunk's lease is released at once, not left to lapse."""
    clock = VirtualClock()
    ledger, store = FakeLedger(clock), FakeStore()
    dli = FakeDli(store=store, fail_next=[AuthError("denied", status=401, code="DLI.0013")])
    pipeline = replica(tmp_path, ledger, store, dli, "w1", clock)
    async with clock.running():
        with pytest.raises(AuthError):
            await pipeline.run_batch(one_chunk_batch())
    assert ledger.owners == {}


async def test_exported_chunk_is_verified_only_by_its_lease_holder(tmp_path: Path) -> None:
    """A chunk left exported by a crashed replica is verified under a lease: not while another holds it."""
    clock = VirtualClock()
    ledger, store = FakeLedger(clock), FakeStore()
    info = await plan(ledger, one_chunk_batch())
    pending = await ledger.get_chunk("b1", 0)
    assert pending is not None
    store.objects["bucket/x.zip"] = 10
    exported = pending.model_copy(
        update={
            "state": ChunkState.EXPORTED,
            "attempts": 1,
            "segments": [
                Segment(
                    job_ids=pending.job_ids,
                    state=ChunkState.EXPORTED,
                    zip_files=[ZipRecord(path="bucket/x.zip")],
                )
            ],
        }
    )
    assert await ledger.save_chunk(exported, pending)
    await ledger.claim_chunk("b1", 0, "other", 100)
    pipeline = replica(tmp_path, ledger, store, FakeDli(store=store), "w1", clock)
    async with clock.running():
        assert await pipeline.assist(info) == 0
        assert store.heads == 0
        await ledger.release_chunk("b1", 0, "other")
        assert await pipeline.assist(info) == 1
    assert store.heads == 1 and ledger.owners == {}


class SwallowingLedger(FakeLedger):
    """A renewal that swallows its cancel, as redis-py can when a cancel lands inside a command."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock)
        self.renewals_started = 0

    async def claim_chunk(self, batch_id: str, index: int, owner: str, ttl_seconds: float) -> bool:
        if self.owners.get((batch_id, index)) == owner:
            self.renewals_started += 1
            with contextlib.suppress(asyncio.CancelledError):  # the cancel is lost; the call answers
                await asyncio.Event().wait()
        return await super().claim_chunk(batch_id, index, owner, ttl_seconds)


async def test_renewal_that_swallows_its_cancel_still_ends_with_the_chunk(tmp_path: Path) -> None:
    """A renewal stuck in a store call that eats its cancel does not keep the pass alive for ever."""
    clock = VirtualClock()
    ledger, store = SwallowingLedger(clock), FakeStore()
    dli = SlowDli(store=store)
    dli.clock, dli.seconds = clock, TTL  # long enough for a renewal to start
    pipeline = replica(tmp_path, ledger, store, dli, "w1", clock)
    async with clock.running():
        result = await asyncio.wait_for(pipeline.run_batch(one_chunk_batch()), 5)
    assert ledger.renewals_started >= 1
    assert result.done and result.info is not None and result.info.totals.verified == 10
    assert ledger.owners == {}


async def test_a_pass_and_an_assist_in_one_process_never_export_a_chunk_twice(tmp_path: Path) -> None:
    """Seen after a kill -9 on Redis: the new replica assisted a batch, then claimed its message and ran it;
    the store's lease is per owner, so both passes held every chunk. Now the second one skips them."""
    clock = VirtualClock()
    ledger, store = FakeLedger(clock), FakeStore()
    dli = SlowDli(store=store)
    dli.clock, dli.seconds = clock, 1.0
    pipeline = replica(tmp_path, ledger, store, dli, "w1", clock)
    request = one_chunk_batch()
    info = await plan(ledger, request)
    async with clock.running():
        await asyncio.gather(pipeline.assist(info), pipeline.run_batch(request))
    assert dli.calls == [list(range(1, 11))]
