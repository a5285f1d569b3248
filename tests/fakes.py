"""In-memory fakes of the ports, for unit tests of the pipeline and the worker (no I/O, no real time)."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.errors import NotFound, Permanent, StoreUnavailable
from exporter.migration.models import MigrationStep, MigrationTally
from exporter.models import (
    BatchInfo,
    BatchState,
    ChunkRecord,
    ChunkTally,
    ErrorInfo,
    ExportResult,
    JobSummary,
    ListFilters,
    ObjectInfo,
    Totals,
    check_transition,
)
from exporter.ports import Claim, Clock, DeadLetter, PutResult
from exporter.rate_states import SharedRate


class ManualClock:
    """Time moves only when someone sleeps: sleeping advances it at once and yields to the loop."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def totals_of(chunks: Sequence[ChunkRecord]) -> Totals:
    """Totals recounted from the chunks, each adding its `ChunkTally`: what ledger counters must equal."""
    totals = Totals(chunks=len(chunks), jobs=sum(len(c.job_ids) for c in chunks))
    for chunk in chunks:
        tally = ChunkTally.of_chunk(chunk)
        for name in ChunkTally.FIELDS:
            setattr(totals, name, getattr(totals, name) + getattr(tally, name))
    return totals


class FakeLedger:
    """The `Ledger` contract in memory: compare-and-set saves, NotFound for what was never planned."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or ManualClock()
        self.batches: dict[str, BatchInfo] = {}
        self.chunk_rows: dict[str, list[ChunkRecord]] = {}
        self.saves: list[ChunkRecord] = []  # every save that was stored, in order
        self.owners: dict[tuple[str, int], str] = {}  # a test may set an owner directly: it never lapses
        self.lease_ends: dict[tuple[str, int], float] = {}  # when each claim lapses (a test may move it)

    async def create_batch(self, info: BatchInfo, chunks: Sequence[Sequence[int]]) -> bool:
        if info.batch_id in self.batches:
            return False
        self.batches[info.batch_id] = info
        self.chunk_rows[info.batch_id] = [
            ChunkRecord(batch_id=info.batch_id, index=i, job_ids=list(ids)) for i, ids in enumerate(chunks)
        ]
        return True

    async def get_batch(self, batch_id: str) -> BatchInfo | None:
        info = self.batches.get(batch_id)
        return None if info is None else self._with_totals(info)

    async def save_chunk(self, chunk: ChunkRecord, expected: ChunkRecord) -> bool:
        check_transition(expected.state, chunk.state)
        rows = self.chunk_rows.get(chunk.batch_id, [])
        if not 0 <= chunk.index < len(rows):
            raise NotFound(f"batch {chunk.batch_id!r} has no chunk {chunk.index}")
        stored = rows[chunk.index]
        if _saved_fields(stored) == _saved_fields(chunk):
            return True  # the same save again (a retry) changes nothing
        if (stored.state, stored.attempts) != (expected.state, expected.attempts):
            return False
        rows[chunk.index] = chunk.model_copy(update={"job_ids": stored.job_ids})
        self.saves.append(chunk)
        return True

    async def get_chunk(self, batch_id: str, index: int) -> ChunkRecord | None:
        rows = self.chunk_rows.get(batch_id, [])
        return rows[index] if 0 <= index < len(rows) else None

    async def chunks(self, batch_id: str) -> AsyncIterator[ChunkRecord]:
        for chunk in list(self.chunk_rows.get(batch_id, [])):
            yield chunk

    async def set_batch_state(self, batch_id: str, state: BatchState, error: ErrorInfo | None = None) -> None:
        if batch_id not in self.batches:
            raise NotFound(f"no batch {batch_id!r}")
        now = self.clock.time()
        update = {
            "state": state,
            "error": error,
            "updated_at": now,
            "finished_at": now if state.finished else None,
        }
        self.batches[batch_id] = self.batches[batch_id].model_copy(update=update)

    async def claim_chunk(self, batch_id: str, index: int, owner: str, ttl_seconds: float) -> bool:
        key, now = (batch_id, index), self.clock.time()
        holder = self.owners.get(key)
        if holder not in {None, owner} and now < self.lease_ends.get(key, float("inf")):
            return False
        self.owners[key], self.lease_ends[key] = owner, now + ttl_seconds
        return True

    async def release_chunk(self, batch_id: str, index: int, owner: str) -> None:
        if self.owners.get((batch_id, index)) == owner:
            del self.owners[(batch_id, index)]
            self.lease_ends.pop((batch_id, index), None)

    async def list_batches(self, limit: int = 100) -> list[BatchInfo]:
        order = sorted(enumerate(self.batches.values()), key=lambda n: (n[1].created_at, n[0]), reverse=True)
        return [self._with_totals(info) for _, info in order[: max(0, limit)]]

    def _with_totals(self, info: BatchInfo) -> BatchInfo:
        return info.model_copy(update={"totals": totals_of(self.chunk_rows[info.batch_id])})


def _saved_fields(chunk: ChunkRecord) -> tuple[object, ...]:
    """What a save writes (the job IDs are fixed at creation)."""
    return chunk.state, chunk.attempts, chunk.segments, chunk.error


class FakeMigrationLedger:
    """The `MigrationLedger` contract in memory: first snapshot wins, compare-and-set steps."""

    def __init__(self) -> None:
        self.snapshots: dict[str, dict[str, int]] = {}
        self.step_rows: dict[str, dict[int, MigrationStep]] = {}
        self.saves: list[MigrationStep] = []  # every save that was stored, in order

    async def save_snapshot(self, batch_id: str, names: Mapping[str, int]) -> bool:
        if batch_id in self.snapshots:
            return False
        self.snapshots[batch_id] = dict(names)
        return True

    async def get_snapshot(self, batch_id: str) -> dict[str, int] | None:
        names = self.snapshots.get(batch_id)
        return None if names is None else dict(names)

    async def get_step(self, batch_id: str, index: int) -> MigrationStep | None:
        return self.step_rows.get(batch_id, {}).get(index)

    async def save_step(self, step: MigrationStep, expected: MigrationStep | None) -> bool:
        if expected is not None and not expected.state.may_move_to(step.state):
            raise ValueError(
                f"a migration step never moves from {expected.state.value} to {step.state.value}"
            )
        rows = self.step_rows.setdefault(step.batch_id, {})
        stored = rows.get(step.index)
        if stored == step:
            return True  # the same save again (a retry) changes nothing
        current = None if stored is None else (stored.state, stored.attempts)
        if current != (None if expected is None else (expected.state, expected.attempts)):
            return False
        rows[step.index] = step.model_copy(deep=True)
        self.saves.append(step)
        return True

    async def steps(self, batch_id: str) -> AsyncIterator[MigrationStep]:
        rows = self.step_rows.get(batch_id, {})
        for index in sorted(rows):
            yield rows[index]

    async def tally(self, batch_id: str) -> MigrationTally:
        return MigrationTally.of([step async for step in self.steps(batch_id)])


@dataclass
class FakeDli:
    """DLI that knows jobs 1..known (minus `missing`), writes ZIP paths into `store`, fails on cue."""

    store: FakeStore
    known: int = 10_000
    missing: set[int] = field(default_factory=set)
    fail_next: list[BaseException] = field(default_factory=list)
    calls: list[list[int]] = field(default_factory=list)
    late: bool = False
    counter: itertools.count[int] = field(default_factory=itertools.count)

    async def export_jobs(self, project_id: str, obs_dir: str, job_ids: Sequence[int]) -> ExportResult:
        self.calls.append(list(job_ids))
        await asyncio.sleep(0)
        if self.fail_next:
            raise self.fail_next.pop(0)
        unknown = [j for j in job_ids if j in self.missing or j > self.known]
        if unknown:
            raise Permanent(f"jobs {unknown} do not exist", code="DLI.0002", status=400)
        path = f"{obs_dir}/export_{next(self.counter)}.zip"
        if not self.late:
            self.store.objects[path] = 100
        return ExportResult(is_success=True, zip_files=[path])

    async def list_jobs(
        self, project_id: str, filters: ListFilters | None = None, *, ahead: int = 0
    ) -> AsyncIterator[JobSummary]:
        for job_id in range(1, self.known + 1):
            if job_id not in self.missing:
                yield JobSummary(job_id=job_id)


@dataclass
class FakeStore:
    objects: dict[str, int] = field(default_factory=dict)
    heads: int = 0
    on_head: Callable[[str], None] | None = None
    uploads: dict[str, bytes] = field(default_factory=dict)

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        self.heads += 1
        path = f"{bucket}/{key}"
        if self.on_head is not None:
            self.on_head(path)
        size = self.objects.get(path)
        return None if size is None else ObjectInfo(size=size, etag="e" + str(size))

    async def read_range(self, bucket: str, key: str, start: int, end: int) -> bytes:
        return b""

    async def put(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        self.uploads[f"{bucket}/{key}"] = body


class FakeQueue:
    """A queue with leases measured on a ManualClock.

    `nacked` lists every nack as (message ID, delay); `failed_nacks` those with `handback=False`, which,
    as in the real queues, leave `handbacks` alone so the delivery counts as unfinished.
    """

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.messages: dict[str, dict[str, object]] = {}
        self.accepted: dict[str, str] = {}  # batch ID -> the identity it was accepted with
        self.parked: list[DeadLetter] = []
        self.acked: list[str] = []
        self.nacked: list[tuple[str, float]] = []
        self.failed_nacks: list[tuple[str, float]] = []
        self.ids = itertools.count(1)

    async def put(self, batch_id: str, body: str, identity: str = "") -> PutResult:
        if batch_id in self.accepted:
            return PutResult(accepted=False, identity=self.accepted[batch_id])
        self.accepted[batch_id] = identity
        await self.put_raw(body)
        return PutResult(accepted=True)

    async def put_raw(self, body: str) -> str:
        message_id = str(next(self.ids))
        self.messages[message_id] = {"body": body, "visible_at": 0.0, "deliveries": 0, "handbacks": 0}
        return message_id

    async def claim(self, consumer: str, lease_seconds: float) -> Claim | None:
        for message_id, message in self.messages.items():
            if float(message["visible_at"]) <= self.clock.now:  # type: ignore[arg-type]
                message["visible_at"] = self.clock.now + lease_seconds
                message["deliveries"] = int(message["deliveries"]) + 1  # type: ignore[call-overload]
                return Claim(
                    message_id,
                    str(message["body"]),
                    int(message["deliveries"]),  # type: ignore[call-overload]
                    consumer,
                    int(message["handbacks"]),  # type: ignore[call-overload]
                )
        return None

    async def extend(self, claim: Claim, lease_seconds: float) -> bool:
        if claim.message_id not in self.messages:
            return False
        self.messages[claim.message_id]["visible_at"] = self.clock.now + lease_seconds
        return True

    async def ack(self, claim: Claim) -> None:
        self.messages.pop(claim.message_id, None)
        self.acked.append(claim.message_id)

    async def nack(self, claim: Claim, delay_seconds: float, *, handback: bool = True) -> None:
        self.nacked.append((claim.message_id, delay_seconds))
        if not handback:
            self.failed_nacks.append((claim.message_id, delay_seconds))
        if claim.message_id in self.messages:
            self.messages[claim.message_id]["visible_at"] = self.clock.now + delay_seconds
            self.messages[claim.message_id]["handbacks"] = claim.handbacks + int(handback)

    async def dead_letter(self, claim: Claim, reason: str) -> None:
        self.messages.pop(claim.message_id, None)
        self.parked.append(DeadLetter(claim.message_id, claim.body, reason, claim.deliveries, self.clock.now))

    async def dead_letters(self, newest: int | None = None) -> list[DeadLetter]:
        return list(self.parked) if newest is None else list(self.parked[len(self.parked) - newest :])

    async def requeue(self, dead_letter_id: str) -> bool:
        return False

    async def depth(self) -> int:
        return len(self.messages)

    async def ping(self) -> None:
        return None


class VirtualClock(ManualClock):
    """Virtual time for concurrent sleepers: when every task is idle, jump to the earliest wake-up.

    Use inside `async with clock.running():`; results are exact and repeatable, and nothing really sleeps.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        super().__init__(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._sequence = itertools.count()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._sequence), future))
        await future

    async def _drive(self) -> None:
        while True:
            for _ in range(20):  # let every runnable task reach its next await
                await asyncio.sleep(0)
            while self._sleepers:
                wake, _, future = heapq.heappop(self._sleepers)
                if not future.done():
                    self.now = self.woken_at(wake)
                    future.set_result(None)
                    break

    def woken_at(self, wake: float) -> float:
        """The time a sleeper due at `wake` runs: at once here; a subclass may make the loop late."""
        return max(self.now, wake)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        driver = asyncio.create_task(self._drive())
        try:
            yield
        finally:
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driver


@dataclass
class FakeRateStates:
    """`RateStates` in memory, with the contract's compare-and-set; `down` makes every call fail."""

    clock: Clock
    records: dict[str, SharedRate] = field(default_factory=dict)
    down: bool = False
    saves: int = 0

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("the rate store is down")

    async def load(self, scope: str) -> SharedRate | None:
        self._check()
        return self.records.get(scope)

    async def save(
        self, scope: str, state: dict[str, Any], reason: str, expect_seq: int
    ) -> tuple[bool, SharedRate]:
        self._check()
        current = self.records.get(scope)
        if (current.seq if current else 0) != expect_seq:
            assert current is not None
            return False, current
        self.saves += 1
        record = SharedRate(expect_seq + 1, dict(state), reason, self.clock.time())
        self.records[scope] = record
        return True, record

    async def all(self) -> dict[str, SharedRate]:
        self._check()
        return dict(self.records)
