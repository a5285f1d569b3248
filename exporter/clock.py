"""The real clock; unit tests inject a manual one instead."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["SystemClock", "sleep_unless", "stop_loop"]


class _Sleeper(Protocol):
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Monotonic time for intervals, wall time for records, asyncio.sleep for waiting."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


async def sleep_unless(clock: _Sleeper, seconds: float, stop: asyncio.Event) -> bool:
    """Sleep `seconds` on `clock` unless `stop` is set first; True when stopped.

    Background loops (lease renewals, heartbeats) stop through an event rather than a cancel: redis-py
    can swallow a CancelledError that lands inside a command (redis/redis-py#2028), and a renewal loop
    that missed its cancel would then renew for ever while its owner waited for it to end.
    """
    if stop.is_set():
        return True
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (sleeper, stopper):
            waiter.cancel()
        await asyncio.gather(sleeper, stopper, return_exceptions=True)
    return stop.is_set()


async def stop_loop(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Ask a background loop to end (`stop`, then a cancel for good measure) and wait until it has."""
    stop.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
