"""The `CampaignStore` contract: SQLite and Redis keep campaign records with the same behaviour."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.campaign.record import CampaignBatch, CampaignRecord

if TYPE_CHECKING:  # the fixture's type; conftest modules are not importable at run time
    from tests.contract.conftest import Contract


def _record(campaign_id: str, identity: str, created_at: float) -> CampaignRecord:
    batches = [
        CampaignBatch(
            batch_id=f"{campaign_id}.eu-west-101.p1", region="eu-west-101", project_id="p1", obs_dir="b/x"
        ),
        CampaignBatch(batch_id=f"{campaign_id}.default.p2", project_id="p2", obs_dir="b/y"),
    ]
    return CampaignRecord(campaign_id=campaign_id, identity=identity, created_at=created_at, batches=batches)


async def test_first_record_of_an_id_wins_and_is_read_back_whole(backend: Contract) -> None:
    stored = _record("c1", "digest-1", 100.0)
    assert await backend.campaigns.save_campaign(stored) is None
    assert await backend.campaigns.get_campaign("c1") == stored
    earlier = await backend.campaigns.save_campaign(_record("c1", "digest-2", 200.0))
    assert earlier == stored
    assert await backend.campaigns.get_campaign("c1") == stored


async def test_unknown_campaign_is_absent_and_the_list_is_newest_first(backend: Contract) -> None:
    assert await backend.campaigns.get_campaign("nope") is None
    assert await backend.campaigns.list_campaigns() == []
    for number, created in ((1, 10.0), (2, 30.0), (3, 20.0)):
        await backend.campaigns.save_campaign(_record(f"c{number}", "d", created))
    assert [r.campaign_id for r in await backend.campaigns.list_campaigns()] == ["c2", "c3", "c1"]
    assert [r.campaign_id for r in await backend.campaigns.list_campaigns(limit=1)] == ["c2"]
