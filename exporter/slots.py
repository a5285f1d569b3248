"""Batch slots per region: `EXPORTER_MAX_BATCHES` batches of one region at once, on one worker.

A worker that filled its slots with batches of one region (all waiting on that region's limiter) would
leave another region's batches in the queue. So the limit counts per region, and the worker keeps
claiming while some region is full: room for `max_batches` running batches of each region it runs and
of one more. A claimed batch of a full region waits here, its lease kept, for a slot of its region (as
many may wait as may run), and starts the moment one frees; one more than that is handed back to the
queue (a deferral, not a failed delivery), so the worker goes on to the next message and reaches other
regions' batches behind a long run of one region's.
"""

from __future__ import annotations

import asyncio
from collections import Counter

__all__ = ["RegionSlots"]

_LONGEST_DEFERRAL = 64.0


class RegionSlots:
    """Counts this worker's running and waiting batches per region (None: the default endpoints)."""

    __slots__ = ("_changed", "_handed_back", "_per_region", "_running", "_waiting")

    def __init__(self, per_region: int) -> None:
        if per_region < 1:
            raise ValueError("per_region must be at least 1")
        self._per_region = per_region
        self._running: Counter[str | None] = Counter()
        self._waiting: Counter[str | None] = Counter()
        self._changed = asyncio.Condition()
        self._handed_back = False

    def __repr__(self) -> str:
        return (
            f"<RegionSlots per_region={self._per_region} running={dict(self._running)} "
            f"waiting={dict(self._waiting)}>"
        )

    def take(self, region: str | None) -> bool:
        """Take a slot of the region now; False when it is full."""
        if self._running[region] >= self._per_region:
            return False
        self._running[region] += 1
        return True

    async def wait_for(self, region: str | None) -> bool:
        """Take a slot of the region, waiting for one if it is full and its waiting room is not;
        False at once when both are full (the caller hands the batch back)."""
        if self.take(region):
            return True
        if self._waiting[region] >= self._per_region:
            self._handed_back = True
            return False
        self._waiting[region] += 1
        try:
            async with self._changed:
                await self._changed.wait_for(lambda: self._running[region] < self._per_region)
                self._running[region] += 1
            return True
        finally:
            self._waiting[region] -= 1
            if self._waiting[region] <= 0:
                del self._waiting[region]

    async def give_back(self, region: str | None) -> None:
        self._running[region] -= 1
        if self._running[region] <= 0:
            del self._running[region]
        async with self._changed:
            self._changed.notify_all()

    def handed_back(self) -> bool:
        """Whether a batch was handed back since the last call: the worker then waits a poll before it
        claims again, so a deep queue of one full region is not claimed and handed back in a loop."""
        handed_back, self._handed_back = self._handed_back, False
        return handed_back

    def capacity(self) -> int:
        """How many batches the worker may hold now: `per_region` running for each region running here
        and for one more, plus those waiting for a slot."""
        return self._per_region * (len(self._running) + 1) + sum(self._waiting.values())

    @staticmethod
    def deferral(poll_interval: float, deliveries: int) -> float:
        """How long a handed-back batch waits before it is offered again: doubling with each time it was
        offered (so a long queue of one region is not re-read every poll), at most 64 s."""
        doublings = min(max(deliveries - 1, 0), 6)
        return min(_LONGEST_DEFERRAL, poll_interval * float(2**doublings))
