"""Paging ahead: the listing requests later pages while it reads one (the migration's confirm uses it),
and the confirm looks up by ID any imported job the listing did not show before it fails one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fakes import FakeMigrationLedger

from exporter.dli.listing import list_pages
from exporter.dli.responses import JobPage
from exporter.errors import Transient
from exporter.migration.models import JobMapRow, MigrationStep, StepState
from exporter.migration.ports import ImportResult, JobDetail
from exporter.models import BatchInfo, JobSummary, ListFilters
from exporter.pipeline.migrate import CONFIRM_PAGES_AHEAD, MigrateStage
from exporter.ports import RegionClients
from exporter.routes import Destination


class Pages:
    """A listing of `total` jobs served `page_size` at a time; each answer waits for `release`."""

    def __init__(
        self, total: int, page_size: int, fail_at: int | None = None, hold_from: int = 10**9
    ) -> None:
        self.total, self.page_size, self.fail_at = total, page_size, fail_at
        self.hold_from = hold_from  # pages from here on never answer: only a cancel ends them
        self.never = asyncio.Event()
        self.asked: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, offset: int) -> JobPage:
        self.asked.append(offset)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # let the window fill before any page answers
            await asyncio.sleep(0)
            if offset >= self.hold_from:
                await self.never.wait()
            if offset == self.fail_at:
                raise Transient("DLI 503 on this page", reason="unavailable")
            ids = range(offset + 1, min(offset + self.page_size, self.total) + 1)
            return JobPage(jobs=[JobSummary(job_id=i) for i in ids], total_count=self.total, request_id=None)
        finally:
            self.in_flight -= 1


async def test_paging_ahead_yields_every_job_once_in_order_and_asks_nothing_past_the_total() -> None:
    pages = Pages(total=95, page_size=10)
    jobs = [job.job_id async for job in list_pages(pages, 10, ahead=4)]
    assert jobs == list(range(1, 96))
    assert sorted(pages.asked) == list(range(0, 100, 10)), "each page once, none past the total"
    assert 2 < pages.most_in_flight <= 1 + 4


async def test_without_ahead_pages_go_one_at_a_time() -> None:
    pages = Pages(total=45, page_size=10)
    assert len([job async for job in list_pages(pages, 10)]) == 45
    assert pages.asked == [0, 10, 20, 30, 40] and pages.most_in_flight == 1


async def test_a_failed_page_ahead_fails_the_listing_when_reached_and_nothing_is_left_running() -> None:
    pages = Pages(total=200, page_size=10, fail_at=30, hold_from=40)
    seen: list[int] = []

    async def read_all() -> None:
        async for job in list_pages(pages, 10, ahead=6):
            seen.append(job.job_id)

    with pytest.raises(Transient, match="503"):
        await read_all()
    assert seen == list(range(1, 31)), "the pages before the failed one, in order"
    assert pages.in_flight == 0 and len(pages.asked) <= 4 + 6, (
        "nothing asked past the window, nothing running"
    )


async def test_leaving_the_listing_early_cancels_the_pages_requested_ahead() -> None:
    pages = Pages(total=1_000, page_size=10, hold_from=10)
    listing = list_pages(pages, 10, ahead=5)
    first = [await anext(listing) for _ in range(3)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert pages.in_flight == 5, "the next pages were requested while the first was read"
    await listing.aclose()
    assert [job.job_id for job in first] == [1, 2, 3]
    assert pages.in_flight == 0 and len(pages.asked) <= 6


class Target:
    """The import side of a target project: its listing misses `unlisted`, its job detail knows `known`."""

    def __init__(self, listed: list[int], known: set[int]) -> None:
        self.listed, self.known = listed, known
        self.aheads: list[int] = []
        self.looked_up: list[int] = []

    async def import_jobs(self, project_id: str, zip_file: str, *, is_cover: bool) -> ImportResult:
        raise AssertionError("confirm imports nothing")

    async def get_job(self, project_id: str, job_id: int) -> JobDetail | None:
        self.looked_up.append(job_id)
        return JobDetail(job_id=job_id) if job_id in self.known else None

    async def list_jobs(
        self, project_id: str, filters: ListFilters | None = None, *, ahead: int = 0
    ) -> AsyncIterator[JobSummary]:
        self.aheads.append(ahead)
        for job_id in self.listed:
            yield JobSummary(job_id=job_id)


def _row(old: int, new: int) -> JobMapRow:
    return JobMapRow.model_validate({"old_job_id": old, "new_job_id": new, "state": "imported"})


async def test_confirm_looks_up_jobs_its_listing_missed_before_failing_them() -> None:
    """Listed: confirmed, no lookup; not listed but known by ID: confirmed; unknown: IMPORT_NOT_FOUND."""
    ledger = FakeMigrationLedger()
    step = MigrationStep(
        batch_id="b1", index=0, state=StepState.IMPORTED, rows=[_row(1, 101), _row(2, 102), _row(3, 103)]
    )
    assert await ledger.save_step(step, None)
    target = Target(listed=[101, 555], known={101, 102, 555})
    clients = RegionClients(key="t", dli=None, store=None, importer=target)  # type: ignore[arg-type]
    batch = BatchInfo(
        batch_id="b1",
        project_id="src",
        obs_dir="bucket/x",
        chunk_size=10,
        created_at=0,
        updated_at=0,
        migration=Destination(project_id="dst"),
    )
    assert await MigrateStage(ledger).confirm(batch, clients) == 1
    confirmed = await ledger.get_step("b1", 0)
    assert confirmed is not None and confirmed.state is StepState.CONFIRMED
    assert [(r.new_job_id, r.state) for r in confirmed.rows] == [
        (101, "imported"),
        (102, "imported"),
        (103, "failed"),
    ]
    assert confirmed.rows[2].error is not None and confirmed.rows[2].error.code == "IMPORT_NOT_FOUND"
    assert target.looked_up == [102, 103] and target.aheads == [CONFIRM_PAGES_AHEAD]
