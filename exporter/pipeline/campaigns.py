"""Closing a campaign: when the last of its batches finishes, its report is written (and uploaded).

Runs after a batch of a campaign finished. Two replicas finishing a campaign's last two batches at
once may both write the report: it is the same content, written atomically, so that is harmless. The
upload goes next to the finishing batch's own reports (`<obs_dir>/_reports/campaign-<id>.json[l]`),
through its region's OBS client. A report that cannot be written is logged: `campaign report` rebuilds it.
"""

from __future__ import annotations

import asyncio

import structlog

from exporter.campaign.record import CampaignReportWriter, CampaignStore
from exporter.campaign.views import campaign_job_lines, campaign_report, load_view
from exporter.errors import DliError
from exporter.migration.ports import MigrationLedger
from exporter.models import BatchInfo, split_obs_path
from exporter.ports import Ledger, ObjectStore

__all__ = ["CampaignCloser"]

log = structlog.get_logger("exporter.pipeline")

_DONE = {"completed", "completed_with_failures"}


class CampaignCloser:
    """Writes a campaign's report once every one of its batches has finished."""

    __slots__ = ("_campaigns", "_ledger", "_migrations", "_report_dir", "_upload", "_writer")

    def __init__(
        self,
        campaigns: CampaignStore,
        ledger: Ledger,
        writer: CampaignReportWriter,
        *,
        upload: bool,
        report_dir: str | None = None,
        migrations: MigrationLedger | None = None,
    ) -> None:
        self._migrations = migrations
        self._campaigns = campaigns
        self._ledger = ledger
        self._writer = writer
        self._upload = upload
        self._report_dir = report_dir

    async def after_batch(self, info: BatchInfo, store: ObjectStore) -> None:
        """If `info` finished its campaign, write the campaign's report."""
        if info.campaign is None or not info.state.finished:
            return
        record = await self._campaigns.get_campaign(info.campaign)
        if record is None:  # a batch labelled with --campaign, not submitted as a campaign
            return
        view = await load_view(record, self._ledger, self._migrations)
        report = campaign_report(view, self._report_dir)
        if report["state"] not in _DONE:
            return
        try:
            files = await self._writer.write_campaign(
                record.campaign_id, report, campaign_job_lines(view, self._ledger)
            )
            if self._upload:
                bucket, prefix = split_obs_path(info.obs_dir)
                base = f"{prefix}/_reports" if prefix else "_reports"
                for file in files:
                    body = await asyncio.to_thread(file.path.read_bytes)
                    await store.put(bucket, f"{base}/{file.path.name}", body, file.content_type)
        except (OSError, DliError) as problem:
            log.warning("campaign.report.failed", campaign_id=record.campaign_id, error=str(problem))
            return
        log.info(
            "campaign.completed", campaign_id=record.campaign_id, state=report["state"], **_totals(report)
        )


def _totals(report: dict[str, object]) -> dict[str, object]:
    totals = report["totals"]
    assert isinstance(totals, dict)  # noqa: S101 - campaign_report builds it
    return {key: totals[key] for key in ("jobs", "verified", "failed", "batches")}
