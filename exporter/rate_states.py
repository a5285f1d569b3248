"""Where an endpoint's learned rate lives between replicas and restarts (EXPORTER_RATE_LIMIT=auto).

One record per limiter scope (a DLI endpoint's `host:port`, or `default`): the controller's snapshot,
why it was last written, when (the store's clock), and a sequence number. Writes are a compare-and-set
on that number, so two replicas that both saw the same burst of 429s cut the shared rate once, not twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["RateStates", "SharedRate"]


@dataclass(frozen=True, slots=True)
class SharedRate:
    """The learned rate of one scope as stored: `state` is a `RateController.snapshot()`."""

    seq: int
    state: dict[str, Any]
    reason: str
    saved_at: float

    @property
    def rate(self) -> float:
        """The pace (requests/s) the record holds; 0 when the snapshot has none."""
        value = self.state.get("rate", 0.0)
        return float(value) if isinstance(value, int | float) else 0.0

    @property
    def stated_limit(self) -> float | None:
        """The limit (requests/s) the last trusted 429 stated, before the headroom; None: none stated."""
        stated = self.state.get("stated")
        return float(stated) if isinstance(stated, int | float) else None


class RateStates(Protocol):
    """Learned rates, shared by every replica of one deployment (SQLite file, Redis prefix)."""

    async def load(self, scope: str) -> SharedRate | None:
        """The scope's record, or None when nothing was learned there yet."""
        ...

    async def save(
        self, scope: str, state: dict[str, Any], reason: str, expect_seq: int
    ) -> tuple[bool, SharedRate]:
        """Store `state` if the record is still at `expect_seq` (0: none yet): (True, the new record);
        else (False, the record another replica wrote), and nothing changes."""
        ...

    async def all(self) -> dict[str, SharedRate]:
        """Every scope's record (for `status` and the campaign views)."""
        ...
