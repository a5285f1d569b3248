"""The `RateStates` contract: SQLite and Redis keep each endpoint's learned rate the same way.

A record per scope; writes are a compare-and-set on its sequence number, so of two replicas reacting to
the same 429s only the first write lands and the second learns what the first wrote.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from exporter.rate_states import SharedRate

if TYPE_CHECKING:  # the fixture's type; conftest modules are not importable at run time
    from tests.contract.conftest import Contract

STATE = {"version": 1, "rate": 38.8, "w_max": 40.0, "trusted": True, "ceiling": 38.8, "stated": 40.0}


async def test_nothing_learned_yet(backend: Contract) -> None:
    assert await backend.rates.load("dli.example:443") is None
    assert await backend.rates.all() == {}


async def test_a_first_write_lands_and_is_read_back(backend: Contract) -> None:
    before = time.time()
    stored, record = await backend.rates.save("dli.example:443", STATE, "stated_limit", 0)
    assert stored is True
    assert (record.seq, record.state, record.reason) == (1, STATE, "stated_limit")
    assert record.saved_at >= before - 5  # the store's clock (Redis: the server's)
    loaded = await backend.rates.load("dli.example:443")
    assert loaded is not None
    assert (loaded.seq, loaded.state, loaded.reason, loaded.rate, loaded.stated_limit) == (
        1,
        STATE,
        "stated_limit",
        38.8,
        40.0,
    )


async def test_a_write_behind_the_record_is_refused_and_answered_with_the_record(backend: Contract) -> None:
    await backend.rates.save("dli.example:443", STATE, "throttled", 0)
    other = {**STATE, "rate": 12.0}
    stored, record = await backend.rates.save("dli.example:443", other, "throttled", 0)
    assert stored is False
    assert (record.seq, record.rate) == (1, 38.8)  # what the first writer left, untouched
    stored, record = await backend.rates.save("dli.example:443", other, "probe", 1)
    assert (stored, record.seq, record.rate, record.reason) == (True, 2, 12.0, "probe")


async def test_scopes_are_apart_and_listed(backend: Contract) -> None:
    await backend.rates.save("a:443", STATE, "probe", 0)
    await backend.rates.save("b:443", {**STATE, "rate": 5.0}, "probe", 0)
    found = await backend.rates.all()
    assert sorted(found) == ["a:443", "b:443"]
    assert isinstance(found["b:443"], SharedRate)
    assert found["b:443"].rate == 5.0


async def test_another_handle_and_a_restart_see_the_record(backend: Contract) -> None:
    await backend.rates.save("dli.example:443", STATE, "stated_limit", 0)
    async with backend.open_peer() as peer:
        record = await peer.rates.load("dli.example:443")
    assert record is not None
    assert record.rate == 38.8
