"""One learned rate per endpoint for every replica: a controller kept in step with its shared record.

Each replica runs its own `RateController` (decisions stay local and immediate) and exchanges it with
the scope's record in `RateStates`:

- a 429's cut (or a stated limit) is written at once, compare-and-set on the record's sequence number;
  when another replica wrote first, its record is adopted instead: the same burst of 429s seen by three
  replicas cuts the shared rate once. Only a cut the record does not hold yet (ours is lower) is written
  over it;
- every `interval` seconds a replica writes its probes (the CUBIC climb), or adopts a newer record, so
  all replicas climb one curve; a restarted replica adopts the record on its first request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.adaptive import Adjustment, RateController
from exporter.ports import Clock
from exporter.rate_states import RateStates, SharedRate

__all__ = ["SHARE_INTERVAL", "RateSync"]

SHARE_INTERVAL = 0.5
"""Seconds between a replica's exchanges with the shared record while requests flow."""


@dataclass(slots=True)
class RateSync:
    """The link between one controller and the shared record of its limiter scope."""

    states: RateStates
    scope: str
    clock: Clock
    interval: float = SHARE_INTERVAL
    _seq: int = field(default=0, init=False)
    _next: float = field(default=float("-inf"), init=False)
    _dirty: bool = field(default=False, init=False)
    _loaded: bool = field(default=False, init=False)

    def probed(self) -> None:
        """The controller climbed locally: write it at the next exchange."""
        self._dirty = True

    def claim(self, now: float) -> bool:
        """True for the one caller due to exchange now (the next is due `interval` later)."""
        if now < self._next:
            return False
        self._next = now + self.interval
        return True

    async def exchange(self, controller: RateController) -> Adjustment | None:
        """Write our probes, or adopt a record another replica (or an earlier run) wrote."""
        if self._dirty and self._loaded:
            return await self.push(controller, "probe")
        record = await self.states.load(self.scope)
        self._loaded = True
        if record is None or record.seq == self._seq:
            return None
        return self._adopt(controller, record)

    async def push(self, controller: RateController, reason: str) -> Adjustment | None:
        """Write the controller's state; when another replica wrote first, adopt its record (or write
        over it when ours is a cut it does not hold)."""
        self._dirty = False
        stored, record = await self.states.save(self.scope, controller.snapshot(), reason, self._seq)
        if not stored and reason != "probe" and record.rate > controller.rate:
            stored, record = await self.states.save(self.scope, controller.snapshot(), reason, record.seq)
        if stored:
            self._seq, self._loaded = record.seq, True
            return None
        return self._adopt(controller, record)

    def _adopt(self, controller: RateController, record: SharedRate) -> Adjustment | None:
        old = controller.rate
        throttled_at = None
        if record.reason != "probe":
            age = max(0.0, self.clock.time() - record.saved_at)
            throttled_at = self.clock.monotonic() - age
        controller.restore(record.state, throttled_at=throttled_at)
        self._seq, self._loaded = record.seq, True
        return None if controller.rate == old else Adjustment(old=old, new=controller.rate, reason="shared")
