"""The status page as HTML: a `StatusSnapshot` in, one self-contained page out (inline CSS, no script).

Built with `exporter.html_safe.tag()` only, so every value is text until proven otherwise: a batch ID,
a DLI message or a dead letter's reason shows as the characters it holds (`<script>` too), and a secret
that slipped into a message shows as `***`. Links go to the JSON of each batch and campaign
(`/batches/{id}`, `/campaigns/{id}`, the ID URL-quoted). The page refreshes itself with a meta tag.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from urllib.parse import quote

from exporter.html_safe import Markup, join, tag, tag_void
from exporter.ports import DeadLetter
from exporter.status_model import (
    BatchRow,
    CampaignRow,
    EndpointRate,
    FailureRow,
    Progress,
    RegionRow,
    StatusSnapshot,
)
from exporter.status_style import STYLE

__all__ = ["bar", "duration_text", "render_status"]

MESSAGE_SHOWN = 500  # characters of a DLI message or a reason: enough to read, a page never a megabyte
JOB_IDS_SHOWN = 5


def duration_text(seconds: float | None) -> str:
    """`42s`, `3m 05s`, `2h 07m`, `3d 04h`; empty when unknown."""
    if seconds is None:
        return ""
    whole = max(0, round(seconds))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _rate_text(rate: float | None) -> str:
    return "" if rate is None else f"{rate:.1f} jobs/s"


def _shorten(message: str) -> str:
    return message if len(message) <= MESSAGE_SHOWN else message[:MESSAGE_SHOWN] + "…"


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _bar(ok: float, bad: float, label: str) -> Markup:
    """A bar of two shares (0..1): the first green, the second red, the rest grey."""
    return tag(
        "div",
        tag("span", class_="ok", style=f"width:{100 * ok:.2f}%"),
        tag("span", class_="bad", style=f"width:{100 * bad:.2f}%"),
        class_="bar",
        role="img",
        aria_label=label,
    )


def bar(progress: Progress) -> Markup:
    """Verified in green, failed in red, what is left grey."""
    label = f"{progress.done} of {progress.jobs} jobs done, {progress.failed} failed"
    return _bar(progress.share(progress.verified), progress.share(progress.failed), label)


def _done(progress: Progress) -> str:
    return f"{progress.done}/{progress.jobs} ({progress.percent}%)"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> Markup:
    if not rows:
        return tag("p", empty, class_="empty")
    head = tag("thead", tag("tr", *(tag("th", name) for name in header)))
    body = tag("tbody", *(tag("tr", *(tag("td", cell) for cell in row)) for row in rows))
    return tag("div", tag("table", head, body), class_="scroll")  # identifiers never wrap: scroll


def _link(path: str, identifier: str) -> Markup:
    """The ID, breakable only after its dots (`<wbr>` adds no character: a copied ID is whole)."""
    parts = identifier.split(".")
    pieces: list[str] = []
    for number, part in enumerate(parts):  # each piece unbroken (not at its hyphens), a break after dots
        pieces += [
            tag("span", part + ("." if number < len(parts) - 1 else ""), class_="piece"),
            tag_void("wbr"),
        ]
    breakable = join(pieces[:-1])
    return tag("a", breakable, href=f"/{path}/{quote(identifier, safe='')}", class_="id")


def _state(state: str) -> Markup:
    return tag("span", state, class_=f"state {state}")


def _region_row(region: RegionRow) -> list[str]:
    queued = f"{region.queued} of {region.targets} queued" if region.queued else str(region.targets)
    p = region.progress
    return [
        region.region,
        queued,
        bar(p),
        _done(p),
        str(p.verified),
        str(p.failed),
        duration_text(region.eta),
    ]


def _campaign(row: CampaignRow) -> Markup:
    p = row.progress
    figures = (
        f"{_done(p)} done · {p.verified} verified · {p.failed} failed · "
        f"{row.batches_finished}/{row.batches} batches finished"
    )
    pace = " · ".join(
        x for x in (_rate_text(row.rate), f"ETA {duration_text(row.eta)}" if row.eta else "") if x
    )
    header = ("region", "targets", "progress", "done", "verified", "failed", "ETA")
    return tag(
        "article",
        tag("h3", "campaign ", _link("campaigns", row.campaign_id), " ", _state(row.state)),
        bar(p),
        tag("p", figures, tag("span", pace, class_="pace") if pace else "", class_="figures"),
        _table(header, [_region_row(region) for region in row.regions], "no targets"),
        class_="campaign",
    )


def _campaigns(rows: Sequence[CampaignRow]) -> Markup:
    if not rows:
        return tag("p", "No campaigns yet.", class_="empty")
    return join(_campaign(row) for row in rows)


def _batch_cells(row: BatchRow) -> list[str]:
    p = row.progress
    return [
        _link("batches", row.batch_id),
        _link("campaigns", row.campaign) if row.campaign else "",
        row.region or "",
        _state(row.state),
        bar(p),
        _done(p),
        str(p.verified),
        str(p.failed),
        "" if row.rate is None else f"{row.rate:.1f}",
        duration_text(row.eta),
    ]


def _batches(rows: Sequence[BatchRow]) -> Markup:
    header = (
        "batch",
        "campaign",
        "region",
        "state",
        "progress",
        "done",
        "verified",
        "failed",
        "jobs/s",
        "ETA",
    )
    return _table(header, [_batch_cells(row) for row in rows], "No batches yet.")


def _rate_cells(rate: EndpointRate) -> list[str]:
    pace = "" if rate.pace is None else f"{rate.pace:.2f}/s"
    regions = ", ".join(rate.regions)
    if rate.stated is None:
        return [rate.endpoint, regions, pace, "none stated", ""]
    share = (rate.pace or 0.0) / rate.stated if rate.stated > 0 else 0.0
    over = share > 1  # above what the gateway stated: red
    shown = _bar(0.0 if over else share, 1.0 if over else 0.0, f"pace at {100 * share:.0f}% of the limit")
    return [
        rate.endpoint,
        regions,
        pace,
        f"{rate.stated:g}/s",
        tag("span", shown, f"{100 * share:.0f}%", class_="rate"),
    ]


def _rates(rates: Sequence[EndpointRate]) -> Markup:
    header = ("DLI endpoint", "regions", "pace (requests/s)", "limit a 429 stated", "pace / limit")
    return _table(header, [_rate_cells(rate) for rate in rates], "No DLI endpoint used yet.")


def _jobs_text(job_ids: Sequence[int]) -> str:
    shown = ", ".join(map(str, job_ids[:JOB_IDS_SHOWN]))
    more = len(job_ids) - JOB_IDS_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _failure_cells(row: FailureRow) -> list[str]:
    where = "whole batch" if row.chunk is None else f"chunk {row.chunk}"
    message = tag("span", _shorten(row.message), class_="message")
    code = tag("code", row.code)
    return [
        _link("batches", row.batch_id),
        where,
        _jobs_text(row.job_ids),
        code,
        message,
        row.request_id or "",
    ]


def _failures(rows: Sequence[FailureRow], cut: bool) -> Markup:
    header = ("batch", "where", "jobs", "code", "message", "DLI request ID")
    table = _table(header, [_failure_cells(row) for row in rows], "No failures in recent batches.")
    if not cut:
        return table
    note = "The search stopped at its budget: older failures may not be listed; see each batch's report."
    return join([table, tag("p", note, class_="note")])


def _letter_cells(letter: DeadLetter) -> list[str]:
    reason = tag("span", _shorten(letter.reason), class_="message")
    return [letter.dead_letter_id, reason, str(letter.deliveries), _utc(letter.created_at)]


def _dead_letters(letters: Sequence[DeadLetter], more: bool) -> Markup:
    header = ("ID", "reason", "deliveries", "parked at")
    table = _table(header, [_letter_cells(letter) for letter in letters], "No dead letters.")
    if not more:
        return table
    note = f"The {len(letters)} most recent; `dli-exporter dead-letters` lists them all."
    return join([table, tag("p", note, class_="note")])


def _section(anchor: str, title: str, body: Markup) -> Markup:
    return tag("section", tag("h2", title), body, id=anchor)


def _problems(problems: Sequence[str]) -> Markup:
    if not problems:
        return Markup("")
    return tag("div", *(tag("p", problem) for problem in problems), class_="problems", role="alert")


def _header(snapshot: StatusSnapshot, refresh_seconds: int) -> Markup:
    depth = "unknown" if snapshot.queue_depth is None else str(snapshot.queue_depth)
    line = f"updated {_utc(snapshot.now)} · queue depth {depth} · refreshes every {refresh_seconds} s"
    return tag("header", tag("h1", "dli-exporter"), tag("p", line, class_="meta"))


def _footer() -> Markup:
    links = [tag("a", path, href=path) for path in ("/batches", "/campaigns", "/metrics")]
    return tag("footer", "JSON: ", links[0], " · ", links[1], " · Prometheus: ", links[2])


def render_status(snapshot: StatusSnapshot, *, refresh_seconds: int = 10) -> str:
    """The whole page."""
    main = tag(
        "main",
        _problems(snapshot.problems),
        _section("campaigns", "Campaigns", _campaigns(snapshot.campaigns)),
        _section("batches", "Batches", _batches(snapshot.batches)),
        _section("rates", "DLI request rate", _rates(snapshot.rates)),
        _section("failures", "Recent failures", _failures(snapshot.failures, snapshot.failures_cut)),
        _section(
            "dead-letters", "Dead letters", _dead_letters(snapshot.dead_letters, snapshot.dead_letters_more)
        ),
    )
    head = join(
        [
            Markup('<meta charset="utf-8">'),
            tag_void("meta", http_equiv="refresh", content=str(refresh_seconds)),
            tag_void("meta", name="viewport", content="width=device-width, initial-scale=1"),
            tag("title", "dli-exporter status"),
            tag("style", Markup(STYLE)),
        ]
    )
    body = tag("body", _header(snapshot, refresh_seconds), main, _footer())
    return "<!doctype html>\n" + tag("html", tag("head", head), body, lang="en") + "\n"
