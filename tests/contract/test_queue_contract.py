"""The `BatchQueue` contract: every backend must pass these, with the same observable behaviour."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

import pytest

from exporter.errors import StoreUnavailable
from exporter.ports import BatchQueue, Claim, PutResult

if TYPE_CHECKING:  # the fixture's type; conftest modules are not importable at run time
    from exporter.adapters.redis_queue import RedisQueue
    from exporter.adapters.sqlite_queue import SqliteQueue
    from tests.contract.conftest import Contract


async def _claim(contract: Contract, consumer: str = "worker-a") -> Claim:
    claim = await contract.queue.claim(consumer, contract.short)
    assert claim is not None, "expected a visible message"
    return claim


async def test_put_then_claim_hands_over_body_and_first_delivery(backend: Contract) -> None:
    """A put message is claimed with its body, delivery count 1 and the claiming consumer."""
    assert await backend.queue.put("batch-1", '{"batch_id": "batch-1"}') == PutResult(accepted=True)
    claim = await _claim(backend, "worker-a")
    assert claim.body == '{"batch_id": "batch-1"}'
    assert claim.deliveries == 1
    assert claim.consumer == "worker-a"
    assert claim.message_id


async def test_claim_on_empty_queue_returns_none(backend: Contract) -> None:
    """An empty queue answers None at once instead of blocking."""
    assert await backend.queue.claim("worker-a", backend.short) is None


async def test_put_is_idempotent_on_batch_id_even_after_ack(backend: Contract) -> None:
    """A second put of a batch ID adds nothing, also once the first message was acked."""
    assert (await backend.queue.put("batch-1", "first")).accepted is True
    assert (await backend.queue.put("batch-1", "second")).accepted is False
    assert await backend.queue.depth() == 1
    await backend.queue.ack(await _claim(backend))
    assert (await backend.queue.put("batch-1", "third")).accepted is False
    assert await backend.queue.depth() == 0
    assert await backend.queue.claim("worker-a", backend.short) is None


async def test_a_repeated_put_answers_the_identity_of_the_first(backend: Contract) -> None:
    """The identity stored with an accepted batch ID comes back to every later put of that ID, whatever
    that put carries, so the caller tells a harmless repeat from a reused ID."""
    first = '{"jobs": "1-3", "obs_dir": "b/x"}'
    assert await backend.queue.put("batch-1", "body", identity=first) == PutResult(accepted=True)
    assert await backend.queue.put("batch-1", "body", identity=first) == PutResult(False, first)
    other = await backend.queue.put("batch-1", "other body", identity='{"jobs": "4", "obs_dir": "b/y"}')
    assert other == PutResult(accepted=False, identity=first)
    await backend.queue.ack(await _claim(backend))
    assert await backend.queue.put("batch-1", "body") == PutResult(accepted=False, identity=first)
    assert await backend.queue.depth() == 0


async def test_a_batch_id_accepted_without_identity_answers_an_empty_one(backend: Contract) -> None:
    """A batch put without an identity (as every put before identities) answers "" to a later put."""
    assert (await backend.queue.put("batch-1", "body")).accepted is True
    assert await backend.queue.put("batch-1", "body", identity='{"jobs": "1"}') == PutResult(False, "")
    assert await backend.queue.depth() == 1


async def test_put_raw_skips_the_batch_id_check(backend: Contract) -> None:
    """put_raw (an adapter method, not part of the port) enqueues the same body twice, two message IDs."""
    adapter = cast("SqliteQueue | RedisQueue", backend.queue)
    first = await adapter.put_raw("not json at all")
    second = await adapter.put_raw("not json at all")
    assert first != second
    assert await backend.queue.depth() == 2
    claimed = {(await _claim(backend)).message_id, (await _claim(backend)).message_id}
    assert claimed == {first, second}


async def test_claims_come_oldest_first(backend: Contract) -> None:
    """Messages are handed out in the order they were put."""
    for number in range(5):
        assert (await backend.queue.put(f"batch-{number}", f"body-{number}")).accepted
    bodies = [(await _claim(backend)).body for _ in range(5)]
    assert bodies == [f"body-{number}" for number in range(5)]


async def test_claimed_message_is_hidden_until_its_lease_expires(backend: Contract) -> None:
    """Nobody else gets a leased message; once the lease lapses another consumer gets delivery 2."""
    await backend.queue.put("batch-1", "body")
    first = await _claim(backend, "worker-a")
    assert await backend.queue.claim("worker-b", backend.short) is None
    await backend.elapse(backend.short * 1.5)
    second = await _claim(backend, "worker-b")
    assert second.message_id == first.message_id
    assert second.deliveries == 2
    assert second.consumer == "worker-b"


async def test_extend_keeps_the_message_past_its_first_lease(backend: Contract) -> None:
    """An extended lease keeps others away after the original lease would have expired."""
    await backend.queue.put("batch-1", "body")
    claim = await _claim(backend, "worker-a")
    await backend.elapse(backend.short * 0.6)
    assert await backend.queue.extend(claim, backend.short) is True
    await backend.elapse(backend.short * 0.6)
    assert await backend.queue.claim("worker-b", backend.short) is None


async def test_extend_after_the_lease_was_taken_over_returns_false(backend: Contract) -> None:
    """Once another consumer claimed the expired message, the old claim cannot extend; the new one can."""
    await backend.queue.put("batch-1", "body")
    old = await _claim(backend, "worker-a")
    await backend.elapse(backend.short * 1.5)
    new = await _claim(backend, "worker-b")
    assert await backend.queue.extend(old, backend.short) is False
    assert await backend.queue.extend(new, backend.short) is True


async def test_extend_after_ack_returns_false(backend: Contract) -> None:
    """A claim whose message is gone cannot be extended."""
    await backend.queue.put("batch-1", "body")
    claim = await _claim(backend)
    await backend.queue.ack(claim)
    assert await backend.queue.extend(claim, backend.short) is False


async def test_ack_removes_the_message_for_good(backend: Contract) -> None:
    """An acked message never comes back, even after its lease would have expired."""
    await backend.queue.put("batch-1", "body")
    await backend.queue.ack(await _claim(backend))
    assert await backend.queue.depth() == 0
    await backend.elapse(backend.short * 1.5)
    assert await backend.queue.claim("worker-b", backend.short) is None


async def test_nack_hides_the_message_for_its_delay(backend: Contract) -> None:
    """A nacked message stays invisible for its delay, then returns with the next delivery count."""
    await backend.queue.put("batch-1", "body")
    claim = await _claim(backend, "worker-a")
    await backend.queue.nack(claim, backend.short)
    assert await backend.queue.claim("worker-b", backend.short) is None
    assert await backend.queue.depth() == 1
    await backend.elapse(backend.short * 1.5)
    again = await _claim(backend, "worker-b")
    assert again.message_id == claim.message_id
    assert again.deliveries == 2


async def test_nacks_are_counted_apart_from_unfinished_deliveries(backend: Contract) -> None:
    """Clean hand-backs (nack) raise `handbacks`, so deferring work never makes a message look poisoned."""
    await backend.queue.put("batch-1", "body")
    for round_number in range(1, 4):
        claim = await _claim(backend, "worker-a")
        assert (claim.deliveries, claim.handbacks) == (round_number, round_number - 1)
        assert claim.unfinished_deliveries == 1
        await backend.queue.nack(claim, 0)


async def test_a_failed_attempt_counts_as_an_unfinished_delivery(backend: Contract) -> None:
    """nack(handback=False) brings the message back after its delay without counting a hand-back, so
    `unfinished_deliveries` grows with every failed attempt, as it would after crashes."""
    await backend.queue.put("batch-1", "body")
    claim = await _claim(backend, "worker-a")
    await backend.queue.nack(claim, 0)
    for round_number in range(2, 5):
        claim = await _claim(backend, "worker-a")
        assert (claim.deliveries, claim.handbacks) == (round_number, 1)
        assert claim.unfinished_deliveries == round_number - 1
        await backend.queue.nack(claim, 0, handback=False)
    claim = await _claim(backend, "worker-b")
    assert (claim.deliveries, claim.handbacks, claim.unfinished_deliveries) == (5, 1, 4)


async def test_a_failed_attempt_waits_out_its_delay(backend: Contract) -> None:
    """A message nacked as a failed attempt stays hidden for the delay, like a hand-back."""
    await backend.queue.put("batch-1", "body")
    claim = await _claim(backend, "worker-a")
    await backend.queue.nack(claim, backend.short, handback=False)
    assert await backend.queue.claim("worker-b", backend.short) is None
    await backend.elapse(backend.short * 1.5)
    again = await _claim(backend, "worker-b")
    assert (again.message_id, again.deliveries, again.handbacks) == (claim.message_id, 2, 0)


async def test_nack_without_delay_makes_the_message_visible_at_once(backend: Contract) -> None:
    """nack(0) hands the message straight back to the next claimer."""
    await backend.queue.put("batch-1", "body")
    claim = await _claim(backend, "worker-a")
    await backend.queue.nack(claim, 0)
    again = await _claim(backend, "worker-b")
    assert again.message_id == claim.message_id


async def test_depth_counts_waiting_and_in_flight_messages(backend: Contract) -> None:
    """depth() includes claimed messages and excludes acked and dead-lettered ones."""
    for number in range(4):
        await backend.queue.put(f"batch-{number}", "body")
    first = await _claim(backend)
    second = await _claim(backend)
    assert await backend.queue.depth() == 4
    await backend.queue.ack(first)
    await backend.queue.dead_letter(second, "bad")
    assert await backend.queue.depth() == 2


async def test_dead_letter_parks_body_reason_and_deliveries(backend: Contract) -> None:
    """A dead-lettered message leaves the queue and is listed with its reason and delivery count."""
    await backend.queue.put("batch-1", "body-1")
    claim = await _claim(backend)
    await backend.queue.nack(claim, 0)
    claim = await _claim(backend)
    await backend.queue.dead_letter(claim, "invalid project ID")
    assert await backend.queue.depth() == 0
    assert await backend.queue.claim("worker-a", backend.short) is None
    [parked] = await backend.queue.dead_letters()
    assert parked.body == "body-1"
    assert parked.reason == "invalid project ID"
    assert parked.deliveries == 2
    assert parked.created_at > 0


async def test_dead_letters_are_listed_oldest_first(backend: Contract) -> None:
    """dead_letters() returns parked messages in the order they were parked."""
    for number in range(3):
        await backend.queue.put(f"batch-{number}", f"body-{number}")
    for number in range(3):
        await backend.queue.dead_letter(await _claim(backend), f"reason-{number}")
    parked = await backend.queue.dead_letters()
    assert [dead.reason for dead in parked] == ["reason-0", "reason-1", "reason-2"]
    assert len({dead.dead_letter_id for dead in parked}) == 3
    # the status page reads only the newest few, still oldest first, however many are parked
    newest = await backend.queue.dead_letters(newest=2)
    assert [dead.reason for dead in newest] == ["reason-1", "reason-2"]
    assert [dead.reason for dead in await backend.queue.dead_letters(newest=10)] == [
        "reason-0",
        "reason-1",
        "reason-2",
    ]
    assert await backend.queue.dead_letters(newest=0) == []


async def test_requeue_round_trip_resets_deliveries(backend: Contract) -> None:
    """A requeued dead letter is claimable again with delivery count 1 and leaves the dead letters."""
    await backend.queue.put("batch-1", "body-1")
    await backend.queue.dead_letter(await _claim(backend), "transient store outage")
    [parked] = await backend.queue.dead_letters()
    assert await backend.queue.requeue(parked.dead_letter_id) is True
    assert await backend.queue.dead_letters() == []
    assert await backend.queue.depth() == 1
    again = await _claim(backend)
    assert again.body == "body-1"
    assert again.deliveries == 1
    assert await backend.queue.requeue(parked.dead_letter_id) is False


async def test_requeue_of_unknown_dead_letter_returns_false(backend: Contract) -> None:
    """requeue() of an ID that names no dead letter changes nothing."""
    assert await backend.queue.requeue("no-such-id") is False
    assert await backend.queue.requeue("999999") is False
    assert await backend.queue.depth() == 0


async def test_ping_answers_while_the_store_is_reachable_and_raises_once_it_is_not(
    backend: Contract,
) -> None:
    """ping() returns None on a healthy store (ours and a second handle on it), and raises
    StoreUnavailable from a handle whose store cannot be reached (closed, or nothing listening)."""
    assert await backend.queue.ping() is None
    async with backend.open_peer() as peer:
        assert await peer.queue.ping() is None
    assert backend.open_unreachable is not None
    async with backend.open_unreachable() as gone:
        with pytest.raises(StoreUnavailable):
            await gone.queue.ping()
    assert await backend.queue.ping() is None


async def test_two_handles_never_claim_the_same_message(backend: Contract) -> None:
    """Two independent connections claiming concurrently share the messages out without overlap."""
    total = 40
    for number in range(total):
        await backend.queue.put(f"batch-{number}", f"body-{number}")

    async def drain(queue: BatchQueue, consumer: str) -> list[str]:
        claimed: list[str] = []
        for _ in range(total + 1):  # bounded: never more claims than messages, plus the final None
            claim = await queue.claim(consumer, 600)
            if claim is None:
                return claimed
            claimed.append(claim.message_id)
        return claimed

    async with backend.open_peer() as peer:
        claims = await asyncio.gather(
            drain(backend.queue, "worker-a"),
            drain(peer.queue, "worker-b"),
            drain(backend.queue, "worker-c"),
            drain(peer.queue, "worker-d"),
        )
    every = [message_id for claimed in claims for message_id in claimed]
    assert len(every) == total
    assert len(set(every)) == total
