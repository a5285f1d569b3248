"""What the simulator's handlers share: settings, live fault knobs, dice, throttle window, counters."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from exporter.simulator.faults import FaultKnobs, SlidingWindow, merge_knobs
from exporter.simulator.jobs import JobCatalogue
from exporter.simulator.settings import SimulatorSettings
from exporter.simulator.zips import UniqueMillis

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["STATE", "SimStats", "SimulatorState"]

log = structlog.get_logger(__name__)

_REPEATED_IDS_SHOWN = 100


class SimStats:
    """Counters behind `GET /_sim/stats`; plain integers, updated on the request path, so kept cheap.

    `requests[route][status]` counts every answer (`reset` for a dropped connection); `exports` counts
    export calls that answered success (their ZIPs may still be late or never written); `job_exports`
    counts per job ID how often it was in such an export, which is how campaigns measure repeats;
    `overlapping_exports` counts export calls that began while another call holding one of the same IDs
    was still being worked: two replicas exporting one chunk at the same time.
    """

    __slots__ = (
        "auth_failures",
        "exports",
        "faults",
        "in_flight",
        "job_exports",
        "overlapping_exports",
        "repeated_ids",
        "requests",
        "throttled",
        "zips_written",
    )

    def __init__(self) -> None:
        self.requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.throttled = 0
        self.auth_failures = 0
        self.faults: Counter[str] = Counter()
        self.job_exports: Counter[int] = Counter()
        self.repeated_ids: set[int] = set()
        self.exports = 0
        self.zips_written = 0
        self.in_flight: Counter[int] = Counter()
        self.overlapping_exports = 0

    @contextlib.contextmanager
    def exporting(self, job_ids: list[int]) -> Iterator[None]:
        """Mark the IDs as being exported while the handler works; count a call that overlaps another."""
        if any(self.in_flight[job_id] for job_id in job_ids):
            self.overlapping_exports += 1
        self.in_flight.update(job_ids)
        try:
            yield
        finally:
            self.in_flight.subtract(job_ids)

    def record_export(self, job_ids: list[int]) -> None:
        self.exports += 1
        counts = self.job_exports
        for job_id in job_ids:
            counts[job_id] += 1
            if counts[job_id] == 2:
                self.repeated_ids.add(job_id)

    def snapshot(self) -> dict[str, Any]:
        repeated = len(self.repeated_ids)
        return {
            "requests": {route: dict(statuses) for route, statuses in self.requests.items()},
            "requests_total": sum(sum(statuses.values()) for statuses in self.requests.values()),
            "throttled": self.throttled,
            "auth_failures": self.auth_failures,
            "faults": dict(self.faults),
            "exports": self.exports,
            "jobs_exported": len(self.job_exports),
            "job_exports_total": sum(self.job_exports.values()),
            "job_ids_exported_more_than_once": repeated,
            "repeated_job_ids": sorted(self.repeated_ids) if repeated <= _REPEATED_IDS_SHOWN else None,
            "zips_written": self.zips_written,
            "overlapping_exports": self.overlapping_exports,
        }


class SimulatorState:
    """Everything the handlers share: settings, live knobs, dice, throttle window, counters, S3 client."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.catalogue = JobCatalogue(settings.sim_jobs, settings.sim_missing_ids)
        self.knobs = settings.fault_knobs()
        self.rng = random.Random(settings.sim_seed)
        self.window = SlidingWindow(self.knobs.rate_window_seconds, None)
        self.stats = SimStats()
        self.millis = UniqueMillis()
        self.s3: S3Client | None = None
        self.known_buckets: set[str] = set()
        self.late_writes: set[asyncio.Task[None]] = set()
        self._apply_window()

    def __repr__(self) -> str:
        return f"<SimulatorState {self.catalogue!r} {self.window!r} late_writes={len(self.late_writes)}>"

    def set_faults(self, changes: dict[str, Any]) -> FaultKnobs:
        """Change knobs at runtime (validated as a whole); ValueError leaves the old ones in place."""
        self.knobs = merge_knobs(self.knobs, changes)
        self._apply_window()
        log.info("simulator.faults_changed", changes=sorted(changes))
        return self.knobs

    def reset(self) -> None:
        """Zero the counters and the window; reseed the dice so a rerun meets the same faults."""
        self.stats = SimStats()
        self.window.reset()
        self.rng.seed(self.settings.sim_seed)

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.stats.snapshot(),
            "max_in_window": self.window.max_in_window,
            "rate_window_seconds": self.knobs.rate_window_seconds,
            "zips_pending": len(self.late_writes),
        }

    def success_flag(self) -> bool | str:
        return "true" if self.knobs.is_success_as_string else True

    def failure_flag(self, *, listing: bool) -> bool | str:
        """`is_success` of a failed answer: a string in the listing (as its docs show), else as configured."""
        return "false" if listing or self.knobs.is_success_as_string else False

    def secret_for_ak(self, ak: str) -> str | None:
        settings = self.settings
        if settings.ak is None or settings.sk is None:
            return None
        if not hmac.compare_digest(ak.encode(), settings.ak.get_secret_value().encode()):
            return None
        return settings.sk.get_secret_value()

    def _apply_window(self) -> None:
        capacity = self.knobs.window_capacity if self.knobs.rate_limit > 0 else None
        self.window.configure(self.knobs.rate_window_seconds, capacity)


STATE = web.AppKey("simulator_state", SimulatorState)
