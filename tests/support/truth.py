"""What the KPIs must be, recomputed from the rows: messages, message events and leads, never a counter."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy import func, select, text

from shared.db import create_engine, kpi, session_factory
from shared.db.models import Lead, Message, MessageEventRow, Suppression
from shared.settings import Settings

# Recomputed from messages, message events and leads only: no counter is read.
TRUTH = """
WITH accepted AS (SELECT DISTINCT message_id FROM message_events WHERE kind = 'sent' AND campaign_id = :c)
SELECT
  count(*) AS total_planned,
  count(*) FILTER (WHERE status = 'cancelled') AS total_cancelled,
  (SELECT count(*) FROM accepted) AS total_sent,
  count(*) FILTER (WHERE opened_at IS NOT NULL) AS total_opened,
  count(*) FILTER (WHERE human_opened_at IS NOT NULL) AS total_opened_human,
  count(*) FILTER (WHERE status = 'bounced') AS total_bounced,
  count(*) FILTER (WHERE status = 'bounced' AND id NOT IN (SELECT message_id FROM accepted)) AS at_smtp,
  count(*) FILTER (WHERE status = 'failed') AS total_failed,
  (SELECT count(DISTINCT l.id) FROM leads l JOIN messages m ON m.lead_id = l.id
    WHERE m.campaign_id = :c AND l.status = 'unsubscribed') AS total_unsubscribed
FROM messages WHERE campaign_id = :c
"""


async def kpi_truth(settings: Settings, campaign_id: uuid.UUID) -> dict[str, Any]:
    """The served KPI names with their true values, and `at_smtp` (bounces during the SMTP transaction)."""
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            return dict((await session.execute(text(TRUTH), {"c": campaign_id})).one()._mapping)
    finally:
        await engine.dispose()


async def kpi_days(settings: Settings, campaign_id: uuid.UUID) -> dict[date, dict[str, int]]:
    """The timeline's store, every day of it (the api serves the days up to today)."""
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            return await kpi.days(session, campaign_id)
    finally:
        await engine.dispose()


async def tracker_footprint(settings: Settings, message_id: uuid.UUID, lead_email: str) -> dict[str, Any]:
    """Everything the tracker can record about an e-mail and its lead."""
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            message = await session.get_one(Message, message_id)
            events = await session.scalar(
                select(func.count())
                .select_from(MessageEventRow)
                .where(MessageEventRow.message_id == message_id)
            )
            lead = await session.scalar(select(Lead.status).where(Lead.id == message.lead_id))
            suppressed = await session.scalar(
                select(func.count()).select_from(Suppression).where(Suppression.email == lead_email)
            )
            return {
                "status": message.status,
                "opened_at": message.opened_at,
                "events": events,
                "lead": lead,
                "suppressed": suppressed,
            }
    finally:
        await engine.dispose()
