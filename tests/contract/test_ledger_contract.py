"""The `Ledger` contract: every backend must pass these, with the same observable behaviour.

Totals follow the report's rows: job counts come from the segments when a chunk was split, else from
the chunk's state; chunk counts (pending, exported, chunks_verified, chunks_failed) follow chunk states.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.models import (
    BatchInfo,
    BatchState,
    ChunkRecord,
    ChunkState,
    ErrorInfo,
    Segment,
    Totals,
    ZipRecord,
    plan_chunks,
)

if TYPE_CHECKING:  # the fixture's type; conftest modules are not importable at run time
    from tests.contract.conftest import Contract


def _info(batch_id: str, created_at: float, chunk_size: int = 3) -> BatchInfo:
    return BatchInfo(
        batch_id=batch_id,
        project_id="0123456789abcdef",
        obs_dir="dli-exports/campaign-7",
        campaign="campaign-7",
        chunk_size=chunk_size,
        duplicates_dropped=2,
        created_at=created_at,
        updated_at=created_at,
    )


def _expected_totals(chunks: list[ChunkRecord]) -> Totals:
    """The totals recomputed from scratch from the chunk records, the way the report counts them."""
    totals = Totals(jobs=sum(len(c.job_ids) for c in chunks), chunks=len(chunks))
    for chunk in chunks:
        if len(chunk.segments) > 1:
            totals.verified += sum(len(s.job_ids) for s in chunk.segments if s.state == ChunkState.VERIFIED)
            totals.failed += sum(len(s.job_ids) for s in chunk.segments if s.state == ChunkState.FAILED)
        elif chunk.state == ChunkState.VERIFIED:
            totals.verified += len(chunk.job_ids)
        elif chunk.state == ChunkState.FAILED:
            totals.failed += len(chunk.job_ids)
        totals.pending += chunk.state == ChunkState.PENDING
        totals.exported += chunk.state == ChunkState.EXPORTED
        totals.chunks_verified += chunk.state == ChunkState.VERIFIED
        totals.chunks_failed += chunk.state == ChunkState.FAILED
    return totals


async def _all_chunks(contract: Contract, batch_id: str) -> list[ChunkRecord]:
    return [chunk async for chunk in contract.ledger.chunks(batch_id)]


async def _batch(contract: Contract, batch_id: str) -> BatchInfo:
    batch = await contract.ledger.get_batch(batch_id)
    assert batch is not None
    return batch


async def test_create_batch_records_fields_and_initial_totals(backend: Contract) -> None:
    """A new batch keeps its fields and starts with every chunk pending and nothing verified."""
    info = _info("batch-1", backend.clock.time())
    assert await backend.ledger.create_batch(info, plan_chunks(list(range(1, 11)), 3)) is True
    batch = await _batch(backend, "batch-1")
    assert batch.model_dump(exclude={"totals", "updated_at"}) == info.model_dump(
        exclude={"totals", "updated_at"}
    )
    assert batch.totals == Totals(jobs=10, chunks=4, pending=4)


async def test_create_batch_twice_changes_nothing(backend: Contract) -> None:
    """A second create_batch of the same ID returns False and keeps the first plan."""
    info = _info("batch-1", backend.clock.time())
    assert await backend.ledger.create_batch(info, [[1, 2], [3]]) is True
    assert await backend.ledger.create_batch(info, [[7], [8], [9]]) is False
    assert [c.job_ids for c in await _all_chunks(backend, "batch-1")] == [[1, 2], [3]]
    assert (await _batch(backend, "batch-1")).totals.jobs == 3


async def test_unknown_batch_reads_as_absent_and_empty(backend: Contract) -> None:
    """get_batch, open_chunks and chunks() of an unknown batch give None and nothing."""
    assert await backend.ledger.get_batch("nope") is None
    assert await backend.ledger.open_chunks("nope") == []
    assert await _all_chunks(backend, "nope") == []


async def test_save_chunk_round_trips_segments_attempts_and_error(backend: Contract) -> None:
    """What save_chunk stores is what chunks() and open_chunks() give back, field for field."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1, 2, 3], [4, 5]])
    exported = ChunkRecord(
        batch_id="batch-1",
        index=0,
        job_ids=[1, 2, 3],
        state=ChunkState.EXPORTED,
        segments=[
            Segment(
                job_ids=[1, 2, 3],
                state=ChunkState.EXPORTED,
                zip_files=[ZipRecord(path="dli-exports/campaign-7/a.zip", size=10, etag='"e"')],
            )
        ],
        attempts=2,
        error=ErrorInfo(code="DLI.0999", message="retried"),
    )
    await backend.ledger.save_chunk(exported)
    stored = await _all_chunks(backend, "batch-1")
    assert stored[0] == exported
    assert (await backend.ledger.open_chunks("batch-1"))[0] == exported


async def test_totals_stay_consistent_after_mixed_saves(backend: Contract) -> None:
    """After saves in every state, split chunks and re-saves, totals equal a recount of the chunks."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), plan_chunks(range(1, 19), 3))
    saves = [
        ChunkRecord(batch_id="batch-1", index=0, job_ids=[1, 2, 3], state=ChunkState.EXPORTED),
        ChunkRecord(batch_id="batch-1", index=1, job_ids=[4, 5, 6], state=ChunkState.VERIFIED),
        ChunkRecord(batch_id="batch-1", index=2, job_ids=[7, 8, 9], state=ChunkState.FAILED),
        ChunkRecord(
            batch_id="batch-1",
            index=3,
            job_ids=[10, 11, 12],
            state=ChunkState.FAILED,
            segments=[
                Segment(job_ids=[10, 11], state=ChunkState.VERIFIED),
                Segment(job_ids=[12], state=ChunkState.FAILED, error=ErrorInfo(code="DLI.0002", message="x")),
            ],
        ),
        ChunkRecord(batch_id="batch-1", index=1, job_ids=[4, 5, 6], state=ChunkState.VERIFIED, attempts=1),
        ChunkRecord(batch_id="batch-1", index=2, job_ids=[7, 8, 9], state=ChunkState.PENDING, attempts=1),
        ChunkRecord(batch_id="batch-1", index=4, job_ids=[13, 14, 15], state=ChunkState.EXPORTED),
        ChunkRecord(batch_id="batch-1", index=4, job_ids=[13, 14, 15], state=ChunkState.VERIFIED),
    ]
    for chunk in saves:
        await backend.ledger.save_chunk(chunk)
    totals = (await _batch(backend, "batch-1")).totals
    assert totals == _expected_totals(await _all_chunks(backend, "batch-1"))
    assert totals == Totals(
        jobs=18, chunks=6, verified=8, failed=1, pending=2, exported=1, chunks_verified=2, chunks_failed=1
    )


async def test_totals_of_one_batch_ignore_saves_to_another(backend: Contract) -> None:
    """Saving chunks of one batch leaves the other batch's totals alone."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1], [2]])
    await backend.ledger.create_batch(_info("batch-2", backend.clock.time()), [[1], [2]])
    await backend.ledger.save_chunk(
        ChunkRecord(batch_id="batch-1", index=0, job_ids=[1], state=ChunkState.VERIFIED)
    )
    assert (await _batch(backend, "batch-2")).totals == Totals(jobs=2, chunks=2, pending=2)
    assert (await _batch(backend, "batch-1")).totals.verified == 1


async def test_open_chunks_lists_pending_and_exported_in_index_order(backend: Contract) -> None:
    """open_chunks() leaves out verified and failed chunks and keeps index order."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1], [2], [3], [4], [5]])
    for index, state in [(0, ChunkState.VERIFIED), (1, ChunkState.EXPORTED), (3, ChunkState.FAILED)]:
        await backend.ledger.save_chunk(
            ChunkRecord(batch_id="batch-1", index=index, job_ids=[index + 1], state=state)
        )
    open_chunks = await backend.ledger.open_chunks("batch-1")
    assert [(c.index, c.state) for c in open_chunks] == [
        (1, ChunkState.EXPORTED),
        (2, ChunkState.PENDING),
        (4, ChunkState.PENDING),
    ]


async def test_chunks_streams_every_chunk_in_index_order_across_pages(backend: Contract) -> None:
    """chunks() yields all 1,234 chunks exactly once, in index order, each with its planned IDs."""
    plan = plan_chunks(range(1, 1_234 * 2 + 1), 2)
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time(), chunk_size=2), plan)
    streamed = await _all_chunks(backend, "batch-1")
    assert [c.index for c in streamed] == list(range(1_234))
    assert [c.job_ids for c in streamed] == [list(chunk) for chunk in plan]
    assert {c.batch_id for c in streamed} == {"batch-1"}


async def test_chunks_can_be_abandoned_midway(backend: Contract) -> None:
    """A consumer may stop reading chunks() early and the ledger keeps working."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[n] for n in range(1, 11)])
    stream = backend.ledger.chunks("batch-1")
    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert first.index == 0
    assert (await _batch(backend, "batch-1")).totals.chunks == 10


async def test_set_batch_state_marks_running_then_finished(backend: Contract) -> None:
    """set_batch_state() changes the state; a finishing state stamps finished_at."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1]])
    await backend.ledger.set_batch_state("batch-1", BatchState.RUNNING)
    running = await _batch(backend, "batch-1")
    assert running.state == BatchState.RUNNING
    assert running.finished_at is None
    backend.clock.advance(1)
    await backend.ledger.set_batch_state("batch-1", BatchState.COMPLETED_WITH_FAILURES)
    finished = await _batch(backend, "batch-1")
    assert finished.state == BatchState.COMPLETED_WITH_FAILURES
    assert finished.finished_at is not None
    assert finished.updated_at >= running.updated_at


async def test_claim_chunk_excludes_other_owners_until_released(backend: Contract) -> None:
    """A chunk claimed by one owner is refused to another until the owner releases it."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1], [2]])
    assert await backend.ledger.claim_chunk("batch-1", 0, "replica-a", 600) is True
    assert await backend.ledger.claim_chunk("batch-1", 0, "replica-b", 600) is False
    assert await backend.ledger.claim_chunk("batch-1", 1, "replica-b", 600) is True
    await backend.ledger.release_chunk("batch-1", 0, "replica-b")  # not the owner: no effect
    assert await backend.ledger.claim_chunk("batch-1", 0, "replica-b", 600) is False
    await backend.ledger.release_chunk("batch-1", 0, "replica-a")
    assert await backend.ledger.claim_chunk("batch-1", 0, "replica-b", 600) is True


async def test_claim_chunk_is_renewable_by_its_owner(backend: Contract) -> None:
    """The owner may claim its chunk again (renewal) while others are still refused."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1]])
    assert await backend.ledger.claim_chunk("batch-1", 0, "replica-a", 600) is True
    assert await backend.ledger.claim_chunk("batch-1", 0, "replica-a", 600) is True
    assert await backend.ledger.claim_chunk("batch-1", 0, "replica-b", 600) is False


async def test_claim_chunk_lapses_after_its_ttl(backend: Contract) -> None:
    """Once the ttl has passed another owner may take the chunk, and the first owner is then refused."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1]])
    assert await backend.ledger.claim_chunk("batch-1", 0, "replica-a", backend.short) is True
    await backend.elapse(backend.short * 1.5)
    assert await backend.ledger.claim_chunk("batch-1", 0, "replica-b", 600) is True
    assert await backend.ledger.claim_chunk("batch-1", 0, "replica-a", 600) is False


async def test_list_batches_is_newest_first_and_limited(backend: Contract) -> None:
    """list_batches() orders by creation time, newest first, and honours the limit."""
    start = backend.clock.time()
    for number in range(5):
        await backend.ledger.create_batch(_info(f"batch-{number}", start + number), [[1]])
    assert [b.batch_id for b in await backend.ledger.list_batches()] == [
        "batch-4",
        "batch-3",
        "batch-2",
        "batch-1",
        "batch-0",
    ]
    assert [b.batch_id for b in await backend.ledger.list_batches(limit=2)] == ["batch-4", "batch-3"]


async def test_get_chunk_reads_one_chunk_as_stored_now(backend: Contract) -> None:
    """get_chunk returns the latest saved state of one chunk, and None for a chunk that was never planned."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1, 2], [3, 4]])
    first = await backend.ledger.get_chunk("batch-1", 1)
    assert first is not None and first.job_ids == [3, 4] and first.state is ChunkState.PENDING
    await backend.ledger.save_chunk(first.model_copy(update={"state": ChunkState.FAILED, "attempts": 2}))
    again = await backend.ledger.get_chunk("batch-1", 1)
    assert again is not None and again.state is ChunkState.FAILED and again.attempts == 2
    assert await backend.ledger.get_chunk("batch-1", 2) is None
    assert await backend.ledger.get_chunk("no-such-batch", 0) is None
