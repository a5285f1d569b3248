"""The status page: pure rendering (escaping of every field, empty state, progress maths) and the
bounded reads behind it (fakes of the stores, a manual clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html.parser import HTMLParser

import pytest
from fakes import FakeLedger, FakeQueue, ManualClock

from exporter import metrics
from exporter.campaign.record import CampaignBatch, CampaignRecord
from exporter.campaign.views import CampaignView
from exporter.campaign_progress import campaign_status_json, rate_per_second
from exporter.errors import StoreUnavailable
from exporter.html_safe import Markup, tag, text
from exporter.models import BatchInfo, BatchState, ChunkRecord, ChunkState, ErrorInfo, Segment, Totals
from exporter.ports import DeadLetter
from exporter.progress import eta_seconds
from exporter.status_data import PageLimits, StatusSource, endpoint_rates, endpoint_regions
from exporter.status_model import (
    BatchRow,
    CampaignRow,
    EndpointRate,
    FailureRow,
    Progress,
    RegionRow,
    StatusSnapshot,
    batch_row,
    campaign_row,
    chunk_failures,
)
from exporter.status_page import duration_text, render_status

EVIL = "<script>alert(1)</script><b>bold</b> &amp; \"q\" 'a'"
OUR_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p", "main", "section",
    "article", "div", "span", "table", "thead", "tbody", "tr", "th", "td", "a", "wbr", "code", "footer",
}  # fmt: skip


class Page(HTMLParser):
    """What a browser would build from the page: the elements, their attributes, the visible text."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.chunks: list[str] = []
        self._skip = 0
        self.feed(source)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)
        self._skip += tag in {"style", "title"}

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in {"style", "title"}

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def hrefs(self) -> list[str]:
        return [value or "" for name, value in self.attrs if name == "href"]


def evil_snapshot() -> StatusSnapshot:
    """Every field that comes from outside holds markup."""
    error = ErrorInfo(code=f"C{EVIL}", message=f"M{EVIL}")
    progress = Progress(jobs=10, verified=3, failed=1)
    region = RegionRow(f"R{EVIL}", progress, targets=2, queued=1, eta=30.0)
    return StatusSnapshot(
        now=0.0,
        queue_depth=1,
        campaigns=[CampaignRow(f"K{EVIL}", "running", progress, 1.0, 60.0, 2, 0, [region])],
        batches=[BatchRow(f"B{EVIL}", f"K{EVIL}", f"R{EVIL}", f"S{EVIL}", progress, 2.0, 5.0, error)],
        rates=[EndpointRate(f"E{EVIL}", 9.7, 10.0)],
        failures=[FailureRow(f"B{EVIL}", 3, [4, 5], f"C{EVIL}", f"M{EVIL}", f"Q{EVIL}")],
        dead_letters=[DeadLetter(f"D{EVIL}", "{}", f"W{EVIL}", 2, 0.0)],
        dead_letters_more=False,
        problems=[f"P{EVIL}"],
    )


def test_every_field_from_outside_is_shown_as_text_never_as_markup() -> None:
    """Batch, campaign, region, state, endpoint, codes, messages, request ID, dead letter: all literal."""
    page = Page(render_status(evil_snapshot()))
    assert set(page.tags) <= OUR_TAGS, set(page.tags) - OUR_TAGS
    assert "script" not in page.tags and "b" not in page.tags
    for prefix in "BKRSECMQDWP":
        assert f"{prefix}{EVIL}" in page.text, prefix


def test_links_to_the_json_quote_the_id() -> None:
    """A batch or campaign link is `/batches/{id}` with the ID URL-quoted, so it cannot leave the path."""
    snapshot = StatusSnapshot(
        now=0.0,
        batches=[BatchRow("a/b?c#d", "camp 1", None, "running", Progress(), None, None)],
        campaigns=[CampaignRow("x/../y", "pending", Progress(), None, None, 0, 0, [])],
    )
    page = Page(render_status(snapshot))
    hrefs = page.hrefs()
    assert "/batches/a%2Fb%3Fc%23d" in hrefs
    assert "/campaigns/camp%201" in hrefs
    assert "/campaigns/x%2F..%2Fy" in hrefs
    assert "campaign x/../y" in page.text  # breakable after its dots, yet the same characters


def test_the_empty_page_says_so_in_every_section_and_refreshes_itself() -> None:
    """A daemon that has done nothing yet shows each section with a sentence, not a broken table."""
    source = render_status(StatusSnapshot(now=0.0), refresh_seconds=7)
    page = Page(source)
    for sentence in (
        "No campaigns yet.",
        "No batches yet.",
        "No DLI endpoint used yet.",
        "No failures in recent batches.",
        "No dead letters.",
    ):
        assert sentence in page.text
    assert "table" not in page.tags
    assert ("http-equiv", "refresh") in page.attrs and ("content", "7") in page.attrs
    assert "queue depth unknown" in page.text and "1970-01-01 00:00:00 UTC" in page.text


def test_a_secret_inside_a_message_is_masked() -> None:
    """The log redaction runs on the page too: a token header in a DLI message shows as ***."""
    row = FailureRow("b", 0, [1], "DLI.0013", "bad X-Auth-Token: MIIEvQYJKoZIhvcNAQcCoIIEsjCCBK4CAQEx")
    page = Page(render_status(StatusSnapshot(now=0.0, failures=[row])))
    assert "MIIEvQYJKoZIhvcNAQcCoIIEsjCCBK4CAQEx" not in page.text
    assert "X-Auth-Token: ***" in page.text


def test_tag_escapes_strings_and_attributes_but_keeps_markup() -> None:
    """Only Markup built by tag() passes as it is; quotes cannot end an attribute early."""
    assert tag("td", "<i>") == "<td>&lt;i&gt;</td>"
    assert tag("td", tag("i", "x")) == "<td><i>x</i></td>"
    assert tag("a", "x", href='"><script>') == '<a href="&quot;&gt;&lt;script&gt;">x</a>'
    assert tag("span", class_="ok", aria_label="l", title=None) == '<span class="ok" aria-label="l"></span>'
    assert isinstance(text("x"), Markup)


def test_progress_maths() -> None:
    """Done is verified + failed; the percentage rounds down; shares stay within 0..1."""
    progress = Progress(jobs=3, verified=1, failed=1)
    assert (progress.done, progress.percent) == (2, 66)
    assert progress.share(1) == pytest.approx(1 / 3)
    assert Progress(jobs=0).percent == 0 and Progress(jobs=0).share(5) == 0.0
    assert Progress(jobs=2, verified=5).share(5) == 1.0 and Progress(jobs=2, verified=5).percent == 100
    assert Progress(jobs=999, verified=998).percent == 99  # 100% only when every job is done
    assert Progress(1, 1, 0) + Progress(2, 0, 1) == Progress(3, 1, 1)


def test_bars_are_as_wide_as_the_shares() -> None:
    """One job in three verified and one failed: a third green, a third red."""
    row = BatchRow("b", None, None, "running", Progress(jobs=3, verified=1, failed=1), None, None)
    source = render_status(StatusSnapshot(now=0.0, batches=[row]))
    assert 'style="width:33.33%"' in source and "2/3 (66%)" in Page(source).text


def test_rates_show_pace_against_the_stated_limit() -> None:
    """A stated limit gives pace/limit; none stated says so; a pace above the limit is red."""
    rates = [
        EndpointRate("a:443", 9.7, 10.0),
        EndpointRate("b:443", 5.0, None),
        EndpointRate("c:443", 12, 10),
    ]
    source = render_status(StatusSnapshot(now=0.0, rates=rates))
    page = Page(source)
    assert "9.70/s" in page.text and "10/s" in page.text and "97%" in page.text
    assert "none stated" in page.text and "120%" in page.text
    assert 'class="bad" style="width:100.00%"' in source


def test_each_endpoint_names_the_campaign_regions_that_run_on_it() -> None:
    def batch(region: str | None, endpoint: str | None, project: str) -> CampaignBatch:
        return CampaignBatch(
            batch_id=f"c.{region}.{project}",
            region=region,
            project_id=project,
            obs_dir="b",
            dli_endpoint=endpoint,
        )

    record = CampaignRecord(
        campaign_id="c",
        identity="x",
        created_at=0.0,
        batches=[
            batch("eu-west-1", "https://dli.eu-west-1.example", "p1"),
            batch("eu-west-1", "https://dli.eu-west-1.example", "p2"),
            batch("eu-west-2", "https://dli.eu-west-1.example", "p1"),  # one gateway, two names
            batch("ap-1", "http://127.0.0.1:9000", "p1"),
            batch(None, None, "p3"),  # the default endpoint: named by nothing
        ],
    )
    assert endpoint_regions([record]) == {
        "dli.eu-west-1.example:443": ("eu-west-1", "eu-west-2"),
        "127.0.0.1:9000": ("ap-1",),
    }
    page = Page(
        render_status(StatusSnapshot(now=0.0, rates=[EndpointRate("127.0.0.1:9000", 5.0, None, ("ap-1",))]))
    )
    assert "127.0.0.1:9000" in page.text and "ap-1" in page.text


def test_durations_read_like_a_clock() -> None:
    assert [duration_text(s) for s in (None, 0, 42.4, 185, 7620, 273_600)] == [
        "",
        "0s",
        "42s",
        "3m 05s",
        "2h 07m",
        "3d 04h",
    ]


def info(batch_id: str, *, jobs: int = 10, verified: int = 0, failed: int = 0, **update: object) -> BatchInfo:
    base = BatchInfo(
        batch_id=batch_id,
        project_id="p1",
        obs_dir="bucket/x",
        chunk_size=10,
        state=BatchState.RUNNING,
        totals=Totals(jobs=jobs, verified=verified, failed=failed),
        created_at=0.0,
        updated_at=50.0,
    )
    return base.model_copy(update=update)


def test_a_batch_row_has_the_figures_of_status() -> None:
    """Rate and ETA are exactly those `status` and `campaign status` print."""
    batch = info("b1", jobs=100, verified=20, failed=5, campaign="c1", region="r1")
    row = batch_row(batch, 50.0)
    assert row.progress == Progress(100, 20, 5)
    assert row.eta == eta_seconds(batch, 50.0) == pytest.approx(150.0)
    assert row.rate == rate_per_second(batch, 50.0) == pytest.approx(0.5)
    assert (row.batch_id, row.campaign, row.region, row.state) == ("b1", "c1", "r1", "running")


def test_a_campaign_row_adds_up_its_regions() -> None:
    """Targets are summed per region in the campaign's order; a queued target counts as queued."""
    targets = [
        CampaignBatch(batch_id="c.a.1", region="a", project_id="p1", obs_dir="b/1"),
        CampaignBatch(batch_id="c.a.2", region="a", project_id="p2", obs_dir="b/2"),
        CampaignBatch(batch_id="c.b.1", region="b", project_id="p3", obs_dir="b/3"),
        CampaignBatch(batch_id="c.default.4", region=None, project_id="p4", obs_dir="b/4"),
    ]
    infos = [info("c.a.1", verified=10), info("c.a.2", verified=4, failed=1), info("c.b.1", verified=5), None]
    view = CampaignView(CampaignRecord(campaign_id="c", identity="i", created_at=0.0, batches=targets), [
        *zip(targets, infos, strict=True)
    ])  # fmt: skip
    row = campaign_row(view, 50.0)
    status = campaign_status_json(view, 50.0)
    assert (row.campaign_id, row.state, row.eta, row.rate) == (
        "c",
        status["state"],
        status["eta_seconds"],
        status["rate_per_second"],
    )
    assert row.progress == Progress(30, 19, 1) and (row.batches, row.batches_finished) == (4, 0)
    assert [(r.region, r.progress, r.targets, r.queued) for r in row.regions] == [
        ("a", Progress(20, 14, 1), 2, 0),
        ("b", Progress(10, 5, 0), 1, 0),
        ("default", Progress(), 1, 1),
    ]


def test_chunk_failures_follow_the_parts_of_a_split_chunk() -> None:
    """A bisected chunk fails part by part with each part's code; a whole failed chunk with its own."""
    bad = ErrorInfo(code="DLI.0002", message="no such job")
    split = ChunkRecord(
        batch_id="b",
        index=2,
        job_ids=[1, 2, 3],
        state=ChunkState.VERIFIED,
        segments=[
            Segment(job_ids=[1, 2], state=ChunkState.VERIFIED),
            Segment(job_ids=[3], state=ChunkState.FAILED, error=bad, request_id="r-3"),
        ],
    )
    assert chunk_failures(split) == [FailureRow("b", 2, [3], "DLI.0002", "no such job", "r-3")]
    missing = ErrorInfo(code="ZIP_MISSING", message="never appeared")
    whole = ChunkRecord(batch_id="b", index=0, job_ids=[7, 8], state=ChunkState.FAILED, error=missing)
    assert chunk_failures(whole) == [FailureRow("b", 0, [7, 8], "ZIP_MISSING", "never appeared", None)]
    assert chunk_failures(ChunkRecord(batch_id="b", index=1, job_ids=[9], state=ChunkState.VERIFIED)) == []


def test_endpoint_rates_read_the_gauges() -> None:
    """The pace and the stated limit of an endpoint come from the Prometheus gauges; 0 means none stated."""
    metrics.RATE.labels("unit-a.invalid:443").set(7.5)
    metrics.STATED_LIMIT.labels("unit-a.invalid:443").set(0)
    metrics.RATE.labels("unit-b.invalid:443").set(19.4)
    metrics.STATED_LIMIT.labels("unit-b.invalid:443").set(20)
    try:
        rates = {rate.endpoint: rate for rate in endpoint_rates()}
        assert rates["unit-a.invalid:443"] == EndpointRate("unit-a.invalid:443", 7.5, None)
        assert rates["unit-b.invalid:443"] == EndpointRate("unit-b.invalid:443", 19.4, 20.0)
    finally:
        for gauge in (metrics.RATE, metrics.STATED_LIMIT):
            for endpoint in ("unit-a.invalid:443", "unit-b.invalid:443"):
                gauge.remove(endpoint)


class Campaigns:
    """A campaign store in memory (newest first)."""

    def __init__(self, *records: CampaignRecord) -> None:
        self.records = list(records)

    async def save_campaign(self, record: CampaignRecord) -> CampaignRecord | None:
        self.records.insert(0, record)
        return None

    async def get_campaign(self, campaign_id: str) -> CampaignRecord | None:
        return next((r for r in self.records if r.campaign_id == campaign_id), None)

    async def list_campaigns(self, limit: int = 100) -> list[CampaignRecord]:
        return self.records[:limit]


class CountingLedger(FakeLedger):
    """Counts the chunks read."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.read = 0

    async def chunks(self, batch_id: str) -> AsyncIterator[ChunkRecord]:
        async for chunk in super().chunks(batch_id):
            self.read += 1
            yield chunk


async def failing_batch(ledger: FakeLedger, batch_id: str, chunks: int, failed_at: int, now: float) -> None:
    """A finished batch of one-job chunks whose chunk `failed_at` failed with DLI.0002."""
    base = info(batch_id, state=BatchState.COMPLETED_WITH_FAILURES, created_at=now, finished_at=now)
    await ledger.create_batch(base, [[n + 1] for n in range(chunks)])
    rows = ledger.chunk_rows[batch_id]
    for chunk in rows:
        failed = chunk.index == failed_at
        error = ErrorInfo(code="DLI.0002", message=f"job {chunk.index + 1}") if failed else None
        state = ChunkState.FAILED if failed else ChunkState.VERIFIED
        rows[chunk.index] = chunk.model_copy(update={"state": state, "error": error})


async def test_the_source_bounds_its_reads_and_remembers_finished_batches() -> None:
    """The chunk budget stops the search (and says so); a finished batch's failures are read once."""
    clock = ManualClock()
    ledger = CountingLedger(clock)
    await failing_batch(ledger, "old", chunks=50, failed_at=40, now=1.0)
    await failing_batch(ledger, "new", chunks=50, failed_at=10, now=2.0)
    source = StatusSource(FakeQueue(clock), ledger, Campaigns(), clock, PageLimits(chunks_read=30))
    first = await source.snapshot()
    assert [(f.batch_id, f.job_ids, f.code) for f in first.failures] == [("new", [11], "DLI.0002")]
    assert first.failures_cut and ledger.read <= 31  # 11 of "new" (it stops at its one failure), 19 of "old"
    ledger.read = 0
    again = await source.snapshot()
    assert [f.batch_id for f in again.failures] == ["new"] and ledger.read <= 31
    roomy = StatusSource(FakeQueue(clock), ledger, Campaigns(), clock, PageLimits(chunks_read=1000))
    await roomy.snapshot()
    ledger.read = 0
    both = await roomy.snapshot()
    assert [f.batch_id for f in both.failures] == ["new", "old"] and not both.failures_cut
    assert ledger.read == 0  # both finished: remembered


async def test_the_source_shows_the_most_recent_dead_letters_and_a_whole_batch_failure() -> None:
    """Newest dead letters first, capped; a batch refused as a whole is a failure of its own."""
    clock = ManualClock()
    queue, ledger = FakeQueue(clock), FakeLedger(clock)
    queue.parked = [DeadLetter(str(n), "{}", f"reason {n}", 1, float(n)) for n in range(30)]
    refused = info("refused", jobs=0, state=BatchState.FAILED, error=ErrorInfo(code="DLI.0003", message="no"))
    await ledger.create_batch(refused, [])
    source = StatusSource(queue, ledger, Campaigns(), clock, PageLimits(dead_letters=3))
    snapshot = await source.snapshot()
    assert [d.dead_letter_id for d in snapshot.dead_letters] == ["29", "28", "27"]
    assert snapshot.dead_letters_more
    assert snapshot.failures == [FailureRow("refused", None, [], "DLI.0003", "no")]
    assert "The 3 most recent;" in Page(render_status(snapshot)).text


async def test_a_store_that_cannot_be_reached_is_named_and_the_rest_still_shows() -> None:
    """Dead letters unreadable: the page says so, and still shows the batches."""
    clock = ManualClock()

    class DownQueue(FakeQueue):
        async def dead_letters(self, newest: int | None = None) -> list[DeadLetter]:
            raise StoreUnavailable("connection refused")

    ledger = FakeLedger(clock)
    await ledger.create_batch(info("b1"), [[1]])
    snapshot = await StatusSource(DownQueue(clock), ledger, Campaigns(), clock).snapshot()
    assert [b.batch_id for b in snapshot.batches] == ["b1"]
    assert snapshot.problems == ["dead letters: the queue/ledger cannot be reached (connection refused)"]
    assert "connection refused" in Page(render_status(snapshot)).text
