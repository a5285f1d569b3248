"""The pace of each DLI endpoint for people: fixed, learned, or stated by the gateway (status views).

Pure: the learned records (`RateStates.all()`), the settings' rates and a route's limit in, `Pace` out.
A learned record is what every replica paces at (they share it); an endpoint without one paces at its
fixed rate, or, with `auto`, at EXPORTER_RATE_START until it learns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from exporter.campaign.record import CampaignRecord
from exporter.rate_states import RateStates, SharedRate
from exporter.regions import limiter_scope
from exporter.routes import RateLimit
from exporter.settings import Settings
from exporter.tables import printable

__all__ = [
    "DEFAULT_REGION",
    "Pace",
    "campaign_paces",
    "endpoint_paces",
    "pace_json",
    "pace_line",
    "pace_of",
    "pace_text",
    "region_paces",
]

DEFAULT_REGION = "default"
"""How views name the region of batches that run on EXPORTER_DLI_ENDPOINT."""

Source = Literal["fixed", "stated", "learned", "learning"]


@dataclass(frozen=True, slots=True)
class Pace:
    """An endpoint's requests/s, where that figure comes from, and the limit a 429 stated (if any)."""

    endpoint: str
    rate: float
    source: Source
    stated_limit: float | None = None


def pace_of(scope: str, learns: bool, fixed: float, learned: Mapping[str, SharedRate], start: float) -> Pace:
    """The pace of the endpoint whose limiter scope is `scope`: its learned record when it `learns`,
    else `fixed` (its configured pace, headroom taken)."""
    if not learns:
        return Pace(scope, fixed, "fixed")
    record = learned.get(scope)
    if record is None:
        return Pace(scope, start, "learning")
    stated = record.stated_limit
    return Pace(scope, record.rate, "stated" if stated is not None else "learned", stated)


def pace_text(pace: Pace) -> str:
    """`38.8/s (stated limit 40/s)`, `23.1/s learned`, `9.7/s fixed`, `5/s learning`."""
    figure = f"{pace.rate:.1f}/s"
    if pace.stated_limit is not None:
        return f"{figure} (stated limit {pace.stated_limit:g}/s)"
    return f"{figure} {pace.source}"


def pace_line(label: str, pace: Pace) -> str:
    """`DLI pace ap-southeast-1: 38.8/s (stated limit 40/s)`, control characters of the label escaped."""
    return f"DLI pace {printable(label)}: {pace_text(pace)}"


def pace_json(pace: Pace) -> dict[str, Any]:
    return {
        "endpoint": pace.endpoint,
        "rate_per_second": round(pace.rate, 3),
        "source": pace.source,
        "stated_limit_per_second": pace.stated_limit,
    }


def _region_pace(
    settings: Settings, learned: Mapping[str, SharedRate], endpoint: str | None, rate_limit: RateLimit | None
) -> Pace:
    if endpoint is None or endpoint == settings.dli_endpoint:
        endpoint, rate_limit = settings.dli_endpoint, None  # one gateway, the default's limiter
    scope = limiter_scope(endpoint) if endpoint else DEFAULT_REGION
    fixed = settings.paced(None if rate_limit == "auto" else rate_limit)
    return pace_of(scope, settings.learns(rate_limit), fixed, learned, settings.rate_start)


def region_paces(
    settings: Settings,
    learned: Mapping[str, SharedRate],
    regions: Iterable[tuple[str | None, str | None, RateLimit | None]],
) -> dict[str, Pace]:
    """The pace of each (region name, DLI endpoint, its rate_limit) as the daemon sets it up; a region
    on the default endpoint (None) paces as EXPORTER_DLI_ENDPOINT does."""
    return {
        name or DEFAULT_REGION: _region_pace(settings, learned, endpoint, rate_limit)
        for name, endpoint, rate_limit in regions
    }


def endpoint_paces(settings: Settings, learned: Mapping[str, SharedRate]) -> list[Pace]:
    """The default endpoint's pace (when this machine knows it: a `status` elsewhere may not), then every
    other endpoint that learned one (`status`)."""
    others = [pace_of(scope, True, 0.0, learned, settings.rate_start) for scope in sorted(learned)]
    if settings.dli_endpoint is None:
        return others
    default = region_paces(settings, learned, [(None, None, None)])[DEFAULT_REGION]
    return [default, *(pace for pace in others if pace.endpoint != default.endpoint)]


async def campaign_paces(rates: RateStates, settings: Settings, record: CampaignRecord) -> dict[str, Pace]:
    """Each region of the campaign and its DLI pace: what its replicas learned, or its fixed rate."""
    regions = {(b.region, b.dli_endpoint, b.rate_limit) for b in record.batches}
    return region_paces(settings, await rates.all(), sorted(regions, key=lambda r: r[0] or ""))
