"""Campaign records in the SQLite file: one row each, its batches as JSON (schema version 3)."""

from __future__ import annotations

import sqlite3
from functools import partial

from exporter.adapters.sqlite_db import SqliteDatabase
from exporter.campaign.record import CampaignRecord

__all__ = ["SqliteCampaigns"]


class SqliteCampaigns:
    """`CampaignStore` on the shared SQLite file."""

    __slots__ = ("_db",)

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def save_campaign(self, record: CampaignRecord) -> CampaignRecord | None:
        return await self._db.write(partial(_insert, record=record))

    async def get_campaign(self, campaign_id: str) -> CampaignRecord | None:
        return await self._db.read(partial(_select_one, campaign_id=campaign_id))

    async def list_campaigns(self, limit: int = 100) -> list[CampaignRecord]:
        return await self._db.read(partial(_select_recent, limit=limit))


def _insert(conn: sqlite3.Connection, *, record: CampaignRecord) -> CampaignRecord | None:
    cursor = conn.execute(
        "INSERT INTO campaigns (campaign_id, identity, created_at, body) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (record.campaign_id, record.identity, record.created_at, record.model_dump_json()),
    )
    return None if cursor.rowcount else _select_one(conn, campaign_id=record.campaign_id)


def _select_one(conn: sqlite3.Connection, *, campaign_id: str) -> CampaignRecord | None:
    row = conn.execute("SELECT body FROM campaigns WHERE campaign_id = ?", (campaign_id,)).fetchone()
    return None if row is None else CampaignRecord.model_validate_json(row[0])


def _select_recent(conn: sqlite3.Connection, *, limit: int) -> list[CampaignRecord]:
    rows = conn.execute(
        "SELECT body FROM campaigns ORDER BY created_at DESC, campaign_id LIMIT ?", (limit,)
    ).fetchall()
    return [CampaignRecord.model_validate_json(row[0]) for row in rows]
