"""Campaign records on Redis: one string key each (written with SET NX) and a sorted set to list them."""

from __future__ import annotations

from exporter.adapters.redis_connection import RedisConnection
from exporter.campaign.record import CampaignRecord

__all__ = ["RedisCampaigns"]

_INSERT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  return false
end
return redis.call('GET', KEYS[1])
"""


class RedisCampaigns:
    """`CampaignStore` under the backend's key prefix; the first writer of an ID wins on every replica."""

    __slots__ = ("_conn", "_insert")

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn
        self._insert = conn.script(_INSERT)

    def _key(self, campaign_id: str) -> str:
        return self._conn.key("campaign", campaign_id)

    async def save_campaign(self, record: CampaignRecord) -> CampaignRecord | None:
        keys = [self._key(record.campaign_id), self._conn.key("campaigns")]
        args = [record.model_dump_json(), record.created_at, record.campaign_id]
        earlier = await self._conn.run("campaigns.save", self._insert, keys, args)
        return None if earlier is None else CampaignRecord.model_validate_json(earlier)

    async def get_campaign(self, campaign_id: str) -> CampaignRecord | None:
        async with self._conn.guard("campaigns.get"):
            body = await self._conn.client.get(self._key(campaign_id))
        return None if body is None else CampaignRecord.model_validate_json(body)

    async def list_campaigns(self, limit: int = 100) -> list[CampaignRecord]:
        async with self._conn.guard("campaigns.list"):
            found = await self._conn.client.zrevrange(self._conn.key("campaigns"), 0, limit - 1)
            keys = [self._key(str(campaign_id)) for campaign_id in found]
            bodies = await self._conn.client.mget(keys) if keys else []
        return [CampaignRecord.model_validate_json(body) for body in bodies if body is not None]
