"""Campaigns: many batches (one per region and project) described by one file or one JSON body.

`spec` reads and type-checks the campaign; `plan` expands it, purely, into the batch requests.
"""

from __future__ import annotations

from exporter.campaign.plan import CAMPAIGN_ID, OBS_PLACEHOLDERS, CampaignPlan, PlanDefaults, plan_campaign
from exporter.campaign.spec import (
    CampaignError,
    CampaignSpec,
    RegionSpec,
    TargetSpec,
    campaign_from_json,
    campaign_from_toml,
    load_campaign_file,
)

__all__ = [
    "CAMPAIGN_ID",
    "OBS_PLACEHOLDERS",
    "CampaignError",
    "CampaignPlan",
    "CampaignSpec",
    "PlanDefaults",
    "RegionSpec",
    "TargetSpec",
    "campaign_from_json",
    "campaign_from_toml",
    "load_campaign_file",
    "plan_campaign",
]
