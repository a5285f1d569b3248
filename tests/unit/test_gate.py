"""The Redis limiter's reservation gate: at most N inside, FIFO, resizable, cancellation-safe."""

from __future__ import annotations

import asyncio

import pytest

from exporter.adapters.gate import ReservationGate


async def test_at_most_holders_inside_and_the_rest_in_arrival_order() -> None:
    gate = ReservationGate(2)
    inside: list[int] = []
    order: list[int] = []
    release = asyncio.Event()

    async def one(number: int) -> None:
        async with gate:
            order.append(number)
            inside.append(number)
            assert len(inside) <= 2
            await release.wait()
            inside.remove(number)

    tasks = [asyncio.create_task(one(n)) for n in range(6)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == [0, 1]
    release.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4, 5]


async def test_a_larger_size_admits_waiters_at_once() -> None:
    gate = ReservationGate(1)
    entered: list[int] = []
    hold = asyncio.Event()

    async def one(number: int) -> None:
        async with gate:
            entered.append(number)
            await hold.wait()

    tasks = [asyncio.create_task(one(n)) for n in range(4)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert entered == [0]
    gate.resize(4)
    for _ in range(5):
        await asyncio.sleep(0)
    assert entered == [0, 1, 2, 3]
    hold.set()
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_gives_its_place_on() -> None:
    gate = ReservationGate(1)
    hold = asyncio.Event()
    entered: list[str] = []

    async def one(name: str) -> None:
        async with gate:
            entered.append(name)
            await hold.wait()

    first = asyncio.create_task(one("first"))
    second = asyncio.create_task(one("second"))
    third = asyncio.create_task(one("third"))
    for _ in range(5):
        await asyncio.sleep(0)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    hold.set()
    await asyncio.gather(first, third)
    assert entered == ["first", "third"]
