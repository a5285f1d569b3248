"""What only the Redis backend has to prove, against the real Redis on 127.0.0.1:6379 (DB 15).

The shared contract suite (tests/contract/) covers the queue and ledger behaviour both backends share;
here: several clients sharing one limiter and one pause, connections killed under load, poison messages,
takeover from a dead consumer, retried scripts, concurrent replicas on one ledger, and a Redis restart
(a private `redis-server` with an append-only file, so the shared server is never restarted).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError as RedisBusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from support import free_port

from exporter.adapters.redis import RedisBackend, client_name, open_redis
from exporter.adapters.redis_connection import RedisConnection, connect
from exporter.adapters.redis_limiter import RedisRateLimiter
from exporter.app import open_runtime
from exporter.clock import SystemClock
from exporter.errors import NotFound, StoreUnavailable
from exporter.models import (
    BatchInfo,
    BatchRequest,
    BatchState,
    ChunkRecord,
    ChunkState,
    ChunkTally,
    ErrorInfo,
    Segment,
    Totals,
)
from exporter.ports import Claim, PutResult
from exporter.submission import submit_batch

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/15"
GROUP = "exporters"


def _prefix() -> str:
    return f"test-redis-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own."""
    return _prefix()


@pytest.fixture
async def admin() -> AsyncIterator[Redis]:
    """A plain client on DB 15 to look at keys and kill connections, as an operator would."""
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def backend(prefix: str) -> AsyncIterator[RedisBackend]:
    """The backend under a unique prefix, purged afterwards."""
    async with open_redis(REDIS_URL, key_prefix=prefix, consumer_group=GROUP, max_deliveries=3) as opened:
        try:
            yield opened
        finally:
            await opened.purge()


async def _replicas(stack: AsyncExitStack, prefix: str, count: int) -> list[RedisBackend]:
    """`count` backends on one prefix, each with its own connections, like replicas in separate pods."""
    return [
        await stack.enter_async_context(open_redis(REDIS_URL, key_prefix=prefix, consumer_group=GROUP))
        for _ in range(count)
    ]


async def _kill_connections(admin: Redis, prefix: str) -> int:
    """CLIENT KILL every connection the backend with this prefix holds; returns how many."""
    name = client_name(prefix)
    clients = [client for client in await admin.client_list() if client.get("name") == name]
    for client in clients:
        await admin.client_kill_filter(_id=client["id"])
    return len(clients)


async def _poll_claim(backend: RedisBackend, consumer: str, lease: float, within: float = 10.0) -> Claim:
    """Claim until something comes back (a lease or delay passing on the server clock), bounded in time."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        claim = await backend.queue.claim(consumer, lease)
        if claim is not None:
            return claim
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing to claim within {within} s")


def _batch(batch_id: str = "batch-1") -> BatchInfo:
    now = time.time()
    return BatchInfo(
        batch_id=batch_id,
        project_id="p1",
        obs_dir="dli-exports/x",
        chunk_size=10,
        created_at=now,
        updated_at=now,
    )


def _chunks(count: int, size: int = 10) -> list[list[int]]:
    return [[index * size + offset + 1 for offset in range(size)] for index in range(count)]


# --- limiter ----------------------------------------------------------------------------------------


async def test_limiter_spaces_requests_across_several_clients(prefix: str) -> None:
    """Three clients with their own connections share one rate: no window sees more than rate x window."""
    rate, per_client = 40.0, 12
    granted: list[float] = []

    async def take(backend: RedisBackend) -> None:
        limiter = backend.limiter(rate)
        for _ in range(per_client):
            await limiter.acquire()
            granted.append(time.monotonic())

    async with AsyncExitStack() as stack:
        replicas = await _replicas(stack, prefix, 3)
        try:
            await asyncio.gather(*(take(replica) for replica in replicas))
        finally:
            await replicas[0].purge()

    granted.sort()
    window = 0.25
    busiest = max(sum(1 for t in granted if start <= t < start + window) for start in granted)
    assert busiest <= rate * window + 4  # burst 1, plus slack for local wake-ups bunched by a busy loop
    assert granted[-1] - granted[0] >= (len(granted) - 2) / rate * 0.9


async def test_limiter_set_rate_paces_at_the_new_rate(backend: RedisBackend) -> None:
    """5/s, then 50/s: ten acquires after the change take about 0.2 s, not 2 s."""
    limiter = backend.limiter(rate=5.0)
    await limiter.acquire()
    limiter.set_rate(50.0)
    assert limiter.rate == 50.0
    await limiter.acquire()  # the slot reserved at the old pace
    began = time.monotonic()
    for _ in range(10):
        await limiter.acquire()
    assert 0.15 <= time.monotonic() - began < 0.6


async def test_an_adaptive_pace_reaches_callers_that_were_already_waiting(backend: RedisBackend) -> None:
    """20 callers at 1/s, then 100/s once the first is through: the rest are out within about a
    second, not at the 1/s slots they would all have reserved at once without the reservation gate."""
    limiter = backend.limiter(rate=1.0)
    limiter.set_rate(1.0)  # a pace set from outside, as AdaptiveLimiter does
    first_out = asyncio.Event()
    done: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        done.append(time.monotonic())
        first_out.set()

    began = time.monotonic()
    tasks = [asyncio.create_task(one()) for _ in range(20)]
    await first_out.wait()
    limiter.set_rate(100.0)
    await asyncio.gather(*tasks)
    assert max(done) - began < 4.0  # 19 s at the old pace; the 2 slots held at 1/s, then 100/s


async def test_limiter_burst_lets_that_many_through_at_once(backend: RedisBackend) -> None:
    """With burst 3 the first three slots are immediate and the fourth waits one interval."""
    limiter = backend.limiter(rate=2.0, burst=3)
    waits = [await limiter.acquire() for _ in range(4)]
    assert max(waits[:3]) < 0.1
    assert 0.3 < waits[3] < 1.5


async def test_pause_from_one_client_holds_every_client(prefix: str) -> None:
    """A 429 seen by one replica sets the shared pause; another replica's next slot comes after it, even
    with burst to spare and after a shorter pause from a third."""
    async with AsyncExitStack() as stack:
        first, second, third = await _replicas(stack, prefix, 3)
        try:
            await first.limiter(rate=100.0).pause(0.6)
            await third.limiter(rate=100.0).pause(0.05)  # an earlier deadline must not shorten the pause
            waited = await second.limiter(rate=100.0, burst=100).acquire()
        finally:
            await first.purge()
    assert 0.45 < waited < 2.0


async def test_pause_during_a_wait_sends_the_caller_behind_it(backend: RedisBackend) -> None:
    """A caller sleeping towards its slot when a pause begins goes after the pause, not at its old slot."""
    limiter = backend.limiter(rate=2.0)
    await limiter.acquire()
    waiting = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.1)  # it asked, was told "0.5 s from the first slot", and sleeps towards that
    assert "waiting=1" in repr(limiter)
    await backend.limiter(rate=2.0).pause(1.2)
    waited = await asyncio.wait_for(waiting, timeout=10)
    assert waited > 1.0


class LateClock(SystemClock):
    """The real clock on a lagging event loop: every sleep ends `lag` seconds after it was due."""

    def __init__(self, lag: float) -> None:
        self.lag = lag

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) + self.lag)


async def test_limiter_keeps_granting_slots_when_every_wake_up_is_late(prefix: str) -> None:
    """At 1000/s with every sleep ending 3 ms late (three intervals), 16 callers still get slots, and no
    second sees more than the rate."""
    granted: list[float] = []
    stop = asyncio.Event()  # not a cancel alone: redis-py may swallow one that lands inside a command

    async def caller(limiter: RedisRateLimiter) -> None:
        while not stop.is_set():
            await limiter.acquire()
            granted.append(time.monotonic())

    late = LateClock(0.003)
    async with open_redis(REDIS_URL, key_prefix=prefix, consumer_group=GROUP, clock=late) as backend:
        try:
            limiter = backend.limiter(rate=1000.0)
            callers = [asyncio.create_task(caller(limiter)) for _ in range(16)]
            await asyncio.wait(callers, timeout=0.5)
            stop.set()
            for task in callers:
                task.cancel()
            await asyncio.gather(*callers, return_exceptions=True)
        finally:
            await backend.purge()
    assert len(granted) >= 40  # one grant per late wake-up at least; re-reserving gave about one in all
    granted.sort()
    assert max(bisect.bisect_left(granted, t + 1.0) - i for i, t in enumerate(granted)) <= 1000 + 1


async def test_limiter_rejects_impossible_settings(backend: RedisBackend) -> None:
    """A rate or burst that could never admit a request is refused at once."""
    with pytest.raises(ValueError, match="rate"):
        backend.limiter(rate=0)
    with pytest.raises(ValueError, match="burst"):
        backend.limiter(rate=1, burst=0)


# --- connections -------------------------------------------------------------------------------------


async def test_killed_connections_lose_and_repeat_nothing(
    backend: RedisBackend, admin: Redis, prefix: str
) -> None:
    """Connections killed again and again under load: every message is processed once, none is lost."""
    bodies = [f"message-{index}" for index in range(90)]
    for body in bodies:
        await backend.queue.put(body, body)
    processed: list[str] = []
    kills = 0

    async def consume(consumer: str) -> None:
        nonlocal kills
        while (claim := await backend.queue.claim(consumer, 60)) is not None:
            processed.append(claim.body)
            if len(processed) % 3 == 0:  # while the other consumer is mid-call, as often as not
                kills += await _kill_connections(admin, prefix)
            await backend.queue.ack(claim)

    await asyncio.wait_for(asyncio.gather(consume("c1"), consume("c2")), timeout=60)
    assert kills >= len(bodies) // 3
    assert sorted(processed) == sorted(bodies)
    assert await backend.queue.depth() == 0
    assert await backend.queue.dead_letters() == []


async def test_killed_connection_recovers_for_ledger_and_limiter(
    backend: RedisBackend, admin: Redis, prefix: str
) -> None:
    """After CLIENT KILL the next ledger, limiter and ping calls reconnect by themselves."""
    assert await backend.ledger.create_batch(_batch(), _chunks(3))
    assert await _kill_connections(admin, prefix) > 0
    chunk = await backend.ledger.get_chunk("batch-1", 0)
    assert chunk is not None
    assert await backend.ledger.save_chunk(chunk.model_copy(update={"state": ChunkState.EXPORTED}), chunk)
    await _kill_connections(admin, prefix)
    await backend.limiter(rate=50.0).acquire()
    await _kill_connections(admin, prefix)
    await backend.queue.ping()
    batch = await backend.ledger.get_batch("batch-1")
    assert batch is not None
    assert batch.totals.exported == 1


async def test_unreachable_redis_raises_store_unavailable_in_bounded_time(prefix: str) -> None:
    """Nothing listening: calls raise StoreUnavailable after the budget, and acquire keeps waiting."""
    url = f"redis://127.0.0.1:{free_port()}/15"
    async with open_redis(url, key_prefix=prefix, consumer_group=GROUP, unavailable_after=0.5) as backend:
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await backend.queue.ping()
        with pytest.raises(StoreUnavailable):
            await backend.queue.claim("c1", 30)
        assert time.monotonic() - began < 5
        acquiring = asyncio.create_task(backend.limiter(rate=10.0).acquire())
        done, _ = await asyncio.wait({acquiring}, timeout=1.2)
        assert not done  # no slot without Redis: it waits rather than let a request through
        acquiring.cancel()
        with pytest.raises(asyncio.CancelledError):
            await acquiring


async def test_limiter_gives_up_on_an_unreachable_redis_without_granting_a_slot(prefix: str) -> None:
    """Asking again with jittered backoff is bounded: after `give_up_after` the caller gets
    StoreUnavailable, never a slot."""
    url = f"redis://127.0.0.1:{free_port()}/15"
    conn = RedisConnection(client=connect(url), prefix=prefix, unavailable_after=0.2)
    try:
        limiter = RedisRateLimiter(conn, rate=10.0, give_up_after=0.8)
        began = time.monotonic()
        with pytest.raises(StoreUnavailable, match="no rate-limiter slot"):
            await limiter.acquire()
        assert time.monotonic() - began < 0.8 + 2  # it stops rather than sleep past the 0.8 s
    finally:
        await conn.client.aclose()


# --- queue -------------------------------------------------------------------------------------------


async def test_poison_message_parked_after_max_deliveries(
    backend: RedisBackend, admin: Redis, prefix: str
) -> None:
    """A message whose leases keep expiring is delivered max_deliveries (3) times, then parked and acked;
    clean hand-backs (nacks) before that do not count towards it."""
    await backend.queue.put("poison", '{"boom": true}')
    for handbacks in range(4):
        claim = await _poll_claim(backend, "worker", lease=0.05)
        assert (claim.deliveries, claim.handbacks) == (handbacks + 1, handbacks)
        await backend.queue.nack(claim, 0)
    unfinished = [
        (await _poll_claim(backend, f"worker-{n}", lease=0.05)).unfinished_deliveries for n in range(3)
    ]
    assert unfinished == [1, 2, 3]
    deadline = time.monotonic() + 10
    while not await backend.queue.dead_letters():
        assert await backend.queue.claim("worker-x", 0.05) is None
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    [letter] = await backend.queue.dead_letters()
    assert letter.reason == (
        "delivered 3 times without finishing (besides 4 deliberate hand-backs): "
        "each delivery ended without an answer (the process died, or lost its lease)"
    )
    assert letter.body == '{"boom": true}'
    assert letter.deliveries == 7
    assert await backend.queue.depth() == 0
    assert (await admin.xpending(f"{prefix}:queue:stream", GROUP))["pending"] == 0
    assert await admin.hlen(f"{prefix}:queue:handbacks") == 0


async def _parked_reason(backend: RedisBackend) -> str:
    """The reason of the one dead letter, once a claim has parked it (bounded in time)."""
    deadline = time.monotonic() + 10
    while not await backend.queue.dead_letters():
        assert await backend.queue.claim("worker-x", 0.05) is None
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    [letter] = await backend.queue.dead_letters()
    return letter.reason


async def test_failed_attempts_park_a_message_with_a_reason_that_says_so(
    backend: RedisBackend, admin: Redis, prefix: str
) -> None:
    """Attempts handed back as failures (nack with handback=False) count towards max_deliveries (3),
    and the reason tells them apart from deliveries that ended without an answer."""
    await backend.queue.put("failing", "body")
    for _ in range(3):
        await backend.queue.nack(await _poll_claim(backend, "worker", lease=30), 0, handback=False)
    assert await _parked_reason(backend) == (
        "delivered 3 times without finishing: each attempt failed (handed back as a failure)"
    )
    assert await admin.hlen(f"{prefix}:queue:failures") == 0

    await backend.queue.put("mixed", "body")
    await backend.queue.nack(await _poll_claim(backend, "worker", lease=30), 0, handback=False)
    await _poll_claim(backend, "worker", lease=0.05)  # its lease runs out: no answer
    await _poll_claim(backend, "worker", lease=0.05)
    dead_letters = await backend.queue.dead_letters()
    while len(dead_letters) < 2:
        assert await backend.queue.claim("worker-x", 0.05) is None
        await asyncio.sleep(0.02)
        dead_letters = await backend.queue.dead_letters()
    assert dead_letters[1].reason == (
        "delivered 3 times without finishing: 1 attempt failed (handed back as failures), "
        "2 deliveries ended without an answer (the process died, or lost its lease)"
    )
    assert "poison" not in " ".join(letter.reason for letter in dead_letters)


async def test_dead_consumer_is_taken_over_and_its_claim_fenced_off(prefix: str, admin: Redis) -> None:
    """A consumer that dies holding a message loses it after its lease; its stale claim can neither
    extend, hand back nor park it, while the new holder's claim works."""
    async with open_redis(REDIS_URL, key_prefix=prefix, consumer_group=GROUP) as survivor:
        try:
            async with open_redis(REDIS_URL, key_prefix=prefix, consumer_group=GROUP) as doomed:
                await doomed.queue.put("b1", "work")
                stale = await doomed.queue.claim("doomed-pod", lease_seconds=0.2)
                assert stale is not None
            taken = await _poll_claim(survivor, "survivor-pod", lease=0.2)
            assert (taken.message_id, taken.body, taken.deliveries) == (stale.message_id, "work", 2)
            assert not await survivor.queue.extend(stale, 30)
            await survivor.queue.nack(stale, 0)
            await survivor.queue.dead_letter(stale, "stale holder thinks it is bad")
            assert await survivor.queue.dead_letters() == []
            assert await survivor.queue.extend(taken, 30)
            [entry] = await admin.xpending_range(f"{prefix}:queue:stream", GROUP, "-", "+", 10)
            assert entry["consumer"] == "survivor-pod"
            await survivor.queue.ack(taken)
            assert await survivor.queue.depth() == 0
        finally:
            await survivor.purge()


async def test_consumers_of_gone_pods_are_pruned_but_never_one_holding_a_message(
    prefix: str, admin: Redis
) -> None:
    """Idle consumers with nothing pending leave the group; one holding or handing back a message stays."""
    async with open_redis(
        REDIS_URL, key_prefix=prefix, consumer_group=GROUP, stale_consumer_seconds=0.0
    ) as backend:
        try:
            await backend.queue.put("b1", "finished")
            finished = await backend.queue.claim("gone-pod-1", lease_seconds=30)
            assert finished is not None
            await backend.queue.ack(finished)
            await backend.queue.put("b2", "held")
            held = await backend.queue.claim("gone-pod-2", lease_seconds=30)
            await backend.queue.put("b3", "handed back")
            handed_back = await backend.queue.claim("gone-pod-3", lease_seconds=30)
            assert held is not None and handed_back is not None
            await backend.queue.nack(handed_back, 60)

            assert await backend.queue.claim("live-pod", lease_seconds=30) is None  # idle: housekeeping

            names = {c["name"] for c in await admin.xinfo_consumers(f"{prefix}:queue:stream", GROUP)}
            assert "gone-pod-1" not in names
            assert {"gone-pod-2", "gone-pod-3"} <= names
            await backend.queue.ack(held)
            assert await backend.queue.depth() == 1, "the handed-back message is still there"
        finally:
            await backend.purge()


async def test_extended_lease_outlives_the_first_one(backend: RedisBackend) -> None:
    """The holder's extension counts, not the claimer's lease: a sibling message with the same short
    lease is taken over while the extended one stays put."""
    await backend.queue.put("b1", "extended")
    await backend.queue.put("b2", "abandoned")
    extended = await backend.queue.claim("a", 0.2)
    abandoned = await backend.queue.claim("a", 0.2)
    assert extended is not None
    assert abandoned is not None
    assert await backend.queue.extend(extended, 60)
    taken = await _poll_claim(backend, "b", lease=0.2)
    assert taken.body == "abandoned"
    assert await backend.queue.claim("b", 0.2) is None


async def test_retried_claim_returns_the_same_message(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim re-sent after its answer was lost (same call token) gets the same message, not a second one."""
    await backend.queue.put("b1", "one")
    await backend.queue.put("b2", "two")
    monkeypatch.setattr("exporter.adapters.redis_queue._token", lambda: "fixed-token")
    first = await backend.queue.claim("c1", 30)
    again = await backend.queue.claim("c1", 30)
    assert first is not None
    assert first == again
    assert first.body == "one"


async def test_put_retried_after_lost_answer_still_reports_accepted(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put re-sent with the same token is told it was accepted (by itself), and enqueues nothing more."""
    monkeypatch.setattr("exporter.adapters.redis_queue._token", lambda: "fixed-token")
    assert await backend.queue.put("b1", "body", identity="first") == PutResult(accepted=True)
    assert await backend.queue.put("b1", "body", identity="first") == PutResult(accepted=True)
    monkeypatch.setattr("exporter.adapters.redis_queue._token", lambda: "another-token")
    assert await backend.queue.put("b1", "body", identity="second") == PutResult(False, "first")
    assert await backend.queue.depth() == 1


async def test_identities_live_beside_the_accepted_tokens(
    backend: RedisBackend, admin: Redis, prefix: str
) -> None:
    """The identity is kept in `queue:identities` by batch ID; a batch accepted before identities (a
    token in `queue:accepted` only) answers an empty identity."""
    assert (await backend.queue.put("b1", "body", identity='{"jobs": "1"}')).accepted
    assert await admin.hget(f"{prefix}:queue:identities", "b1") == '{"jobs": "1"}'
    await admin.hset(f"{prefix}:queue:accepted", "old", "token-of-an-older-exporter")
    assert await backend.queue.put("old", "body", identity='{"jobs": "2"}') == PutResult(False, "")
    assert await backend.queue.depth() == 1


# --- ledger ------------------------------------------------------------------------------------------


def _recount(chunks: list[ChunkRecord]) -> Totals:
    totals = Totals(jobs=sum(len(chunk.job_ids) for chunk in chunks), chunks=len(chunks))
    for chunk in chunks:
        tally = ChunkTally.of_chunk(chunk)
        for name in ChunkTally.FIELDS:
            setattr(totals, name, getattr(totals, name) + getattr(tally, name))
    return totals


def _final_state(chunk: ChunkRecord) -> ChunkRecord:
    """Chunk i ends verified, failed, split, or exported, by i mod 4."""
    kind = chunk.index % 4
    if kind == 0:
        return chunk.model_copy(update={"state": ChunkState.VERIFIED})
    if kind == 1:
        return chunk.model_copy(update={"state": ChunkState.FAILED})
    if kind == 2:
        half = len(chunk.job_ids) // 2
        segments = [
            Segment(job_ids=chunk.job_ids[:half], state=ChunkState.VERIFIED),
            Segment(job_ids=chunk.job_ids[half:], state=ChunkState.FAILED),
        ]
        return chunk.model_copy(update={"state": ChunkState.FAILED, "segments": segments})
    return chunk.model_copy(update={"state": ChunkState.EXPORTED})


async def test_totals_equal_chunk_states_under_concurrent_replicas(prefix: str) -> None:
    """Two replicas saving chunks concurrently (the final save twice, as a retried call would) keep every
    total equal to the sum over the chunk states."""
    async with AsyncExitStack() as stack:
        first, second = await _replicas(stack, prefix, 2)
        try:
            assert await first.ledger.create_batch(_batch(), _chunks(120))
            chunks = [chunk async for chunk in first.ledger.chunks("batch-1")]

            async def work(replica: RedisBackend, mine: list[ChunkRecord]) -> None:
                for chunk in mine:
                    exported = chunk.model_copy(update={"state": ChunkState.EXPORTED})
                    assert await replica.ledger.save_chunk(exported, chunk)
                    assert await replica.ledger.save_chunk(_final_state(chunk), exported)
                    assert await replica.ledger.save_chunk(_final_state(chunk), exported)

            await asyncio.gather(work(first, chunks[0::2]), work(second, chunks[1::2]))
            batch = await second.ledger.get_batch("batch-1")
            stored = [chunk async for chunk in second.ledger.chunks("batch-1")]
        finally:
            await first.purge()
    assert batch is not None
    assert batch.totals == _recount(stored)
    assert batch.totals.verified == 30 * 10 + 30 * 5
    assert [chunk.index for chunk in stored if not chunk.state.terminal] == list(range(3, 120, 4))


async def test_replicas_racing_for_every_chunk_store_one_save_each(prefix: str) -> None:
    """Three replicas try to move every pending chunk at once: each chunk takes exactly one of the saves,
    and the totals count each chunk once."""
    async with AsyncExitStack() as stack:
        replicas = await _replicas(stack, prefix, 3)
        try:
            assert await replicas[0].ledger.create_batch(_batch(), _chunks(60))
            planned = [chunk async for chunk in replicas[0].ledger.chunks("batch-1")]

            async def race(number: int, replica: RedisBackend) -> list[bool]:
                marker = ErrorInfo(code="WON", message=str(number))
                mine = {"state": ChunkState.EXPORTED, "attempts": 1, "error": marker}
                return [await replica.ledger.save_chunk(c.model_copy(update=mine), c) for c in planned]

            outcomes = await asyncio.gather(*(race(n, r) for n, r in enumerate(replicas)))
            stored = [chunk async for chunk in replicas[1].ledger.chunks("batch-1")]
            batch = await replicas[2].ledger.get_batch("batch-1")
        finally:
            await replicas[0].purge()
    for chunk in stored:
        wins = [number for number, won in enumerate(outcomes) if won[chunk.index]]
        assert chunk.error is not None and [chunk.error.message] == [str(n) for n in wins]
    assert batch is not None
    assert batch.totals == _recount(stored) == Totals(jobs=600, chunks=60, exported=60)


async def test_racing_creates_make_one_batch_and_keep_progress(prefix: str, admin: Redis) -> None:
    """Replicas creating the same batch at once: exactly one wins, a late create changes nothing, and no
    staging key is left behind."""
    async with AsyncExitStack() as stack:
        replicas = await _replicas(stack, prefix, 3)
        try:
            created = await asyncio.gather(
                *(r.ledger.create_batch(_batch(), _chunks(2000)) for r in replicas)
            )
            first = await replicas[0].ledger.get_chunk("batch-1", 0)
            assert first is not None
            verified = first.model_copy(update={"state": ChunkState.VERIFIED})
            assert await replicas[0].ledger.save_chunk(verified, first)
            assert not await replicas[1].ledger.create_batch(_batch(), _chunks(2000))
            kept = [chunk async for chunk in replicas[2].ledger.chunks("batch-1")]
            staging = [key async for key in admin.scan_iter(match=f"{prefix}:ledger:staging:*")]
            expiring = await admin.ttl(f"{prefix}:ledger:chunks:batch-1")
            open_index = await admin.exists(f"{prefix}:ledger:open:batch-1")
        finally:
            await replicas[0].purge()
    assert sorted(created) == [False, False, True]
    assert len(kept) == 2000
    assert kept[0].state is ChunkState.VERIFIED
    assert staging == []
    assert expiring == -1  # the staging key's expiry must not follow it into place
    assert open_index == 0  # no index of open chunks any more: nothing reads it


async def test_ten_thousand_chunks_are_created_quickly(backend: RedisBackend) -> None:
    """A batch of a million IDs (10,000 chunks) is recorded in well under the time a worker would notice."""
    began = time.monotonic()
    assert await backend.ledger.create_batch(_batch(), _chunks(10_000, size=100))
    elapsed = time.monotonic() - began
    batch = await backend.ledger.get_batch("batch-1")
    assert batch is not None
    assert (batch.totals.jobs, batch.totals.chunks, batch.totals.pending) == (1_000_000, 10_000, 10_000)
    assert elapsed < 5.0


async def test_a_batch_written_by_the_previous_layout_reads_and_saves(
    backend: RedisBackend, admin: Redis, prefix: str
) -> None:
    """Keys as the previous version wrote them (a `created_at` field, an `ledger:open:<b>` set, recorded
    shares) still read, save and fail as today's do; the old open set is left alone."""
    key = f"{prefix}:ledger"
    info = {"batch_id": "old", "project_id": "p1", "obs_dir": "b", "campaign": None, "chunk_size": 1}
    info |= {"duplicates_dropped": 0, "created_at": 5.0}
    counters = {"jobs": 2, "chunks": 2, "pending": 1, "exported": 1, "verified": 0, "failed": 0}
    await admin.hset(
        f"{key}:batch:old",
        mapping={"token": "t", "info": json.dumps(info), "state": "running", "created_at": "5.0"}
        | {"updated_at": "6.0", "chunks_verified": 0, "chunks_failed": 0, **counters},
    )
    exported = ChunkRecord(batch_id="old", index=1, job_ids=[2], state=ChunkState.EXPORTED)
    pending = ChunkRecord(batch_id="old", index=0, job_ids=[1])
    await admin.hset(
        f"{key}:chunks:old", mapping={"0": pending.model_dump_json(), "1": exported.model_dump_json()}
    )
    await admin.hset(f"{key}:share:old", "1", "0,0,0,1,0,0")
    await admin.zadd(f"{key}:open:old", {"0": 0, "1": 1})
    await admin.zadd(f"{key}:batches", {"old": 5.0})
    verified = exported.model_copy(update={"state": ChunkState.VERIFIED})
    assert await backend.ledger.save_chunk(verified, exported)
    error = ErrorInfo(code="DLI.0403", message="refused")
    await backend.ledger.set_batch_state("old", BatchState.FAILED, error)
    batch = await backend.ledger.get_batch("old")
    assert batch is not None
    assert (batch.state, batch.error, batch.created_at) == (BatchState.FAILED, error, 5.0)
    assert batch.totals == Totals(jobs=2, chunks=2, pending=1, verified=1, chunks_verified=1)
    assert [b.batch_id for b in await backend.ledger.list_batches()] == ["old"]
    assert await admin.zcard(f"{key}:open:old") == 2


async def test_a_retried_save_script_reads_as_saved(backend: RedisBackend) -> None:
    """The script run twice with the same arguments (redis-py re-sends it after a lost answer): the second
    run finds its own record and answers saved, so a landed save is never reported as refused."""
    assert await backend.ledger.create_batch(_batch(), _chunks(1))
    pending = await backend.ledger.get_chunk("batch-1", 0)
    assert pending is not None
    verified = pending.model_copy(update={"state": ChunkState.VERIFIED, "attempts": 1})
    assert await backend.ledger.save_chunk(verified, pending)
    assert await backend.ledger.save_chunk(verified, pending)
    with pytest.raises(NotFound):
        await backend.ledger.save_chunk(verified.model_copy(update={"index": 1}), pending)
    batch = await backend.ledger.get_batch("batch-1")
    assert batch is not None and batch.totals == Totals(jobs=10, chunks=1, verified=10, chunks_verified=1)


async def test_chunk_ownership_expires_with_its_ttl(backend: RedisBackend) -> None:
    """A replica that dies holding a chunk loses it when the ttl passes; until then nobody else gets it."""
    assert await backend.ledger.claim_chunk("batch-1", 0, "dead-pod", ttl_seconds=0.2)
    assert not await backend.ledger.claim_chunk("batch-1", 0, "live-pod", ttl_seconds=30)
    deadline = time.monotonic() + 10
    while not await backend.ledger.claim_chunk("batch-1", 0, "live-pod", ttl_seconds=30):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await backend.ledger.release_chunk("batch-1", 0, "dead-pod")  # too late: not the owner any more
    assert not await backend.ledger.claim_chunk("batch-1", 0, "third-pod", ttl_seconds=30)


# --- a whole campaign ---------------------------------------------------------------------------------


async def test_campaign_on_redis_completes_while_connections_are_cut(
    stack: Any, admin: Redis, prefix: str
) -> None:
    """The real runtime on Redis (simulator, S3 server, queue, ledger, global limiter), its connections
    killed again and again mid-campaign: the batch completes with every ID verified exactly once."""
    job_ids = list(range(1, 801))
    settings = {
        "queue_url": REDIS_URL,
        "redis_key_prefix": prefix,
        "rate_limit": 400,
        "concurrency": 8,
        "poll_interval": 0.05,
        "verify_grace_seconds": 10,
        "retry_initial_backoff": 0.02,
        "retry_max_backoff": 0.5,
    }
    kills = 0
    try:
        async with stack(jobs=800, faults={"latency_ms": 5, "seed": 3}, **settings) as s:
            request = BatchRequest(
                batch_id="campaign",
                project_id=s.settings.project_id,
                obs_dir=f"{s.bucket}/exports",
                job_ids=job_ids,
                chunk_size=10,
            )
            async with open_runtime(s.settings, consumer="redis-test") as runtime:
                assert await submit_batch(runtime.stores.queue, request, runtime.stores.ledger)
                working = asyncio.create_task(runtime.worker.run(until_empty=True))
                while not working.done() and kills < 300:
                    kills += await _kill_connections(admin, prefix)
                    await asyncio.wait({working}, timeout=0.05)
                await asyncio.wait_for(working, timeout=120)
                batch = await runtime.stores.ledger.get_batch("campaign")
            report = json.loads((Path(s.settings.report_dir) / "campaign.json").read_text())
    finally:
        keys = [key async for key in admin.scan_iter(match=f"{prefix}:*")]
        if keys:
            await admin.delete(*keys)
    assert kills >= 5
    assert batch is not None
    assert batch.state is BatchState.COMPLETED
    assert batch.totals.verified == len(job_ids)
    reported = [job_id for row in report["chunks"] for job_id in row["job_ids"]]
    assert sorted(reported) == job_ids
    assert {row["state"] for row in report["chunks"]} == {"verified"}


# --- Redis restart (a private server, so the shared one stays up) -------------------------------------


@dataclass
class PrivateRedis:
    """A redis-server of this test's own with an fsync'ed append-only file, to kill and start again."""

    port: int
    directory: Path
    password: str | None = None
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/15"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        arguments = [
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.directory),
        ]
        arguments += ["--appendonly", "yes", "--appendfsync", "always", *self.extra_args]
        if self.password:
            arguments += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            [binary, *arguments], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    async def wait_ready(self) -> None:
        client = Redis(host="127.0.0.1", port=self.port, password=self.password, socket_connect_timeout=0.2)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    await client.ping()
                except (RedisConnectionError, RedisBusyLoadingError):
                    assert time.monotonic() < deadline, "private redis-server did not start"
                    await asyncio.sleep(0.02)
                else:
                    return
        finally:
            await client.aclose()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private redis-server on a free port, stopped at the end."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(port=free_port(), directory=tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, issuer: str, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
        )

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        build("test CA", "test CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        build("127.0.0.1", "test CA", server_key.public_key())
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


async def test_tls_with_password_and_private_ca(tmp_path: Path, prefix: str) -> None:
    """rediss:// with a password and the CA file of a private CA works end to end; a wrong password is
    reported as StoreUnavailable, never as a crash."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    pytest.importorskip("cryptography")
    ca, cert, key = _tls_files(tmp_path)
    tls_port = free_port()
    tls = ("--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key))
    tls += ("--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no")
    server = PrivateRedis(port=free_port(), directory=tmp_path, password="s3cret-pass", extra_args=tls)
    server.start()
    try:
        await server.wait_ready()
        url = f"rediss://127.0.0.1:{tls_port}/15"
        options = {"key_prefix": prefix, "consumer_group": GROUP, "ssl_ca_file": str(ca)}
        async with open_redis(url, password="s3cret-pass", **options) as backend:
            assert await backend.queue.put("b1", "over tls")
            claim = await backend.queue.claim("c1", 30)
            assert claim is not None
            assert claim.body == "over tls"
        async with open_redis(url, password="wrong", unavailable_after=0.5, **options) as backend:
            with pytest.raises(StoreUnavailable):
                await backend.queue.ping()
    finally:
        server.kill()


async def test_redis_restart_mid_use_loses_nothing(private_redis: PrivateRedis, prefix: str) -> None:
    """Redis killed and started again: calls made meanwhile wait and then succeed, the claimed message and
    the ledger survive, and the limiter hands out no slot while Redis is away."""
    await private_redis.wait_ready()
    async with open_redis(
        private_redis.url, key_prefix=prefix, consumer_group=GROUP, unavailable_after=20
    ) as b:
        await b.queue.put("b1", "first")
        claim = await b.queue.claim("c1", 60)
        assert claim is not None
        assert await b.ledger.create_batch(_batch(), _chunks(5))

        private_redis.kill()
        putting = asyncio.create_task(b.queue.put("b2", "second"))
        acquiring = asyncio.create_task(b.limiter(rate=10.0).acquire())
        done, _ = await asyncio.wait({putting, acquiring}, timeout=0.5)
        assert not done
        private_redis.start()

        assert await asyncio.wait_for(putting, timeout=20)
        await asyncio.wait_for(acquiring, timeout=20)
        assert await b.queue.extend(claim, 60)
        await b.queue.ack(claim)
        second = await b.queue.claim("c1", 60)
        assert second is not None
        assert second.body == "second"
        batch = await b.ledger.get_batch("batch-1")
        assert batch is not None
        assert batch.totals.pending == 5
