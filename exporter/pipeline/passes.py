"""One pass over a batch: what it deferred and why, and the one way a stage saves a chunk."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from exporter import metrics
from exporter.errors import Transient
from exporter.models import ChunkRecord
from exporter.ports import Ledger

__all__ = ["PassLog", "save_forward"]

log = structlog.get_logger("exporter.pipeline")


@dataclass(slots=True)
class PassLog:
    """What one pass did: the chunks it worked, and why it left any open (with the longest Retry-After)."""

    owned: int = 0
    retry_after: float | None = None
    reasons: set[str] = field(default_factory=set)

    def defer(self, error: Transient) -> None:
        self.note(error.reason)
        if error.retry_after is not None:
            self.retry_after = max(self.retry_after or 0.0, error.retry_after)

    def note(self, reason: str) -> None:
        self.reasons.add(reason)


async def save_forward(ledger: Ledger, chunk: ChunkRecord, expected: ChunkRecord, this_pass: PassLog) -> bool:
    """Save `chunk` only if the ledger still holds `expected` (compare-and-set); log a refused save.

    A refusal means another owner moved the chunk since we read it (our lease lapsed): its work stands,
    ours is dropped, and the chunk is never moved backwards.
    """
    if await ledger.save_chunk(chunk, expected):
        return True
    metrics.STALE_SAVES.inc()
    log.warning(
        "chunk.save.stale",
        chunk=chunk.index,
        state=chunk.state.value,
        expected_state=expected.state.value,
        expected_attempts=expected.attempts,
    )
    return False
