"""All SQL of the api service. Every query is scoped by workspace here, never by a handler remembering to."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import kpi
from shared.db.models import (
    Campaign,
    CampaignLead,
    Lead,
    Message,
    SendingDomain,
    Suppression,
    Template,
    User,
    Workspace,
)
from shared.kpis import Counters
from shared.lifecycle import FINAL
from shared.message_states import SMTP_DONE, UNSENT
from shared.planning.audience import Candidate

Owned = TypeVar("Owned", Campaign, Lead, SendingDomain, Template, Suppression, Message)


def parse_id(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


class Repository:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.session = session
        self.workspace_id = workspace_id

    async def get(self, model: type[Owned], raw_id: str) -> Owned | None:
        row_id = parse_id(raw_id)
        if row_id is None:
            return None
        row = await self.session.get(model, row_id)
        return row if row is not None and row.workspace_id == self.workspace_id else None

    async def page(
        self, model: type[Owned], page: int, page_size: int, *where: Any
    ) -> tuple[list[Owned], int]:
        scope = [model.workspace_id == self.workspace_id, *where]
        total = await self.session.scalar(select(func.count()).select_from(model).where(*scope))
        rows = await self.session.scalars(
            select(model)
            .where(*scope)
            .order_by(model.created_at.desc(), model.id)
            .offset((page - 1) * page_size)
            .limit(page_size)
        )
        return list(rows), total or 0

    def add(self, row: Any) -> None:
        row.workspace_id = self.workspace_id
        self.session.add(row)

    async def domains_named(self, names: list[str]) -> dict[str, SendingDomain]:
        rows = await self.session.scalars(
            select(SendingDomain).where(
                SendingDomain.workspace_id == self.workspace_id, SendingDomain.domain.in_(names)
            )
        )
        return {row.domain: row for row in rows}

    async def campaigns_using(self, *where: Any) -> list[tuple[str, str]]:
        """(name, status) of this workspace's campaigns matching `where`, unfinished ones first."""
        rows = await self.session.execute(
            select(Campaign.name, Campaign.status)
            .where(Campaign.workspace_id == self.workspace_id, *where)
            .order_by(Campaign.status.in_(FINAL), Campaign.created_at.desc())
            .limit(5)
        )
        return [(r.name, r.status) for r in rows]

    async def has_messages(self, *where: Any) -> bool:
        found = await self.session.scalar(
            select(Message.id).where(Message.workspace_id == self.workspace_id, *where).limit(1)
        )
        return found is not None

    async def delete(self, row: Any) -> None:
        await self.session.delete(row)
        await self.session.flush()

    async def lead_by_email(self, email: str) -> Lead | None:
        rows = await self.session.scalars(
            select(Lead).where(
                Lead.workspace_id == self.workspace_id, func.lower(Lead.email) == email.lower()
            )
        )
        return rows.first()

    async def unsent_initial_messages(self, campaign_id: uuid.UUID) -> list[Message]:
        rows = await self.session.scalars(
            select(Message)
            .where(
                Message.campaign_id == campaign_id,
                Message.is_followup.is_(False),
                Message.status.in_(UNSENT),
            )
            .order_by(Message.scheduled_at, Message.id)
        )
        return list(rows)

    async def campaign_has_messages(self, campaign_id: uuid.UUID) -> bool:
        found = await self.session.scalar(
            select(Message.id).where(Message.campaign_id == campaign_id).limit(1)
        )
        return found is not None

    async def audience_of(self, campaign_id: uuid.UUID) -> list[uuid.UUID]:
        rows = await self.session.scalars(
            select(CampaignLead.lead_id)
            .where(CampaignLead.campaign_id == campaign_id)
            .order_by(CampaignLead.position)
        )
        return list(rows)

    async def lead_email(self, lead_id: uuid.UUID) -> str:
        return str(await self.session.scalar(select(Lead.email).where(Lead.id == lead_id)))

    async def candidates_by_ids(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Candidate]:
        rows = await self.session.execute(
            select(Lead.id, Lead.email, Lead.status, self._last_sent(Lead.id)).where(
                Lead.workspace_id == self.workspace_id, Lead.id.in_(ids)
            )
        )
        return {r[0]: Candidate(r[0], r[1], r[2], r[3]) for r in rows}

    async def candidates_by_tags(self, tags: list[str]) -> list[Candidate]:
        rows = await self.session.execute(
            select(Lead.id, Lead.email, Lead.status, self._last_sent(Lead.id))
            .where(Lead.workspace_id == self.workspace_id, Lead.tags.overlap(tags))
            .order_by(Lead.created_at, Lead.id)
        )
        return [Candidate(r[0], r[1], r[2], r[3]) for r in rows]

    @staticmethod
    def _last_sent(lead_id: Any) -> Any:
        return (
            select(func.max(Message.sent_at))
            .where(Message.lead_id == lead_id, Message.status.in_(SMTP_DONE))
            .scalar_subquery()
        )

    async def suppressions(self) -> tuple[list[str], list[str]]:
        rows = (
            await self.session.execute(
                select(Suppression.email, Suppression.domain).where(
                    Suppression.workspace_id == self.workspace_id
                )
            )
        ).all()
        return [r.email for r in rows if r.email], [r.domain for r in rows if r.domain]

    async def kpis(self, campaign_id: uuid.UUID) -> tuple[Counters, dict[date, dict[str, int]]]:
        return await kpi.totals(self.session, campaign_id), await kpi.days(self.session, campaign_id)


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.scalars(select(User).where(func.lower(User.email) == email.lower()))
    return result.first()


async def workspace(session: AsyncSession, workspace_id: uuid.UUID) -> Workspace | None:
    return await session.get(Workspace, workspace_id)


async def message_page(
    repo: Repository, page: int, page_size: int, filters: dict[str, Any]
) -> tuple[list[dict[str, Any]], int]:
    """Messages with their lead's address, newest slot first; `filters` are exact matches on columns."""
    scope = [Message.workspace_id == repo.workspace_id]
    for name, value in filters.items():
        if value is not None:
            scope.append(getattr(Message, name) == value)
    total = await repo.session.scalar(select(func.count()).select_from(Message).where(*scope))
    rows = await repo.session.execute(
        select(Message, Lead.email)
        .join(Lead, Lead.id == Message.lead_id)
        .where(*scope)
        .order_by(Message.scheduled_at.desc(), Message.id)
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    return [message_out(message, email) for message, email in rows], total or 0


def message_out(message: Message, lead_email: str) -> dict[str, Any]:
    ids = ("id", "campaign_id", "lead_id", "parent_message_id")
    fields = (
        "domain_used",
        "scheduled_at",
        "sent_at",
        "status",
        "is_followup",
        "retry_count",
        "last_error",
        "opened_at",
    )
    return {
        **{name: str(value) if (value := getattr(message, name)) is not None else None for name in ids},
        **{name: getattr(message, name) for name in fields},
        "lead_email": lead_email,
    }
