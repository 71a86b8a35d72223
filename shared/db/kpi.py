"""The KPI store: counters per campaign and per campaign-day, changed only by `shared.db.message_store`, in
the same transaction as the status change that causes them (so a repeated event, which changes no status,
never counts twice).

Each campaign's counters are spread over `SHARDS` rows, picked by the message: concurrent senders and
tracker hits of one campaign rarely update the same row, so they never queue behind one hot row. Readers
add the shards up: still a handful of rows, never a scan of the messages.
"""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import CampaignKpi, CampaignKpiDay
from shared.kpis import DAY_COLUMNS, Counters

SHARDS = 16
COUNTERS = [name for name, kind in Counters.__annotations__.items() if kind == "int"]
DAY_COUNTERS = list(DAY_COLUMNS)


def shard_of(key: uuid.UUID | None) -> int:
    return 0 if key is None else key.int % SHARDS


async def totals(session: AsyncSession, campaign_id: uuid.UUID) -> Counters:
    """The campaign's counters, its shards added up (zeros for a campaign without any)."""
    row = (
        await session.execute(
            select(
                *(func.coalesce(func.sum(getattr(CampaignKpi, n)), 0).label(n) for n in COUNTERS),
                func.min(CampaignKpi.first_sent_at).label("first_sent_at"),
                func.max(CampaignKpi.last_sent_at).label("last_sent_at"),
            ).where(CampaignKpi.campaign_id == campaign_id)
        )
    ).one()
    return Counters(
        **{n: int(getattr(row, n)) for n in COUNTERS},
        first_sent_at=row.first_sent_at,
        last_sent_at=row.last_sent_at,
    )


async def days(session: AsyncSession, campaign_id: uuid.UUID) -> dict[date, dict[str, int]]:
    rows = await session.execute(
        select(CampaignKpiDay.day, *(func.sum(getattr(CampaignKpiDay, n)).label(n) for n in DAY_COUNTERS))
        .where(CampaignKpiDay.campaign_id == campaign_id)
        .group_by(CampaignKpiDay.day)
    )
    return {row.day: {n: int(getattr(row, n)) for n in DAY_COUNTERS} for row in rows}
