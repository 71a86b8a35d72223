"""KPI counter updates, made in the same transaction as the status change that causes them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import CampaignKpi, CampaignKpiDay


async def bump(session: AsyncSession, campaign_id: uuid.UUID, **changes: Any) -> None:
    """Add to campaign counters: `bump(s, c, sent=1)`; a SQL expression may stand for a value."""
    values = {
        name: getattr(CampaignKpi, name) + value if isinstance(value, int) else value
        for name, value in changes.items()
    }
    await session.execute(update(CampaignKpi).where(CampaignKpi.campaign_id == campaign_id).values(values))


async def bump_days(
    session: AsyncSession, campaign_id: uuid.UUID, column: str, per_day: Mapping[date, int]
) -> None:
    """Add to one timeline column on several local days (negative counts move planned messages away)."""
    rows = [{"campaign_id": campaign_id, "day": day, column: n} for day, n in per_day.items() if n]
    if not rows:
        return
    statement = insert(CampaignKpiDay).values(rows)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[CampaignKpiDay.campaign_id, CampaignKpiDay.day],
            set_={column: getattr(CampaignKpiDay, column) + getattr(statement.excluded, column)},
        )
    )
