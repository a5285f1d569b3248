"""Batch slots per region: `EXPORTER_MAX_BATCHES` batches of one region at once, on one worker.

A worker that filled its slots with batches of one region (all waiting on that region's limiter) would
leave another region's batches in the queue. So the limit counts per region: a claimed batch of a full
region is handed back (deferred, not counted as a failed delivery) and the worker keeps claiming, with
room for `max_batches` batches of each region it runs and of one more. Pure bookkeeping: the worker
does the queue writes.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["RegionSlots"]

_LONGEST_DEFERRAL = 64.0


class RegionSlots:
    """Counts this worker's running batches per region (None: the default endpoints)."""

    __slots__ = ("_per_region", "_running")

    def __init__(self, per_region: int) -> None:
        if per_region < 1:
            raise ValueError("per_region must be at least 1")
        self._per_region = per_region
        self._running: Counter[str | None] = Counter()

    def __repr__(self) -> str:
        return f"<RegionSlots per_region={self._per_region} running={dict(self._running)}>"

    def take(self, region: str | None) -> bool:
        """Take a slot of the region; False when it is full."""
        if self._running[region] >= self._per_region:
            return False
        self._running[region] += 1
        return True

    def give_back(self, region: str | None) -> None:
        self._running[region] -= 1
        if self._running[region] <= 0:
            del self._running[region]

    def capacity(self) -> int:
        """How many batches the worker may hold now: `per_region` for each region running here, and
        room for one more region, so busy regions never keep the worker from claiming another's batch."""
        return self._per_region * (len(self._running) + 1)

    @staticmethod
    def deferral(poll_interval: float, deliveries: int) -> float:
        """How long a batch of a full region waits before it is offered again: doubling with each time
        it was offered (so a long queue of one region is not re-read every poll), at most 64 s."""
        doublings = min(max(deliveries - 1, 0), 6)
        return min(_LONGEST_DEFERRAL, poll_interval * float(2**doublings))
