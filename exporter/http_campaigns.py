"""`POST /campaigns` (the campaign file's content as JSON) and `GET /campaigns[/{id}]` on the daemon.

The same rules as `campaign submit`: the whole campaign is validated first (400 with every problem, one
per line, nothing queued), a campaign ID reused with other content is 409, and the same content again is
200 with nothing new queued (202 when something was). A JSON body has no directory, so `job_ids_file` is
refused: send `job_ids`. `--all-projects` discovery is the CLI's; over HTTP, list the targets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from exporter.campaign import PlanDefaults, campaign_from_json, plan_campaign
from exporter.campaign.record import CampaignRecord, CampaignStore
from exporter.campaign.submission import submit_campaign
from exporter.campaign.views import campaign_report, load_view
from exporter.campaign_metrics import CampaignGauges
from exporter.errors import InvalidInput
from exporter.http import SUBMISSION_ERRORS, refusal
from exporter.migration.ports import MigrationLedger
from exporter.paces import Pace, pace_json
from exporter.ports import BatchQueue, Ledger
from exporter.scrape import add_scrape_hook

__all__ = ["PaceReader", "add_campaign_routes"]

PaceReader = Callable[[CampaignRecord], Awaitable[dict[str, Pace]]]
"""Each region of a campaign and its DLI pace (exporter.paces.campaign_paces, bound to the daemon's)."""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class _CampaignEndpoints:
    __slots__ = ("_campaigns", "_defaults", "_ledger", "_migrations", "_queue", "_report_dir", "paces")

    def __init__(
        self,
        campaigns: CampaignStore,
        queue: BatchQueue,
        ledger: Ledger,
        defaults: PlanDefaults,
        report_dir: str,
        migrations: MigrationLedger | None = None,
    ) -> None:
        self._migrations = migrations
        self._campaigns = campaigns
        self._queue = queue
        self._ledger = ledger
        self._defaults = defaults
        self._report_dir = report_dir
        self.paces: PaceReader | None = None

    async def submit(self, request: web.Request) -> web.Response:
        try:
            raw = await request.read()
            plan = plan_campaign(
                campaign_from_json(_parse(raw)),
                source="campaign",
                base_dir=None,
                defaults=self._defaults,
                digest_of=hashlib.sha256(raw).hexdigest(),
            )
            result = await submit_campaign(plan, self._campaigns, self._queue, self._ledger)
        except SUBMISSION_ERRORS as error:
            return refusal(error)
        body = {"campaign_id": result.campaign_id, "batch_ids": result.batch_ids, "queued": result.queued}
        return web.json_response(body, status=202 if result.queued else 200)

    async def get(self, request: web.Request) -> web.Response:
        record = await self._campaigns.get_campaign(request.match_info["campaign_id"])
        if record is None:
            return _error(404, "no such campaign")
        view = await load_view(record, self._ledger, self._migrations)
        body = campaign_report(view, self._report_dir)
        if self.paces is not None:  # each region's DLI pace, as `campaign status --json` has it
            body["paces"] = {region: pace_json(pace) for region, pace in (await self.paces(record)).items()}
        return web.json_response(body)

    async def list(self, _: web.Request) -> web.Response:
        records = await self._campaigns.list_campaigns()
        reports = [campaign_report(await load_view(r, self._ledger, self._migrations)) for r in records]
        return web.json_response([{k: v for k, v in r.items() if k != "batches"} for r in reports])


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput("body must be a JSON object (the campaign file's content as JSON)") from None


def add_campaign_routes(
    app: web.Application,
    campaigns: CampaignStore,
    queue: BatchQueue,
    ledger: Ledger,
    *,
    defaults: PlanDefaults,
    report_dir: str,
    migrations: MigrationLedger | None = None,
    paces: PaceReader | None = None,
) -> None:
    endpoints = _CampaignEndpoints(campaigns, queue, ledger, defaults, report_dir, migrations)
    endpoints.paces = paces
    add_scrape_hook(app, CampaignGauges(campaigns, ledger).refresh)  # exporter_campaign_jobs on /metrics
    app.add_routes(
        [
            web.post("/campaigns", endpoints.submit),
            web.get("/campaigns", endpoints.list),
            web.get("/campaigns/{campaign_id}", endpoints.get),
        ]
    )
