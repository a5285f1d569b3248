"""A resizable FIFO gate: at most N tasks inside at once, the rest waiting in arrival order.

The Redis limiter holds its callers here while it runs an adaptive pace, so that a replica never holds
more than a quarter second of reserved slots: a faster pace then reaches the shared schedule at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

__all__ = ["ReservationGate"]


class ReservationGate:
    """At most `holders` callers of this replica hold or wait for a reserved slot at once; the rest wait
    here in arrival order. Resizable: a faster pace admits more at once."""

    __slots__ = ("_holders", "_inside", "_waiters")

    def __init__(self, holders: int) -> None:
        self._holders = holders
        self._inside = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def resize(self, holders: int) -> None:
        self._holders = holders
        self._admit()

    def _admit(self) -> None:
        while self._waiters and self._inside < self._holders:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter is done: skipped
                waiter.set_result(None)
                self._inside += 1

    async def __aenter__(self) -> None:
        if self._inside < self._holders and not self._waiters:
            self._inside += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # admitted, then cancelled: give the place on
                self._inside -= 1
                self._admit()
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._inside -= 1
        self._admit()
