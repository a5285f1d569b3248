"""The `MigrationLedger` contract: SQLite, Redis and the fake keep migration steps with the same behaviour.

Saves are compare-and-set on (state, attempts), like the ledger's chunks: a stale replica's late save is
refused instead of undoing another's progress, and a move backwards is a caller's bug (ValueError).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from exporter.adapters.sqlite import open_sqlite
from exporter.adapters.sqlite_schema import _MIGRATIONS, SCHEMA_VERSION
from exporter.migration.models import JobMapRow, MigrationStep, MigrationTally, StepState
from exporter.models import ErrorInfo

if TYPE_CHECKING:  # the fixture's type; conftest modules are not importable at run time
    from tests.contract.conftest import Contract


@pytest.fixture
def backend(ledger_backend: Contract) -> Contract:
    """Here `backend` also covers FakeMigrationLedger, so the unit tests' fake keeps the same contract."""
    return ledger_backend


def _step(index: int, state: StepState = StepState.PENDING, attempts: int = 0, **more: Any) -> MigrationStep:
    return MigrationStep(batch_id="batch-1", index=index, state=state, attempts=attempts, **more)


def _row(job_id: int, state: str = "imported") -> JobMapRow:
    new = {"imported": job_id + 10_000, "skipped": -1, "failed": None}[state]
    return JobMapRow.model_validate({"old_job_id": job_id, "new_job_id": new, "state": state})


async def _all(contract: Contract, batch_id: str = "batch-1") -> list[MigrationStep]:
    return [step async for step in contract.migrations.steps(batch_id)]


async def test_the_first_snapshot_wins(backend: Contract) -> None:
    """A second snapshot of a batch is refused and changes nothing; other batches are apart."""
    assert await backend.migrations.get_snapshot("batch-1") is None
    assert await backend.migrations.save_snapshot("batch-1", {"job-a": 1, "job-b": 2}) is True
    assert await backend.migrations.save_snapshot("batch-1", {"job-c": 3}) is False
    assert await backend.migrations.get_snapshot("batch-1") == {"job-a": 1, "job-b": 2}
    assert await backend.migrations.save_snapshot("batch-2", {}) is True
    assert await backend.migrations.get_snapshot("batch-2") == {}


async def test_insert_if_absent(backend: Contract) -> None:
    """`expected` None inserts only once; the same insert again (a retry) is accepted, another refused."""
    first = _step(0, source_zips=["b/x/export_0.zip"])
    assert await backend.migrations.get_step("batch-1", 0) is None
    assert await backend.migrations.save_step(first, None) is True
    assert await backend.migrations.save_step(first, None) is True
    assert await backend.migrations.save_step(_step(0, source_zips=["b/other.zip"]), None) is False
    assert await backend.migrations.get_step("batch-1", 0) == first


async def test_save_lands_when_state_and_attempts_are_as_expected(backend: Contract) -> None:
    """A CAS from the stored step lands; saving it again is accepted and changes nothing."""
    pending = _step(0)
    await backend.migrations.save_step(pending, None)
    copied = _step(0, StepState.COPIED, 1, zip_files=["target/x/export_0.zip"])
    assert await backend.migrations.save_step(copied, pending) is True
    assert await backend.migrations.save_step(copied, pending) is True
    retried = copied.model_copy(update={"attempts": 2})  # an open state may be saved again
    assert await backend.migrations.save_step(retried, copied) is True
    assert await backend.migrations.get_step("batch-1", 0) == retried


@pytest.mark.parametrize(
    "stale",
    [_step(0, StepState.PENDING, 1), _step(0, StepState.COPIED, 0), _step(0, StepState.PENDING, 0)],
    ids=["state", "attempts", "both"],
)
async def test_a_stale_expectation_is_refused(backend: Contract, stale: MigrationStep) -> None:
    """When the stored step moved on (state or attempts), a save from an older read is refused."""
    await backend.migrations.save_step(_step(0), None)
    stored = _step(0, StepState.COPIED, 1)
    assert await backend.migrations.save_step(stored, _step(0)) is True
    late = _step(0, StepState.CONFIRMED, 2)
    assert await backend.migrations.save_step(late, stale) is False
    assert await backend.migrations.get_step("batch-1", 0) == stored


async def test_a_save_expecting_a_step_never_stored_is_refused(backend: Contract) -> None:
    """An expectation names a stored step: without one there is nothing to compare, so nothing lands."""
    assert await backend.migrations.save_step(_step(3, StepState.COPIED, 1), _step(3)) is False
    assert await backend.migrations.get_step("batch-1", 3) is None


async def test_of_two_saves_racing_from_one_read_exactly_one_lands(backend: Contract) -> None:
    """Two replicas saving from the same read: one is stored, the other refused."""
    read = _step(0)
    await backend.migrations.save_step(read, None)
    contenders = [_step(0, StepState.COPIED, 1), _step(0, StepState.FAILED, 1)]
    outcomes = await asyncio.gather(*(backend.migrations.save_step(c, read) for c in contenders))
    assert sorted(outcomes) == [False, True]
    assert await backend.migrations.get_step("batch-1", 0) == contenders[outcomes.index(True)]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (StepState.COPIED, StepState.PENDING),
        (StepState.IMPORTED, StepState.COPIED),
        (StepState.CONFIRMED, StepState.CONFIRMED),
        (StepState.CONFIRMED, StepState.FAILED),
        (StepState.FAILED, StepState.PENDING),
        (StepState.FAILED, StepState.FAILED),
    ],
)
async def test_a_move_backwards_or_out_of_a_terminal_state_raises(
    backend: Contract, old: StepState, new: StepState
) -> None:
    """ValueError before anything is written, whatever is stored."""
    stored = _step(0, old, 1)
    await backend.migrations.save_step(stored, None)
    with pytest.raises(ValueError, match="never moves"):
        await backend.migrations.save_step(_step(0, new, 2), stored)
    assert await backend.migrations.get_step("batch-1", 0) == stored


async def test_steps_stream_in_index_order_across_pages(backend: Contract) -> None:
    """Saved out of order, 250 steps come back in index order, each once, and are each counted once;
    other batches stay apart."""
    order = [(i * 97) % 250 for i in range(250)]
    for index in order:
        assert await backend.migrations.save_step(_step(index), None)
    other = MigrationStep(batch_id="batch-2", index=0)
    await backend.migrations.save_step(other, None)
    assert [s.index for s in await _all(backend)] == list(range(250))
    assert await backend.migrations.tally("batch-1") == MigrationTally(steps=250, open=250)
    assert await _all(backend, "batch-2") == [other]
    assert await _all(backend, "nope") == []


async def test_tally_counts_steps_and_rows_by_state(backend: Contract) -> None:
    """Open, confirmed and failed steps, and imported, skipped and failed rows, of this batch only."""
    error = ErrorInfo(code="NAME_EXISTS", message="a job of that name exists")
    steps = [
        _step(0, StepState.CONFIRMED, 1, rows=[_row(1), _row(2), _row(3, "skipped")]),
        _step(1, StepState.IMPORTED, 1, rows=[_row(4), _row(5, "failed")]),
        _step(2, StepState.FAILED, 3, error=error),
        _step(3, StepState.COPIED, 1),
        _step(4),
    ]
    for step in steps:
        await backend.migrations.save_step(step, None)
    await backend.migrations.save_step(MigrationStep(batch_id="batch-2", index=0, rows=[_row(9)]), None)
    expected = MigrationTally(
        steps=5, open=3, imported_steps=1, confirmed=1, failed=1, imported=3, skipped=1, import_failed=1
    )
    assert await backend.migrations.tally("batch-1") == expected
    assert await backend.migrations.tally("batch-1") == MigrationTally.of(steps)
    assert await backend.migrations.tally("nope") == MigrationTally()


async def test_a_step_with_a_thousand_rows_round_trips(backend: Contract) -> None:
    """Big bodies (1,000 rows, names and ZIPs) survive a save, a CAS over them and the tally."""
    states = ("imported", "skipped", "failed")
    rows = [_row(job_id, states[job_id % 3]) for job_id in range(1, 1_001)]
    big = _step(
        0,
        StepState.IMPORTED,
        1,
        source_zips=[f"bucket/exports/export_{i}.zip" for i in range(10)],
        zip_files=[f"target/imports/export_{i}.zip" for i in range(10)],
        names={job_id: f"flink-job-{job_id:04d}-ünïcode" for job_id in range(1, 1_001)},
        rows=rows,
    )
    await backend.migrations.save_step(big, None)
    assert await backend.migrations.get_step("batch-1", 0) == big
    confirmed = big.model_copy(update={"state": StepState.CONFIRMED, "attempts": 2})
    assert await backend.migrations.save_step(confirmed, big) is True
    assert await _all(backend) == [confirmed]
    tally = await backend.migrations.tally("batch-1")
    assert (tally.imported, tally.skipped, tally.import_failed) == (333, 334, 333)


async def test_a_sqlite_file_at_schema_3_migrates_to_the_current_schema(tmp_path: Path) -> None:
    """A file from before migrations keeps its batch (no destination) and takes migration steps."""
    path = tmp_path / "exporter.db"
    with sqlite3.connect(path) as conn:
        for version in (1, 2, 3):
            conn.executescript(_MIGRATIONS[version])
        conn.execute("PRAGMA user_version = 3")
        conn.execute(
            "INSERT INTO batches (batch_id, project_id, obs_dir, chunk_size, state, duplicates_dropped, "
            "created_at, updated_at, jobs, chunks, pending) VALUES ('batch-1', 'p1', 'b', 100, 'running', 0, "
            "1.0, 1.0, 2, 2, 2)"
        )
    conn.close()
    async with open_sqlite(path) as backend:
        batch = await backend.ledger.get_batch("batch-1")
        assert await backend.migrations.save_step(_step(0), None) is True
        assert await backend.migrations.save_snapshot("batch-1", {"a": 1}) is True
    assert batch is not None and batch.migration is None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
