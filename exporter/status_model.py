"""What the status page shows, as plain data: progress bars, batch and campaign rows, rates, failures.

Built from the ledger's records by pure functions, with the same progress, rate and ETA figures as
`status` and `campaign status` (`exporter.progress`, `exporter.campaign_progress`), so the page and the
command line never disagree. `exporter.status_data` reads the stores; `exporter.status_page` renders.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.campaign.views import CampaignView
from exporter.campaign_progress import campaign_status_json, rate_per_second
from exporter.models import BatchInfo, ChunkRecord, ChunkState, ErrorInfo, Totals
from exporter.ports import DeadLetter
from exporter.progress import eta_seconds

__all__ = [
    "BatchRow",
    "CampaignRow",
    "EndpointRate",
    "FailureRow",
    "Progress",
    "RegionRow",
    "StatusSnapshot",
    "batch_row",
    "campaign_row",
    "chunk_failures",
]

DEFAULT_REGION = "default"  # a batch without a region runs against the default endpoints


@dataclass(frozen=True, slots=True)
class Progress:
    """Jobs of a batch, a region or a campaign: how many there are, and how many ended which way."""

    jobs: int = 0
    verified: int = 0
    failed: int = 0

    @classmethod
    def of(cls, totals: Totals) -> Progress:
        return cls(totals.jobs, totals.verified, totals.failed)

    @property
    def done(self) -> int:
        return self.verified + self.failed

    def share(self, count: int) -> float:
        """`count` as a share of the jobs, within 0..1 (0 while there are no jobs)."""
        return min(1.0, max(0.0, count / self.jobs)) if self.jobs > 0 else 0.0

    @property
    def percent(self) -> int:
        """Done in percent, rounded down as `campaign status` does, so 100 means every job is done."""
        return 100 * min(self.done, self.jobs) // self.jobs if self.jobs > 0 else 0

    def __add__(self, other: Progress) -> Progress:
        return Progress(self.jobs + other.jobs, self.verified + other.verified, self.failed + other.failed)


@dataclass(frozen=True, slots=True)
class BatchRow:
    batch_id: str
    campaign: str | None
    region: str | None
    state: str
    progress: Progress
    rate: float | None  # jobs per second, as `campaign status` computes it
    eta: float | None  # seconds, as `status` computes it
    error: ErrorInfo | None = None  # why the whole batch failed


@dataclass(frozen=True, slots=True)
class RegionRow:
    """The targets of one region of a campaign, added up; `queued` of them are not planned yet."""

    region: str
    progress: Progress
    targets: int
    queued: int
    eta: float | None


@dataclass(frozen=True, slots=True)
class CampaignRow:
    campaign_id: str
    state: str
    progress: Progress
    rate: float | None
    eta: float | None
    batches: int
    batches_finished: int
    regions: list[RegionRow]


@dataclass(frozen=True, slots=True)
class EndpointRate:
    """A DLI endpoint's pace and the limit its gateway stated in a 429 (None while none has)."""

    endpoint: str
    pace: float | None
    stated: float | None
    regions: tuple[str, ...] = ()  # the campaign regions on this endpoint, for people


@dataclass(frozen=True, slots=True)
class FailureRow:
    """Jobs that failed with one error: a chunk's (or part's) jobs, or a whole batch (chunk None)."""

    batch_id: str
    chunk: int | None
    job_ids: list[int]
    code: str
    message: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """Everything one page load shows; `problems` names the parts that could not be read."""

    now: float
    queue_depth: int | None = None
    campaigns: list[CampaignRow] = field(default_factory=list)
    batches: list[BatchRow] = field(default_factory=list)
    rates: list[EndpointRate] = field(default_factory=list)
    failures: list[FailureRow] = field(default_factory=list)
    failures_cut: bool = False  # the search for failures stopped at its budget: there may be more
    dead_letters: list[DeadLetter] = field(default_factory=list)
    dead_letters_more: bool = False  # more are parked than shown
    problems: list[str] = field(default_factory=list)


def batch_row(info: BatchInfo, now: float) -> BatchRow:
    return BatchRow(
        batch_id=info.batch_id,
        campaign=info.campaign,
        region=info.region,
        state=info.state.value,
        progress=Progress.of(info.totals),
        rate=rate_per_second(info, now),
        eta=eta_seconds(info, now),
        error=info.error,
    )


def _target_progress(target: dict[str, Any]) -> Progress:
    if target["jobs"] is None:  # queued: a listing that has not run yet
        return Progress()
    return Progress(target["jobs"], target["verified"], target["failed"])


def _latest(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return max(known) if known else None


def _regions(targets: Sequence[dict[str, Any]]) -> list[RegionRow]:
    """The targets by region, in the campaign's order; a region ends when its slowest target does."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for target in targets:
        groups.setdefault(target["region"] or DEFAULT_REGION, []).append(target)
    rows = []
    for region, members in groups.items():
        progress = sum((_target_progress(t) for t in members), Progress())
        queued = sum(1 for t in members if t["jobs"] is None)
        eta = _latest(t["eta_seconds"] for t in members)
        rows.append(RegionRow(region, progress, len(members), queued, eta))
    return rows


def campaign_row(view: CampaignView, now: float) -> CampaignRow:
    """A campaign's figures, exactly those of `campaign status --json`, with its regions added up."""
    status = campaign_status_json(view, now)
    totals = status["totals"]
    return CampaignRow(
        campaign_id=status["campaign_id"],
        state=status["state"],
        progress=Progress(totals["jobs"], totals["verified"], totals["failed"]),
        rate=status["rate_per_second"],
        eta=status["eta_seconds"],
        batches=totals["batches"],
        batches_finished=totals["batches_finished"],
        regions=_regions(status["targets"]),
    )


def chunk_failures(chunk: ChunkRecord) -> list[FailureRow]:
    """The failed parts of a chunk, each with its error (a split chunk fails part by part)."""
    if len(chunk.segments) > 1:
        parts = [(s.job_ids, s.error, s.request_id) for s in chunk.segments if s.state is ChunkState.FAILED]
    elif chunk.state is ChunkState.FAILED:
        segment = chunk.segments[0] if chunk.segments else None
        error = (segment.error if segment else None) or chunk.error
        parts = [(chunk.job_ids, error, segment.request_id if segment else None)]
    else:
        return []
    unknown = ErrorInfo(code="UNKNOWN", message="no error was recorded")
    return [
        FailureRow(chunk.batch_id, chunk.index, list(ids), (e or unknown).code, (e or unknown).message, rid)
        for ids, e, rid in parts
    ]
