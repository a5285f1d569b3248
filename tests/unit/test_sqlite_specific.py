"""What only the SQLite backend promises: URL parsing, file set-up, group commit, crash safety, errors."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import textwrap
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from exporter.adapters.sqlite import SqliteBackend, open_sqlite, sqlite_path_from_url
from exporter.adapters.sqlite_db import SCHEMA_VERSION
from exporter.adapters.sqlite_ledger import SqliteLedger
from exporter.adapters.sqlite_schema import _MIGRATIONS
from exporter.errors import ConfigError, NotFound, StoreUnavailable
from exporter.models import BatchInfo, BatchState, ChunkRecord, ChunkState, ErrorInfo, plan_chunks
from exporter.ports import PutResult


class _Clock:
    """Manual clock: tests move time by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def _info(batch_id: str = "batch-1", chunk_size: int = 100) -> BatchInfo:
    return BatchInfo(
        batch_id=batch_id,
        project_id="p1",
        obs_dir="dli-exports",
        chunk_size=chunk_size,
        created_at=1.0,
        updated_at=1.0,
    )


def _save_verified(ledger: SqliteLedger, index: int, job_ids: list[int]) -> Coroutine[Any, Any, bool]:
    """Save a chunk of batch-1, planned and still pending, as verified (the compare-and-set's expectation)."""
    pending = ChunkRecord(batch_id="batch-1", index=index, job_ids=job_ids)
    return ledger.save_chunk(pending.model_copy(update={"state": ChunkState.VERIFIED}), pending)


def _raw(path: Path) -> sqlite3.Connection:
    """A plain second connection, to see what is really committed in the file."""
    return sqlite3.connect(path, isolation_level=None)


async def _hold_writer(backend: SqliteBackend) -> tuple[threading.Event, asyncio.Task[object]]:
    """Park the writer thread inside an operation so that everything submitted next forms one group."""
    release, entered = threading.Event(), threading.Event()

    def park(_conn: sqlite3.Connection) -> object:
        entered.set()
        return release.wait(30)

    blocker = asyncio.create_task(backend.database.write(park))
    assert await asyncio.to_thread(entered.wait, 30)
    return release, blocker


async def _until_backlog(backend: SqliteBackend, size: int) -> None:
    """Yield to the loop until `size` operations wait in the inbox (bounded)."""
    for _ in range(1_000):
        if backend.database.backlog >= size:
            # The backlog counts requests of this loop turn too; one more turn hands them to the thread,
            # so a writer released next finds them all in its inbox (they form one group).
            await asyncio.sleep(0)
            return
        await asyncio.sleep(0)
    raise AssertionError(f"only {backend.database.backlog} operations queued, expected {size}")


# --- URLs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///./exporter.db", Path("./exporter.db")),
        ("sqlite:///exporter.db", Path("exporter.db")),
        ("sqlite:///data/exporter.db", Path("data/exporter.db")),
        ("sqlite:////var/lib/exporter/exporter.db", Path("/var/lib/exporter/exporter.db")),
        ("sqlite:///my%20dir/x.db", Path("my dir/x.db")),
    ],
)
def test_sqlite_path_from_url_accepts_relative_and_absolute_files(url: str, expected: Path) -> None:
    """Three slashes then the path: relative after the third slash, absolute with a fourth."""
    assert sqlite_path_from_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite:///",
        "sqlite:///dir/",
        "sqlite://host/x.db",
        "sqlite:///x.db?mode=ro",
        "redis://127.0.0.1:6379/0",
        "./exporter.db",
        "sqlite:///file:x.db",
    ],
)
def test_sqlite_path_from_url_refuses_memory_and_malformed_urls(url: str) -> None:
    """In-memory databases, hosts, queries, other schemes and URLs without a file are refused."""
    with pytest.raises(ValueError, match=r"SQLite|sqlite|in-memory"):
        sqlite_path_from_url(url)


# --- the file ------------------------------------------------------------------------------------------


async def test_open_creates_a_wal_file_with_the_current_schema(tmp_path: Path) -> None:
    """A new file (in a new directory) is in WAL mode, versioned, with NORMAL sync and a busy timeout."""
    path = tmp_path / "nested" / "exporter.db"
    async with open_sqlite(path) as backend:
        pragmas = await backend.database.read(
            lambda conn: [
                conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "user_version", "synchronous", "busy_timeout")
            ]
        )
    assert pragmas == ["wal", SCHEMA_VERSION, 1, 10_000]


async def test_reopening_keeps_messages_and_accepted_batch_ids(tmp_path: Path) -> None:
    """Data outlives the process: a reopened file still holds the message and refuses the same batch."""
    path = tmp_path / "exporter.db"
    async with open_sqlite(path) as backend:
        assert (await backend.queue.put("batch-1", "body", identity='{"jobs": "1"}')).accepted
    async with open_sqlite(path) as backend:
        assert await backend.queue.depth() == 1
        assert await backend.queue.put("batch-1", "body") == PutResult(
            accepted=False, identity='{"jobs": "1"}'
        )


async def test_a_file_from_a_newer_exporter_is_refused(tmp_path: Path) -> None:
    """A schema version above ours raises ConfigError instead of being misread."""
    path = tmp_path / "exporter.db"
    with _raw(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match="schema version"):
        async with open_sqlite(path):
            pass


async def test_an_unopenable_path_raises_store_unavailable(tmp_path: Path) -> None:
    """A directory where the file should be gives StoreUnavailable, not a raw sqlite3 error."""
    with pytest.raises(StoreUnavailable, match=str(tmp_path)):
        async with open_sqlite(tmp_path):
            pass


async def test_two_processes_opening_a_new_file_at_once_both_succeed(tmp_path: Path) -> None:
    """Concurrent first opens race on the migration safely (it runs under BEGIN IMMEDIATE)."""
    path = tmp_path / "exporter.db"
    async with open_sqlite(path) as first, open_sqlite(path) as second:
        assert (await first.queue.put("batch-1", "body")).accepted
        assert await second.queue.depth() == 1


# --- group commit and the event loop ---------------------------------------------------------------------


async def test_saves_queued_during_a_transaction_commit_together(tmp_path: Path) -> None:
    """Saves issued while the writer is busy go into one transaction, and each is committed on return."""
    path = tmp_path / "exporter.db"
    async with open_sqlite(path) as backend:
        plan = [[n] for n in range(1, 51)]
        await backend.ledger.create_batch(_info(), plan)
        release, blocker = await _hold_writer(backend)
        before = backend.database.stats.transactions
        saves = [asyncio.create_task(_save_verified(backend.ledger, i, ids)) for i, ids in enumerate(plan)]
        try:
            await _until_backlog(backend, len(saves))
        finally:
            release.set()
        await asyncio.gather(blocker, *saves)
        assert backend.database.stats.transactions - before == 2  # the parked one, then all 50 saves
        assert backend.database.stats.largest_group >= 50
        with _raw(path) as conn:
            committed = conn.execute("SELECT count(*) FROM chunks WHERE state = 'verified'").fetchone()[0]
        assert committed == 50


async def test_a_save_returns_only_after_its_group_is_committed(tmp_path: Path) -> None:
    """A save that ran but whose transaction is still open has not returned and is not in the file."""
    path = tmp_path / "exporter.db"
    async with open_sqlite(path) as backend:
        await backend.ledger.create_batch(_info(), [[1]])
        release_first, first = await _hold_writer(backend)
        save = asyncio.create_task(_save_verified(backend.ledger, 0, [1]))
        await _until_backlog(backend, 1)
        release_second, second = threading.Event(), threading.Event()

        def park_after_save(_conn: sqlite3.Connection) -> bool:
            second.set()
            return release_second.wait(30)

        parked = asyncio.create_task(backend.database.write(park_after_save))
        try:
            await _until_backlog(backend, 2)
            release_first.set()
            assert await asyncio.to_thread(second.wait, 30)  # the save ran; its transaction is open
            for _ in range(50):
                await asyncio.sleep(0)
            assert not save.done()
            with _raw(path) as conn:
                assert conn.execute("SELECT state FROM chunks").fetchone()[0] == "pending"
        finally:
            release_first.set()
            release_second.set()
        await asyncio.gather(first, save, parked)
        with _raw(path) as conn:
            assert conn.execute("SELECT state FROM chunks").fetchone()[0] == "verified"


async def test_a_failing_operation_does_not_undo_its_group(tmp_path: Path) -> None:
    """In one group, a save of an unknown chunk fails alone; the other saves commit."""
    async with open_sqlite(tmp_path / "exporter.db") as backend:
        await backend.ledger.create_batch(_info(), [[1], [2]])
        release, blocker = await _hold_writer(backend)
        good = asyncio.create_task(_save_verified(backend.ledger, 0, [1]))
        bad = asyncio.create_task(_save_verified(backend.ledger, 7, [9]))
        also_good = asyncio.create_task(_save_verified(backend.ledger, 1, [2]))
        try:
            await _until_backlog(backend, 3)
        finally:
            release.set()
        await asyncio.gather(blocker, good, also_good)
        with pytest.raises(NotFound, match="no chunk 7"):
            await bad
        batch = await backend.ledger.get_batch("batch-1")
        assert batch is not None
        assert batch.totals.chunks_verified == 2


async def test_event_loop_keeps_running_during_a_big_write(tmp_path: Path) -> None:
    """While a 300,000-ID batch is written, other coroutines keep getting turns on the loop."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async with open_sqlite(tmp_path / "exporter.db") as backend:
        ticker = asyncio.create_task(tick())
        await backend.ledger.create_batch(_info(), plan_chunks(range(1, 300_001), 100))
        ticker.cancel()
    assert ticks > 10


async def test_a_million_ids_in_ten_thousand_chunks_are_created_in_seconds(tmp_path: Path) -> None:
    """create_batch of 1,000,000 IDs takes seconds, and get_batch then answers from counters at once."""
    async with open_sqlite(tmp_path / "exporter.db") as backend:
        plan = plan_chunks(range(1, 1_000_001), 100)
        started = time.perf_counter()
        assert await backend.ledger.create_batch(_info(), plan)
        created_in = time.perf_counter() - started
        await _save_verified(backend.ledger, 9_999, list(plan[9_999]))
        started = time.perf_counter()
        batch = await backend.ledger.get_batch("batch-1")
        read_in = time.perf_counter() - started
    assert created_in < 20, f"create_batch took {created_in:.1f} s"
    assert read_in < 0.5, f"get_batch took {read_in:.3f} s"
    assert batch is not None
    assert (batch.totals.jobs, batch.totals.chunks, batch.totals.verified) == (1_000_000, 10_000, 100)
    assert batch.totals.pending == 9_999


# --- crash safety ----------------------------------------------------------------------------------------

_SAVER = textwrap.dedent(
    """
    import asyncio, sys
    from exporter.adapters.sqlite import open_sqlite
    from exporter.models import ChunkRecord, ChunkState

    async def save(ledger, index):
        pending = ChunkRecord(batch_id="batch-1", index=index, job_ids=[index + 1])
        assert await ledger.save_chunk(pending.model_copy(update={"state": ChunkState.VERIFIED}), pending)
        print(f"saved {index}", flush=True)

    async def main(path, count):
        async with open_sqlite(path) as backend:
            for start in range(0, count, 32):
                await asyncio.gather(*(save(backend.ledger, i) for i in range(start, start + 32)))
            await asyncio.Event().wait()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


async def test_saves_that_returned_survive_kill_9(tmp_path: Path) -> None:
    """Every save_chunk that returned before a SIGKILL is in the file afterwards, totals included."""
    path, count = tmp_path / "exporter.db", 5_000
    async with open_sqlite(path) as backend:
        await backend.ledger.create_batch(_info(), [[n + 1] for n in range(count)])
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SAVER, str(path), str(count), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    returned: set[int] = set()
    try:
        while len(returned) < 1_000:  # bounded: the child prints one line per save, 5,000 at most
            line = (await asyncio.wait_for(child.stdout.readline(), 60)).decode()
            assert line, "the saver exited early"
            if line.startswith("saved "):
                returned.add(int(line.split()[1]))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        await child.wait()
    async with open_sqlite(path) as backend:
        verified = {c.index async for c in backend.ledger.chunks("batch-1") if c.state == ChunkState.VERIFIED}
        batch = await backend.ledger.get_batch("batch-1")
    assert returned <= verified
    assert batch is not None
    assert batch.totals.chunks_verified == len(verified)


# --- errors ----------------------------------------------------------------------------------------------


async def test_a_full_disk_raises_store_unavailable_and_rolls_back(tmp_path: Path) -> None:
    """SQLITE_FULL becomes StoreUnavailable, leaves no half-written batch, and the store recovers."""
    async with open_sqlite(tmp_path / "exporter.db") as backend:
        pages = await backend.database.read(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
        await backend.database.write(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages + 2}"))
        with pytest.raises(StoreUnavailable, match="full") as caught:
            await backend.ledger.create_batch(_info(), plan_chunks(range(1, 100_001), 100))
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        assert await backend.ledger.get_batch("batch-1") is None
        await backend.database.write(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
        assert await backend.ledger.create_batch(_info(), [[1]])


async def test_on_a_full_disk_only_the_operations_that_need_room_fail(tmp_path: Path) -> None:
    """A batch too big for the disk fails alone; the small save and the queue put of its group commit."""
    async with open_sqlite(tmp_path / "exporter.db") as backend:
        await backend.ledger.create_batch(_info(), [[1]])
        pages = await backend.database.read(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
        await backend.database.write(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages + 2}"))
        release, blocker = await _hold_writer(backend)
        many_chunks = [[n] for n in range(9_999)]
        too_big = asyncio.create_task(backend.ledger.create_batch(_info("batch-2"), many_chunks))
        save = asyncio.create_task(_save_verified(backend.ledger, 0, [1]))
        put = asyncio.create_task(backend.queue.put("batch-1", "body"))
        try:
            await _until_backlog(backend, 3)
        finally:
            release.set()
        await asyncio.gather(blocker, save)
        assert (await put).accepted is True
        with pytest.raises(StoreUnavailable, match="full"):
            await too_big
        assert backend.database.stats.failed_operations == 1
        assert backend.database.stats.failed_transactions == 0
        batch = await backend.ledger.get_batch("batch-1")
        assert batch is not None and batch.totals.chunks_verified == 1
        assert await backend.ledger.get_batch("batch-2") is None
        assert await backend.queue.depth() == 1


async def test_a_lock_held_past_the_busy_timeout_raises_store_unavailable(tmp_path: Path) -> None:
    """A write lock held elsewhere too long gives StoreUnavailable; the next try after release works."""
    path = tmp_path / "exporter.db"
    async with open_sqlite(path, busy_timeout=0.05) as backend:
        other = _raw(path)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailable, match="locked"):
                await backend.queue.put("batch-1", "body")
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert (await backend.queue.put("batch-1", "body")).accepted is True


async def test_a_closed_backend_raises_store_unavailable(tmp_path: Path) -> None:
    """After close, ping and every other call raise StoreUnavailable rather than hang."""
    async with open_sqlite(tmp_path / "exporter.db") as backend:
        pass
    with pytest.raises(StoreUnavailable, match="closed"):
        await backend.queue.ping()
    with pytest.raises(StoreUnavailable, match="closed"):
        await backend.ledger.get_batch("batch-1")


async def test_a_batch_written_by_schema_v1_reads_back_and_can_fail_with_an_error(tmp_path: Path) -> None:
    """A file from before schema v2 (no `batches.error`, an index of open chunks) migrates in place: its
    batch reads with no error, its chunks still save, and it can then be failed with one."""
    path = tmp_path / "exporter.db"
    with _raw(path) as conn:
        conn.executescript(_MIGRATIONS[1])
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO batches (batch_id, project_id, obs_dir, chunk_size, state, duplicates_dropped, "
            "created_at, updated_at, jobs, chunks, pending) VALUES ('batch-1', 'p1', 'b', 100, 'running', 0, "
            "1.0, 1.0, 2, 2, 2)"
        )
        for index in (0, 1):
            conn.execute(
                "INSERT INTO chunks (batch_id, idx, job_ids, state) VALUES ('batch-1', ?, ?, 'pending')",
                (index, f"[{index + 1}]"),
            )
    error = ErrorInfo(code="DLI.0403", message="refused")
    async with open_sqlite(path) as backend:
        old = await backend.ledger.get_batch("batch-1")
        assert await _save_verified(backend.ledger, 1, [2])
        await backend.ledger.set_batch_state("batch-1", BatchState.FAILED, error)
        failed = await backend.ledger.get_batch("batch-1")
    assert old is not None and (old.state, old.error) == (BatchState.RUNNING, None)
    assert failed is not None and (failed.state, failed.error) == (BatchState.FAILED, error)
    assert (failed.totals.verified, failed.totals.pending) == (1, 1)
    with _raw(path) as conn:
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "chunks_open" not in indexes


# --- queue details ---------------------------------------------------------------------------------------


async def test_a_queue_written_by_schema_v1_keeps_its_messages_and_answers_empty_identities(
    tmp_path: Path,
) -> None:
    """A batch ID accepted before identities existed is still refused after the migration, with the
    identity "" (so the caller cannot tell its content), and its message is still claimable."""
    path = tmp_path / "exporter.db"
    with _raw(path) as conn:
        conn.executescript(_MIGRATIONS[1])
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO accepted_batches (batch_id, accepted_at) VALUES ('batch-1', 1.0)")
        conn.execute(
            "INSERT INTO messages (batch_id, body, enqueued_at, visible_at) VALUES ('batch-1', 'old', 1, 1)"
        )
    async with open_sqlite(path) as backend:
        assert await backend.queue.put("batch-1", "new", identity='{"jobs": "1"}') == PutResult(False, "")
        assert (await backend.queue.put("batch-2", "new", identity='{"jobs": "2"}')).accepted
        claim = await backend.queue.claim("worker-a", 30)
        assert claim is not None and claim.body == "old"
        assert await backend.queue.put("batch-2", "x") == PutResult(accepted=False, identity='{"jobs": "2"}')


async def test_stale_claims_cannot_nack_or_dead_letter_the_new_owners_message(tmp_path: Path) -> None:
    """After a lease was taken over, the old claim's nack and dead_letter leave the new lease alone."""
    clock = _Clock()
    async with open_sqlite(tmp_path / "exporter.db", clock=clock) as backend:
        await backend.queue.put("batch-1", "body")
        old = await backend.queue.claim("worker-a", 30)
        clock.now += 31
        new = await backend.queue.claim("worker-b", 30)
        assert old is not None
        assert new is not None
        await backend.queue.nack(old, 0)
        await backend.queue.dead_letter(old, "stale")
        assert await backend.queue.claim("worker-c", 30) is None
        assert await backend.queue.dead_letters() == []
        assert await backend.queue.extend(new, 30) is True


async def test_claim_takes_expired_leases_by_the_injected_clock(tmp_path: Path) -> None:
    """Lease expiry is judged by the injected clock, to the second."""
    clock = _Clock()
    async with open_sqlite(tmp_path / "exporter.db", clock=clock) as backend:
        await backend.queue.put("batch-1", "body")
        assert await backend.queue.claim("worker-a", 30) is not None
        clock.now += 29.9
        assert await backend.queue.claim("worker-b", 30) is None
        clock.now += 0.1
        assert await backend.queue.claim("worker-b", 30) is not None
