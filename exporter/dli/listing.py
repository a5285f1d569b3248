"""Paging through DLI's job listing by offset: every job once, in memory bounded by the page size.

The list may change while we page. A job created in front shifts jobs already yielded onto the next page,
and those must not be yielded again. Only the last pages' jobs can shift that way (as long as fewer than
`REMEMBERED_PAGES` pages of jobs are created between two page requests), so only their IDs are kept: a
million-job listing holds two pages of IDs, not a million. The total is not trusted as an end mark either
(it changes too); the first short page ends the listing.

With `ahead > 0` the next pages are requested while one is read, up to `ahead` at once and never past the
total the last page stated: `ahead` times the pages per second at a given latency. The server may then
answer the pages out of order, and a job created between two of them can push a job past a page already
answered: such a listing can miss jobs, so it is only for a caller that checks what it did not find
(the migration's confirm). Planning pages one at a time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from exporter.dli.responses import JobPage
from exporter.errors import Transient
from exporter.models import JobSummary

__all__ = ["MAX_STALE_PAGES", "REMEMBERED_PAGES", "FetchPage", "ListingProgress", "PageWindow", "list_pages"]

log = structlog.get_logger(__name__)

# How many pages' IDs are kept to filter jobs that shifted onto a later page.
REMEMBERED_PAGES = 2
# A server that ignores `offset` would hand back the same full page forever; this many full pages in a row
# without a new job ID ends the listing with an error instead (jobs shifting in at the front while we page
# explain one or two such pages, not three).
MAX_STALE_PAGES = 3

FetchPage = Callable[[int], Awaitable[JobPage]]  # offset -> that page, retried and parsed


def _recent_pages() -> deque[frozenset[int]]:
    return deque(maxlen=REMEMBERED_PAGES)


@dataclass(slots=True)
class ListingProgress:
    """Where paging stands: the next offset, the IDs of the last pages (the only IDs kept in memory), and
    how many full pages in a row brought nothing new."""

    offset: int = 0
    stale_pages: int = 0
    _recent: deque[frozenset[int]] = field(default_factory=_recent_pages, init=False, repr=False)

    @property
    def remembered(self) -> int:
        """How many job IDs are held right now: at most `REMEMBERED_PAGES` pages' worth."""
        return sum(len(page) for page in self._recent)

    def take_new(self, jobs: Sequence[JobSummary]) -> list[JobSummary]:
        """The jobs of a page not yielded on it or on the last pages, in page order; the page's IDs are
        remembered in place of the oldest page's."""
        new: list[JobSummary] = []
        page: set[int] = set()
        for job in jobs:
            if job.job_id not in page and not any(job.job_id in earlier for earlier in self._recent):
                new.append(job)
            page.add(job.job_id)
        self._recent.append(frozenset(page))
        return new

    def advance(self, page_length: int, new_jobs: int, request_id: str | None) -> None:
        """Move past a full page; raise Transient when full pages keep bringing nothing new."""
        self.stale_pages = 0 if new_jobs else self.stale_pages + 1
        if self.stale_pages >= MAX_STALE_PAGES:
            raise Transient(
                f"job listing made no progress for {MAX_STALE_PAGES} full pages at offset {self.offset}: "
                "the server seems to ignore `offset`",
                reason="malformed",
                request_id=request_id,
            )
        self.offset += page_length


class PageWindow:
    """The pages after the one being read, requested ahead: at most `ahead` in flight, all below the last
    stated total. A page is handed out in the order asked; a page asked for at an offset nobody expected
    (a server answering more than `limit` jobs) drops what was requested ahead and starts again there."""

    __slots__ = ("_ahead", "_fetch", "_page_size", "_pending", "_total")

    def __init__(self, fetch_page: FetchPage, page_size: int, ahead: int) -> None:
        self._fetch = fetch_page
        self._page_size = page_size
        self._ahead = ahead
        self._pending: dict[int, asyncio.Task[JobPage]] = {}
        self._total = 0

    async def page_at(self, offset: int) -> JobPage:
        """The page at `offset`; the pages after it are requested before this one is awaited."""
        task = self._pending.pop(offset, None)
        if task is None:
            await self.close()
            task = asyncio.ensure_future(self._fetch(offset))
        self._fill(offset + self._page_size)
        page = await task
        self._total = page.total_count or 0
        self._fill(offset + self._page_size)
        return page

    def _fill(self, offset: int) -> None:
        while len(self._pending) < self._ahead and offset < self._total:
            if offset not in self._pending:
                self._pending[offset] = asyncio.ensure_future(self._fetch(offset))
            offset += self._page_size

    async def close(self) -> None:
        """Cancel what was requested ahead and not read (their errors are not the caller's any more)."""
        pending, self._pending = list(self._pending.values()), {}
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)  # a cancel of our own still propagates


async def list_pages(fetch_page: FetchPage, page_size: int, *, ahead: int = 0) -> AsyncIterator[JobSummary]:
    """Every job of the listing `fetch_page` pages through, each once; stops at the first short page.
    `ahead`: how many later pages may be requested while one is read (see the module's note)."""
    progress = ListingProgress()
    window = PageWindow(fetch_page, page_size, ahead) if ahead > 0 else None
    try:
        while True:
            page = await (fetch_page(progress.offset) if window is None else window.page_at(progress.offset))
            new_jobs = progress.take_new(page.jobs)
            for job in new_jobs:
                yield job
            log.debug(
                "dli.list.page",
                offset=progress.offset,
                jobs=len(page.jobs),
                new=len(new_jobs),
                total_count=page.total_count,
                request_id=page.request_id,
            )
            if len(page.jobs) < page_size:
                return
            progress.advance(len(page.jobs), len(new_jobs), page.request_id)
    finally:
        if window is not None:
            await window.close()
