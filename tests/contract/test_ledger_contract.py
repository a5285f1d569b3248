"""The `Ledger` contract: every backend must pass these, with the same observable behaviour.

Totals follow the report's rows: job counts come from the segments when a chunk was split, else from
the chunk's state; chunk counts (pending, exported, chunks_verified, chunks_failed) follow chunk states.
Saves are compare-and-set: each names the chunk it expects to find (state and attempts), so a stale owner's
late save is refused instead of undoing another replica's progress.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from exporter.errors import NotFound
from exporter.models import (
    BatchInfo,
    BatchState,
    ChunkRecord,
    ChunkState,
    Destination,
    ErrorInfo,
    OnConflict,
    RegionRoute,
    Segment,
    Totals,
    ZipRecord,
    plan_chunks,
)

if TYPE_CHECKING:  # the fixture's type; conftest modules are not importable at run time
    from tests.contract.conftest import Contract


@pytest.fixture
def backend(ledger_backend: Contract) -> Contract:
    """Here `backend` also covers FakeLedger, so the unit tests' fake keeps the same contract."""
    return ledger_backend


def _info(batch_id: str, created_at: float, chunk_size: int = 3) -> BatchInfo:
    return BatchInfo(
        batch_id=batch_id,
        project_id="0123456789abcdef",
        obs_dir="dli-exports/campaign-7",
        campaign="campaign-7",
        region="ap-southeast-1",
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


async def _chunk(contract: Contract, batch_id: str, index: int) -> ChunkRecord:
    chunk = await contract.ledger.get_chunk(batch_id, index)
    assert chunk is not None
    return chunk


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


async def test_a_migration_destination_round_trips_on_create_get_and_list(backend: Contract) -> None:
    """BatchInfo.migration (route and conflict policy included) reads back as created; None stays None."""
    route = RegionRoute(
        name="eu-west-101",
        dli_endpoint="https://dli.eu-west-101.example.com",
        obs_endpoint="https://obs.eu-west-101.example.com",
        rate_limit=25.0,
    )
    target = Destination(
        project_id="fedcba9876543210",
        region=route,
        obs_dir="target-bucket/imports",
        on_conflict=OnConflict.FAIL,
    )
    start = backend.clock.time()
    migrating = _info("batch-m", start + 1).model_copy(update={"migration": target})
    await backend.ledger.create_batch(_info("batch-e", start), [[1]])
    assert await backend.ledger.create_batch(migrating, [[1, 2]]) is True
    assert (await _batch(backend, "batch-m")).migration == target
    assert (await _batch(backend, "batch-e")).migration is None
    listed = {b.batch_id: b.migration for b in await backend.ledger.list_batches()}
    assert listed == {"batch-m": target, "batch-e": None}


async def test_create_batch_twice_changes_nothing(backend: Contract) -> None:
    """A second create_batch of the same ID returns False and keeps the first plan."""
    info = _info("batch-1", backend.clock.time())
    assert await backend.ledger.create_batch(info, [[1, 2], [3]]) is True
    assert await backend.ledger.create_batch(info, [[7], [8], [9]]) is False
    assert [c.job_ids for c in await _all_chunks(backend, "batch-1")] == [[1, 2], [3]]
    assert (await _batch(backend, "batch-1")).totals.jobs == 3


async def test_unknown_batch_reads_as_absent_and_empty(backend: Contract) -> None:
    """get_batch, get_chunk and chunks() of an unknown batch give None and nothing."""
    assert await backend.ledger.get_batch("nope") is None
    assert await backend.ledger.get_chunk("nope", 0) is None
    assert await _all_chunks(backend, "nope") == []


async def test_save_chunk_round_trips_segments_attempts_and_error(backend: Contract) -> None:
    """What save_chunk stores is what chunks() and get_chunk() give back, field for field."""
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
    assert await backend.ledger.save_chunk(exported, await _chunk(backend, "batch-1", 0)) is True
    assert (await _all_chunks(backend, "batch-1"))[0] == exported
    assert await backend.ledger.get_chunk("batch-1", 0) == exported


async def test_totals_stay_consistent_after_mixed_saves(backend: Contract) -> None:
    """After saves in every state, split chunks and re-saves, totals equal a recount of the chunks."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), plan_chunks(range(1, 19), 3))
    saves = [
        ChunkRecord(batch_id="batch-1", index=0, job_ids=[1, 2, 3], state=ChunkState.EXPORTED),
        ChunkRecord(batch_id="batch-1", index=1, job_ids=[4, 5, 6], state=ChunkState.EXPORTED),
        ChunkRecord(batch_id="batch-1", index=1, job_ids=[4, 5, 6], state=ChunkState.VERIFIED, attempts=1),
        ChunkRecord(batch_id="batch-1", index=2, job_ids=[7, 8, 9], state=ChunkState.PENDING, attempts=1),
        ChunkRecord(batch_id="batch-1", index=2, job_ids=[7, 8, 9], state=ChunkState.FAILED, attempts=2),
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
        ChunkRecord(batch_id="batch-1", index=4, job_ids=[13, 14, 15], state=ChunkState.EXPORTED),
        ChunkRecord(batch_id="batch-1", index=4, job_ids=[13, 14, 15], state=ChunkState.VERIFIED),
    ]
    for chunk in saves:
        assert await backend.ledger.save_chunk(chunk, await _chunk(backend, "batch-1", chunk.index))
    totals = (await _batch(backend, "batch-1")).totals
    assert totals == _expected_totals(await _all_chunks(backend, "batch-1"))
    assert totals == Totals(
        jobs=18, chunks=6, verified=8, failed=4, pending=1, exported=1, chunks_verified=2, chunks_failed=2
    )


async def test_totals_of_one_batch_ignore_saves_to_another(backend: Contract) -> None:
    """Saving chunks of one batch leaves the other batch's totals alone."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1], [2]])
    await backend.ledger.create_batch(_info("batch-2", backend.clock.time()), [[1], [2]])
    pending = await _chunk(backend, "batch-1", 0)
    await backend.ledger.save_chunk(pending.model_copy(update={"state": ChunkState.VERIFIED}), pending)
    assert (await _batch(backend, "batch-2")).totals == Totals(jobs=2, chunks=2, pending=2)
    assert (await _batch(backend, "batch-1")).totals.verified == 1


# --- compare-and-set -------------------------------------------------------------------------------------


async def test_save_chunk_stores_when_state_and_attempts_are_as_expected(backend: Contract) -> None:
    """A save whose expectation matches the stored chunk returns True and moves chunk and totals."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1, 2], [3]])
    pending = await _chunk(backend, "batch-1", 0)
    retried = pending.model_copy(update={"attempts": 1})
    assert await backend.ledger.save_chunk(retried, pending) is True
    exported = retried.model_copy(update={"state": ChunkState.EXPORTED})
    assert await backend.ledger.save_chunk(exported, retried) is True
    assert await backend.ledger.get_chunk("batch-1", 0) == exported
    assert (await _batch(backend, "batch-1")).totals == Totals(jobs=3, chunks=2, pending=1, exported=1)


async def test_save_chunk_is_refused_when_another_writer_moved_the_state(backend: Contract) -> None:
    """Two owners read the same pending chunk; the second save, still expecting pending, is refused."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1, 2]])
    read = await _chunk(backend, "batch-1", 0)
    first = read.model_copy(update={"state": ChunkState.EXPORTED, "attempts": 1})
    second = read.model_copy(update={"state": ChunkState.FAILED, "error": ErrorInfo(code="X", message="y")})
    assert await backend.ledger.save_chunk(first, read) is True
    assert await backend.ledger.save_chunk(second, read) is False
    assert await backend.ledger.get_chunk("batch-1", 0) == first
    assert (await _batch(backend, "batch-1")).totals == Totals(jobs=2, chunks=1, exported=1)


async def test_save_chunk_is_refused_when_attempts_moved(backend: Contract) -> None:
    """Same state, other attempt count: a save expecting the old count changes nothing."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1]])
    read = await _chunk(backend, "batch-1", 0)
    assert await backend.ledger.save_chunk(read.model_copy(update={"attempts": 1}), read)
    stale = read.model_copy(update={"state": ChunkState.EXPORTED})
    assert await backend.ledger.save_chunk(stale, read) is False
    stored = await _chunk(backend, "batch-1", 0)
    assert (stored.state, stored.attempts) == (ChunkState.PENDING, 1)


async def test_stale_owner_saving_pending_over_verified_is_refused(backend: Contract) -> None:
    """An owner whose lease lapsed saves its retry (pending) after another replica verified the chunk:
    refused, and the chunk and the totals stay as the other replica left them."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1, 2], [3]])
    stale_read = await _chunk(backend, "batch-1", 0)
    exported = stale_read.model_copy(update={"state": ChunkState.EXPORTED, "attempts": 1})
    assert await backend.ledger.save_chunk(exported, stale_read)
    verified = exported.model_copy(update={"state": ChunkState.VERIFIED})
    assert await backend.ledger.save_chunk(verified, exported)
    before = (await _batch(backend, "batch-1")).totals
    retry = stale_read.model_copy(update={"attempts": 1})
    assert await backend.ledger.save_chunk(retry, stale_read) is False
    assert await backend.ledger.get_chunk("batch-1", 0) == verified
    assert (
        (await _batch(backend, "batch-1")).totals
        == before
        == Totals(jobs=3, chunks=2, verified=2, pending=1, chunks_verified=1)
    )


async def test_of_two_saves_racing_from_one_expectation_exactly_one_lands(backend: Contract) -> None:
    """Concurrent saves expecting the same stored chunk: one is stored, the other refused."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1]])
    read = await _chunk(backend, "batch-1", 0)
    contenders = [
        read.model_copy(update={"state": ChunkState.EXPORTED, "attempts": 1}),
        read.model_copy(update={"state": ChunkState.FAILED, "attempts": 1}),
    ]
    outcomes = await asyncio.gather(*(backend.ledger.save_chunk(c, read) for c in contenders))
    assert sorted(outcomes) == [False, True]
    assert await backend.ledger.get_chunk("batch-1", 0) == contenders[outcomes.index(True)]
    assert (await _batch(backend, "batch-1")).totals == _expected_totals(
        await _all_chunks(backend, "batch-1")
    )


async def test_the_same_save_again_is_accepted_and_changes_nothing(backend: Contract) -> None:
    """A save repeated with its old expectation (a retried call) returns True and counts once."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1, 2]])
    read = await _chunk(backend, "batch-1", 0)
    verified = read.model_copy(update={"state": ChunkState.VERIFIED, "attempts": 1})
    assert await backend.ledger.save_chunk(verified, read) is True
    assert await backend.ledger.save_chunk(verified, read) is True
    assert (await _batch(backend, "batch-1")).totals == Totals(
        jobs=2, chunks=1, verified=2, chunks_verified=1
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (ChunkState.EXPORTED, ChunkState.PENDING),
        (ChunkState.VERIFIED, ChunkState.EXPORTED),
        (ChunkState.VERIFIED, ChunkState.VERIFIED),
        (ChunkState.FAILED, ChunkState.PENDING),
    ],
)
async def test_a_move_backwards_raises_value_error(
    backend: Contract, old: ChunkState, new: ChunkState
) -> None:
    """A save from a terminal state, or back to an earlier one, is a caller's bug: ValueError, no write."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1]])
    pending = await _chunk(backend, "batch-1", 0)
    expected = pending.model_copy(update={"state": old})
    with pytest.raises(ValueError, match="never moves"):
        await backend.ledger.save_chunk(pending.model_copy(update={"state": new, "attempts": 1}), expected)
    assert await backend.ledger.get_chunk("batch-1", 0) == pending


async def test_save_of_a_chunk_never_planned_raises_not_found(backend: Contract) -> None:
    """An index the batch never planned, or a batch never created, is NotFound (totals untouched)."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1], [2]])
    for batch_id, index in [("batch-1", 2), ("batch-1", -1), ("no-such-batch", 0)]:
        chunk = ChunkRecord(batch_id=batch_id, index=index, job_ids=[9])
        with pytest.raises(NotFound, match="no chunk"):
            await backend.ledger.save_chunk(chunk.model_copy(update={"state": ChunkState.VERIFIED}), chunk)
    assert (await _batch(backend, "batch-1")).totals == Totals(jobs=2, chunks=2, pending=2)
    assert await backend.ledger.get_batch("no-such-batch") is None


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
    assert running.error is None
    backend.clock.advance(1)
    await backend.ledger.set_batch_state("batch-1", BatchState.COMPLETED_WITH_FAILURES)
    finished = await _batch(backend, "batch-1")
    assert finished.state == BatchState.COMPLETED_WITH_FAILURES
    assert finished.finished_at is not None
    assert finished.updated_at >= running.updated_at


async def test_a_failed_batch_keeps_its_error(backend: Contract) -> None:
    """State failed with an error: get_batch and list_batches give the error back; finished_at is set;
    a later state without an error clears it."""
    await backend.ledger.create_batch(_info("batch-1", backend.clock.time()), [[1]])
    error = ErrorInfo(code="DLI.0403", message="DLI answered HTTP 403: the listing was refused")
    backend.clock.advance(1)
    await backend.ledger.set_batch_state("batch-1", BatchState.FAILED, error)
    failed = await _batch(backend, "batch-1")
    assert (failed.state, failed.error) == (BatchState.FAILED, error)
    assert failed.finished_at == backend.clock.time()
    assert [(b.state, b.error) for b in await backend.ledger.list_batches()] == [(BatchState.FAILED, error)]
    await backend.ledger.set_batch_state("batch-1", BatchState.RUNNING)
    again = await _batch(backend, "batch-1")
    assert (again.state, again.error, again.finished_at) == (BatchState.RUNNING, None, None)


async def test_set_batch_state_of_an_unknown_batch_raises_not_found(backend: Contract) -> None:
    """The ledger does not invent batches: NotFound, and still no such batch afterwards."""
    with pytest.raises(NotFound, match="no batch"):
        await backend.ledger.set_batch_state("no-such-batch", BatchState.RUNNING)
    with pytest.raises(NotFound, match="no batch"):
        await backend.ledger.set_batch_state(
            "no-such-batch", BatchState.FAILED, ErrorInfo(code="X", message="y")
        )
    assert await backend.ledger.get_batch("no-such-batch") is None
    assert await backend.ledger.list_batches() == []


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
    failed = first.model_copy(update={"state": ChunkState.FAILED, "attempts": 2})
    assert await backend.ledger.save_chunk(failed, first)
    again = await backend.ledger.get_chunk("batch-1", 1)
    assert again is not None and again.state is ChunkState.FAILED and again.attempts == 2
    assert await backend.ledger.get_chunk("batch-1", 2) is None
    assert await backend.ledger.get_chunk("no-such-batch", 0) is None
