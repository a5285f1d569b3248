"""What the simulator's handlers share: settings, live fault knobs, dice, throttle window, counters."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from exporter.simulator.faults import FaultKnobs, SlidingWindow, merge_knobs
from exporter.simulator.jobs import JobCatalogue
from exporter.simulator.keys import IssuedToken, KeyRing
from exporter.simulator.projects import ImportKind, ImportOutcome, TargetProjects
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
    counts per project and job ID how often it was in such an export, which is how campaigns measure
    repeats; `overlapping_exports` counts export calls that began while another call holding one of the
    same jobs of the same project was still being worked: two replicas exporting one chunk at the same
    time. Job 7 of one project and job 7 of another are different jobs, so everything is kept per project.

    `imports` counts import calls whose work was done (into any project; `imports_lost` of them had their
    answer dropped by `p_import_lost`); `jobs_created`, `jobs_covered` and `import_conflicts` count the
    job documents of imports into target projects by what happened to them.
    """

    __slots__ = (
        "auth_failures",
        "exports",
        "faults",
        "import_kinds",
        "imports",
        "imports_lost",
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
        self.job_exports: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self.repeated_ids: defaultdict[str, set[int]] = defaultdict(set)
        self.exports = 0
        self.zips_written = 0
        self.in_flight: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self.overlapping_exports = 0
        self.imports = 0
        self.imports_lost = 0
        self.import_kinds: Counter[ImportKind] = Counter()

    @contextlib.contextmanager
    def exporting(self, project_id: str, job_ids: list[int]) -> Iterator[None]:
        """Mark the jobs as being exported while the handler works; count a call that overlaps another."""
        in_flight = self.in_flight[project_id]
        if any(in_flight[job_id] for job_id in job_ids):
            self.overlapping_exports += 1
        in_flight.update(job_ids)
        try:
            yield
        finally:
            in_flight.subtract(job_ids)

    def record_export(self, project_id: str, job_ids: list[int]) -> None:
        self.exports += 1
        counts = self.job_exports[project_id]
        for job_id in job_ids:
            counts[job_id] += 1
            if counts[job_id] == 2:
                self.repeated_ids[project_id].add(job_id)

    def record_import(self, outcomes: list[ImportOutcome]) -> None:
        self.imports += 1
        self.import_kinds.update(outcome.kind for outcome in outcomes)

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON; `repeated_job_ids` merges the projects' IDs (see the `_by_project` key)."""
        repeated = sum(len(ids) for ids in self.repeated_ids.values())
        shown = repeated <= _REPEATED_IDS_SHOWN
        by_project = {project: sorted(ids) for project, ids in self.repeated_ids.items() if ids}
        merged = sorted({job_id for ids in by_project.values() for job_id in ids})
        return {
            "requests": {route: dict(statuses) for route, statuses in self.requests.items()},
            "requests_total": sum(sum(statuses.values()) for statuses in self.requests.values()),
            "throttled": self.throttled,
            "auth_failures": self.auth_failures,
            "faults": dict(self.faults),
            "exports": self.exports,
            "jobs_exported": sum(len(counts) for counts in self.job_exports.values()),
            "jobs_exported_by_project": {project: len(jobs) for project, jobs in self.job_exports.items()},
            "job_exports_total": sum(sum(counts.values()) for counts in self.job_exports.values()),
            "job_ids_exported_more_than_once": repeated,
            "repeated_job_ids": merged if shown else None,
            "repeated_job_ids_by_project": by_project if shown else None,
            "zips_written": self.zips_written,
            "overlapping_exports": self.overlapping_exports,
            "imports": self.imports,
            "imports_lost": self.imports_lost,
            "jobs_created": self.import_kinds[ImportKind.CREATED],
            "jobs_covered": self.import_kinds[ImportKind.COVERED],
            "import_conflicts": self.import_kinds[ImportKind.CONFLICT],
        }


class SimulatorState:
    """Everything the handlers share: settings, live knobs, dice, throttle window, counters, S3 client."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.projects = settings.served_projects
        self.catalogue = JobCatalogue(settings.sim_jobs, settings.sim_missing_ids)
        self.targets = TargetProjects(settings.sim_target_projects, settings.sim_existing_names)
        self.knobs = settings.fault_knobs()
        self.rng = random.Random(settings.sim_seed)
        self.window = SlidingWindow(self.knobs.rate_window_seconds, None)
        self.stats = SimStats()
        self.millis = UniqueMillis()
        self.s3: S3Client | None = None
        self.known_buckets: set[str] = set()
        self.late_writes: set[asyncio.Task[None]] = set()
        self.keys = _initial_keys(settings)
        self._apply_window()

    def __repr__(self) -> str:
        region = self.settings.sim_region
        return (
            f"<SimulatorState region={region} projects={len(self.projects)} {self.catalogue!r} "
            f"{self.window!r} late_writes={len(self.late_writes)}>"
        )

    def set_faults(self, changes: dict[str, Any]) -> FaultKnobs:
        """Change knobs at runtime (validated as a whole); ValueError leaves the old ones in place."""
        self.knobs = merge_knobs(self.knobs, changes)
        self._apply_window()
        log.info("simulator.faults_changed", changes=sorted(changes))
        return self.knobs

    def reset(self) -> None:
        """Zero the counters and the window; reseed the dice so a rerun meets the same faults; empty the
        target projects again (seeded names only, new IDs from the start)."""
        self.stats = SimStats()
        self.keys.used.clear()  # which keys signed what is a counter too (the keys themselves stay)
        self.targets.reset()
        self.window.reset()
        self.rng.seed(self.settings.sim_seed)

    def snapshot(self) -> dict[str, Any]:
        return {
            "region": self.settings.sim_region,
            "projects": sorted(self.projects),
            "target_projects": sorted(self.settings.sim_target_projects),
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
        """The SK of a key that is valid now (enabled, not expired), None for any other AK."""
        key = self.keys.find(ak, time.time())
        return key.sk if key is not None else None

    def _apply_window(self) -> None:
        capacity = self.knobs.window_capacity if self.knobs.rate_limit > 0 else None
        self.window.configure(self.knobs.rate_window_seconds, capacity)


def _initial_keys(settings: SimulatorSettings) -> KeyRing:
    """The settings' AK/SK (with the security token, when one is configured) and IAM token."""
    ring = KeyRing()
    if settings.ak is not None and settings.sk is not None:
        token = settings.security_token.get_secret_value() if settings.security_token else None
        ring.add(
            settings.ak.get_secret_value(),
            settings.sk.get_secret_value(),
            label="initial",
            security_token=token,
        )
    if settings.auth_token is not None:
        ring.tokens[settings.auth_token.get_secret_value()] = IssuedToken(expires_at=None)
    return ring


STATE = web.AppKey("simulator_state", SimulatorState)
