"""Expiring credentials: renewed at two thirds of their lifetime in the background, one fetch for many
callers, kept while valid when a renewal fails (retried with a doubling backoff), awaited only once they
are no longer valid."""

from __future__ import annotations

import asyncio

import pytest
from fakes import ManualClock
from structlog.testing import capture_logs

from exporter.credentials.renewing import Lease, RenewingSource
from exporter.dli.signer import Credentials
from exporter.errors import Transient

LIFETIME = 60.0


class Fetches:
    """A fetch that hands out numbered keys living LIFETIME seconds; it can be told to fail or to wait."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.calls = 0
        self.failing = False
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> Lease:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise Transient("metadata service unreachable: ClientConnectorError", reason="connection")
        now = self.clock.time()
        keys = Credentials(f"AKTEMP{self.calls:014d}", f"skTemp-{self.calls:030d}", security_token="t" * 20)
        return Lease(keys, obtained_at=now, expires_at=now + LIFETIME)


async def settle() -> None:
    """Let a background renewal run to its end (it needs no time of its own)."""
    for _ in range(5):
        await asyncio.sleep(0)


def ak(auth: object) -> str:
    assert isinstance(auth, Credentials)
    return auth.ak


def test_lease_renews_at_two_thirds_and_is_usable_until_just_before_expiry() -> None:
    """Renewal after 40 s of a 60-s lease; usable up to 3 s (5%) before expiry; margins never exceed 30 s."""
    lease = Lease("token", obtained_at=100.0, expires_at=160.0)
    assert lease.renew_at() == pytest.approx(140.0)
    assert lease.usable(156.9) and not lease.usable(157.0)
    day = Lease("token", obtained_at=0.0, expires_at=86_400.0)
    assert day.renew_at() == pytest.approx(57_600.0) and day.usable(86_369.0) and not day.usable(86_370.0)


async def test_many_callers_at_start_share_one_fetch() -> None:
    """Twenty requests at once before any keys exist: one fetch, and all sign with its keys."""
    clock = ManualClock()
    fetch = Fetches(clock)
    fetch.gate = asyncio.Event()
    source = RenewingSource("test", fetch, clock)
    waiting = [asyncio.create_task(source.current()) for _ in range(20)]
    await settle()
    fetch.gate.set()
    results = await asyncio.gather(*waiting)
    assert fetch.calls == 1 and {ak(result) for result in results} == {ak(results[0])}


async def test_renewal_runs_in_the_background_once_due() -> None:
    """Before two thirds nothing is fetched; after, the caller still gets the old keys at once, and the
    renewal (one, however many callers) brings the new ones."""
    clock = ManualClock()
    fetch = Fetches(clock)
    source = RenewingSource("test", fetch, clock)
    first = ak(await source.current())
    clock.now += 39.0
    assert ak(await source.current()) == first and fetch.calls == 1
    clock.now += 2.0
    with capture_logs() as logs:
        answers = [ak(await source.current()) for _ in range(5)]
        await settle()
    assert answers == [first] * 5 and fetch.calls == 2
    assert ak(await source.current()) != first
    assert [entry["event"] for entry in logs] == ["credentials.renewed"]


async def test_failed_renewals_keep_valid_keys_and_back_off() -> None:
    """The service down at renewal time: the old keys go on signing; tries after 1 s, then 2 s, then 4 s;
    once it is back, the next try brings new keys."""
    clock = ManualClock()
    fetch = Fetches(clock)
    source = RenewingSource("test", fetch, clock)
    first = ak(await source.current())
    fetch.failing = True
    clock.now += 41.0
    tries = []
    for _ in range(12):  # half a second apart
        with capture_logs():
            assert ak(await source.current()) == first
            await settle()
        tries.append(fetch.calls)
        clock.now += 0.5
    assert tries == [2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4]
    fetch.failing = False
    clock.now += 4.0
    await source.current()
    await settle()
    assert ak(await source.current()) != first


async def test_expired_keys_are_not_used_and_the_fetch_error_reaches_the_caller() -> None:
    """Past the lease's margin, a caller waits for a fetch; if it fails, its Transient is the answer."""
    clock = ManualClock()
    fetch = Fetches(clock)
    source = RenewingSource("test", fetch, clock)
    await source.current()
    fetch.failing = True
    clock.now += LIFETIME - 1.0
    with capture_logs() as logs, pytest.raises(Transient, match="unreachable"):
        await source.current()
    assert logs[0]["event"] == "credentials.renew_failed" and logs[0]["still_valid"] is False


async def test_refresh_fetches_at_once_and_joins_a_renewal_under_way() -> None:
    """A 401 asks for new keys at once, however young the lease (a token can be revoked any time);
    refreshes that come while one fetch runs share it."""
    clock = ManualClock()
    fetch = Fetches(clock)
    source = RenewingSource("test", fetch, clock)
    first = ak(await source.current())
    fetch.gate = asyncio.Event()
    both = asyncio.gather(source.refresh(), source.refresh())
    await settle()
    fetch.gate.set()
    second, third = await both
    assert ak(second) == ak(third) != first and fetch.calls == 2


async def test_closing_cancels_a_renewal_in_flight() -> None:
    """aclose() at shutdown: a fetch that hangs is cancelled, not left running."""
    clock = ManualClock()
    fetch = Fetches(clock)
    fetch.gate = asyncio.Event()
    source = RenewingSource("test", fetch, clock)
    waiter = asyncio.create_task(source.current())
    await settle()
    await source.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiter
