"""The KPI store: counters per campaign and per campaign-day, changed in the same transaction as the status
change that causes them (so a repeated event, which changes no status, never counts twice).

Each campaign's counters are spread over `SHARDS` rows, picked by the message: concurrent senders and
tracker hits of one campaign rarely update the same row, so they never queue behind one hot row. Readers
add the shards up: still a handful of rows, never a scan of the messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import CampaignKpi, CampaignKpiDay
from shared.kpis import Counters

SHARDS = 16
COUNTERS = [name for name, kind in Counters.__annotations__.items() if kind == "int"]
DAY_COUNTERS = ["planned", "sent", "opened", "bounced"]


def shard_of(key: uuid.UUID | None) -> int:
    return 0 if key is None else key.int % SHARDS


async def bump(
    session: AsyncSession,
    campaign_id: uuid.UUID,
    by: uuid.UUID | None = None,
    sent_at: datetime | None = None,
    **counts: int,
) -> None:
    """Add to campaign counters: `bump(s, campaign, message_id, sent=1)`. `by` picks the shard (the message
    or lead the change is about); `sent_at` widens the first/last send times."""
    values: dict[str, Any] = {"campaign_id": campaign_id, "shard": shard_of(by), **counts}
    statement = insert(CampaignKpi)
    changes: dict[str, Any] = {
        name: getattr(CampaignKpi, name) + getattr(statement.excluded, name) for name in counts
    }
    if sent_at is not None:
        values.update(first_sent_at=sent_at, last_sent_at=sent_at)
        # LEAST and GREATEST skip NULLs: the first send sets both.
        changes["first_sent_at"] = func.least(CampaignKpi.first_sent_at, statement.excluded.first_sent_at)
        changes["last_sent_at"] = func.greatest(CampaignKpi.last_sent_at, statement.excluded.last_sent_at)
    await session.execute(
        statement.values(values).on_conflict_do_update(
            index_elements=[CampaignKpi.campaign_id, CampaignKpi.shard], set_=changes
        )
    )


async def bump_days(
    session: AsyncSession,
    campaign_id: uuid.UUID,
    column: str,
    per_day: Mapping[date, int],
    by: uuid.UUID | None = None,
) -> None:
    """Add to one timeline column on several local days (negative counts move planned messages away)."""
    rows = [
        {"campaign_id": campaign_id, "day": day, "shard": shard_of(by), column: n}
        for day, n in per_day.items()
        if n
    ]
    if not rows:
        return
    statement = insert(CampaignKpiDay).values(rows)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[CampaignKpiDay.campaign_id, CampaignKpiDay.day, CampaignKpiDay.shard],
            set_={column: getattr(CampaignKpiDay, column) + getattr(statement.excluded, column)},
        )
    )


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
